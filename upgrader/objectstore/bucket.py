"""An S3-compatible bucket (AWS S3, MinIO, Ceph RGW) through boto3: the only module that imports it.

Credentials come from boto3's standard chain (environment, shared profile, instance role) and never
pass through upgrader: they are not in ``cluster.yaml``, the database, the logs or the events. Every
boto3 and botocore failure comes out as ``BucketError``, one line naming the bucket and what went
wrong, never the credentials.
"""

from __future__ import annotations

import contextlib
import io
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

from upgrader import errors

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

PART = 8 * 2**20
# Bounded memory: a non-seekable upload holds about max_concurrency parts at once.
TRANSFER = TransferConfig(multipart_threshold=PART, multipart_chunksize=PART, max_concurrency=4, use_threads=True)
READ = 2**20


class BucketError(errors.OperationFailed):
    """The object store refused or could not be reached."""


@dataclass(frozen=True)
class Place:
    bucket: str
    endpoint: str | None = None
    region: str | None = None

    def describe(self) -> str:
        return f"s3://{self.bucket}" + (f" at {self.endpoint}" if self.endpoint else "")


_WHY = {
    "NoSuchBucket": "the bucket does not exist",
    "InvalidAccessKeyId": "the credentials were refused (unknown access key)",
    "SignatureDoesNotMatch": "the credentials were refused (wrong secret key)",
    "AccessDenied": "access denied",
    "NoSuchKey": "no such object",
    "404": "no such object",
    "403": "access denied",
}


class Bucket:
    def __init__(self, place: Place) -> None:
        self.place = place
        self._client: S3Client | None = None

    @property
    def client(self) -> S3Client:
        if self._client is None:
            session = boto3.session.Session()
            self._client = session.client(
                "s3",
                endpoint_url=self.place.endpoint,
                region_name=self.place.region,
                config=Config(
                    retries={"max_attempts": 3, "mode": "standard"},
                    connect_timeout=5,
                    read_timeout=60,
                    s3={"addressing_style": "path"} if self.place.endpoint else None,
                ),
            )
        return self._client

    def _fail(self, what: str, exc: Exception) -> BucketError:
        if isinstance(exc, NoCredentialsError):
            why = "no credentials in the AWS chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, a role)"
        elif isinstance(exc, EndpointConnectionError):
            why = "the endpoint cannot be reached"
        elif isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            why = _WHY.get(code, code or "refused")
        else:
            why = type(exc).__name__
        return BucketError(f"{self.place.describe()}: {what}: {why}")

    def check(self) -> None:
        """The bucket exists and these credentials may use it."""
        try:
            self.client.head_bucket(Bucket=self.place.bucket)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchBucket"):
                raise BucketError(f"{self.place.describe()}: the bucket does not exist") from None
            raise self._fail("cannot use the bucket", exc) from None
        except BotoCoreError as exc:
            raise self._fail("cannot use the bucket", exc) from None

    def upload(self, key: str, source: BinaryIO, metadata: dict[str, str]) -> None:
        """Streams ``source`` to ``key`` (multipart when large), with ``metadata`` stored on the object."""
        try:
            self.client.upload_fileobj(
                source, self.place.bucket, key, ExtraArgs={"Metadata": metadata}, Config=TRANSFER
            )
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(f"uploading {key}", exc) from None

    def put(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> None:
        try:
            self.client.put_object(Bucket=self.place.bucket, Key=key, Body=data, Metadata=metadata or {})
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(f"writing {key}", exc) from None

    def metadata(self, key: str) -> dict[str, str] | None:
        """The object's metadata, or None when there is no such object."""
        try:
            head = self.client.head_object(Bucket=self.place.bucket, Key=key)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey"):
                return None
            raise self._fail(f"reading {key}", exc) from None
        except BotoCoreError as exc:
            raise self._fail(f"reading {key}", exc) from None
        return dict(head.get("Metadata", {}))

    def read(self, key: str) -> bytes:
        try:
            body = self.client.get_object(Bucket=self.place.bucket, Key=key)["Body"]
            return bytes(body.read())
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(f"reading {key}", exc) from None

    @contextlib.contextmanager
    def opened(self, key: str) -> Iterator[BinaryIO]:
        """The object as a stream read as it arrives (bounded memory); the caller reads it with ``read(n)``."""
        try:
            body = self.client.get_object(Bucket=self.place.bucket, Key=key)["Body"]
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(f"reading {key}", exc) from None
        try:
            yield typing.cast(BinaryIO, _Reading(self, key, body))
        finally:
            body.close()

    def download(self, key: str, dest: Path) -> None:
        """The object to ``dest`` (parallel ranged reads for a large one)."""
        try:
            self.client.download_file(self.place.bucket, key, str(dest), Config=TRANSFER)
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(f"downloading {key}", exc) from None

    def keys(self, prefix: str) -> list[str]:
        found: list[str] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.place.bucket, Prefix=prefix):
                found.extend(str(item["Key"]) for item in page.get("Contents", []))
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(f"listing {prefix or '/'}", exc) from None
        return found

    def delete(self, keys: list[str]) -> None:
        if not keys:
            return
        try:
            answer: Any = self.client.delete_objects(
                Bucket=self.place.bucket, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True}
            )
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("deleting objects", exc) from None
        if answer.get("Errors"):
            first = answer["Errors"][0]
            raise BucketError(f"{self.place.describe()}: deleting {first.get('Key')}: {first.get('Code')}")


class _Reading(io.RawIOBase):
    """A response body whose read errors come out as ``BucketError``."""

    def __init__(self, bucket: Bucket, key: str, body: Any) -> None:
        super().__init__()
        self._bucket, self._key, self._body = bucket, key, body

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        try:
            return bytes(self._body.read(size if size is not None and size >= 0 else None))
        except (BotoCoreError, ClientError) as exc:
            raise self._bucket._fail(f"reading {self._key}", exc) from None
