"""Benchmark: the node phase of `upgrader apply` with --max-unavailable 3 against 1 (issue #9).

Two labs of 3 control-plane and N workers (default 6) at 1.32, each planned to 1.33 (one two-step hop,
its commit, then every kubelet) with --max-unavailable 1 and 3, applied one after the other, --rounds
times on fresh labs. The node phase is the sum of the `nodes` steps' durations from the journal;
upgrader's peak memory (its own process, ru_maxrss of the apply) is reported too.
Goal: the node phase with 3 at most 0.5 times the one with 1.
    .venv/bin/python tests/benchmarks/bench_node_phase.py [--workers 6] [--rounds 1] [--also 25%]
    .venv/bin/python tests/benchmarks/bench_node_phase.py --workers 40 --only 25%
    .venv/bin/python tests/benchmarks/bench_node_phase.py --workers 40 --only 25% --databases   (issue #12)
"""

from __future__ import annotations

import argparse
import contextlib
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
from upgrader.core.versions import Version
from upgrader.lab import control, create
from upgrader.state import store


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:3])} failed ({done.returncode}): {done.stderr[-800:]}")
    return done


def _high_water_mib(pid: int) -> float:
    """The process's own peak resident memory so far (VmHWM), not its children's."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def one(
    base: Path, workers: int, max_unavailable: str, db: str | None = None
) -> tuple[float, float, float, float, float]:
    """(node phase seconds, its worker batches' seconds, whole apply seconds, upgrader's peak RSS in MiB,
    events per second written during the node phase) for one fresh lab. The control-plane nodes are
    drained one at a time whatever --max-unavailable."""
    name = f"lab-{max_unavailable.replace('%', 'pct')}"
    lab = create.create(base / name, version=Version.parse("1.32.9"), control_planes=3, workers=workers)
    db = db or f"sqlite:///{base / name / 'state.db'}"
    env = {**os.environ, "XDG_DATA_HOME": str(base / "xdg"), "UPGRADER_DB": db}
    upgrader = str(Path(sys.executable).parent / "upgrader")
    cluster_yaml = str(lab.dir / "cluster.yaml")
    try:
        control.up(lab.dir, timeout=300)
        plan = json.loads(
            run(
                [
                    upgrader,
                    "plan",
                    "-c",
                    cluster_yaml,
                    "--to",
                    "1.33",
                    "--max-unavailable",
                    max_unavailable,
                    "--save",
                    "-o",
                    "json",
                ],
                env,
            ).stdout
        )
        start = time.perf_counter()
        process = subprocess.Popen(
            [upgrader, "apply", plan["id"], "-c", cluster_yaml, "--yes"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        peak = 0.0
        while process.poll() is None:
            peak = max(peak, _high_water_mib(process.pid))
            time.sleep(0.2)
        whole = time.perf_counter() - start
        if process.returncode != 0:
            raise SystemExit(
                f"apply failed ({process.returncode}): {(process.stderr.read() if process.stderr else '')[-800:]}"
            )
        with store.Store.open(db) as state:
            latest = state.runs(lab.name, limit=1)[0]
            events = [e for e in state.events(cluster=lab.name, limit=100_000) if e.run_id == latest.id]
        phase = sum(s.seconds or 0.0 for s in latest.steps if s.kind == "nodes")
        nodes = [s for s in latest.steps if s.kind == "nodes" and s.started_at and s.finished_at]
        begun, ended = min(s.started_at for s in nodes), max(s.finished_at for s in nodes)  # type: ignore[type-var]
        during = sum(1 for e in events if begun <= e.at <= ended)  # type: ignore[operator]
        rate = during / max((ended - begun).total_seconds(), 1e-9)  # type: ignore[operator]
        workers_part = sum(
            s.seconds or 0.0
            for s in latest.steps
            if s.kind == "nodes" and not any(str(n).startswith("cp-") for n in s.spec.get("nodes", ()))
        )
        return phase, workers_part, whole, peak, rate
    finally:
        control.down(lab.dir)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--also", action="append", default=[], help="More --max-unavailable values to measure.")
    parser.add_argument("--only", action="append", default=[], help="Measure only these --max-unavailable values.")
    parser.add_argument(
        "--databases",
        action="store_true",
        help="Each setting twice, the state on SQLite then on PostgreSQL (a local server this script starts).",
    )
    args = parser.parse_args()
    settings = args.only or ["1", "3", *args.also]
    results: dict[str, list[tuple[float, float, float, float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="upgrader-bench-nodes-") as tmp, contextlib.ExitStack() as stack:
        pg = stack.enter_context(pgserver.running(fsync=True)) if args.databases else None
        for round_ in range(args.rounds):
            for setting in settings:  # alternating, each on a fresh lab
                for backend in ("sqlite", "postgresql") if pg else ("sqlite",):
                    url = None
                    if pg is not None and backend == "postgresql":
                        database = f"nodes_{round_}_{setting.replace('%', 'pct')}"
                        pg.sql(f"CREATE DATABASE {database}")
                        url = pg.url(database)
                    label = f"{setting} ({backend})" if pg else setting
                    results.setdefault(label, []).append(
                        one(Path(tmp) / f"r{round_}{backend}", args.workers, setting, url)
                    )
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{datetime.now(UTC):%Y-%m-%d}; labs of 3+{args.workers} from 1.32.9 to 1.33, {args.rounds} round(s), medians"
    )
    for setting, values in results.items():
        phase = statistics.median(v[0] for v in values)
        workers_part = statistics.median(v[1] for v in values)
        whole = statistics.median(v[2] for v in values)
        peak = max(v[3] for v in values)
        rate = statistics.median(v[4] for v in values)
        print(
            f"--max-unavailable {setting:>4}: node phase {phase:7.1f} s (worker batches {workers_part:6.1f} s), "
            f"whole apply {whole:7.1f} s, upgrader's own peak RSS {peak:6.1f} MiB, "
            f"{rate:.1f} events/s written during the node phase"
        )
    if not {"1", "3"} <= set(results):
        return 0
    ratio = statistics.median(v[0] for v in results["3"]) / statistics.median(v[0] for v in results["1"])
    workers_ratio = statistics.median(v[1] for v in results["3"]) / statistics.median(v[1] for v in results["1"])
    print(f"node phase, 3 against 1: {ratio:.2f} (goal <= 0.5): {'met' if ratio <= 0.5 else 'NOT met'}")
    print(f"worker batches alone, 3 against 1: {workers_ratio:.2f}")
    return 0 if ratio <= 0.5 else 1


if __name__ == "__main__":
    sys.exit(main())
