"""A worker module for the invoice fault test: `dramatiq tests.faults.invoice_fault_worker`.

The actors of `workers.app`, except that the process SIGKILLs itself in the middle of writing
an invoice: the invoice row and its lines are written, the transaction is not committed.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import workers.app  # noqa: F401
from storage.invoices import writes

_write_draft = writes.write_draft


def _write_then_die(*args: Any, **kwargs: Any) -> Any:
    _write_draft(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)


writes.write_draft = _write_then_die
