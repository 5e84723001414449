"""The producer's spool: each recorded event is appended to a file before `record()` returns.

Opt-in (`METER_SPOOL_DIR`). A process writes its own file, ``<host>-<pid>-<prefix>.spool`` in
that directory, one JSON array per line (the checked event: id, customer, metric, quantity,
stamp, properties). The write is one ``os.write`` on an ``O_APPEND`` descriptor: once
`record()` returns, the event is in the kernel's page cache, which outlives the process —
a SIGKILL (gunicorn's timeout) loses nothing. (A power cut may: the spool does not fsync.)

The recorder's sender thread reads the file from where it stopped, sends complete lines in
batches, and trims what is sent by punching a hole (``fallocate(PUNCH_HOLE)``), so the disk
holds only unsent events; a clean close removes the file.

Ownership is an exclusive `flock` that the writing process holds for its lifetime: the kernel
drops it when the process dies, however it dies. A file nobody holds is an orphan, claimed
with the same lock (`tasks.spool_claim`), so two claimers never ship one file at once. A file
is created under a temporary name and renamed once locked: no claimer sees an unlocked new
file. The directory must be local to the host (flock over NFS is not to be trusted).

Events keep their ids: a batch sent again after a kill (sent, not yet trimmed) is
deduplicated by the ledger.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import logging
import os
import socket
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from tasks.message import Buffered, format_quantity, format_timestamp

log = logging.getLogger(f"meterline.{__name__}")

SUFFIX = ".spool"
_CREATING = ".creating"
_READ_CHUNK = 4 * 1024 * 1024  # bytes read from a spool at a time
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02

_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder()


def encode_row(item: Buffered) -> bytes:
    """One spool line. The common event (an int quantity, a nanosecond stamp, no properties)
    is written as it is; anything else in the text the message would carry."""
    event_id, customer_id, metric, quantity, stamp, properties = item
    if type(quantity) is not int and type(quantity) is not float:
        quantity = format_quantity(quantity)  # type: ignore[assignment]  # a Decimal, as text
    if type(stamp) is not int:
        stamp = format_timestamp(stamp)  # a datetime, as text
    row = [event_id, customer_id, metric, quantity, stamp, properties]
    return _ENCODER.encode(row) + b"\n"


def decode_rows(lines: list[bytes]) -> list[Buffered]:
    """The events of complete spool lines (one decoder call for all of them). A line that is
    not an event (a damaged file) is logged by its length, never its content, and skipped."""
    try:
        rows: list[Any] = _DECODER.decode(b"[" + b",".join(lines) + b"]")
    except msgspec.DecodeError:
        rows = [_decode_line(line) for line in lines]
    kept: list[Any] = []
    for row in rows:
        if type(row) is not list or len(row) != 6:
            log.error("spool_line_skipped reason=not_an_event")
            continue
        if type(row[3]) is str:
            try:
                row[3] = Decimal(row[3])
            except ArithmeticError:
                log.error("spool_line_skipped reason=bad_quantity")
                continue
        kept.append(row)
    return kept


def _decode_line(line: bytes) -> Any:
    try:
        return _DECODER.decode(line)
    except msgspec.DecodeError:
        log.error("spool_line_skipped reason=unreadable bytes=%d", len(line))
        return None


@dataclass
class Chunk:
    """Complete lines read from a spool, and the offset just past the last one."""

    lines: list[bytes]
    end: int


def read_lines(fd: int, offset: int) -> Chunk:
    """The complete lines from `offset` on (at most about `_READ_CHUNK` bytes of them); a
    line still being written is left for the next read. Trimmed bytes read as NUL (a hole),
    which no line holds: they are skipped."""
    data = os.pread(fd, _READ_CHUNK, offset)
    last = data.rfind(b"\n")
    if last < 0:
        if len(data) == _READ_CHUNK:
            raise ValueError(f"spool line longer than {_READ_CHUNK} bytes at offset {offset}")
        return Chunk([], offset)
    body = data[:last]
    lines = [line.lstrip(b"\0") for line in body.split(b"\n")]
    return Chunk([line for line in lines if line], offset + last + 1)


def batches(chunk: Chunk, start: int, size: int) -> list[tuple[list[bytes], int]]:
    """`chunk`'s lines in groups of at most `size`, each with the file offset just past it
    (`start` is the offset the chunk was read from)."""
    groups: list[tuple[list[bytes], int]] = []
    offset = start
    lines = chunk.lines
    for first in range(0, len(lines), size):
        group = lines[first : first + size]
        offset += sum(len(line) + 1 for line in group)
        groups.append((group, offset))
    if groups:  # holes and blank runs are skipped too: the last group ends at the chunk's end
        groups[-1] = (groups[-1][0], chunk.end)
    return groups


_libc: Any = None


def trim(fd: int, start: int, end: int) -> bool:
    """Give back the disk space of bytes [start, end), already sent: they read as NUL from now
    on. False where the file system cannot punch holes (then the file only grows until it is
    closed and removed)."""
    global _libc
    if end <= start:
        return True
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    mode = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
    if _libc.fallocate(fd, mode, ctypes.c_int64(start), ctypes.c_int64(end - start)) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EOPNOTSUPP, errno.ENOSYS):
        return False
    raise OSError(error, f"spool trim: {os.strerror(error)}")


def first_data(fd: int) -> int:
    """Where a claimed file's unsent data starts: past the holes its owner punched."""
    try:
        return os.lseek(fd, 0, os.SEEK_DATA)
    except OSError as exc:  # ENXIO: holes only; else no SEEK_DATA here: read from the start
        return os.fstat(fd).st_size if exc.errno == errno.ENXIO else 0


class SpoolFile:
    """This process's spool file: created locked, written by `record()`, read by the sender."""

    def __init__(self, directory: Path, prefix: str) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        name = f"{socket.gethostname()}-{os.getpid()}-{prefix}"
        creating = directory / f"{name}{_CREATING}"
        self.path = directory / f"{name}{SUFFIX}"
        self.fd = os.open(creating, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # new inode: nobody else has it
        os.rename(creating, self.path)  # only now can a claimer see it, already locked
        self.sent = 0  # offset up to which every line has been enqueued
        self.trimmed = 0
        self.can_trim = True

    def unsent_events(self) -> int:
        """Complete lines not yet sent (for stats: reads them)."""
        count, offset = 0, self.sent
        while True:
            chunk = read_lines(self.fd, offset)
            if chunk.end == offset:
                return count
            count += len(chunk.lines)
            offset = chunk.end

    def mark_sent(self, offset: int) -> None:
        self.sent = offset
        if self.can_trim:
            self.can_trim = trim(self.fd, self.trimmed, offset)
            if self.can_trim:
                self.trimmed = offset
            else:
                log.warning("spool %s: this file system cannot punch holes; the file grows "
                            "until the recorder closes", self.path)  # fmt: skip

    def close(self, *, remove: bool) -> None:
        """Remove the file (everything sent) or leave it for a claimer; then unlock."""
        if remove:
            self.path.unlink(missing_ok=True)
        os.close(self.fd)

    def forget_in_child(self) -> None:
        """In a forked child: drop the parent's descriptor (the parent keeps the file and its
        lock; the child gets a file of its own)."""
        os.close(self.fd)
