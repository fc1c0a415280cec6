"""Client-side encryption of a snapshot, streamed in chunks: AES-256-GCM with a key file.

The sealed stream is a 28-byte header, then the chunks:

    MAGIC (8) | key id (8) | nonce prefix (8, random per stream) | chunk size (4, big-endian)
    chunk i = AES-256-GCM(key, nonce = prefix | i (4, big-endian), plaintext_i, aad = header | final_i)

Every chunk but the last holds exactly ``chunk size`` plaintext bytes; the last holds fewer (none
when the size is a multiple), and only it is sealed with ``final = 1``. So a stream cut at any byte,
chunks swapped or dropped, or a chunk from another stream all fail authentication, and memory stays
at one chunk whatever the file's size. The key id (the first 8 bytes of the key's sha256) tells a
wrong key from a tampered object before any chunk is opened.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from upgrader import errors

MAGIC = b"UPGSEAL1"
CHUNK = 4 * 2**20
TAG = 16
HEADER = struct.Struct(">8s8s8sI")
ALGORITHM = "aes-256-gcm-stream-v1"


class BadKey(errors.InputError):
    """The key file is missing, unreadable, not private or not 32 bytes."""


class Unsealable(errors.OperationFailed):
    """A sealed stream that does not open: another key, or changed or cut bytes."""


class Key:
    """A 32-byte key read from a file holding 32 raw bytes or 64 hex digits."""

    def __init__(self, raw: bytes, source: str) -> None:
        self._aead = AESGCM(raw)
        self.id = hashlib.sha256(raw).digest()[:8]
        self.source = source

    @classmethod
    def load(cls, path: Path) -> Key:
        try:
            mode = path.stat().st_mode
            data = path.read_bytes()
        except OSError as exc:
            raise BadKey(f"encryption key file {path}: {exc.strerror or exc}") from None
        if mode & 0o077:
            raise BadKey(f"encryption key file {path} is readable by others (mode {mode & 0o777:o}): chmod 600 it")
        text = data.strip()
        if len(text) == 64:
            try:
                return cls(bytes.fromhex(text.decode("ascii")), str(path))
            except (UnicodeDecodeError, ValueError):
                pass
        if len(data) == 32:
            return cls(data, str(path))
        raise BadKey(f"encryption key file {path} must hold 32 raw bytes or 64 hex digits")

    @staticmethod
    def generate(path: Path) -> None:
        """Writes a new random key (64 hex digits) to ``path``, 0600; refuses to overwrite one."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise errors.Refused(f"{path} already exists: a key is never overwritten") from None
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")

    @property
    def fingerprint(self) -> str:
        return self.id.hex()

    def _seal(self, nonce: bytes, data: bytes, aad: bytes) -> bytes:
        return self._aead.encrypt(nonce, data, aad)

    def _open(self, nonce: bytes, data: bytes, aad: bytes) -> bytes:
        return self._aead.decrypt(nonce, data, aad)


def _nonce(prefix: bytes, index: int) -> bytes:
    if index >= 2**32:
        raise Unsealable("stream too long for one nonce prefix")
    return prefix + index.to_bytes(4, "big")


def sealed_size(size: int, chunk: int = CHUNK) -> int:
    """The sealed stream's length for ``size`` plaintext bytes."""
    return HEADER.size + (size // chunk + 1) * TAG + size


class SealingReader(io.RawIOBase):
    """A file-like view of ``source`` sealed with ``key``: what an uploader reads."""

    def __init__(self, source: BinaryIO, key: Key, chunk: int = CHUNK) -> None:
        super().__init__()
        self._source = source
        self._key = key
        self._chunk = chunk
        self._header = HEADER.pack(MAGIC, key.id, secrets.token_bytes(8), chunk)
        self._pieces = self._stream()
        self._buffer = b""

    def _stream(self) -> Iterator[bytes]:
        prefix = self._header[16:24]
        yield self._header
        index = 0
        pending = self._source.read(self._chunk)
        while True:
            final = len(pending) < self._chunk
            if final:
                yield self._key._seal(_nonce(prefix, index), pending, self._header + b"\x01")
                return
            following = self._source.read(self._chunk)
            yield self._key._seal(_nonce(prefix, index), pending, self._header + b"\x00")
            index += 1
            pending = following

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            out, self._buffer = self._buffer + b"".join(self._pieces), b""
            return out
        while len(self._buffer) < size:
            piece = next(self._pieces, None)
            if piece is None:
                break
            self._buffer += piece
        out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(target))
        target[: len(data)] = data
        return len(data)


def _read_exactly(source: BinaryIO, size: int) -> bytes:
    parts = []
    while size > 0:
        part = source.read(size)
        if not part:
            break
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


def unseal(source: BinaryIO, key: Key, what: str) -> Iterator[bytes]:
    """The plaintext of a sealed stream, chunk by chunk; ``Unsealable`` naming ``what`` on any fault."""
    header = _read_exactly(source, HEADER.size)
    if len(header) < HEADER.size:
        raise Unsealable(f"{what} is not a sealed snapshot (too short)")
    magic, key_id, prefix, chunk = HEADER.unpack(header)
    if magic != MAGIC:
        raise Unsealable(f"{what} is not a sealed snapshot (unknown format)")
    if key_id != key.id:
        raise Unsealable(
            f"{what} was encrypted with another key (key id {key_id.hex()}; {key.source} has {key.fingerprint})"
        )
    if not 0 < chunk <= 64 * 2**20:
        raise Unsealable(f"{what}: chunk size {chunk} is out of range (tampered header)")
    index = 0
    while True:
        sealed = _read_exactly(source, chunk + TAG)
        final = len(sealed) < chunk + TAG
        try:
            plain = key._open(_nonce(prefix, index), sealed, header + (b"\x01" if final else b"\x00"))
        except InvalidTag:
            raise Unsealable(f"{what} fails authentication at chunk {index}: it was changed or cut short") from None
        yield plain
        if final:
            if source.read(1):
                raise Unsealable(f"{what} has bytes after its final chunk: it was changed")
            return
        index += 1
