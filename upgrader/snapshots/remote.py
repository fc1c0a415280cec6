"""The object-store tier: a snapshot's files in an S3-compatible bucket, sealed with the key file.

Under ``PREFIX/CLUSTER/`` each snapshot has three objects: ``ID.db.sealed`` and ``ID.tar.gz.sealed``
(``.db`` and ``.tar.gz`` when encryption is off), each carrying the plain file's sha256 in its
metadata, and ``ID.json``, written last, which describes the snapshot well enough for a controller
with an empty database to import it (``snapshot import --from s3``). Every download is checked
against the sha256 before it is used.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from upgrader import errors
from upgrader.core import config
from upgrader.objectstore import bucket, sealing
from upgrader.state import records
from upgrader.support import files

FORMAT = 1


class RemoteError(errors.OperationFailed):
    """The object-store tier failed: named in the message."""


class ObjectMissing(RemoteError):
    """An object the snapshot needs is not in the bucket."""


@dataclass(frozen=True)
class Remote:
    """The configured bucket, the key that seals for it, and where one cluster's snapshots go."""

    settings: config.ObjectStoreSettings
    cluster: str
    store: bucket.Bucket
    key: sealing.Key | None

    @classmethod
    def open(cls, settings: config.ObjectStoreSettings, cluster: str) -> Remote:
        place = bucket.Place(settings.bucket, settings.endpoint, settings.region)
        key = sealing.Key.load(settings.key_file) if settings.encrypt and settings.key_file else None
        return cls(settings, cluster, bucket.Bucket(place), key)

    @property
    def folder(self) -> str:
        return f"{self.settings.prefix}{self.cluster}/"

    def object_key(self, name: str) -> str:
        return f"{self.folder}{name}{'.sealed' if self.key else ''}"

    def location(self, snapshot_id: str) -> str:
        return f"s3://{self.settings.bucket}/{self.folder}{snapshot_id}"


def _canonical(body: Mapping[str, Any]) -> bytes:
    return json.dumps({k: v for k, v in body.items() if k != "mac"}, sort_keys=True, separators=(",", ":")).encode()


def _describe(record: records.SnapshotRecord, tier: Remote) -> bytes:
    """The description, authenticated with the key when there is one: its ``mac`` covers every field,
    the id, the cluster and each file's sha256 among them, so a description edited or moved to another
    id or cluster, or objects swapped under it, are refused on import."""
    fields = {k: v for k, v in record.__dict__.items() if k not in ("etcd_path", "archive_path", "copies")}
    body: dict[str, Any] = {
        "format": FORMAT,
        "snapshot": {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in fields.items()},
        "objects": {name: tier.object_key(name) for name in record.file_sha256s()},
        "encryption": {"algorithm": sealing.ALGORITHM, "key_id": tier.key.fingerprint} if tier.key else None,
    }
    if tier.key:
        body["mac"] = tier.key.mac(_canonical(body))
    return json.dumps(body, indent=2, sort_keys=True).encode()


def upload(tier: Remote, record: records.SnapshotRecord) -> str:
    """Uploads both files (sealed when a key is configured), then the description; the location."""
    tier.store.check()
    paths = record.local_files()
    for name, sha in record.file_sha256s().items():
        send_file(tier, name, paths[name], sha)
    tier.store.put(f"{tier.folder}{record.id}.json", _describe(record, tier), {"format": str(FORMAT)})
    return tier.location(record.id)


def send_file(tier: Remote, name: str, path: Path, sha: str) -> None:
    """One file to its object, sealed in chunks as it is read, with its plain sha256 in the metadata."""
    metadata = {"sha256": sha, "encryption": sealing.ALGORITHM if tier.key else "none"}
    if tier.key:
        metadata["key-id"] = tier.key.fingerprint
    with sealing.Upload(path, tier.key, bucket.PART // sealing.CHUNK) as upload:
        tier.store.upload(
            tier.object_key(name), len(upload.parts), upload.part, metadata, concurrency=tier.settings.concurrency
        )


def _plain(tier: Remote, source: BinaryIO, what: str) -> Iterator[bytes]:
    if tier.key is None:
        while piece := source.read(bucket.READ):
            yield piece
        return
    yield from sealing.unseal(source, tier.key, what)


def _object(tier: Remote, name: str, sha: str) -> str:
    """The object's key after checking its metadata agrees with the record."""
    key = tier.object_key(name)
    metadata = tier.store.metadata(key)
    if metadata is None:
        raise ObjectMissing(f"{key} is missing")
    if metadata.get("sha256") != sha:
        raise RemoteError(f"{key} is not the file recorded for this snapshot (its sha256 differs)")
    if tier.key and metadata.get("encryption") == "none":
        raise RemoteError(f"{key} is stored unencrypted, and this configuration expects it sealed")
    return key


def _recorded(record: records.SnapshotRecord) -> dict[str, str]:
    try:
        return record.file_sha256s()
    except errors.OperationFailed as exc:  # a copy cannot be checked against nothing: it counts as bad
        raise RemoteError(exc.message) from None


def check(tier: Remote, record: records.SnapshotRecord) -> tuple[records.CopyState, str | None]:
    """Downloads both files (streamed, never written) and checks each against its sha256."""
    try:
        for name, sha in _recorded(record).items():
            key = _object(tier, name, sha)
            digest = hashlib.sha256()
            with tier.store.opened(key) as stream:
                for piece in _plain(tier, stream, f"s3 object {key}"):
                    digest.update(piece)
            if digest.hexdigest() != sha:
                return records.CopyState.BAD, f"{key} does not match its sha256"
        if tier.store.metadata(f"{tier.folder}{record.id}.json") is None:
            return records.CopyState.MISSING, f"{tier.folder}{record.id}.json is missing"
    except ObjectMissing as exc:
        return records.CopyState.MISSING, exc.message
    except RemoteError as exc:
        return records.CopyState.BAD, exc.message
    except sealing.Unsealable as exc:
        return records.CopyState.BAD, exc.message
    return records.CopyState.OK, None


def download(tier: Remote, key: str, sha: str, dest: Path) -> None:
    """Streams ``key`` to ``dest``: unsealed and hashed as it arrives into a private ``.part`` file,
    compared with ``sha``, then renamed. One request, bounded memory, no second pass over the file."""
    files.private_dir(dest.parent, what="snapshot directory")
    part = dest.with_name(f".{dest.name}.part")
    try:
        digest = hashlib.sha256()
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out, tier.store.opened(key) as source:
            for piece in _plain(tier, source, f"s3 object {key}"):
                digest.update(piece)
                out.write(piece)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != sha:
            raise RemoteError(f"{key} does not match its sha256")
        files.replace_durably(part, dest)
    finally:
        part.unlink(missing_ok=True)


def pull(tier: Remote, record: records.SnapshotRecord, dest: dict[str, Path]) -> None:
    """Downloads the named files (``ID.db``, ``ID.tar.gz`` -> local path), each checked."""
    names = record.file_sha256s()
    for name, path in dest.items():
        download(tier, _object(tier, name, names[name]), names[name], path)


def delete(tier: Remote, record: records.SnapshotRecord) -> None:
    names = list(record.local_files())
    # The description first: an import never finds a snapshot whose files are going.
    tier.store.delete([f"{tier.folder}{record.id}.json"])
    tier.store.delete([tier.object_key(n) for n in names] + [f"{tier.folder}{n}" for n in names])


@dataclass(frozen=True)
class Described:
    """A snapshot found in the bucket: its record fields and where its objects are. ``refused`` says why
    it must not be imported (nothing else of it is then to be trusted, its id included)."""

    name: str  # the id its object key gives: the only id an import uses
    fields: dict[str, Any]
    key_id: str | None
    refused: str | None = None

    @property
    def id(self) -> str:
        return self.name


def snapshot_id_pattern(cluster: str) -> re.Pattern[str]:
    """The ids upgrader gives a cluster's snapshots: ``CLUSTER-YYYYMMDDTHHMMSSZ-xxxx``."""
    return re.compile(rf"{re.escape(cluster)}-\d{{8}}T\d{{6}}Z-[0-9a-f]{{4}}")


def _judge(tier: Remote, name: str, body: Any) -> Described | None:
    """What one description says, or None when it is not one of this cluster's snapshots at all."""
    if not isinstance(body, dict) or body.get("format") != FORMAT or not isinstance(body.get("snapshot"), dict):
        return None
    fields = dict(body["snapshot"])
    if fields.get("cluster") != tier.cluster:
        return None
    encryption: dict[str, Any] = body["encryption"] if isinstance(body.get("encryption"), dict) else {}
    key_id = str(encryption.get("key_id")) if encryption.get("key_id") else None
    refused = _refusal(tier, name, fields, body, key_id)
    return Described(name, {} if refused else fields, key_id, refused)


def _refusal(
    tier: Remote, name: str, fields: Mapping[str, Any], body: Mapping[str, Any], key_id: str | None
) -> str | None:
    refused = None
    if not snapshot_id_pattern(tier.cluster).fullmatch(name):
        refused = f"{name[:80]!r}.json: not a snapshot id upgrader gives cluster {tier.cluster}"
    elif fields.get("id") != name:
        refused = f"{name}.json describes snapshot {str(fields.get('id'))[:80]!r}, not {name}"
    elif tier.key is None:
        refused = None
    elif key_id and key_id != tier.key.fingerprint:
        refused = f"sealed with another key (key id {key_id[:16]})"
    elif not isinstance(body.get("mac"), str):
        refused = (
            "its description carries no authentication (written before upgrader signed them, or forged): "
            "push it again from a controller that has it"
        )
    elif not tier.key.verify(_canonical(body), body["mac"]):
        refused = "its description does not authenticate with this key: changed or forged"
    return refused


def described(tier: Remote) -> list[Described]:
    """Every snapshot of this cluster whose description is in the bucket, newest first; one whose
    description cannot be trusted is listed with why (``refused``), never with what it claims."""
    tier.store.check()
    found = []
    for key in tier.store.keys(tier.folder):
        name = key[len(tier.folder) :]
        if not name.endswith(".json") or "/" in name:
            continue
        try:
            body = json.loads(tier.store.read(key))
        except (ValueError, RecursionError):
            continue
        item = _judge(tier, name.removesuffix(".json"), body)
        if item is not None:
            found.append(item)
    return sorted(found, key=lambda d: str(d.fields.get("created_at", "")), reverse=True)
