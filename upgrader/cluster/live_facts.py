"""Collects the planner's facts from a live cluster (``upgrader facts``, ``upgrader plan -c``).

- every control-plane node: its apiserver's ``/version`` (binary and emulated version), cross-checked
  with the mirror pod of its static manifest (image tag, ``--emulated-version``);
- every node: kubelet version, container runtime and readiness from the Node status, and the cgroup
  version and installed kubelet from the node itself (an Ansible playbook);
- etcd: each member's version (the oldest is the one that matters for the upgrade path) and the
  member list;
- APIs in use that a later release stops serving, from two sources: the
  ``apiserver_requested_deprecated_apis`` gauge of every apiserver (clients calling them), and the
  objects stored in etcd under such a version (objects a storage migration must rewrite first).

The result is the facts format ``plan --facts`` reads, plus ``warnings`` for whatever did not agree.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import yaml

from upgrader import errors
from upgrader.cluster import session
from upgrader.core.rules import catalog as catalog_mod
from upgrader.core.versions import Minor, Version
from upgrader.etcd import kv
from upgrader.executor import inventory, runner
from upgrader.kube import cluster as kube
from upgrader.support import units

_METRIC = re.compile(r"^apiserver_requested_deprecated_apis\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)", re.MULTILINE)
_LABEL = re.compile(r'(\w+)="([^"]*)"')
_VERSION = re.compile(r"v?(\d+\.\d+\.\d+)")
# etcd key prefixes where kube-apiserver stores a resource, where they differ from its plural name
_KEY_PREFIX = {"podsecuritypolicies": "podsecuritypolicy"}


@dataclass
class Collected:
    data: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {**self.data, "warnings": list(self.warnings)}


def _plain(version: str) -> str:
    match = _VERSION.search(version or "")
    return match.group(1) if match else version


def deprecated_from_metrics(text: str) -> set[tuple[str, str, str]]:
    """(group, version, resource) of every deprecated API requested, from a /metrics page."""
    found = set()
    for match in _METRIC.finditer(text):
        if float(match.group("value")) <= 0:
            continue
        labels = dict(_LABEL.findall(match.group("labels")))
        found.add((labels.get("group", ""), labels.get("version", ""), labels.get("resource", "")))
    return found


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


def _type_meta_api_version(chunk: bytes) -> str | None:
    at = 0
    while at < len(chunk):
        key, at = _varint(chunk, at)
        length, at = _varint(chunk, at)
        if key >> 3 == 1:
            return chunk[at : at + length].decode()
        at += length
    return None


def stored_api_version(value: bytes) -> str | None:
    r"""The apiVersion an object was stored with: JSON, or kube-apiserver's protobuf envelope
    (``k8s\0`` + runtime.Unknown whose field 1 is TypeMeta{apiVersion=1, kind=2})."""
    if value[:1] == b"{":
        match = re.search(rb'"apiVersion"\s*:\s*"([^"]+)"', value[:4096])
        return match.group(1).decode() if match else None
    if not value.startswith(b"k8s\x00"):
        return None
    data = value[4:]
    try:
        key, at = _varint(data, 0)
        if key != (1 << 3 | 2):  # field 1, length-delimited: the TypeMeta comes first
            return None
        length, at = _varint(data, at)
        return _type_meta_api_version(data[at : at + length])
    except (IndexError, UnicodeDecodeError):
        return None


def _stored_objects(store: kv.KV, after: Minor, catalog: catalog_mod.Catalog) -> list[dict[str, Any]]:
    """Objects stored in etcd at an API version some later release stops serving."""
    found = []
    for removed in catalog.removals_crossed(after, Minor(1, 99)):
        for resource in removed.resources:
            prefix = f"/registry/{_KEY_PREFIX.get(resource, resource)}/"
            count = sum(1 for item in store.range(prefix) if stored_api_version(item.value) == removed.group_version)
            if count:
                found.append(
                    {
                        "group": removed.group,
                        "version": removed.version,
                        "resource": resource,
                        "source": "stored",
                        "count": count,
                    }
                )
    return found


_NO_ROOT = ("sudo password", "password is required", "not in the sudoers", "privilege escalation", "become")


def _node_facts(cluster: session.ClusterSession) -> tuple[dict[str, dict[str, str]], list[str]]:
    result = cluster.playbook("node-facts.yml", timeout=300)
    failures = result.failures()
    if denied := [f for f in failures if any(word in f.lower() for word in _NO_ROOT)]:
        # the login works but cannot become root: nothing upgrader does on that node could succeed
        raise errors.ExecutorError(
            f"{denied[0]}: upgrader's playbooks need root there (ansible.become, or ansible_become and a "
            "sudo rule in the inventory's hosts); nothing was changed"
        )
    warnings = [f"node facts: {f}" for f in failures]
    if result.status is not runner.Status.SUCCESSFUL and not result.tasks:
        raise errors.ExecutorError(f"the node-facts playbook {result.status.value} (rc {result.rc})")
    per_host: dict[str, dict[str, str]] = {}
    disagree: list[str] = []
    control_plane = set(cluster.inventory.hosts("kube_control_plane"))
    for host, res in result.by_host("upgrader: node facts").items():
        lines = dict(line.strip().split("=", 1) for line in str(res.get("stdout", "")).splitlines() if "=" in line)
        found = per_host.setdefault(host, {})
        if lines.get("cgroup") in ("v1", "v2"):
            found["cgroup"] = lines["cgroup"]
        if lines.get("kubelet"):
            found["installed_kubelet"] = _plain(lines["kubelet"])
        if lines.get("uid", "0").strip() not in ("0", ""):
            disagree.append(
                f"{host}: upgrader's playbooks run there as uid {lines['uid'].strip()}, not root, and kubeadm refuses "
                "a non-root user: set ansible.become: true (or ansible_become in the inventory); nothing was changed"
            )
        if problem := unit_disagrees(host, lines.get("bin", ""), lines.get("execstart")):
            disagree.append(problem)
        if host in control_plane and (problem := patches_problem(host, cluster.cfg.upgrade.kubeadm_patches, lines)):
            disagree.append(problem)
    if disagree:
        more = f" (and {len(disagree) - 1} more)" if len(disagree) > 1 else ""
        raise NodeSetupMismatch(disagree[0] + more)
    return per_host, warnings


def patches_problem(host: str, configured: str | None, lines: Mapping[str, str]) -> str | None:
    """A control-plane node whose kubeadm patches would be lost or cannot be found, or None."""
    if configured and lines.get("patches") == "missing":
        return f"{host}: upgrade.kubeadm_patches is {configured}, which {host} does not have; nothing was changed"
    found = lines.get("default_patches", "0").strip()
    if not configured and found.isdigit() and int(found) > 0:
        return (
            f"{host} has kubeadm patches in /etc/kubernetes/patches ({found} files) that upgrade.kubeadm_patches "
            "does not name: `kubeadm upgrade` would drop them; set upgrade.kubeadm_patches: /etc/kubernetes/patches"
        )
    return None


class NodeSetupMismatch(errors.InputError):
    """A node is not set up as cluster.yaml says (the kubelet unit runs another binary than the one
    upgrader would install; kubeadm patches unnamed or missing): nothing is changed."""


def unit_disagrees(host: str, bin_dir: str, last_exec_start: str | None) -> str | None:
    """Why ``host``'s kubelet unit and the bin_dir upgrader installs into disagree, or None.
    ``last_exec_start`` is the value of the unit's last ``ExecStart=`` line (None: no unit could be
    read, so there is nothing to compare)."""
    if not bin_dir or last_exec_start is None:
        return None
    runs = units.exec_start(f"ExecStart={last_exec_start}")
    if runs is None or runs == f"{bin_dir.rstrip('/')}/kubelet":
        return None
    return (
        f"{host}: the kubelet unit runs {runs}, but upgrader would install the kubelet into {bin_dir}: set "
        f"packages.bin_dir (or the inventory's bin_dir) to {runs.rpartition('/')[0] or '/'}; nothing was changed"
    )


def installed_kubelets(cluster: session.ClusterSession) -> dict[str, Version | None]:
    """Each node's own answer to ``kubelet --version`` (None where it gave none). After an etcd restore the
    Node objects say what the snapshot said until each kubelet posts its status again: this does not."""
    per_host, _ = _node_facts(cluster)
    out: dict[str, Version | None] = {}
    for host in dict.fromkeys(cluster.inventory.hosts("kube_control_plane") + cluster.inventory.hosts("kube_node")):
        text = per_host.get(host, {}).get("installed_kubelet")
        try:
            out[host] = Version.parse(text) if text else None
        except errors.InputError:
            out[host] = None
    return out


def _apiservers(api: kube.Cluster, warnings: list[str]) -> tuple[list[dict[str, Any]], set[tuple[str, str, str]]]:
    """Each apiserver's live version and emulation, checked against its manifest; the deprecated APIs requested."""
    servers = api.apiservers()
    if not servers:
        raise errors.OperationFailed("no kube-apiserver mirror pods in kube-system: is this a kubeadm cluster?")
    metrics: set[tuple[str, str, str]] = set()
    members: list[dict[str, Any]] = []
    for server in servers:
        member: dict[str, Any] = {"name": server.node, "manifest_version": _plain(server.image_tag)}
        try:
            live = api.version(server.endpoint)
            member["apiserver"] = _plain(live.git_version)
            # /version names the emulation only from 1.33: before, the flag in its manifest says it
            member["emulated"] = live.emulation or server.emulated_flag or ".".join(member["apiserver"].split(".")[:2])
            metrics |= deprecated_from_metrics(api.metrics(server.endpoint))
        except kube.KubeUnavailable as exc:
            warnings.append(f"apiserver on {server.node} did not answer ({exc}); using its manifest's version")
            member["apiserver"] = member["manifest_version"]
            member["emulated"] = server.emulated_flag or ".".join(member["apiserver"].split(".")[:2])
        if member["apiserver"] != member["manifest_version"]:
            warnings.append(
                f"apiserver on {server.node} runs v{member['apiserver']} but its manifest says "
                f"v{member['manifest_version']}: it has not restarted on the new manifest yet"
            )
        if server.emulated_flag and member.get("emulated") != server.emulated_flag:
            warnings.append(
                f"apiserver on {server.node} emulates {member.get('emulated')} but its manifest "
                f"says --emulated-version={server.emulated_flag}"
            )
        members.append(member)
    return members, metrics


def _node_entry(name: str, node: kube.NodeInfo | None, extra: dict[str, str], warnings: list[str]) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name}
    if node is None:
        warnings.append(f"node {name} has no Node object")
        return entry
    entry.update(
        kubelet=_plain(node.kubelet), container_runtime=node.runtime, ready=node.ready, unschedulable=node.unschedulable
    )
    if "cgroup" in extra:
        entry["cgroup"] = extra["cgroup"]
    installed = extra.get("installed_kubelet")
    if installed and installed != entry["kubelet"]:
        warnings.append(
            f"{name}: kubelet {installed} is installed but v{entry['kubelet']} is running (restart the kubelet)"
        )
    return entry


def _etcd(
    cluster: session.ClusterSession, oldest: Minor, catalog: catalog_mod.Catalog, warnings: list[str]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """etcd's oldest member version and its members, and objects stored at soon-removed API versions."""
    store = cluster.etcd
    members = store.members()
    versions = []
    for endpoint in cluster.cfg.etcd.endpoints:
        try:
            versions.append(Version.parse(store.status_of(endpoint)[0]))
        except errors.UpgraderError as exc:
            warnings.append(f"etcd at {endpoint}: {exc}")
    if not versions:
        raise kv.EtcdUnavailable("no etcd endpoint answered")
    stored = _stored_objects(store, oldest, catalog)
    etcd = {
        "version": str(min(versions)),
        "members": [
            {"name": m.name, "peer_urls": list(m.peer_urls), "client_urls": list(m.client_urls)} for m in members
        ],
    }
    return etcd, stored


def _etcd_setup(cluster_configuration: str | None, pods: list[Any]) -> dict[str, Any]:
    """How etcd runs, for the planner: ``external`` (kubeadm's ``etcd.external``), ``image_tag`` (an
    ``etcd.local.imageTag`` override, which kubeadm writes at every hop), ``v2_enabled`` (members
    started with ``--enable-v2``). Only what is set, as the facts format has it."""
    config: dict[str, Any] = {}
    if cluster_configuration:
        try:
            loaded = yaml.safe_load(cluster_configuration)
        except yaml.YAMLError as exc:
            raise errors.OperationFailed(f"kubeadm-config: ClusterConfiguration is not YAML: {exc}") from None
        config = loaded if isinstance(loaded, dict) else {}
    etcd = config.get("etcd")
    etcd = etcd if isinstance(etcd, dict) else {}
    out: dict[str, Any] = {}
    if etcd.get("external"):
        out["external"] = True
    local = etcd.get("local")
    local = local if isinstance(local, dict) else {}
    if local.get("imageTag"):
        out["image_tag"] = str(local["imageTag"])
    v2 = [pod.node for pod in pods if pod.enable_v2]
    if v2:
        out["v2_enabled"] = v2
    return out


def _etcd_hosts(inv: inventory.Inventory, members: list[dict[str, Any]], warnings: list[str]) -> list[dict[str, str]]:
    """Each etcd host with its member's name: the inventory's ``etcd_member_name`` (what Kubespray writes
    as ETCD_NAME), else the host's own name. Kubespray's fallback numbers members by the inventory's
    order (etcd1, etcd2, ...), which upgrader does not read: a host whose member is not found is named."""
    names = {m["name"] for m in members}
    out = []
    for host in inv.hosts("etcd"):
        member = inv.etcd_member_names.get(host, host)
        if member not in names:
            warnings.append(
                f"etcd host {host}: no etcd member is named {member}; set etcd_member_name for it in the inventory "
                "(an etcd step cannot find its member otherwise)"
            )
        out.append({"host": host, "member": member})
    return out


def collect(
    cluster: session.ClusterSession, *, with_nodes: bool = True, catalog: catalog_mod.Catalog | None = None
) -> Collected:
    """Everything the planner needs, read from the live cluster; nothing is changed. ``catalog`` (the
    shipped one by default) says which API versions later releases stop serving."""
    collected = Collected(data={"cluster": cluster.name})
    warnings = collected.warnings
    api_warnings: list[str] = []
    # The API reads go on in a thread while the node-facts playbook runs here (a playbook cancels
    # through signal handlers, which only the main thread can install).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="api-facts") as pool:
        reading = pool.submit(
            lambda: ({n.name: n for n in cluster.api.nodes()}, _apiservers(cluster.api, api_warnings))
        )
        node_facts, node_warnings = _node_facts(cluster) if with_nodes else ({}, [])
        nodes, (members, metrics) = reading.result()
    warnings.extend(api_warnings + node_warnings)
    names = [m["name"] for m in members]
    collected.data["control_plane"] = [
        {**m, **_node_entry(m["name"], nodes.get(m["name"]), node_facts.get(m["name"], {}), warnings)} for m in members
    ]
    collected.data["nodes"] = [
        _node_entry(name, node, node_facts.get(name, {}), warnings) for name, node in nodes.items() if name not in names
    ]
    oldest = min(Minor.parse(m["emulated"]) for m in members)
    collected.data["etcd"], stored = _etcd(cluster, oldest, catalog or catalog_mod.load(), warnings)
    collected.data["etcd"].update(_etcd_setup(cluster.api.cluster_configuration(), cluster.api.etcd_pods()))
    if collected.data["etcd"].get("external"):  # where an etcd step would move it: the inventory's etcd hosts
        collected.data["etcd"]["hosts"] = _etcd_hosts(cluster.inventory, collected.data["etcd"]["members"], warnings)
    apis = [{"group": g, "version": v, "resource": r, "source": "metric"} for g, v, r in sorted(metrics)]
    collected.data["apis_in_use"] = apis + stored
    return collected
