"""Claiming the spool files of dead producers and sending their events (see `tasks.spool`).

A live producer holds an exclusive `flock` on its file for as long as it lives; the kernel
drops it when the process dies. A claimer takes the same lock without waiting: it gets it
only on a file nobody owns or ships (so two claimers never ship one file at once), checks that
the path still names the inode it locked (a claimer that finished before it has removed it),
sends the unsent lines in batches — trimming after each, so a claimer that dies half-way
leaves only the rest — then removes the file and lets the lock go.

The events keep their ids: what the dead producer had already sent but not yet trimmed is
sent again, and the ledger counts it once.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tasks.message import Buffered
from tasks.spool import SUFFIX, batches, decode_rows, first_data, read_lines, trim

log = logging.getLogger(f"meterline.{__name__}")

#: Sends one batch of events (retrying until it is enqueued) and returns its batch id.
SendBatch = Callable[[list[Buffered]], str]


@dataclass
class ClaimReport:
    """What one pass over a spool directory shipped."""

    files: list[str] = field(default_factory=list)
    events: int = 0
    batches: int = 0
    busy: int = 0  # files held by a live producer or another claimer


def claim_orphans(
    directory: Path, send: SendBatch, *, batch_size: int, skip: Path | None = None
) -> ClaimReport:
    """Ship every spool file in `directory` that no live process holds (not `skip`, this
    process's own)."""
    report = ClaimReport()
    try:
        paths = sorted(directory.glob(f"*{SUFFIX}"))
    except FileNotFoundError:
        return report
    for path in paths:
        if skip is not None and path == skip:
            continue
        with _claimed(path) as fd:
            if fd is None:
                report.busy += 1
                continue
            started = time.monotonic()
            events, sent = _ship(fd, send, batch_size)
            path.unlink(missing_ok=True)  # before the lock goes: nobody ships it again
            report.files.append(path.name)
            report.events += events
            report.batches += sent
            log.info("spool_claimed file=%s events=%d batches=%d duration_ms=%.1f",
                     path.name, events, sent, (time.monotonic() - started) * 1000)  # fmt: skip
    return report


@contextlib.contextmanager
def _claimed(path: Path) -> Iterator[int | None]:
    """The file's descriptor, locked by us; None if someone holds it or it is gone."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        yield None
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        yield fd if same else None
    finally:
        os.close(fd)  # releases the lock


def _ship(fd: int, send: SendBatch, batch_size: int) -> tuple[int, int]:
    offset = first_data(fd)
    trimmed = offset
    events = sent = 0
    while True:
        chunk = read_lines(fd, offset)
        if chunk.end == offset:
            return events, sent
        for lines, end in batches(chunk, offset, batch_size):
            if lines:
                rows = decode_rows(lines)
                send(rows)
                events += len(rows)
                sent += 1
            if trim(fd, trimmed, end):
                trimmed = end
        offset = chunk.end
