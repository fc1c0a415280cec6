"""Benchmark: the revision-bump fallback of a rollback (issue #10): how long ``advance_past`` takes to
move a restored etcd past the highest revision the cluster served, per 10,000 revisions and over a
gap of 100,000, on a local etcd cluster of --members (1 or 3) with the etcd binary found here.
Side by side in the same run: the same number of writes from one writer (what the concurrency buys).

    .venv/bin/python tests/benchmarks/bench_revision_bump.py [--members 3] [--gap 100000]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for tests.integration

from tests.integration.etcd_cluster import EtcdCluster
from upgrader.etcd import revisions, tools


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--gap", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="upgrader-bench-revisions-") as tmp:
        cluster = EtcdCluster(Path(tmp), members=args.members)
        store = cluster.start()
        try:
            rows = []
            for gap in (10_000, args.gap):
                start_revision = store.revision()
                done = revisions.advance_past(store, start_revision + gap - 1, max_gap=gap)
                rows.append((f"advance_past, {revisions.WRITERS} writers, gap {gap:,}", done.writes, done.seconds))
            single_writes = 10_000
            began = time.monotonic()
            for _ in range(single_writes):
                store.write(revisions.KEY, b"")
            rows.append(("the same writes from one writer, 10,000", single_writes, time.monotonic() - began))
        finally:
            store.close()
            cluster.stop()
    version = subprocess.run([tools.find("etcd") or "etcd", "--version"], capture_output=True, text=True, check=False)
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{datetime.now(UTC):%Y-%m-%d}; etcd {version.stdout.split()[2] if version.stdout else '?'}, "
        f"{args.members} member(s), local"
    )
    for label, writes, seconds in rows:
        print(f"{label:50s} {seconds:7.2f} s  {seconds / writes * 10_000:6.2f} s per 10,000 revisions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
