"""Checks that run before anything touches a cluster: the cluster config and its inventory.

``check_config`` loads ``cluster.yaml`` (every schema and file problem at once) and then reads the
inventory it names the way Ansible will, checking the groups upgrader drives (Kubespray's names)
and that every host is a valid node name. All problems come back together in one ``ConfigError``.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from pathlib import Path

from upgrader.cluster import session
from upgrader.core import config
from upgrader.executor import inventory
from upgrader.executor.inventory import GROUPS
from upgrader.support import files


@dataclass(frozen=True)
class ConfigReport:
    config: config.ClusterConfig
    groups: dict[str, tuple[str, ...]]
    warnings: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": True,
            "cluster": config.describe(self.config),
            "groups": {g: list(self.groups[g]) for g in GROUPS},
            "warnings": list(self.warnings),
            "problems": [],
        }


def _unprivileged(cfg: config.ClusterConfig, inv: inventory.Inventory) -> list[str]:
    """Hosts reached as a user other than root with nothing that becomes root: kubeadm refuses a
    non-root user (its IsPrivilegedUser preflight), and packages, systemctl and /var/lib/etcd need root."""
    if cfg.ansible.become:
        return []
    controller = getpass.getuser()
    lacking = []
    for host in inv.all_hosts():
        access = inv.access.get(host, inventory.Access())
        user = access.user or (controller if access.connection == "local" or access.user is None else None)
        if user != "root" and not access.become:
            lacking.append(f"{host} ({user})")
    if not lacking:
        return []
    shown = ", ".join(lacking[:3]) + (f" and {len(lacking) - 3} more" if len(lacking) > 3 else "")
    return [
        f"{shown}: logged in as a user other than root and nothing becomes root; kubeadm refuses a non-root "
        "user: set ansible.become: true, or ansible_become in the inventory"
    ]


def check_config(path: Path) -> ConfigReport:
    cfg = config.load(path)
    inv = inventory.load(cfg.inventory)  # checks the groups and host names, every problem at once
    warnings: list[str] = []
    etcd_hosts = inv.hosts("etcd")
    if etcd_hosts and len(etcd_hosts) != len(cfg.etcd.endpoints):
        warnings.append(
            f"the inventory has {len(etcd_hosts)} etcd hosts but the config lists "
            f"{len(cfg.etcd.endpoints)} etcd endpoints"
        )
    if not cfg.ansible.host_key_checking:
        warnings.append(
            "ansible.host_key_checking is off: a man in the middle could impersonate a node and feed "
            "forged manifests into a snapshot"
        )
    snapshots_dir = cfg.snapshots.dir
    if snapshots_dir.is_dir() and (why := files.not_private(snapshots_dir)):
        warnings.append(
            f"snapshots.dir {snapshots_dir} is not private ({why}): snapshots hold every Secret, so upgrader "
            "refuses to write them there and never changes the mode of a directory it did not create"
        )
    warnings += session.plain_transport(cfg)
    warnings += _unprivileged(cfg, inv)
    if len(etcd_hosts) % 2 == 0 and etcd_hosts:
        warnings.append(f"{len(etcd_hosts)} etcd members: an even count tolerates no more failures than one fewer")
    groups = {g: inv.hosts(g) for g in GROUPS}
    return ConfigReport(config=cfg, groups=groups, warnings=tuple(warnings))
