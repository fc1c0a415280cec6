"""Benchmark: the CPU an idle lab uses (its supervisor, apiservers and etcd members), as a share of a core.

Creates a lab, brings it up, lets it settle, then reads each of its processes' CPU time from /proc
over a window, and stops the lab by pid (``lab down``). An idle lab is what a test suite pays for
every lab it keeps up between tests. Run from the project's virtual environment:
    .venv/bin/python tests/benchmarks/idle_lab.py [--control-planes 3 --workers 3 --window 30]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from upgrader.core.versions import Version
from upgrader.lab import control, create


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _processes(lab_dir: Path, supervisor: int) -> dict[int, str]:
    """The supervisor and every process whose command line names the lab's directory."""
    found = {supervisor: "supervisor"}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        text = b" ".join(argv).decode(errors="replace")
        if str(lab_dir) in text and int(entry) != supervisor:
            found[int(entry)] = "etcd" if "etcd" in Path(argv[0].decode(errors="replace")).name else "apiserver"
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--control-planes", type=int, default=3)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--settle", type=float, default=15.0)
    parser.add_argument("--window", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="idle-lab-") as base:
        lab = create.create(
            Path(base) / "idle",
            version=Version.parse("1.30.6"),
            control_planes=args.control_planes,
            workers=args.workers,
        )
        control.up(lab.dir, timeout=60)
        try:
            time.sleep(args.settle)
            supervisor = json.loads((lab.run_dir / "state.json").read_text())["supervisor"]
            processes = _processes(lab.dir, supervisor)
            before = {pid: _cpu_seconds(pid) for pid in processes}
            time.sleep(args.window)
            used: dict[str, float] = {}
            for pid, role in processes.items():
                try:
                    used[role] = used.get(role, 0.0) + _cpu_seconds(pid) - before[pid]
                except OSError:
                    continue
        finally:
            control.down(lab.dir)
    share = {role: seconds / args.window * 100 for role, seconds in used.items()}
    print(f"{datetime.now(UTC):%Y-%m-%d} {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"idle {args.control_planes}+{args.workers} lab over {args.window:.0f} s, % of one core:")
    for role in sorted(share):
        print(f"  {role:10s} {share[role]:5.1f}%")
    print(f"  {'in all':10s} {sum(share.values()):5.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
