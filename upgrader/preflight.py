"""Checks that run before anything touches a cluster: the cluster config and its inventory.

``check_config`` loads ``cluster.yaml`` (every schema and file problem at once) and then reads the
inventory it names the way Ansible will, checking the groups upgrader drives (Kubespray's names)
and that every host is a valid node name. All problems come back together in one ``ConfigError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from upgrader import config, errors, names
from upgrader.executor import inventory

REQUIRED_GROUPS = ("kube_control_plane", "kube_node", "etcd")


@dataclass(frozen=True)
class ConfigReport:
    config: config.ClusterConfig
    groups: dict[str, tuple[str, ...]]
    warnings: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": True,
            "cluster": config.describe(self.config),
            "groups": {g: list(self.groups[g]) for g in REQUIRED_GROUPS},
            "warnings": list(self.warnings),
            "problems": [],
        }


def check_config(path: Path) -> ConfigReport:
    cfg = config.load(path)
    inv = inventory.load(cfg.inventory)
    problems: list[str] = []
    warnings: list[str] = []
    for group in REQUIRED_GROUPS:
        if not inv.hosts(group):
            problems.append(f"{cfg.inventory}: group {group!r} is missing or has no hosts")
    for host in sorted({h for hosts in inv.groups.values() for h in hosts}):
        if not names.is_node_name(host):
            problems.append(f"{cfg.inventory}: host {host[:80]!r} is not a valid Kubernetes node name")
    etcd_hosts = inv.hosts("etcd")
    if etcd_hosts and len(etcd_hosts) != len(cfg.etcd.endpoints):
        warnings.append(
            f"the inventory has {len(etcd_hosts)} etcd hosts but the config lists "
            f"{len(cfg.etcd.endpoints)} etcd endpoints"
        )
    if len(etcd_hosts) % 2 == 0 and etcd_hosts:
        warnings.append(f"{len(etcd_hosts)} etcd members: an even count tolerates no more failures than one fewer")
    if problems:
        noun = "problem" if len(problems) == 1 else "problems"
        raise errors.ConfigError(f"{cfg.inventory}: {len(problems)} {noun} in the inventory", tuple(problems))
    groups = {g: inv.hosts(g) for g in REQUIRED_GROUPS}
    return ConfigReport(config=cfg, groups=groups, warnings=tuple(warnings))
