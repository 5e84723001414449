"""The README's receiver snippet ("Verifying a webhook") is run as written against real
deliveries: it accepts what Meterline signs, and refuses a tampered body, another secret and a
replayed old request — exactly as `verify_signature` does."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from services.notifications import SIGNATURE_HEADER, deliver_due, verify_signature
from storage import outbox
from tests.webhook_receiver import receiver

README = Path(__file__).resolve().parents[2] / "README.md"
SECRET = "whsec_readme_0123456789"


def readme_verify() -> Callable[..., bool]:
    text = README.read_text()
    section = text.split("### Verifying a webhook", 1)[1]
    (code,) = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], re.S)[:1]
    assert len(code.strip().splitlines()) <= 14  # "in about a dozen lines"
    namespace: dict[str, object] = {}
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 (runs the README's own example)
    verify = namespace["verify"]
    assert callable(verify)
    return verify


def test_the_readme_snippet_verifies_real_deliveries_and_refuses_the_rest(
    clean_state: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    verify = readme_verify()
    with receiver() as hook:
        outbox.enqueue("invoice.finalized", {"invoice_id": "inv_1", "total": "132.00"})
        assert deliver_due(hook.url, SECRET).delivered == 1  # signed at this moment
        ((headers, body, _status),) = hook.requests
    header = headers[SIGNATURE_HEADER]
    tampered = body.replace(b"132.00", b"1.00")

    for check in (verify, verify_signature):
        assert check(SECRET, body, header)
        assert not check(SECRET, tampered, header)
        assert not check("whsec_another_secret_00", body, header)
        assert not check(SECRET, body, "t=abc,v1=00")
        assert not check(SECRET, body, "")

    later = time.time() + 301  # the same request replayed five minutes later
    monkeypatch.setattr(time, "time", lambda: later)
    assert not verify(SECRET, body, header)
    assert not verify_signature(SECRET, body, header)
