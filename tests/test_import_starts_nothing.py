"""Importing any module starts nothing and connects to nothing: the entry points (`meter`,
`workers.app`, the scheduler, the test fixtures) decide which servers to use, at start-up."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

# Every module of these packages is imported; `workers.app` is left out: it IS the worker's
# entry point (what `dramatiq workers.app` loads), so it starts the worker's broker.
_SCRIPT = textwrap.dedent(
    """
    import importlib, pkgutil, socket, subprocess, sys

    attempts = []
    real_connect, real_popen = socket.socket.connect, subprocess.Popen.__init__

    def connect(self, address):
        attempts.append(("connect", address))
        return real_connect(self, address)

    def popen(self, args, *rest, **kwargs):
        attempts.append(("spawn", args))
        return real_popen(self, args, *rest, **kwargs)

    socket.socket.connect = connect
    subprocess.Popen.__init__ = popen

    imported = []
    for name in sys.argv[1:]:
        try:
            package = importlib.import_module(name)
        except ModuleNotFoundError:
            continue  # a package this checkout does not have (yet)
        imported.append(name)
        for module in pkgutil.walk_packages(package.__path__, name + "."):
            if module.name != "workers.app":
                importlib.import_module(module.name)
                imported.append(module.name)
    assert not attempts, attempts
    print(len(imported))
    """
)
_PACKAGES = ["pricing", "storage", "services", "tasks", "scheduler", "workers", "cli", "api"]


def test_importing_every_module_starts_and_connects_to_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    closed = "127.0.0.1:9"  # the discard port: nothing listens there
    for env in (
        {"METER_DATA_DIR": str(data_dir)},  # embedded servers would be started here
        {
            "METER_DATA_DIR": str(data_dir),
            "DATABASE_URL": f"postgresql://nobody@{closed}/nothing",
            "REDIS_URL": f"redis://{closed}/0",
        },
    ):
        result = subprocess.run(
            [sys.executable, "-c", _SCRIPT, *_PACKAGES],
            env={"PATH": os.environ["PATH"], **env},
            cwd=Path(__file__).resolve().parent.parent,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert int(result.stdout) > 50  # the walk did import the modules
        assert not data_dir.exists()  # no embedded server, no lock file
