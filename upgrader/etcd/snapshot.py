"""Streams an etcd snapshot straight to disk and checks it the way etcdutl does before a restore.

etcd sends the bbolt file in 32 KiB messages and then one extra 32-byte message: the sha256 of every
message before it. The last data message also has ``remaining_bytes == 0``, so the trailer is simply
the last message: this module holds back one message at a time, hashes everything but the last,
and checks that the last is 32 bytes equal to that hash and that the size is 32 modulo 512 (bbolt
files are whole pages). It writes ``NAME.part`` (0600), fsyncs, renames and fsyncs the directory, and
never holds the snapshot in memory. There is no deadline on the whole stream, which can take minutes
for a large database; a watchdog cancels it after ``idle_timeout`` seconds without a message.
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from etcd3.etcdrpc import rpc_pb2

from upgrader import errors
from upgrader.etcd import kv
from upgrader.support import files

TRAILER = 32
CHUNK = 1 << 20


class SnapshotCorrupt(errors.OperationFailed):
    """A snapshot's sha256 trailer is missing or does not match its contents."""


@dataclass(frozen=True)
class Streamed:
    path: Path
    endpoint: str
    size: int  # bytes on disk, trailer included
    sha256: str  # of the database (everything but the trailer): the value the trailer carries


Progress = Callable[[int, int | None], None]  # (bytes so far, expected total if known)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class _Watchdog:
    """Cancels a stream that has been silent for ``timeout`` seconds (an idle timeout, not a deadline)."""

    def __init__(self, call: grpc.Call, timeout: float) -> None:
        self.call = call
        self.timeout = timeout
        self.last = time.monotonic()
        self.done = threading.Event()
        self.fired = threading.Event()
        threading.Thread(target=self._watch, name="snapshot-watchdog", daemon=True).start()

    def _watch(self) -> None:
        while not self.done.wait(1.0):
            if time.monotonic() - self.last > self.timeout:
                self.fired.set()
                self.call.cancel()
                return

    def beat(self) -> None:
        self.last = time.monotonic()


def _stream_one(store: kv.KV, endpoint: str, dest: Path, *, idle_timeout: float, progress: Progress | None) -> Streamed:
    client = store.client_for(endpoint)
    call = client.maintenancestub.Snapshot(
        rpc_pb2.SnapshotRequest(), credentials=client.call_credentials, metadata=client.metadata
    )
    part = dest.with_name(dest.name + ".part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    watchdog = _Watchdog(call, idle_timeout)
    digest = hashlib.sha256()
    held: bytes | None = None
    total = 0
    expected: int | None = None
    complete = False

    def write(data: bytes) -> None:
        """Only the file writes are reported as write errors (a progress callback's failure is not a disk's)."""
        try:
            _write_all(fd, data)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise errors.OperationFailed(
                    f"no space left in {dest.parent} for the snapshot ({total} bytes written)"
                ) from exc
            raise errors.OperationFailed(f"cannot write the snapshot to {part}: {exc.strerror}") from exc

    try:
        for response in call:
            watchdog.beat()
            blob = bytes(response.blob)
            if held is not None:
                write(held)
                digest.update(held)
            elif response.remaining_bytes:
                expected = len(blob) + int(response.remaining_bytes) + TRAILER
            held = blob
            total += len(blob)
            if progress is not None:
                progress(total, expected)
        if held is None or len(held) != TRAILER or total % 512 != TRAILER or digest.digest() != held:
            raise SnapshotCorrupt(
                f"the snapshot stream from {endpoint} ended without a valid sha256 trailer "
                f"({total} bytes): it was cut short or corrupted"
            )
        write(held)
        try:
            os.fsync(fd)
        except OSError as exc:
            raise errors.OperationFailed(f"cannot write the snapshot to {part}: {exc.strerror}") from exc
        complete = True
    except grpc.RpcError as exc:
        reason = f"no data for {idle_timeout:.0f}s" if watchdog.fired.is_set() else str(exc.details() or exc.code())
        raise kv.EtcdUnavailable(f"the snapshot stream from {endpoint} failed after {total} bytes: {reason}") from exc
    finally:
        watchdog.done.set()
        os.close(fd)
        if not complete:  # never leave half a snapshot behind, whatever stopped us (Ctrl-C included)
            part.unlink(missing_ok=True)
    files.replace_durably(part, dest)
    return Streamed(path=dest, endpoint=endpoint, size=total, sha256=held.hex())


def save(store: kv.KV, dest: Path, *, idle_timeout: float = 30.0, progress: Progress | None = None) -> Streamed:
    """Streams a snapshot from the first healthy member to ``dest``, trying the next on failure.

    On any failure no file is left behind: neither ``dest`` nor ``dest.part``.
    """
    if dest.exists():
        raise errors.Refused(f"{dest} already exists")
    failures = []
    for endpoint in store.target.endpoints:
        try:
            store.status_of(endpoint)  # healthy enough to answer
            return _stream_one(store, endpoint, dest, idle_timeout=idle_timeout, progress=progress)
        except (kv.EtcdUnavailable, SnapshotCorrupt) as exc:
            failures.append(str(exc))
    raise kv.EtcdUnavailable("no etcd member gave a complete snapshot: " + "; ".join(failures))


def check_file(path: Path) -> str:
    """The offline check etcdutl makes before a restore: size 32 modulo 512 and a matching sha256 trailer.
    Returns the database's sha256 (hex)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise SnapshotCorrupt(f"snapshot file {path} is missing") from None
    if size < TRAILER or size % 512 != TRAILER:
        raise SnapshotCorrupt(
            f"{path}: {size} bytes is not a bbolt file plus a 32-byte sha256 trailer "
            "(truncated, or the trailer is missing)"
        )
    digest = hashlib.sha256()
    remaining = size - TRAILER
    with path.open("rb") as handle:
        while remaining:
            chunk = handle.read(min(CHUNK, remaining))
            if not chunk:
                raise SnapshotCorrupt(f"{path} shrank while it was read")
            digest.update(chunk)
            remaining -= len(chunk)
        trailer = handle.read(TRAILER)
    if digest.digest() != trailer:
        raise SnapshotCorrupt(f"{path}: the sha256 trailer does not match the contents (the file is corrupted)")
    return trailer.hex()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
