"""A real S3-compatible server on loopback for the object-store tier: moto's standalone server, run as
its own process, started and stopped by pid. Not a mock of boto3: upgrader's client speaks HTTP to it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# Test credentials for the AWS chain (moto accepts any); never a real account's.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIAUPGRADERTEST0001",
    "AWS_SECRET_ACCESS_KEY": "upgrader-test-secret-never-printed",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Server:
    endpoint: str
    pid: int

    def create_bucket(self, name: str) -> None:
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint, **_client_credentials()).create_bucket(Bucket=name)

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, **_client_credentials())


def _client_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": CREDENTIALS["AWS_DEFAULT_REGION"],
    }


@contextmanager
def running(log: Path, *, authenticate: bool = False) -> Iterator[Server]:
    """The server, by pid; with ``authenticate`` it checks every request's credentials against its own
    (empty) IAM, so any key is refused as a real store refuses an unknown one."""
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **CREDENTIALS, **({"INITIAL_NO_AUTH_ACTION_COUNT": "0"} if authenticate else {})},
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start: {log.read_text()[-500:]}") from None
                time.sleep(0.2)
        yield Server(endpoint, process.pid)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
