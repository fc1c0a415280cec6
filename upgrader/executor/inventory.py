"""Reads an Ansible inventory through ``ansible-inventory --list``, so every format Ansible accepts
(INI, YAML, directories, scripts, plugins) is read exactly as the playbooks will see it.

Only group membership and host names come back: host variables may hold passwords and keys and
are dropped here, before anything could log them. ``load`` is the one way to get an ``Inventory``
and it checks it first: the groups upgrader drives (Kubespray's names) have hosts, and every host
name is a valid Kubernetes node name. Playbooks use host names in paths on the controller
(``dest/{{ inventory_hostname }}/``), so a host called ``../../x`` must never reach one; the executor
takes only an ``Inventory``, so no playbook runs on an unchecked one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from upgrader import errors, names

TIMEOUT_SECONDS = 120
GROUPS = ("kube_control_plane", "kube_node", "etcd")  # Kubespray's names
REQUIRED_GROUPS = ("kube_control_plane", "etcd")  # kube_node may be empty: a cluster of control planes only


@dataclass(frozen=True)
class Inventory:
    source: Path
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # every host in each group, sorted

    def hosts(self, group: str) -> tuple[str, ...]:
        return self.groups.get(group, ())

    def all_hosts(self) -> tuple[str, ...]:
        return tuple(sorted({host for hosts in self.groups.values() for host in hosts}))


def _problems(inv: Inventory) -> list[str]:
    problems = [
        f"{inv.source}: group {group!r} is missing or has no hosts" for group in REQUIRED_GROUPS if not inv.hosts(group)
    ]
    problems += [
        f"{inv.source}: host {host[:80]!r} is not a valid Kubernetes node name"
        for host in inv.all_hosts()
        if not names.is_node_name(host)
    ]
    return problems


def tool(name: str) -> str:
    """Finds an Ansible command: next to this interpreter first (an unactivated venv), then on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise errors.ExecutorError(f"{name} not found next to {sys.executable} or on PATH: install ansible-core")
    return found


def _flatten(data: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    def members(group: str, seen: frozenset[str]) -> set[str]:
        entry = data.get(group)
        if not isinstance(entry, Mapping) or group in seen:
            return set()
        hosts = {str(h) for h in entry.get("hosts", [])}
        for child in entry.get("children", []):
            hosts |= members(str(child), seen | {group})
        return hosts

    return {group: tuple(sorted(members(group, frozenset()))) for group in data if group != "_meta"}


def load(path: Path) -> Inventory:
    """Parses and checks the inventory at ``path``: one Ansible cannot parse is an ``InputError``, one
    with a missing group or an invalid host name a ``ConfigError`` listing every problem."""
    env = dict(os.environ)
    env.update(
        ANSIBLE_INVENTORY_UNPARSED_FAILED="true",
        ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED="true",
        ANSIBLE_NOCOLOR="true",
        ANSIBLE_DEPRECATION_WARNINGS="false",
    )
    try:
        done = subprocess.run(
            [tool("ansible-inventory"), "-i", str(path), "--list"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_SECONDS,
            env=env,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise errors.ExecutorError(f"ansible-inventory took over {TIMEOUT_SECONDS}s to read {path}") from None
    if done.returncode != 0:
        raise errors.InputError(f"{path}: Ansible cannot parse this inventory: {_first_error(done.stderr)}")
    try:
        data = json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise errors.ExecutorError(f"ansible-inventory printed something other than JSON for {path}") from exc
    inv = Inventory(source=path, groups=_flatten(data))
    problems = _problems(inv)
    if problems:
        noun = "problem" if len(problems) == 1 else "problems"
        raise errors.ConfigError(f"{path}: {len(problems)} {noun} in the inventory", tuple(problems))
    return inv


def _first_error(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("[ERROR]", "ERROR!")):
            return line.removeprefix("[ERROR]:").removeprefix("ERROR!").strip()
    return lines[-1] if lines else "no detail given"
