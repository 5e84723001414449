"""Start-up of a Meterline process: the one place that decides which broker it uses.

Importing a module starts nothing and connects to nothing. The entry points — `meter` (the CLI),
`workers.app` (what `dramatiq` loads), the scheduler and the test fixtures — call `start()` once,
before they send or consume a message.
"""

from __future__ import annotations

import dramatiq

from tasks.broker import install, make_broker


def start(broker: dramatiq.Broker | None = None) -> dramatiq.Broker:
    """Install `broker` (default: the configured one) as the process's broker, with every
    actor declared so far moved onto it; return it."""
    return install(broker if broker is not None else make_broker())
