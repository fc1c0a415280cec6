"""Benchmark: the state database on SQLite and on PostgreSQL, side by side in one run (issue #12).

1. Journal and event writes per step: what the engine writes for one node step (start, two progress
   updates, three events, finish), --steps times; median and p95 per step.
2. Lock acquisition under 8 competing processes: each takes and releases one cluster's lock --rounds
   times; the time from asking to holding (median, p95, max) and the acquisitions per second.

PostgreSQL is a local server this script starts (Unix socket, fsync on, as a real one), SQLite a file
(WAL, synchronous=FULL, as upgrader sets it).

    .venv/bin/python tests/benchmarks/bench_state.py [--steps 500] [--rounds 40]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from tests import pgserver
from upgrader.state import records, store

CONTENDER = """
import json, sys, time
from datetime import timedelta
from upgrader import errors
from upgrader.state import db, lease
engine = db.open_engine(sys.argv[1])
rounds, waits = int(sys.argv[2]), []
for _ in range(rounds):
    asked = time.perf_counter()
    while True:
        try:
            held = lease.acquire(engine, cluster="bench", command="bench", ttl=timedelta(seconds=30))
            break
        except errors.LockHeld:
            time.sleep(0.002)
    waits.append(time.perf_counter() - asked)
    held.release()
engine.dispose()
print(json.dumps(waits))
"""


def journal(url: str, steps: int) -> list[float]:
    with store.Store.open(url) as state:
        run = state.create_run(
            run_id=records.RunId("bench-run"),
            cluster="bench",
            plan_id=None,
            kind=records.RunKind.UPGRADE,
            steps=[{"kind": "node"} for _ in range(steps)],
            host="bench",
            pid=os.getpid(),
            options={},
        )
        took = []
        for position in range(steps):
            began = time.perf_counter()
            state.start_step(run.id, position, at=datetime.now(UTC))
            for node in ("w-1", "w-2"):
                state.step_progress(run.id, position, {"done": [node]})
                state.record_event(kind="node-done", message=f"{node} upgraded", cluster="bench", run_id=run.id)
            state.record_event(kind="step-finished", message="step", cluster="bench", run_id=run.id)
            state.finish_step(run.id, position, records.StepStatus.SUCCEEDED, at=datetime.now(UTC))
            took.append(time.perf_counter() - began)
        return took


def contention(url: str, rounds: int, processes: int = 8) -> tuple[list[float], float]:
    store.Store.open(url).close()  # the schema exists before the race
    began = time.perf_counter()
    children = [
        subprocess.Popen([sys.executable, "-c", CONTENDER, url, str(rounds)], stdout=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    waits: list[float] = []
    for child in children:
        out, _ = child.communicate(timeout=600)
        if child.returncode != 0:
            raise SystemExit(f"a contender failed ({child.returncode})")
        waits += json.loads(out)
    return waits, time.perf_counter() - began


def ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="upgrader-bench-state-") as tmp, pgserver.running(fsync=True) as pg:
        for name in ("sqlite", "postgresql"):
            urls = [f"sqlite:///{Path(tmp) / f'{name}-{i}.db'}" for i in range(2)]
            if name == "postgresql":
                urls = []
                for i in range(2):
                    pg.sql(f"CREATE DATABASE bench{i}")
                    urls.append(pg.url(f"bench{i}"))
            waits, seconds = contention(urls[1], args.rounds)
            results[name] = {"journal": journal(urls[0], args.steps), "waits": waits, "seconds": seconds}
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{datetime.now(UTC):%Y-%m-%d}; PostgreSQL {pgserver.version()} on a Unix socket, fsync on"
    )
    for name, result in results.items():
        step = result["journal"]
        waits = result["waits"]
        print(
            f"{name:10s} journal per step: median {statistics.median(step) * 1000:.1f} ms, p95 {ms(step, 0.95):.1f} ms "
            f"({1 / statistics.median(step) * 6:.0f} writes/s); lock under 8 processes: median "
            f"{ms(waits, 0.5):.1f} ms, p95 {ms(waits, 0.95):.1f} ms, max {ms(waits, 1.0):.0f} ms, "
            f"{len(waits) / result['seconds']:.0f} acquisitions/s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
