"""Benchmark: the snapshot tiers (issue #11).

1. Object store. A file of --mb MB is uploaded and downloaded against one S3-compatible server on loopback
   (moto's, its own process) by upgrader (sealed with AES-256-GCM: the product's upload and checked
   download) and by `aws s3 cp` (plain), in alternating runs, --rounds each. Throughput ratio
   upgrader/aws (goal: at least 0.9 with encryption on). upgrader's peak RSS (VmHWM, polled) at 100 and
   400 MB (goal: at most 100 MiB, and flat).
2. Peer tier: a snapshot of the lab's etcd (filled to --lab-mb MiB) copied to 3 control-plane nodes and
   checked there (`snapshot-replicate.yml`), against the cheapest Ansible run that touches the same
   hosts (a raw `true`) and a plain `cp` of the file three times.

    .venv/bin/python tests/benchmarks/bench_tiers.py [--mb 200] [--rounds 3] [--lab-mb 210] [--aws PATH]

`aws` comes from its own virtual environment (awscli pins a botocore that boto3 does not accept):
    python3 -m venv .venv-aws && .venv-aws/bin/pip install awscli
The RTO of a rollback from peer copies against one that pushes first is bench_rollback.py --peer.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from tests import s3server
from tests.benchmarks.bench_snapshot import run_measured

UPGRADER_CHILD = """
import hashlib, json, sys, time
from pathlib import Path
from upgrader.core import config
from upgrader.snapshots import remote
action, endpoint, bucket, key_file, path, name, sha = sys.argv[1:8]
settings = config.ObjectStoreSettings(bucket=bucket, endpoint=endpoint, region="us-east-1", key_file=key_file)
tier = remote.Remote.open(settings, "bench")
start = time.perf_counter()
if action == "up":
    remote.send_file(tier, name, Path(path), sha)
else:
    remote.download(tier, tier.object_key(name), sha, Path(path))
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def make_file(path: Path, mb: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for _ in range(mb):
            block = os.urandom(1_000_000)
            digest.update(block)
            out.write(block)
    return digest.hexdigest()


def object_store(base: Path, *, mb: int, rounds: int, aws: str) -> dict[str, object]:
    results: dict[str, object] = {}
    with s3server.running(base / "moto.log") as server:
        env = {**os.environ, **s3server.CREDENTIALS}
        server.create_bucket("bench")
        key = base / "bench.key"
        from upgrader.objectstore import sealing

        sealing.Key.generate(key)
        times: dict[str, list[float]] = {"upgrader up": [], "aws up": [], "upgrader down": [], "aws down": []}
        peaks: dict[int, dict[str, int]] = {}
        for size in sorted({mb, 100, 400}):
            source = base / f"file-{size}.bin"
            sha = make_file(source, size)
            name = f"file-{size}.bin"
            child = [sys.executable, "-c", UPGRADER_CHILD, "", server.endpoint, "bench", str(key)]
            aws_base = [aws, "s3", "cp", "--only-show-errors", "--endpoint-url", server.endpoint]
            for _ in range(rounds if size == mb else 1):
                up = run_measured([*child[:3], "up", *child[4:], str(source), name, sha], env)
                down_path = base / f"down-{size}.bin"
                down = run_measured([*child[:3], "down", *child[4:], str(down_path), name, sha], env)
                assert down_path.read_bytes()[:1000] == source.read_bytes()[:1000]
                down_path.unlink()
                peaks[size] = {"up": up[1], "down": down[1]}
                if size != mb:
                    continue
                aws_up = run_measured([*aws_base, str(source), f"s3://bench/aws-{name}"], env)
                aws_down = run_measured([*aws_base, f"s3://bench/aws-{name}", str(down_path)], env)
                down_path.unlink()
                times["upgrader up"].append(up[0])
                times["upgrader down"].append(down[0])
                times["aws up"].append(aws_up[0])
                times["aws down"].append(aws_down[0])
                peaks.setdefault(-1, {"up": 0, "down": 0})
                peaks[-1] = {"up": max(peaks[-1]["up"], aws_up[1]), "down": max(peaks[-1]["down"], aws_down[1])}
            source.unlink()
        results["times"] = times
        results["peaks_kib"] = peaks
    return results


def peer(base: Path, *, lab_mb: int) -> dict[str, float]:
    from upgrader.cluster import session
    from upgrader.core import config
    from upgrader.core.versions import Version
    from upgrader.etcd import kv
    from upgrader.lab import control, create
    from upgrader.snapshots import local, peer
    from upgrader.state import store

    lab = create.create(base / "lab", version=Version.parse("1.30.6"), control_planes=3, workers=1)
    control.up(lab.dir, timeout=60)
    os.environ["XDG_DATA_HOME"] = str(base / "xdg")
    try:
        cfg = config.load(lab.dir / "cluster.yaml")
        etcd = kv.KV(kv.target(cfg.etcd, timeout=30))
        value = os.urandom(1024 * 1024)
        for i in range(lab_mb):
            etcd.write(f"/bench/blob-{i:05d}", value)
        etcd.close()
        with store.Store.open(f"sqlite:///{base / 'state.db'}") as state, session.ClusterSession.open(cfg) as cluster:
            record = local.take(cluster, state).record
            began = time.monotonic()
            peer.replicate(cluster, record)
            replicate = time.monotonic() - began
            began = time.monotonic()
            peer.replicate(cluster, record)  # already there: checked, not sent
            again = time.monotonic() - began
            began = time.monotonic()
            checked = peer.check(cluster, record)
            check = time.monotonic() - began
            assert all(c.state.value == "ok" for c in checked), checked
            began = time.monotonic()
            noop = cluster.playbook(  # one raw task on the same hosts: the cheapest Ansible run there
                "snapshot-peer.yml", extravars={"peer_action": "check", "snapshot_names": ["none"]}
            )
            floor_ansible = time.monotonic() - began
            assert noop.status.value == "successful", noop.failures()
            began = time.monotonic()
            for i in range(3):
                shutil.copyfile(record.etcd_path, base / f"copy-{i}.db")
            floor_cp = time.monotonic() - began
            return {
                "size_mib": record.etcd_size / 2**20,
                "replicate": replicate,
                "replicate_again": again,
                "check": check,
                "ansible_noop": floor_ansible,
                "cp_x3": floor_cp,
            }
    finally:
        control.down(lab.dir)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lab-mb", type=int, default=210)
    parser.add_argument("--aws", default=shutil.which("aws") or ".venv-aws/bin/aws")
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--skip-store", action="store_true")
    args = parser.parse_args()
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{datetime.now(UTC):%Y-%m-%d}; moto server on loopback"
    )
    if not args.skip_store:
        store_figures(args)
    if not args.skip_peer:
        with tempfile.TemporaryDirectory(prefix="upgrader-bench-peer-") as tmp:
            result = peer(Path(tmp), lab_mb=args.lab_mb)
        print(
            f"peer tier, {result['size_mib']:.0f} MiB snapshot to 3 control-plane nodes: {result['replicate']:.1f} s "
            f"(again, already there: {result['replicate_again']:.1f} s; check on every node {result['check']:.1f} s); "
            f"a no-op playbook on the same hosts {result['ansible_noop']:.1f} s, cp x3 {result['cp_x3']:.1f} s"
        )
    return 0


def store_figures(args: argparse.Namespace) -> None:
    if not Path(args.aws).exists() and not shutil.which(args.aws):
        raise SystemExit(f"no aws at {args.aws}: see this script's docstring")
    with tempfile.TemporaryDirectory(prefix="upgrader-bench-tiers-") as tmp:
        stored = object_store(Path(tmp), mb=args.mb, rounds=args.rounds, aws=args.aws)
    times: dict[str, list[float]] = stored["times"]  # type: ignore[assignment]
    for way in ("up", "down"):
        ours, theirs = sorted(times[f"upgrader {way}"]), sorted(times[f"aws {way}"])
        median_ours, median_theirs = ours[len(ours) // 2], theirs[len(theirs) // 2]
        print(
            f"{way:>4} {args.mb} MB: upgrader (sealed) {args.mb / median_ours:.0f} MB/s "
            f"[{', '.join(f'{t:.2f}' for t in times[f'upgrader {way}'])} s], aws s3 cp (plain) "
            f"{args.mb / median_theirs:.0f} MB/s [{', '.join(f'{t:.2f}' for t in times[f'aws {way}'])} s]: "
            f"ratio {median_theirs / median_ours:.2f}"
        )
    for size, peak in sorted(stored["peaks_kib"].items()):  # type: ignore[attr-defined]
        who = "aws s3 cp" if size == -1 else f"upgrader {size} MB"
        print(f"peak RSS {who}: upload {peak['up'] / 1024:.0f} MiB, download {peak['down'] / 1024:.0f} MiB")


if __name__ == "__main__":
    sys.exit(main())
