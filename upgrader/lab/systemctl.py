"""The systemctl stand-in a lab node has in ``usr/bin``: ``systemctl restart kubelet``,
``systemctl daemon-reload``, ``systemctl cat UNIT``, and on an external etcd host ``systemctl
start|stop|restart|is-active etcd`` (``lab.etcdservice`` runs that unit).

``cat`` prints the unit file, then its drop-ins, each after a ``# /path`` line, as systemctl(1) does;
files are looked up below the node's root in systemd's order (systemd.unit(5): the first of
/etc/systemd/system, /run/systemd/system, /usr/local/lib/systemd/system, /usr/lib/systemd/system and
/lib/systemd/system that has the unit; drop-ins ``UNIT.d/*.conf`` from all of them, a name in an
earlier directory hiding the same name in a later one, applied in the order of their names). The lab
kubelet runs the binary the effective ``ExecStart=`` names, as systemd would.

``daemon-reload`` succeeds and does nothing: a lab kubelet has no unit file for systemd to re-read (the
real command reloads every unit file and drop-in, systemctl(1), so a package that changed the kubelet's
unit takes effect at the next restart; upgrader runs it before each restart, as the install docs do).

The lab kubelet runs inside the supervisor, so "restarting" it is a request it picks up within a
fraction of a second: it reads the kubelet installed in the node's ``/usr/bin`` again and reports that
version from then on, as a real kubelet does once systemd restarts it on a new binary. Until then it
keeps reporting the version it started with, so "installed but not restarted" exists in the lab too.
The stand-in returns once the kubelet has acknowledged (systemctl returns once the unit has
restarted), and fails after a timeout if the lab is not running.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from pathlib import Path

from upgrader.support import units

UNITS = ("kubelet", "etcd")
ETCD_VERBS = ("start", "stop", "restart")
WAIT_SECONDS = 30.0


def request_path(root: Path, unit: str = "kubelet") -> Path:
    """Where a request for ``unit`` waits for the lab to pick it up (the kubelet's holds a token, to
    restart; etcd's a token and a verb)."""
    return root / "run" / "upgrader-lab" / ("kubelet.restart" if unit == "kubelet" else f"{unit}.request")


def state_path(root: Path, unit: str) -> Path:
    """A service's ActiveState as the lab last saw it (active, activating, inactive)."""
    return root / "run" / "upgrader-lab" / f"{unit}.state"


UNIT_DIRS = (
    "etc/systemd/system",
    "run/systemd/system",
    "usr/local/lib/systemd/system",
    "usr/lib/systemd/system",
    "lib/systemd/system",
)


def unit_files(root: Path, unit: str) -> list[Path]:
    """The unit file and its drop-ins, in the order systemd applies them."""
    name = unit if unit.endswith(".service") else f"{unit}.service"
    main = next((root / d / name for d in UNIT_DIRS if (root / d / name).is_file()), None)
    drop_ins: dict[str, Path] = {}
    for directory in UNIT_DIRS:
        for conf in sorted((root / directory / f"{name}.d").glob("*.conf")):
            drop_ins.setdefault(conf.name, conf)
    return ([main] if main else []) + [drop_ins[n] for n in sorted(drop_ins)]


def cat(root: Path, unit: str) -> str:
    return "\n".join(f"# /{p.relative_to(root)}\n{p.read_text()}" for p in unit_files(root, unit))


def kubelet_binary(root: Path) -> Path | None:
    """The kubelet the node's unit runs, below the node's root (None without a unit)."""
    runs = units.exec_start(cat(root, "kubelet"))
    return root / runs.lstrip("/") if runs else None


def ack_path(root: Path, unit: str = "kubelet") -> Path:
    return root / "run" / "upgrader-lab" / ("kubelet.restarted" if unit == "kubelet" else f"{unit}.done")


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0911 - one return per verb, as systemctl's codes
    parser = argparse.ArgumentParser(prog="systemctl", add_help=False)
    parser.add_argument("--node-root", required=True)
    parser.add_argument("verb")
    parser.add_argument("unit", nargs="?", default="")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.verb == "daemon-reload" and not args.unit:
        return 0
    unit = args.unit.removesuffix(".service")
    if args.verb == "cat":
        text = cat(Path(args.node_root), unit)
        if not text:
            print(f"No files found for {unit}.service.", file=sys.stderr)
            return 1
        print(text)
        return 0
    if unit not in UNITS:
        print(f"Failed to {args.verb} {args.unit}: Unit {args.unit} not found (upgrader lab).", file=sys.stderr)
        return 5
    root = Path(args.node_root)
    if args.verb == "is-active":
        if unit == "kubelet":
            print("active")
            return 0
        try:
            state = state_path(root, unit).read_text().strip()
        except OSError:
            state = "inactive"
        print(state)
        return 0 if state == "active" else 3  # systemctl's "unit is not active"
    if args.verb != "restart" and not (unit == "etcd" and args.verb in ETCD_VERBS):
        print(f"systemctl {args.verb} {unit}: not simulated by the upgrader lab", file=sys.stderr)
        return 1
    token = secrets.token_hex(8)
    request = request_path(root, unit)
    request.parent.mkdir(parents=True, exist_ok=True)
    tmp = request.with_suffix(".tmp")
    tmp.write_text(token if unit == "kubelet" else f"{token} {args.verb}")
    tmp.replace(request)
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        try:
            if ack_path(root, unit).read_text().strip() == token:
                return 0
        except OSError:
            pass
        time.sleep(0.1)
    print(f"Job for {unit}.service failed: no answer within {WAIT_SECONDS:.0f}s (is the lab up?)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
