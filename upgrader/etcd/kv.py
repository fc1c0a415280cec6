"""A key-value client for etcd with the few operations upgrader and the lab need.

Writes that must not lose a concurrent update use compare-and-swap on the key's mod revision, the way
kube-apiserver's etcd3 store does, so a resourceVersion is an etcd revision. grpc and etcd3
exceptions are converted here and never leave this module.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import etcd3
import etcd3.exceptions
import grpc

from upgrader import errors
from upgrader.core import config

# A fixed 4 MiB HTTP/2 window: large enough for full speed, and bounded. grpc's bandwidth-delay probe
# would otherwise keep growing it while data arrives fast, and a snapshot stream then buffers more and
# more in memory whenever the disk is slower than the network.
GRPC_OPTIONS = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 4 * 1024 * 1024)]
ROUNDS = 2
RETRY_PAUSE = 0.3


class EtcdUnavailable(errors.OperationFailed):
    """No etcd endpoint answered, or the one asked refused the request."""


class Conflict(errors.OperationFailed):
    """A compare-and-swap failed: the key changed (or exists, or is gone) since it was read."""


class NoSpace(errors.OperationFailed):
    """etcd refuses writes: its NOSPACE alarm is raised (database space exceeded)."""


@dataclass(frozen=True)
class Target:
    """Where etcd is and how to authenticate to it."""

    endpoints: tuple[str, ...]
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    timeout: float = 5.0


def target(settings: config.EtcdSettings, *, timeout: float = 5.0) -> Target:
    """The etcd a cluster config names, with its TLS material."""
    return Target(
        endpoints=tuple(settings.endpoints), ca=settings.ca, cert=settings.cert, key=settings.key, timeout=timeout
    )


@dataclass(frozen=True)
class Item:
    key: str
    value: bytes
    mod_revision: int
    create_revision: int


@dataclass(frozen=True)
class Member:
    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]


@dataclass(frozen=True)
class MemberStatus:
    version: str
    leader: str | None  # the leader's name, None while the member sees none
    revision: int  # the revision this member has applied


_CONVERTED: tuple[type[BaseException], ...] = (etcd3.exceptions.Etcd3Exception, grpc.RpcError, ValueError)


def _convert(exc: BaseException, endpoint: str) -> errors.UpgraderError:
    text = str(exc)
    if isinstance(exc, grpc.RpcError):
        details = getattr(exc, "details", None)
        code = getattr(exc, "code", None)
        text = str((details() if callable(details) else None) or (code() if callable(code) else exc))
    if "database space exceeded" in text or "NOSPACE" in text:
        return NoSpace(f"etcd at {endpoint} refuses writes: database space exceeded (NOSPACE alarm)")
    return EtcdUnavailable(f"etcd at {endpoint} is unavailable: {text.splitlines()[0] if text else type(exc).__name__}")


def _count_every_key(client: Any, *, revision: int) -> Any:
    """A count-only range over every key, at ``revision`` (0: now); the raw response."""
    from etcd3 import etcdrpc

    request = etcdrpc.RangeRequest(key=b"\0", range_end=b"\0", count_only=True, revision=revision)
    return client.kvstub.Range(request, client.timeout, credentials=client.call_credentials, metadata=client.metadata)


class KV:
    """A client for one cluster; tries each endpoint in order until one answers."""

    def __init__(self, target: Target) -> None:
        if not target.endpoints:
            raise errors.UsageError("no etcd endpoints given")
        self.target = target
        self._clients: dict[str, Any] = {}
        self._current = 0

    def client_for(self, endpoint: str) -> Any:
        """The etcd3 client for one endpoint (for modules of this package only)."""
        return self._client(endpoint)

    def status_of(self, endpoint: str) -> tuple[str, str | None]:
        """(version, leader name) as one endpoint sees it; raises ``EtcdUnavailable`` if it does not answer."""
        status = self.member_status(endpoint)
        return status.version, status.leader

    def member_status(self, endpoint: str) -> MemberStatus:
        """One member's own status (``etcdctl endpoint status``): the version it runs, the leader it
        follows, and the revision it has applied; raises ``EtcdUnavailable`` if it does not answer."""
        from etcd3 import etcdrpc

        try:
            client = self._client(endpoint)
            response = client.maintenancestub.Status(
                etcdrpc.StatusRequest(), client.timeout, credentials=client.call_credentials, metadata=client.metadata
            )
            leader = (
                next((m.name for m in client.members if m.id == response.leader), None) if response.leader else None
            )
        except _CONVERTED as exc:
            self._forget(endpoint)
            raise _convert(exc, endpoint) from exc
        return MemberStatus(str(response.version), str(leader) if leader else None, int(response.header.revision))

    def _client(self, endpoint: str) -> Any:
        client = self._clients.get(endpoint)
        if client is None:
            parts = urlsplit(endpoint)
            tls = parts.scheme == "https"
            client = etcd3.client(
                host=parts.hostname,
                port=parts.port or 2379,
                ca_cert=str(self.target.ca) if tls and self.target.ca else None,
                cert_key=str(self.target.key) if tls and self.target.key else None,
                cert_cert=str(self.target.cert) if tls and self.target.cert else None,
                timeout=self.target.timeout,
                grpc_options=GRPC_OPTIONS,
            )
            self._clients[endpoint] = client
        return client

    def _endpoints(self) -> Iterator[str]:
        count = len(self.target.endpoints)
        for i in range(count):
            yield self.target.endpoints[(self._current + i) % count]

    def _call(self, operation: str, call: Any) -> Any:
        """Runs ``call`` on the first endpoint that answers; a second round after a short pause rides
        out a member that is restarting (etcd's own Go client retries transient errors too)."""
        last: errors.UpgraderError | None = None
        for attempt in range(ROUNDS):
            if attempt:
                time.sleep(RETRY_PAUSE)
            for endpoint in self._endpoints():
                try:
                    result = call(self._client(endpoint))
                except _CONVERTED as exc:
                    converted = _convert(exc, endpoint)
                    if isinstance(converted, NoSpace):
                        raise converted from exc
                    # A grpc channel that failed backs off for up to two minutes before it retries:
                    # drop it, so the next call reconnects as soon as the member is back.
                    self._forget(endpoint)
                    last = converted
                    continue
                self._current = self.target.endpoints.index(endpoint)
                return result
        assert last is not None
        raise EtcdUnavailable(f"etcd {operation} failed on every endpoint; last: {last}") from last

    def _forget(self, endpoint: str) -> None:
        client = self._clients.pop(endpoint, None)
        if client is not None:
            with contextlib.suppress(*_CONVERTED):
                client.close()

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    # -- keys ----------------------------------------------------------------------------------

    def get(self, key: str) -> Item | None:
        value, meta = self._call("get", lambda c: c.get(key))
        if value is None:
            return None
        return Item(key, value, meta.mod_revision, meta.create_revision)

    def range(self, prefix: str) -> list[Item]:
        results = self._call("range", lambda c: list(c.get_prefix(prefix, sort_order="ascend")))
        return [Item(m.key.decode(), v, m.mod_revision, m.create_revision) for v, m in results]

    def create(self, key: str, value: bytes) -> Item:
        """Writes ``key`` only if it does not exist; raises ``Conflict`` if it does."""

        def txn(c: Any) -> bool:
            ok, _ = c.transaction(
                compare=[c.transactions.version(key) == 0], success=[c.transactions.put(key, value)], failure=[]
            )
            return bool(ok)

        if not self._call("create", txn):
            raise Conflict(f"{key} already exists")
        return self._written(key)

    def update(self, key: str, value: bytes, *, mod_revision: int) -> Item:
        """Writes ``key`` only if it was last modified at ``mod_revision``."""

        def txn(c: Any) -> bool:
            ok, _ = c.transaction(
                compare=[c.transactions.mod(key) == mod_revision], success=[c.transactions.put(key, value)], failure=[]
            )
            return bool(ok)

        if not self._call("update", txn):
            raise Conflict(f"{key} was modified since revision {mod_revision}")
        return self._written(key)

    def put(self, key: str, value: bytes) -> Item:
        self._call("put", lambda c: c.put(key, value))
        return self._written(key)

    def write(self, key: str, value: bytes) -> None:
        """One put, not read back (a retried put writes twice: two revisions, never a lost one)."""
        self._call("put", lambda c: c.put(key, value))

    def delete(self, key: str, *, mod_revision: int | None = None) -> bool:
        """Deletes ``key`` (only if unchanged since ``mod_revision``, when given); False if absent."""
        if mod_revision is None:
            return bool(self._call("delete", lambda c: c.delete(key)))

        def txn(c: Any) -> bool:
            ok, _ = c.transaction(
                compare=[c.transactions.mod(key) == mod_revision], success=[c.transactions.delete(key)], failure=[]
            )
            return bool(ok)

        if not self._call("delete", txn):
            raise Conflict(f"{key} was modified since revision {mod_revision}")
        return True

    def _written(self, key: str) -> Item:
        item = self.get(key)
        if item is None:
            raise Conflict(f"{key} was deleted right after it was written")
        return item

    # -- cluster -------------------------------------------------------------------------------

    def revision(self) -> int:
        """The cluster's current revision (from a read's response header)."""
        response = self._call("range", lambda c: c.get_response("\0"))
        return int(response.header.revision)

    def keys_at(self, prefix: str, revision: int = 0, *, page: int = 10_000) -> list[str]:
        """Every key under ``prefix`` as it was at ``revision`` (0: now), names only and a page at a time
        (a real cluster has a hundred thousand), all pages read at one revision so they agree."""
        from etcd3 import etcdrpc

        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        found: list[str] = []
        start = prefix.encode()

        def read(c: Any) -> Any:
            request = etcdrpc.RangeRequest(
                key=start, range_end=end.encode(), keys_only=True, revision=revision, limit=page
            )
            return c.kvstub.Range(request, c.timeout, credentials=c.call_credentials, metadata=c.metadata)

        while True:
            response = self._call("range", read)
            revision = revision or int(response.header.revision)
            found.extend(kv.key.decode(errors="backslashreplace") for kv in response.kvs)
            if not response.more or not response.kvs:
                return found
            start = response.kvs[-1].key + b"\0"

    def key_count(self) -> tuple[int, int]:
        """(number of keys, revision) in one count-only read: no key or value is transferred."""
        response = self._call("count", lambda c: _count_every_key(c, revision=0))
        return int(response.count), int(response.header.revision)

    def compact(self, revision: int) -> None:
        """Compacts history up to ``revision``: a read or watch from an older revision is refused."""
        self._call("compact", lambda c: c.compact(revision, physical=True))

    def readable_at(self, revision: int) -> bool:
        """Whether a read at ``revision`` is still served (False: it has been compacted away)."""

        def read(c: Any) -> bool:
            try:
                _count_every_key(c, revision=revision)
            except grpc.RpcError as exc:
                if exc.code() is grpc.StatusCode.OUT_OF_RANGE:  # "required revision has been compacted"
                    return False
                raise
            return True

        return bool(self._call("read", read))

    def members(self) -> list[Member]:
        found = self._call("member list", lambda c: list(c.members))
        return [
            Member(id=m.id, name=m.name, peer_urls=tuple(m.peer_urls), client_urls=tuple(m.client_urls)) for m in found
        ]

    def leader(self) -> str | None:
        """The name of the current leader, or None when there is none (no quorum)."""
        status = self._call("status", lambda c: c.status())
        return str(status.leader.name) if status.leader is not None else None

    def raise_nospace_alarm(self, member_id: int = 0) -> None:
        self._call("alarm", lambda c: c.create_alarm(member_id=member_id))

    def disarm_alarms(self) -> None:
        self._call("alarm", lambda c: c.disarm_alarm())
