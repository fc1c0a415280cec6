"""Benchmark: planning for a 5,000-node cluster (target: at most 1 s).

3 control-plane nodes and 4,997 workers whose kubelets are spread over every minor the skew policy
allows, planned from 1.28 to 1.36 (eight control-plane hops, two-step where possible). Times
``planner.core.plan`` alone and with the JSON rendering the CLI does; medians of --rounds runs.
    .venv/bin/python tests/benchmarks/bench_planner.py [--nodes 5000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from datetime import UTC, datetime

from upgrader.core.planner import core, model
from upgrader.core.rules import catalog as catalog_mod
from upgrader.core.rules import facts as facts_mod
from upgrader.core.versions import Minor


def cluster(nodes: int, seed: int = 7) -> facts_mod.Facts:
    rng = random.Random(seed)
    control_plane = [
        {
            "name": f"cp-{i}",
            "apiserver": "1.28.15",
            "kubelet": "1.28.15",
            "cgroup": "v2",
            "container_runtime": "containerd://2.1.4",
        }
        for i in range(1, 4)
    ]
    workers = [
        {
            "name": f"worker-{i:05d}",
            "kubelet": f"1.{rng.choice([25, 26, 27, 28])}.{rng.randint(0, 9)}",
            "cgroup": "v2",
            "container_runtime": "containerd://2.3.1",
        }
        for i in range(nodes - 3)
    ]
    return facts_mod.from_mapping(
        {"control_plane": control_plane, "nodes": workers, "etcd": {"version": "3.5.32"}, "apis_in_use": []}
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    facts = cluster(args.nodes)
    catalog = catalog_mod.load()
    results: dict[str, list[float]] = {}
    for label, max_unavailable in (("max-unavailable 1", "1"), ("max-unavailable 10%", "10%")):
        options = model.PlanOptions(max_unavailable=model.MaxUnavailable.parse(max_unavailable))
        plan_times, json_times = [], []
        for _ in range(args.rounds):
            start = time.perf_counter()
            plan = core.plan(facts, Minor(1, 36), options, catalog)
            plan_times.append(time.perf_counter() - start)
            json.dumps(plan.as_dict())
            json_times.append(time.perf_counter() - start)
        results[f"plan ({label}, {len(plan.steps)} steps, {plan.summary.drains} drains)"] = plan_times
        results[f"plan + JSON ({label})"] = json_times
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {datetime.now(UTC):%Y-%m-%d}"
    )
    print(f"cluster: {args.nodes} nodes, 1.28.15 -> 1.36.0, {args.rounds} rounds each (medians)")
    worst = 0.0
    for label, values in results.items():
        median = statistics.median(values)
        worst = max(worst, median)
        print(f"  {label:60s} {median * 1000:8.1f} ms")
    print(f"slowest median {worst * 1000:.1f} ms (target <= 1000 ms): {'ok' if worst <= 1.0 else 'OVER'}")
    return 0 if worst <= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
