"""URLs in messages and logs never carry a password, whatever form the URL takes."""

from __future__ import annotations

import pytest

from storage.settings import display_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://meter:s3cr3t@db.internal:5432/meterline", "postgresql://meter@db.internal:5432/meterline"),
        ("postgresql://meter@db.internal/meterline", "postgresql://meter@db.internal/meterline"),
        ("redis://:s3cr3t@cache:6379/2", "redis://cache:6379/2"),
        ("postgresql://db/meterline?sslmode=require&password=s3cr3t", "postgresql://db/meterline?sslmode=require"),
        ("host=db password='s3 cr3t' dbname=meterline", "host=db dbname=meterline"),
        ("host=db password=s3cr3t dbname=meterline", "host=db dbname=meterline"),
    ],
)  # fmt: skip
def test_the_password_is_left_out(url: str, shown: str) -> None:
    assert display_url(url) == shown
