"""A small HTTPS client for the lab's own components (kubelets, controllers, lab control).

It speaks to the apiserver stand-ins the way a kubelet does: client certificate from a kubeconfig,
the cluster CA, JSON bodies. Lab internals use it instead of the Kubernetes client so the supervisor
stays light; upgrader itself talks to the lab through the real client.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import ssl
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class Client:
    """HTTPS to one server URL with a kubeconfig's client certificate."""

    def __init__(self, kubeconfig: Path, *, server: str | None = None, timeout: float = 5.0) -> None:
        config = yaml.safe_load(kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        user = config["users"][0]["user"]
        self.server = (server or cluster["server"]).rstrip("/")
        self.timeout = timeout
        self.context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        self.context.load_verify_locations(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
        # ssl wants the client certificate and key as files: private temporary ones, removed at once.
        with tempfile.TemporaryDirectory(prefix="upgrader-lab-tls-") as tmp:
            cert, key = Path(tmp) / "client.crt", Path(tmp) / "client.key"
            cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
            fd = os.open(key, os.O_WRONLY | os.O_CREAT, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(base64.b64decode(user["client-key-data"]))
            self.context.load_cert_chain(cert, key)

    def at(self, server: str, *, timeout: float | None = None) -> Client:
        """The same credentials and TLS context, aimed at another server (no kubeconfig re-read)."""
        other = copy.copy(self)
        other.server = server.rstrip("/")
        if timeout is not None:
            other.timeout = timeout
        return other

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> Response:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        # https only: the server URL comes from the lab's own kubeconfig
        request = urllib.request.Request(f"{self.server}{path}", data=data, method=method)  # noqa: S310
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", content_type)
        try:
            # https only: the server URL comes from the lab's own kubeconfig
            with urllib.request.urlopen(request, context=self.context, timeout=timeout or self.timeout) as reply:  # noqa: S310  # noqa: S310
                return Response(reply.status, reply.read())
        except urllib.error.HTTPError as exc:
            return Response(exc.code, exc.read())

    def get(self, path: str, **kwargs: Any) -> Response:
        return self.request("GET", path, **kwargs)
