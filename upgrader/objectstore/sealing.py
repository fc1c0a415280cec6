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
import hmac
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
CHUNK = 2**20
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
        self._mac_key = hmac.new(raw, b"upgrader: snapshot description MAC v1", hashlib.sha256).digest()
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
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            raise errors.Refused(f"{path} already exists: a key is never overwritten") from None
        except OSError as exc:  # a missing directory, a name too long, no permission
            raise BadKey(f"cannot write the key file {path}: {exc.strerror or exc}") from None
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")

    @property
    def fingerprint(self) -> str:
        return self.id.hex()

    def mac(self, data: bytes) -> str:
        """HMAC-SHA256 of ``data`` under a key derived from this one (never the sealing key itself)."""
        return hmac.new(self._mac_key, data, hashlib.sha256).hexdigest()

    def verify(self, data: bytes, mac: str) -> bool:
        return hmac.compare_digest(self.mac(data), mac)

    def _seal(self, nonce: bytes, data: bytes, aad: bytes) -> bytes:
        return self._aead.encrypt(nonce, data, aad)

    def _open(self, nonce: bytes, data: bytes, aad: bytes) -> bytes:
        return self._aead.decrypt(nonce, data, aad)


def _nonce(prefix: bytes, index: int) -> bytes:
    if index >= 2**32:
        raise Unsealable("stream too long for one nonce prefix")
    return prefix + index.to_bytes(4, "big")


class Part(io.RawIOBase):
    """Chunks ``[first, stop)`` of a file as one part of an upload (sealed when there is a key, the
    header first in part 1), produced as they are read: a part in flight holds one chunk, not the part.
    Seekable, because the client reads a body more than once (its checksums, then the send); sealing
    is deterministic per chunk, so every read yields the same bytes."""

    def __init__(self, upload: Upload, first: int, stop: int) -> None:
        super().__init__()
        self._upload, self._first, self._stop = upload, first, stop
        self._header = upload.header if first == 0 else b""
        self._length = len(self._header) + sum(upload.sealed_length(i) for i in range(first, stop))
        self._position = 0
        self._cached: tuple[int, bytes] | None = None  # (chunk, its bytes) under the position

    def __len__(self) -> int:
        return self._length

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._length}[whence]
        self._position = min(max(base + offset, 0), self._length)
        return self._position

    def _piece_at(self, position: int) -> tuple[bytes, int]:
        """The header or sealed chunk holding ``position``, and the offset of ``position`` in it."""
        if position < len(self._header):
            return self._header, position
        offset = position - len(self._header)
        index = self._first + offset // (self._upload.chunk + self._upload.overhead)
        start = (index - self._first) * (self._upload.chunk + self._upload.overhead)
        if self._cached is None or self._cached[0] != index:
            self._cached = (index, self._upload.chunk_bytes(index))
        return self._cached[1], offset - start

    def read(self, size: int = -1) -> bytes:
        wanted = self._length - self._position if size is None or size < 0 else size
        out = []
        while wanted > 0 and self._position < self._length:
            piece, at = self._piece_at(self._position)
            taken = piece if at == 0 and wanted >= len(piece) else piece[at : at + wanted]  # no copy if whole
            out.append(taken)
            self._position += len(taken)
            wanted -= len(taken)
        return out[0] if len(out) == 1 else b"".join(out)


class Upload:
    """A file cut into parts of ``chunks_per_part`` chunks, sealed with ``key`` when there is one."""

    def __init__(self, path: Path, key: Key | None, chunks_per_part: int, chunk: int = CHUNK) -> None:
        self.path, self.key, self.chunk = path, key, chunk
        self.size = path.stat().st_size
        self.overhead = TAG if key else 0
        # Sealed, the last chunk is always short (empty when the size is a multiple): it marks the end.
        self.chunks = self.size // chunk + 1 if key else max(-(-self.size // chunk), 1)
        self.header = HEADER.pack(MAGIC, key.id, secrets.token_bytes(8), chunk) if key else b""
        self._fd = os.open(path, os.O_RDONLY)
        self.parts = [
            (first, min(first + chunks_per_part, self.chunks)) for first in range(0, self.chunks, chunks_per_part)
        ]

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> Upload:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def plain_length(self, index: int) -> int:
        return min(self.chunk, self.size - index * self.chunk)

    def sealed_length(self, index: int) -> int:
        return self.plain_length(index) + self.overhead

    def chunk_bytes(self, index: int) -> bytes:
        data = os.pread(self._fd, self.plain_length(index), index * self.chunk)
        if len(data) != self.plain_length(index):
            raise errors.OperationFailed(f"{self.path} changed while it was being uploaded")
        if self.key is None:
            return data
        final = b"\x01" if index == self.chunks - 1 else b"\x00"
        return self.key._seal(_nonce(self.header[16:24], index), data, self.header + final)

    def part(self, number: int) -> Part:
        """Part ``number`` (from 1)."""
        first, stop = self.parts[number - 1]
        return Part(self, first, stop)


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
