"""Benchmark: the etcd step of `upgrader apply` (issue #21), against the cheapest Ansible run on the same hosts.

A fresh lab of 3 control-plane nodes at 1.33 whose members run Debian's etcd 3.5.16, planned to 1.34 with
the lab's catalog (an etcd step to the lab's newest 3.5, 3.5.30, real binaries) and applied up to the end
of that step (--pause-after step). The step's time comes from the journal, each member's from its
node-done events. In the same round, on the same hosts, one at a time: `ansible -m raw -a true`, the
floor any per-member playbook pays. What the step adds above it is the member's restart and the waits
for it to answer at the new version, follow a leader and apply a newer revision, and for the gate.
With ``--external`` the members are 3 external etcd hosts (Kubespray's layout, one control plane): each
member's playbook downloads the release from the lab's mirror, checks it, replaces the unit's binary
and restarts the unit.
    .venv/bin/python tests/benchmarks/bench_etcd_step.py [--rounds 3] [--external]
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

from upgrader.core.versions import Version
from upgrader.lab import control, create, topology
from upgrader.state import store


def run(command: list[str], env: dict[str, str], ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode not in ok:
        raise SystemExit(f"{' '.join(command[:3])} failed ({done.returncode}): {done.stderr[-800:]}")
    return done


def one(base: Path, start: str, *, external: bool) -> tuple[float, list[float], list[float]]:
    """(the etcd step's seconds, each member's seconds, each `ansible -m raw` run's seconds)."""
    lab = create.create(
        base / "lab",
        version=Version.parse("1.33.5"),
        control_planes=1 if external else 3,
        workers=0,
        etcd_version=Version.parse(start),
        etcd_nodes=3 if external else 0,
        layout=topology.Layout.KUBESPRAY if external else topology.Layout.KUBEADM,
    )
    hosts = [n.name for n in (lab.etcd_nodes if external else lab.control_plane)]
    db = f"sqlite:///{base / 'state.db'}"
    env = {**os.environ, "XDG_DATA_HOME": str(base / "xdg"), "UPGRADER_DB": db}
    bin_dir = Path(sys.executable).parent
    upgrader, cluster_yaml = str(bin_dir / "upgrader"), str(lab.dir / "cluster.yaml")
    try:
        control.up(lab.dir, timeout=300)
        catalog = str(lab.dir / create.LAB_CATALOG)
        plan = json.loads(
            run(
                [upgrader, "plan", "-c", cluster_yaml, "--to", "1.34", "--catalog", catalog, "--save", "-o", "json"],
                env,
            ).stdout
        )
        if plan["steps"][1]["kind"] != "etcd":
            raise SystemExit(f"no etcd step planned: {[s['kind'] for s in plan['steps'][:3]]}")
        run([upgrader, "apply", plan["id"], "-c", cluster_yaml, "--yes", "--pause-after", "step"], env, ok=(6,))
        with store.Store.open(db) as state:
            run_id = state.runs(lab.name, limit=1)[0].id
        run([upgrader, "apply", "--resume", run_id, "-c", cluster_yaml, "--pause-after", "step"], env, ok=(6,))
        with store.Store.open(db) as state:
            step = state.run(run_id).steps[1]
            events = [e for e in state.events(cluster=lab.name, limit=10_000) if e.run_id == run_id]
        marks = sorted(
            e.at for e in events if e.kind == "etcd-member" or (e.kind == "node-done" and " -> " in e.message)
        )
        members = [(b - a).total_seconds() for a, b in zip(marks[::2], marks[1::2], strict=True)]
        raw: list[float] = []
        for node in hosts:
            begun = time.perf_counter()
            run(
                [
                    str(bin_dir / "ansible"),
                    "-i",
                    str(lab.dir / "inventory" / "hosts.ini"),
                    node,
                    "-m",
                    "raw",
                    "-a",
                    "true",
                ],
                env,
            )
            raw.append(time.perf_counter() - begun)
        return float(step.seconds or 0.0), members, raw
    finally:
        control.down(lab.dir)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--start", default="3.5.16", help="the members' etcd at the start (a lab binary's version)")
    parser.add_argument(
        "--external", action="store_true", help="3 external etcd hosts (Kubespray's layout) and 1 control plane"
    )
    args = parser.parse_args()
    steps: list[float] = []
    members: list[float] = []
    raws: list[float] = []
    for index in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="bench-etcd-") as tmp:
            step, each, raw = one(Path(tmp), args.start, external=args.external)
        steps.append(step)
        members += each
        raws += raw
        print(
            f"round {index + 1}: etcd step {step:.1f} s; members {', '.join(f'{m:.1f}' for m in each)} s; "
            f"ansible -m raw {', '.join(f'{r:.2f}' for r in raw)} s"
        )
    print(
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{datetime.now(UTC):%Y-%m-%d}, {args.rounds} rounds, etcd {args.start} to the lab's newest 3.5"
        + (" on 3 external etcd hosts" if args.external else " on 3 stacked members")
    )
    print(f"etcd step (3 members): median {statistics.median(steps):.1f} s")
    print(f"one member (playbook, restart, waits, gate): median {statistics.median(members):.2f} s")
    print(f"ansible -m raw -a true on one host: median {statistics.median(raws):.2f} s")
    print(f"ratio member / raw: {statistics.median(members) / statistics.median(raws):.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
