"""What systemd runs for a unit, read from ``systemctl cat UNIT`` (the unit file, then its drop-ins in
the order systemd applies them, each after a ``# /path`` line), and what an ``EnvironmentFile=`` sets.

For ``ExecStart=`` systemd appends each assignment to a list, and an empty ``ExecStart=`` resets the
list (systemd.service(5)): kubeadm's drop-in ``10-kubeadm.conf`` resets the package's line and sets
its own. A simple service has one command left; its first word is the binary it runs.
"""

from __future__ import annotations

import shlex


def exec_start(text: str) -> str | None:
    """The binary the effective ``ExecStart=`` runs, or None when the unit sets none."""
    commands: list[str] = []
    pending = ""
    lines = text.splitlines()
    for index, raw in enumerate(lines):
        line = pending + raw.strip()
        if line.endswith("\\") and index < len(lines) - 1:  # continued on the next line (a last one cannot be)
            pending = line[:-1] + " "
            continue
        line = line.removesuffix("\\").rstrip()
        pending = ""
        if not line.startswith("ExecStart="):
            continue
        value = line.removeprefix("ExecStart=").strip()
        if not value:
            commands.clear()
            continue
        commands.append(value)
    if not commands:
        return None
    try:
        words = shlex.split(commands[-1])
    except ValueError:
        return None
    # systemd's prefixes: "-" (ignore failure), "@", ":", "+", "!" and "!!" before the path
    return words[0].lstrip("-@:+!") if words else None


def environment_file(text: str) -> dict[str, str]:
    """The variables an ``EnvironmentFile=`` sets (systemd.exec(5)): ``KEY=VALUE`` lines, blank lines and
    lines starting with ``#`` or ``;`` skipped, a value's surrounding quotes removed."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")) or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key.strip()] = value
    return out
