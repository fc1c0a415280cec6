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
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

from upgrader import errors

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

PART = 8 * 2**20  # S3 parts are at least 5 MiB, but the last
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
    "AccessDenied": "access denied (credentials without permission on the bucket, or wrong ones)",
    "NoSuchKey": "no such object",
    "404": "no such object",
    "403": "access denied (credentials without permission on the bucket, or wrong ones)",
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

    def upload(
        self,
        key: str,
        count: int,
        part: Callable[[int], io.RawIOBase],
        metadata: dict[str, str],
        *,
        concurrency: int = 4,
    ) -> None:
        """Sends parts 1 to ``count`` (``part(n)`` makes each body; every part but the last at least
        5 MiB) as one object: a single request for one part, else a multipart upload with at most
        ``concurrency`` parts in flight, aborted on any failure so that no stray parts remain."""
        if count == 1:
            try:
                self.client.put_object(Bucket=self.place.bucket, Key=key, Body=_io(part(1)), Metadata=metadata)
            except (BotoCoreError, ClientError) as exc:
                raise self._fail(f"uploading {key}", exc) from None
            return
        try:
            created = self.client.create_multipart_upload(Bucket=self.place.bucket, Key=key, Metadata=metadata)
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(f"uploading {key}", exc) from None
        upload_id = created["UploadId"]
        try:
            pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="s3-part")
            try:  # each body is made by the thread that sends it: only the parts in flight exist
                sending = [pool.submit(self._send_part, key, upload_id, n, part) for n in range(1, count + 1)]
                tags = [future.result() for future in sending]
            finally:  # on a failure or an interrupt, the parts not started are never sent
                pool.shutdown(wait=True, cancel_futures=True)
            self.client.complete_multipart_upload(
                Bucket=self.place.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": [{"ETag": tag, "PartNumber": n} for n, tag in enumerate(tags, start=1)]},
            )
        except BaseException as exc:
            with contextlib.suppress(BotoCoreError, ClientError):
                self.client.abort_multipart_upload(Bucket=self.place.bucket, Key=key, UploadId=upload_id)
            if isinstance(exc, BotoCoreError | ClientError):
                raise self._fail(f"uploading {key}", exc) from None
            raise

    def _send_part(self, key: str, upload_id: str, number: int, part: Callable[[int], io.RawIOBase]) -> str:
        answer = self.client.upload_part(
            Bucket=self.place.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=_io(part(number))
        )
        return str(answer["ETag"])

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


def _io(body: io.RawIOBase) -> BinaryIO:
    """A raw stream as the client's type for a body (it reads, seeks and tells)."""
    return typing.cast(BinaryIO, body)
