"""What systemd runs for a unit, read from ``systemctl cat UNIT`` (the unit file, then its drop-ins in
the order systemd applies them, each after a ``# /path`` line).

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
    for raw in text.splitlines():
        line = pending + raw.strip()
        if line.endswith("\\"):  # a continued line
            pending = line[:-1] + " "
            continue
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
