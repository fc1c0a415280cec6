"""Benchmark: a rollback's RTO (issue #10): the time from `upgrader rollback --yes` to the cluster verified
against the snapshot, on a lab of 3 control-plane nodes and --workers at 1.30 with --mb MiB in etcd.

Per scenario, on a fresh lab: etcd is filled (1 MiB values), a snapshot is taken, the lab is upgraded to
1.31 (committed: a full restore), then, for the fallback scenario, --gap no-op revisions are written
(the revision-bump fallback must cover them, as the etcd here has no --bump-revision). Then the
rollback is timed, and the run's steps from the journal show where the time went. Side by side in the
same run: one `etcdutl snapshot restore` of the same file (the tool's own floor for one member).
Goal: RTO at most 60 s with at least 200 MB in etcd.

    .venv/bin/python tests/benchmarks/bench_rollback.py [--mb 210] [--workers 1] [--gap 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

from upgrader.core import config
from upgrader.core.versions import Version
from upgrader.etcd import kv, revisions, tools
from upgrader.lab import control, create
from upgrader.state import store

VALUE = os.urandom(1024 * 1024)


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} failed ({done.returncode}): {done.stderr[-800:]}")
    return done


def scenario(base: Path, *, mb: int, workers: int, gap: int, peer: bool = False) -> dict[str, object]:
    lab = create.create(base / "lab", version=Version.parse("1.30.6"), control_planes=3, workers=workers)
    if peer:  # every snapshot copied to the control-plane nodes: the restore moves no data
        cluster_config = yaml.safe_load((lab.dir / "cluster.yaml").read_text())
        cluster_config["snapshots"]["tiers"] = ["local", "peer"]
        (lab.dir / "cluster.yaml").write_text(yaml.safe_dump(cluster_config))
    env = {**os.environ, "UPGRADER_DB": f"sqlite:///{base / 'state.db'}", "XDG_DATA_HOME": str(base / "xdg")}
    upgrader = [sys.executable, "-m", "upgrader"]
    cluster_yaml = str(lab.dir / "cluster.yaml")
    control.up(lab.dir, timeout=60)
    try:
        run([*upgrader, "db", "upgrade"], env)
        etcd = kv.KV(kv.target(config.load(lab.dir / "cluster.yaml").etcd, timeout=30))
        for i in range(mb):
            etcd.write(f"/bench/blob-{i:05d}", VALUE)
        created = json.loads(run([*upgrader, "snapshot", "create", "-c", cluster_yaml, "-o", "json"], env).stdout)
        plan = json.loads(
            run([*upgrader, "plan", "-c", cluster_yaml, "--to", "1.31", "--save", "-o", "json"], env).stdout
        )
        run([*upgrader, "apply", plan["id"], "-c", cluster_yaml, "--yes"], env)
        if gap:
            begun = etcd.revision()
            revisions._write(etcd, gap, None)  # the cluster "served" this many more revisions
            assert etcd.revision() >= begun + gap  # the lab's kubelets write too
        etcd.close()
        began = time.monotonic()
        done = run([*upgrader, "rollback", "-c", cluster_yaml, "--to", created["id"], "--yes", "-o", "json"], env)
        rto = time.monotonic() - began
        body = json.loads(done.stdout)
        with store.Store.open(env["UPGRADER_DB"]) as state:
            steps = state.run(body["id"]).steps
        floor_dir = base / "floor"
        floor = time.monotonic()
        tools.restore_member(
            Path(created["etcd_path"]), floor_dir, member="m", cluster={"m": ("http://127.0.0.1:2380",)}, token="t"
        )
        return {
            "size_mib": created["etcd_size"] / 2**20,
            "rto": rto,
            "floor": time.monotonic() - floor,
            "steps": {s.kind: s.seconds or 0.0 for s in steps},
            "revision": steps[4].detail,
        }
    finally:
        control.down(lab.dir)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=210)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--gap", type=int, default=100_000)
    parser.add_argument("--only-gap", type=int, help="one scenario: this gap (0: no revisions after the apply)")
    parser.add_argument(
        "--peer", action="store_true", help="gap 0 twice: the snapshot pushed in the outage, then from peer copies"
    )
    args = parser.parse_args()
    results = []
    runs = (
        [(0, False), (0, True)]
        if args.peer
        else [(g, False) for g in ((0, args.gap) if args.only_gap is None else (args.only_gap,))]
    )
    for gap, peer in runs:
        with tempfile.TemporaryDirectory(prefix="upgrader-bench-rollback-") as tmp:
            result = scenario(Path(tmp), mb=args.mb, workers=args.workers, gap=gap, peer=peer)
            results.append((f"{gap:>7,}{' (peer copies)' if peer else ''}", result))
    version = subprocess.run([tools.find("etcd") or "etcd", "--version"], capture_output=True, text=True, check=False)
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{datetime.now(UTC):%Y-%m-%d}; etcd {version.stdout.split()[2] if version.stdout else '?'}; "
        f"lab 3 control-plane + {args.workers} workers, 1.30.6 -> 1.31.13 committed, then rolled back"
    )
    for gap, result in results:
        steps = ", ".join(f"{kind} {seconds:.1f}" for kind, seconds in result["steps"].items())  # type: ignore[attr-defined]
        print(
            f"gap {gap} revisions after the apply: etcd snapshot {result['size_mib']:.0f} MiB, "
            f"RTO {result['rto']:.1f} s (one etcdutl restore of the same file: {result['floor']:.1f} s)"
        )
        print(f"    steps (s): {steps}")
        print(f"    revision step: {result['revision']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
