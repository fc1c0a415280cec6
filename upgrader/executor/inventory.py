"""Reads an Ansible inventory through ``ansible-inventory --list``, so every format Ansible accepts
(INI, YAML, directories, scripts, plugins) is read exactly as the playbooks will see it.

Only group membership, host names and three variables that say how a host is reached
(``ansible_user``, ``ansible_become``, ``ansible_connection``) come back: the other host variables may
hold passwords and keys and are dropped here, before anything could log them. ``load`` is the one
way to get an ``Inventory`` and it checks it first: the groups upgrader drives (Kubespray's names)
have hosts, and every host name is a valid Kubernetes node name. Playbooks use host names in paths on the controller
(``dest/{{ inventory_hostname }}/``), so a host called ``../../x`` must never reach one; the executor
takes only an ``Inventory``, so no playbook runs on an unchecked one.

``ansible-inventory`` costs about a second per command. What it said of a static inventory file (INI,
or YAML without a ``plugin:``) is kept under upgrader's private state directory, keyed by the file's
sha256 and the ansible-core version, and reused while both are unchanged: the same bytes parse to the
same groups. Directories, scripts and plugins are read every time (their hosts can change without
the file changing).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from upgrader import errors
from upgrader.support import environment, files, names

TIMEOUT_SECONDS = 120
GROUPS = ("kube_control_plane", "kube_node", "etcd")  # Kubespray's names
REQUIRED_GROUPS = ("kube_control_plane", "etcd")  # kube_node may be empty: a cluster of control planes only


@dataclass(frozen=True)
class Access:
    """How Ansible reaches a host and as whom, from the inventory's variables (never a password)."""

    user: str | None = None  # ansible_user; None: the controller's user
    become: bool = False  # ansible_become
    connection: str | None = None  # ansible_connection; None: ssh

    @classmethod
    def of(cls, hostvars: Mapping[str, Any]) -> Access:
        become = hostvars.get("ansible_become")
        return cls(
            user=str(hostvars["ansible_user"]) if hostvars.get("ansible_user") else None,
            become=become is True or str(become).lower() in ("true", "yes", "1"),
            connection=str(hostvars["ansible_connection"]) if hostvars.get("ansible_connection") else None,
        )

    def as_dict(self) -> dict[str, Any]:
        return {"user": self.user, "become": self.become, "connection": self.connection}


@dataclass(frozen=True)
class Inventory:
    source: Path
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # every host in each group, sorted
    access: Mapping[str, Access] = field(default_factory=dict)  # per host; only these three variables are kept
    # Kubespray's etcd_member_name per etcd host that sets it (its etcd.env's ETCD_NAME); unchecked here
    etcd_member_names: Mapping[str, str] = field(default_factory=dict)

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


def _access(data: Mapping[str, Any]) -> dict[str, Access]:
    meta = data.get("_meta")
    hostvars = meta.get("hostvars") if isinstance(meta, Mapping) else None
    if not isinstance(hostvars, Mapping):
        return {}
    return {str(host): Access.of(v) for host, v in hostvars.items() if isinstance(v, Mapping)}


def _etcd_member_names(data: Mapping[str, Any]) -> dict[str, str]:
    meta = data.get("_meta")
    hostvars = meta.get("hostvars") if isinstance(meta, Mapping) else None
    if not isinstance(hostvars, Mapping):
        return {}
    return {
        str(host): str(v["etcd_member_name"])
        for host, v in hostvars.items()
        if isinstance(v, Mapping) and v.get("etcd_member_name")
    }


def load(path: Path) -> Inventory:
    """Parses and checks the inventory at ``path``: one Ansible cannot parse is an ``InputError``, one
    with a missing group or an invalid host name a ``ConfigError`` listing every problem."""
    key = _static_key(path)
    found = _cached(key) if key else None
    if found is None:
        data = _ansible_inventory(path)
        found = (_flatten(data), _access(data), _etcd_member_names(data))
        if key:
            _keep(key, *found)
    groups, access, members = found
    inv = Inventory(source=path, groups=groups, access=access, etcd_member_names=members)
    problems = _problems(inv)
    if problems:
        noun = "problem" if len(problems) == 1 else "problems"
        raise errors.ConfigError(f"{path}: {len(problems)} {noun} in the inventory", tuple(problems))
    return inv


def _static_key(path: Path) -> str | None:
    """The cache key of a static inventory file; None for anything whose hosts can change on their own."""
    import hashlib
    from importlib import metadata

    try:
        if not path.is_file() or os.access(path, os.X_OK):
            return None
        content = path.read_bytes()
    except OSError:
        return None
    if path.suffix in (".yml", ".yaml", ".json") and re.search(rb"^plugin\s*:", content, re.MULTILINE):
        return None
    try:
        ansible = metadata.version("ansible-core")
    except metadata.PackageNotFoundError:
        return None
    digest = hashlib.sha256(content + b"\0" + ansible.encode() + b"\0" + path.suffix.encode()).hexdigest()
    return digest


def _cache_dir() -> Path:
    return environment.data_dir() / "inventories"


_Parsed = tuple[dict[str, tuple[str, ...]], dict[str, Access], dict[str, str]]


def _cached(key: str) -> _Parsed | None:
    try:
        data = json.loads((_cache_dir() / f"{key}.json").read_text())
        groups = {str(g): tuple(str(h) for h in hosts) for g, hosts in data["groups"].items()}
        access = {str(h): Access(**a) for h, a in data["access"].items()}
        members = {str(h): str(m) for h, m in data["etcd_member_names"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # unreadable, or written before a key existed: read the inventory again
    return groups, access, members


def _keep(
    key: str, groups: Mapping[str, tuple[str, ...]], access: Mapping[str, Access], members: Mapping[str, str]
) -> None:
    """Best effort: a cache that cannot be written only costs the next command a second."""
    try:
        directory = files.private_dir(_cache_dir(), what="inventory cache")
        tmp = directory / f".{key}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            access_ = {h: a.as_dict() for h, a in access.items()}
            out.write(json.dumps({"groups": groups, "access": access_, "etcd_member_names": dict(members)}))
            out.flush()
            os.fsync(out.fileno())
        files.replace_durably(tmp, directory / f"{key}.json")
    except (OSError, errors.UpgraderError):
        pass


def _ansible_inventory(path: Path) -> Mapping[str, Any]:
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
    if not isinstance(data, Mapping):
        raise errors.ExecutorError(f"ansible-inventory printed something other than a JSON object for {path}")
    return data


def _first_error(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("[ERROR]", "ERROR!")):
            return line.removeprefix("[ERROR]:").removeprefix("ERROR!").strip()
    return lines[-1] if lines else "no detail given"
