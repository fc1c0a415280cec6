"""What was observed of a cluster (the planner's input), parsed strictly from the facts format.

The same format comes from a file (``plan --facts``) or, later, from a live cluster. Every node
name is validated and every version parsed here, so a bad facts file fails with one line naming
the key (``nodes[2].kubelet: malformed version '1.29'``) and exit 2, before any rule runs.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from upgrader import errors
from upgrader.core.versions import Minor, Version
from upgrader.support import names

_API_VERSION = re.compile(r"^v\d+((alpha|beta)\d+)?$")
_RESOURCE = re.compile(r"^[a-z][a-z0-9]{0,62}$")
_RUNTIME = re.compile(r"^(?P<name>[a-z][a-z0-9.-]*)://v?(?P<version>\d+\.\d+\.\d+)")
_IMAGE_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")  # the OCI distribution spec's tag


class Cgroup(enum.StrEnum):
    V1 = "v1"
    V2 = "v2"


@dataclass(frozen=True)
class Runtime:
    """A node's container runtime as the kubelet reports it, e.g. ``containerd://1.7.22``."""

    raw: str
    name: str | None
    version: Version | None

    @classmethod
    def parse(cls, raw: str) -> Runtime:
        match = _RUNTIME.match(raw)
        if not match:
            return cls(raw=raw, name=None, version=None)
        return cls(raw=raw, name=match.group("name"), version=Version.parse(match.group("version")))


@dataclass(frozen=True)
class ControlPlaneMember:
    name: str
    apiserver: Version
    emulated: Minor  # the apiserver's own minor when not emulating


@dataclass(frozen=True)
class Node:
    """A node running a kubelet; control-plane nodes are nodes too."""

    name: str
    kubelet: Version
    control_plane: bool
    cgroup: Cgroup | None = None
    runtime: Runtime | None = None


@dataclass(frozen=True)
class ApiInUse:
    group: str
    version: str
    resource: str

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


@dataclass(frozen=True)
class EtcdSetup:
    """How etcd runs, which decides who moves it at a control-plane hop (see ``checks.etcd_route``).

    ``external``: kubeadm's ClusterConfiguration has ``etcd.external`` (or Kubespray runs etcd as a host
    service): kubeadm never moves it. ``image_tag``: ``etcd.local.imageTag`` in the ClusterConfiguration,
    which kubeadm writes into etcd.yaml at every hop instead of its own version. ``v2_enabled``: the
    members started with ``--enable-v2=true``, which etcd 3.6 no longer accepts. ``hosts``: an external
    etcd's hosts (the inventory's ``etcd`` group), each with its member's name (Kubespray's
    ``etcd_member_name``, else the host's name): where an etcd step moves it.
    """

    external: bool = False
    image_tag: str | None = None
    v2_enabled: tuple[str, ...] = ()
    hosts: tuple[tuple[str, str], ...] = ()  # (host, member name), in the inventory's order

    def member_of(self, host: str) -> str:
        """The etcd member on ``host``: a stacked member is named after its node."""
        return dict(self.hosts).get(host, host)


@dataclass(frozen=True)
class Facts:
    control_plane: tuple[ControlPlaneMember, ...]
    nodes: tuple[Node, ...]  # control-plane nodes first, in control-plane order, then the others
    etcd: Version | None
    apis_in_use: tuple[ApiInUse, ...]
    cluster: str | None = None
    etcd_setup: EtcdSetup = EtcdSetup()

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise errors.InputError(f"unknown node {name!r}")

    def as_mapping(self) -> dict[str, Any]:
        """The normalised facts format (versions as strings), for storing and hashing."""
        by_name = {n.name: n for n in self.nodes}
        out: dict[str, Any] = {
            "control_plane": [
                {
                    "name": m.name,
                    "apiserver": str(m.apiserver),
                    "emulated": str(m.emulated),
                    "kubelet": str(by_name[m.name].kubelet),
                    **_node_extras(by_name[m.name]),
                }
                for m in self.control_plane
            ],
            "nodes": [
                {"name": n.name, "kubelet": str(n.kubelet), **_node_extras(n)}
                for n in self.nodes
                if not n.control_plane
            ],
            "etcd": _etcd_mapping(self.etcd, self.etcd_setup),
            "apis_in_use": [{"group": a.group, "version": a.version, "resource": a.resource} for a in self.apis_in_use],
        }
        if self.cluster:
            out["cluster"] = self.cluster
        return out


def _etcd_mapping(version: Version | None, setup: EtcdSetup) -> dict[str, Any]:
    """Only what is set, so facts written before these keys existed keep their plan ids."""
    out: dict[str, Any] = {"version": str(version)} if version else {}
    if setup.external:
        out["external"] = True
    if setup.image_tag is not None:
        out["image_tag"] = setup.image_tag
    if setup.v2_enabled:
        out["v2_enabled"] = list(setup.v2_enabled)
    if setup.hosts:
        out["hosts"] = [{"host": host, "member": member} for host, member in setup.hosts]
    return out


def _node_extras(node: Node) -> dict[str, str]:
    extras: dict[str, str] = {}
    if node.cgroup is not None:
        extras["cgroup"] = node.cgroup.value
    if node.runtime is not None:
        extras["container_runtime"] = node.runtime.raw
    return extras


class _Reader:
    """Reads one JSON value with a path for error messages."""

    def __init__(self, value: Any, path: str) -> None:
        self.value = value
        self.path = path

    def fail(self, message: str) -> errors.InputError:
        return errors.InputError(f"facts: {self.path}: {message}" if self.path else f"facts: {message}")

    def mapping(self) -> Mapping[str, Any]:
        if not isinstance(self.value, Mapping):
            raise self.fail("expected an object")
        return self.value

    def key(self, name: str, *, required: bool = True) -> _Reader | None:
        data = self.mapping()
        path = f"{self.path}.{name}" if self.path else name
        if name not in data or data[name] is None:
            if required:
                raise errors.InputError(f"facts: {path}: required key is missing")
            return None
        return _Reader(data[name], path)

    def items(self) -> list[_Reader]:
        if not isinstance(self.value, Sequence) or isinstance(self.value, str):
            raise self.fail("expected a list")
        return [_Reader(item, f"{self.path}[{i}]") for i, item in enumerate(self.value)]

    def text(self) -> str:
        if not isinstance(self.value, str) or not self.value.strip():
            raise self.fail("expected a non-empty string")
        return self.value.strip()

    def version(self) -> Version:
        try:
            return Version.parse(self.text())
        except errors.InputError as exc:
            raise self.fail(str(exc)) from None

    def minor(self) -> Minor:
        try:
            return Minor.parse(self.text(), what="emulated version")
        except errors.InputError as exc:
            raise self.fail(str(exc)) from None

    def node_name(self) -> str:
        try:
            return names.node_name(self.text())
        except errors.InputError as exc:
            raise self.fail(str(exc)) from None

    def cluster_name(self) -> str:
        try:
            return names.cluster_name(self.text())
        except errors.InputError as exc:
            raise self.fail(str(exc)) from None

    def matching(self, pattern: re.Pattern[str], what: str) -> str:
        value = self.text()
        if not pattern.match(value):
            raise self.fail(f"{value[:40]!r} is not {what}")
        return value


def _required(reader: _Reader | None) -> _Reader:
    assert reader is not None  # key(required=True) never returns None
    return reader


def _node(reader: _Reader, *, control_plane: bool) -> Node:
    cgroup_reader = reader.key("cgroup", required=False)
    cgroup = None
    if cgroup_reader is not None:
        value = cgroup_reader.text()
        if value not in {c.value for c in Cgroup}:
            raise cgroup_reader.fail(f"expected 'v1' or 'v2', not {value[:20]!r}")
        cgroup = Cgroup(value)
    runtime_reader = reader.key("container_runtime", required=False)
    return Node(
        name=_required(reader.key("name")).node_name(),
        kubelet=_required(reader.key("kubelet")).version(),
        control_plane=control_plane,
        cgroup=cgroup,
        runtime=Runtime.parse(runtime_reader.text()) if runtime_reader is not None else None,
    )


def from_mapping(data: Any) -> Facts:
    """Parses the facts format; raises ``InputError`` naming the first bad key."""
    root = _Reader(data, "")
    root.mapping()
    members: list[ControlPlaneMember] = []
    nodes: list[Node] = []
    for item in _required(root.key("control_plane")).items():
        node = _node(item, control_plane=True)
        apiserver = _required(item.key("apiserver")).version()
        emulated_reader = item.key("emulated", required=False)
        emulated = emulated_reader.minor() if emulated_reader is not None else apiserver.minor_version
        if emulated > apiserver.minor_version:
            raise item.fail(f"emulated version {emulated} is newer than the apiserver binary {apiserver}")
        members.append(ControlPlaneMember(name=node.name, apiserver=apiserver, emulated=emulated))
        nodes.append(node)
    if not members:
        raise errors.InputError("facts: control_plane: at least one control-plane node is required")
    nodes_reader = root.key("nodes", required=False)
    for item in nodes_reader.items() if nodes_reader is not None else []:
        nodes.append(_node(item, control_plane=False))
    seen: set[str] = set()
    for node in nodes:
        if node.name in seen:
            raise errors.InputError(f"facts: node {node.name!r} is listed twice")
        seen.add(node.name)
    etcd_reader = root.key("etcd", required=False)
    etcd_version = etcd_reader.key("version", required=False) if etcd_reader is not None else None
    setup = _etcd_setup(etcd_reader) if etcd_reader is not None else EtcdSetup()
    apis: list[ApiInUse] = []
    apis_reader = root.key("apis_in_use", required=False)
    for item in apis_reader.items() if apis_reader is not None else []:
        group_reader = item.key("group", required=False)
        group = group_reader.value if group_reader is not None else ""
        if not isinstance(group, str) or (group.strip() and not names.is_node_name(group.strip())):
            raise item.fail("group must be an API group name ('' for the core group)")
        apis.append(
            ApiInUse(
                group=group.strip(),
                version=_required(item.key("version")).matching(_API_VERSION, "an API version like v1beta1"),
                resource=_required(item.key("resource")).matching(_RESOURCE, "a resource name like flowschemas"),
            )
        )
    cluster_reader = root.key("cluster", required=False)
    return Facts(
        control_plane=tuple(members),
        nodes=tuple(nodes),
        etcd=etcd_version.version() if etcd_version is not None else None,
        apis_in_use=tuple(apis),
        cluster=cluster_reader.cluster_name() if cluster_reader is not None else None,
        etcd_setup=setup,
    )


def _etcd_setup(reader: _Reader) -> EtcdSetup:
    external = reader.key("external", required=False)
    if external is not None and not isinstance(external.value, bool):
        raise external.fail("expected true or false")
    tag = reader.key("image_tag", required=False)
    v2 = reader.key("v2_enabled", required=False)
    hosts = reader.key("hosts", required=False)
    pairs: list[tuple[str, str]] = []
    for item in hosts.items() if hosts is not None else ():
        host, member = item.key("host"), item.key("member")
        assert host is not None and member is not None  # required keys
        pairs.append((host.node_name(), member.node_name()))
    if len({host for host, _ in pairs}) != len(pairs) or len({member for _, member in pairs}) != len(pairs):
        raise reader.fail("hosts: a host or a member is listed twice")
    return EtcdSetup(
        external=bool(external.value) if external is not None else False,
        image_tag=tag.matching(_IMAGE_TAG, "an image tag like 3.5.32-0") if tag is not None else None,
        v2_enabled=tuple(item.node_name() for item in v2.items()) if v2 is not None else (),
        hosts=tuple(pairs),
    )
