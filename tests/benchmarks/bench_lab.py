"""Benchmark: `upgrader lab up` for 3 control-plane and 3 worker nodes (target: at most 15 s).

Creates a lab in a temporary directory, then times `lab up` until healthy (every apiserver ready,
every node Ready, every control-plane mirror pod Running, workloads seeded) and `lab down` until
every process is gone, --rounds times. The first round bootstraps a new etcd cluster; later
rounds restart it. The lab is destroyed afterwards.
    .venv/bin/python tests/benchmarks/bench_lab.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from upgrader.core.versions import Version
from upgrader.lab import control, create


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="upgrader-bench-lab-") as tmp:
        start = time.perf_counter()
        lab = create.create(Path(tmp) / "lab", version=Version.parse("1.30.6"), control_planes=3, workers=3)
        created = time.perf_counter() - start
        ups, downs = [], []
        try:
            for _ in range(args.rounds):
                _, seconds = control.up(lab.dir, timeout=60)
                ups.append(seconds)
                start = time.perf_counter()
                control.down(lab.dir)
                downs.append(time.perf_counter() - start)
        finally:
            control.down(lab.dir)
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, etcd {lab.etcd_binary}, {datetime.now(UTC):%Y-%m-%d}"
    )
    print(f"lab create (3 cp + 3 workers): {created:.2f} s")
    print(f"lab up, first (new etcd cluster): {ups[0]:.2f} s")
    if len(ups) > 1:
        print(f"lab up, restarts: median {statistics.median(ups[1:]):.2f} s, max {max(ups[1:]):.2f} s")
    print(f"lab down: median {statistics.median(downs):.2f} s, max {max(downs):.2f} s")
    worst = max(ups)
    print(f"slowest lab up {worst:.2f} s (target <= 15 s): {'ok' if worst <= 15 else 'OVER'}")
    return 0 if worst <= 15 else 1


if __name__ == "__main__":
    sys.exit(main())
