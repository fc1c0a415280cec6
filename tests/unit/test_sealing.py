"""The object-store tier's client-side encryption: any size round-trips in bounded chunks, and any change
to a sealed stream (a flipped bit, a cut, a dropped or reordered chunk, another key) is refused."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from upgrader import errors
from upgrader.objectstore import sealing

CHUNK = 1024


@pytest.fixture
def key(tmp_path: Path) -> sealing.Key:
    sealing.Key.generate(tmp_path / "k")
    return sealing.Key.load(tmp_path / "k")


def seal(data: bytes, key: sealing.Key, tmp_path: Path, per_part: int = 2) -> bytes:
    """The object an upload of ``data`` makes: its parts, each read twice as the client does (its
    checksums, then the send) in odd pieces, joined."""
    path = tmp_path / f"plain-{len(data)}"
    path.write_bytes(data)
    out = []
    with sealing.Upload(path, key, per_part, chunk=CHUNK) as upload:
        for number in range(1, len(upload.parts) + 1):
            part = upload.part(number)
            first = part.read()
            assert len(first) == len(part)
            part.seek(0)
            again = b""
            while piece := part.read(333):
                again += piece
            assert again == first
            out.append(first)
    return b"".join(out)


def test_parts_are_whole_chunks_and_the_sealed_size_is_known(key: sealing.Key, tmp_path: Path) -> None:
    path = tmp_path / "plain"
    path.write_bytes(os.urandom(10 * CHUNK + 3))
    with sealing.Upload(path, key, 3, chunk=CHUNK) as upload:
        lengths = [len(upload.part(n)) for n in range(1, len(upload.parts) + 1)]
    assert lengths == [sealing.HEADER.size + 3 * (CHUNK + 16), 3 * (CHUNK + 16), 3 * (CHUNK + 16), 3 + 16 + CHUNK + 16]
    with sealing.Upload(path, None, 3, chunk=CHUNK) as plain:  # encryption off: the file as it is
        assert b"".join(plain.part(n).read() for n in range(1, len(plain.parts) + 1)) == path.read_bytes()


def unseal(sealed: bytes, key: sealing.Key) -> bytes:
    return b"".join(sealing.unseal(io.BytesIO(sealed), key, "the object"))


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 5 * CHUNK + 17])
def test_any_size_round_trips(key: sealing.Key, size: int, tmp_path: Path) -> None:
    data = os.urandom(size)
    sealed = seal(data, key, tmp_path)
    assert len(sealed) == sealing.HEADER.size + (size // CHUNK + 1) * 16 + size
    assert unseal(sealed, key) == data
    if size >= 64:
        assert data[:64] not in sealed


def test_two_seals_of_the_same_file_differ(key: sealing.Key, tmp_path: Path) -> None:
    data = os.urandom(2 * CHUNK)
    assert seal(data, key, tmp_path) != seal(data, key, tmp_path)  # a fresh nonce prefix per upload


@pytest.mark.parametrize("change", ["flip", "cut-mid-chunk", "cut-at-chunk", "drop-chunk", "swap-chunks", "append"])
def test_every_change_to_a_sealed_stream_is_refused(key: sealing.Key, change: str, tmp_path: Path) -> None:
    sealed = bytearray(seal(os.urandom(3 * CHUNK + 10), key, tmp_path))
    header, step = sealing.HEADER.size, CHUNK + sealing.TAG
    chunks = [bytes(sealed[i : i + step]) for i in range(header, len(sealed), step)]
    if change == "flip":
        sealed[header + CHUNK + 5] ^= 0x01
    elif change == "cut-mid-chunk":
        sealed = sealed[: header + step + 100]
    elif change == "cut-at-chunk":  # whole chunks, so only the missing final chunk can tell
        sealed = sealed[: header + 2 * step]
    elif change == "drop-chunk":
        sealed = sealed[:header] + b"".join(chunks[:1] + chunks[2:])
    elif change == "swap-chunks":
        sealed = sealed[:header] + b"".join([chunks[1], chunks[0], *chunks[2:]])
    elif change == "append":
        sealed += b"x"
    with pytest.raises(sealing.Unsealable, match="the object"):
        unseal(bytes(sealed), key)


def test_another_key_is_named_as_such(key: sealing.Key, tmp_path: Path) -> None:
    sealing.Key.generate(tmp_path / "other")
    other = sealing.Key.load(tmp_path / "other")
    with pytest.raises(sealing.Unsealable, match=f"another key.*{other.fingerprint}"):
        unseal(seal(b"secret", key, tmp_path), other)


def test_a_key_file_must_be_private_and_32_bytes(tmp_path: Path) -> None:
    path = tmp_path / "k"
    sealing.Key.generate(path)
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(errors.Refused, match="never overwritten"):
        sealing.Key.generate(path)
    path.chmod(0o644)
    with pytest.raises(sealing.BadKey, match="readable by others"):
        sealing.Key.load(path)
    short = tmp_path / "short"
    short.write_bytes(b"0123456789")
    short.chmod(0o600)
    with pytest.raises(sealing.BadKey, match="32 raw bytes or 64 hex digits"):
        sealing.Key.load(short)
    with pytest.raises(sealing.BadKey, match="No such file"):
        sealing.Key.load(tmp_path / "absent")
    raw = tmp_path / "raw"
    raw.write_bytes(os.urandom(32))
    raw.chmod(0o600)
    assert len(sealing.Key.load(raw).fingerprint) == 16
