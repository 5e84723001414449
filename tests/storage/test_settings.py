"""Settings come from the environment, are cached, and re-read after a reset."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from storage.settings import Settings, get_settings, reset_settings

NAMES = (
    "DATABASE_URL",
    "REDIS_URL",
    "BROKER_URL",
    "SENTRY_DSN",
    "METER_DATA_DIR",
    "METER_ACCEPT_PAST_DAYS",
    "METER_ACCEPT_FUTURE_SECONDS",
    "METER_INVOICE_GRACE_SECONDS",
    "METER_POOL_MAX",
)


@pytest.fixture
def bare_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)
    reset_settings()
    yield monkeypatch
    monkeypatch.undo()
    reset_settings()


def test_defaults(bare_env: pytest.MonkeyPatch) -> None:
    settings = Settings()
    assert settings.DATABASE_URL is None and settings.REDIS_URL is None
    assert settings.BROKER_URL is None and settings.SENTRY_DSN is None
    assert str(settings.METER_DATA_DIR) == ".meter"
    assert settings.METER_ACCEPT_PAST_DAYS == 35
    assert settings.METER_ACCEPT_FUTURE_SECONDS == 300
    assert settings.METER_INVOICE_GRACE_SECONDS == 3600
    assert settings.METER_POOL_MAX == 10


def test_environment_values_are_read_and_cached_until_reset(
    bare_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bare_env.setenv("METER_POOL_MAX", "3")
    bare_env.setenv("METER_DATA_DIR", str(tmp_path))
    bare_env.setenv("DATABASE_URL", "")  # empty means unset: use the embedded server
    settings = get_settings()
    assert settings.METER_POOL_MAX == 3 and settings.DATABASE_URL is None
    assert settings.data_dir == tmp_path.resolve()
    bare_env.setenv("METER_POOL_MAX", "4")
    assert get_settings() is settings
    reset_settings()
    assert get_settings().METER_POOL_MAX == 4


def test_a_relative_data_dir_is_taken_from_the_working_directory(
    bare_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bare_env.chdir(tmp_path)
    assert Settings().data_dir == tmp_path.resolve() / ".meter"


def test_invalid_values_are_refused(bare_env: pytest.MonkeyPatch) -> None:
    bare_env.setenv("METER_POOL_MAX", "0")
    with pytest.raises(ValidationError, match="METER_POOL_MAX"):
        Settings()
