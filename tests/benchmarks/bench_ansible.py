"""Benchmark: Ansible at the speed of the cluster, on a 3+N lab (issue #9, section 4).

The floor is one `ansible-playbook` run with a single `raw: "true"` task over every host: touching
each node once. Against it, side by side and alternating in one run: `upgrader facts` (whole command),
the node-facts playbook alone, `upgrader snapshot create` (whole command) and the snapshot-fetch
playbook alone. Goals: `upgrader facts` at most 2x the floor; the Ansible part of `snapshot create`
at most 2x the floor.
    .venv/bin/python tests/benchmarks/bench_ansible.py [--workers 40] [--rounds 3] [--ssh]
With --ssh the lab's nodes are reached over a real sshd each, as a user that becomes root with sudo, and
the floor becomes root too (`-b`), as upgrader's playbooks do.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from upgrader.cluster import session
from upgrader.core import config
from upgrader.core.versions import Version
from upgrader.executor import inventory
from upgrader.lab import control, create
from upgrader.snapshots import restore_tool

FLOOR = '- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.raw: "true"\n'


def timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} failed ({done.returncode}): {done.stderr[-500:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ssh", action="store_true", help="over real SSH, becoming root with sudo")
    args = parser.parse_args()
    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory(prefix="upgrader-bench-ansible-") as tmp:
        base = Path(tmp)
        lab = create.create(
            base / "lab", version=Version.parse("1.31.13"), control_planes=3, workers=args.workers, ssh_mode=args.ssh
        )
        env = {**os.environ, "XDG_DATA_HOME": str(base / "xdg"), "UPGRADER_DB": f"sqlite:///{base / 'state.db'}"}
        floor_playbook = base / "floor.yml"
        floor_playbook.write_text(FLOOR)
        cluster_yaml = lab.dir / "cluster.yaml"
        kinds = ("floor", "facts", "node-facts", "snapshot", "fetch", "restore-tool")
        times: dict[str, list[float]] = {k: [] for k in kinds}
        try:
            control.up(lab.dir, timeout=300)
            cfg = config.load(cluster_yaml)
            floor = [str(bin_dir / "ansible-playbook"), "-i", str(cfg.inventory), str(floor_playbook)]
            floor += ["-b"] if args.ssh else []
            ansible_env = {**env, "ANSIBLE_FORKS": "50"}
            if not args.ssh:
                ansible_env["ANSIBLE_HOST_KEY_CHECKING"] = "false"
            timed(floor, ansible_env)  # warm-up
            for _ in range(args.rounds):
                times["floor"].append(timed(floor, ansible_env))
                times["facts"].append(timed([str(bin_dir / "upgrader"), "facts", "-c", str(cluster_yaml)], env))
                with session.ClusterSession.open(cfg) as opened:
                    start = time.perf_counter()
                    opened.playbook("node-facts.yml")
                    times["node-facts"].append(time.perf_counter() - start)
                    start = time.perf_counter()
                    opened.playbook("snapshot-fetch.yml")
                    times["fetch"].append(time.perf_counter() - start)
                    start = time.perf_counter()
                    restore_tool.ensure(opened, place=True)  # placed already: the check alone
                    times["restore-tool"].append(time.perf_counter() - start)
                times["snapshot"].append(
                    timed([str(bin_dir / "upgrader"), "snapshot", "create", "-c", str(cluster_yaml)], env)
                )
        finally:
            control.down(lab.dir)
        hosts = len(inventory.load(lab.dir / "inventory" / "hosts.ini").all_hosts())
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{datetime.now(UTC):%Y-%m-%d}; lab 3+{args.workers} ({hosts} hosts, "
        f"{'over SSH with sudo' if args.ssh else 'local connections'}), {args.rounds} rounds, medians"
    )
    floor_median = statistics.median(times["floor"])
    for name, label in (
        ("floor", "ansible-playbook, one raw task on every host (the floor)"),
        ("facts", "upgrader facts (whole command)"),
        ("node-facts", "  node-facts playbook alone"),
        ("snapshot", "upgrader snapshot create (whole command)"),
        ("fetch", "  snapshot-fetch playbook alone (the Ansible part)"),
        ("restore-tool", "  restore-tool playbook alone (the tool in place)"),
    ):
        median = statistics.median(times[name])
        print(f"{label:58s} {median:7.2f} s  {median / floor_median:5.2f}x floor")
    # snapshot create runs three playbooks: the node facts (for the facts it records), the fetch, and the
    # restore tool's check
    snapshot_ansible = sum(statistics.median(times[k]) for k in ("node-facts", "fetch", "restore-tool"))
    print(
        f"{'  the Ansible part of snapshot create (all three)':58s} {snapshot_ansible:7.2f} s  "
        f"{snapshot_ansible / floor_median:5.2f}x floor"
    )
    facts_ok = statistics.median(times["facts"]) <= 2 * floor_median
    fetch_ok = snapshot_ansible <= 2 * floor_median
    print(
        f"facts <= 2x floor: {'met' if facts_ok else 'NOT met'}; snapshot Ansible <= 2x floor: "
        f"{'met' if fetch_ok else 'NOT met'}"
    )
    return 0 if facts_ok and fetch_ok else 1


if __name__ == "__main__":
    sys.exit(main())
