"""The systemctl stand-in a lab node has in ``usr/bin``: ``systemctl restart kubelet`` and
``systemctl daemon-reload``.

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

UNITS = ("kubelet",)
WAIT_SECONDS = 30.0


def request_path(root: Path) -> Path:
    return root / "run" / "upgrader-lab" / "kubelet.restart"


def ack_path(root: Path) -> Path:
    return root / "run" / "upgrader-lab" / "kubelet.restarted"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="systemctl", add_help=False)
    parser.add_argument("--node-root", required=True)
    parser.add_argument("verb")
    parser.add_argument("unit", nargs="?", default="")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.verb == "daemon-reload" and not args.unit:
        return 0
    unit = args.unit.removesuffix(".service")
    if unit not in UNITS:
        print(f"Failed to {args.verb} {args.unit}: Unit {args.unit} not found (upgrader lab).", file=sys.stderr)
        return 5
    root = Path(args.node_root)
    if args.verb == "is-active":
        print("active")
        return 0
    if args.verb != "restart":
        print(f"systemctl {args.verb}: not simulated by the upgrader lab", file=sys.stderr)
        return 1
    token = secrets.token_hex(8)
    request = request_path(root)
    request.parent.mkdir(parents=True, exist_ok=True)
    tmp = request.with_suffix(".tmp")
    tmp.write_text(token)
    tmp.replace(request)
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        try:
            if ack_path(root).read_text().strip() == token:
                return 0
        except OSError:
            pass
        time.sleep(0.1)
    print(f"Job for kubelet.service failed: no answer within {WAIT_SECONDS:.0f}s (is the lab up?)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
