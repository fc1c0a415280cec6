"""Benchmark: upgrader's etcd snapshot stream against `etcdctl snapshot save`, same member.

Starts one local etcd (loopback, plain HTTP, a temporary data directory), fills it with random 1-4 KiB
values until the database passes --size MB, then alternates the two tools --rounds times, each in its
own process. Targets: throughput ratio (upgrader / etcdctl) at least 0.95, upgrader's peak RSS at most
64 MiB, and no growth of that peak from a 100 MB to a 400 MB database. The etcd process is stopped by
pid at the end and the directory removed.
    .venv/bin/python tests/benchmarks/bench_snapshot.py [--size 220] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from upgrader.etcd import kv, tools
from upgrader.lab import create as lab_create
from upgrader.lab import processes

CHILD = """
import json, sys, time
from pathlib import Path
from upgrader.etcd import kv, snapshot
store = kv.KV(kv.Target(endpoints=(sys.argv[1],), timeout=30))
start = time.perf_counter()
result = snapshot.save(store, Path(sys.argv[2]))
elapsed = time.perf_counter() - start
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"seconds": elapsed, "size": result.size, "peak_kib": hwm}))
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_measured(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Wall seconds, peak RSS in KiB (the child's own VmHWM, polled), and stdout.

    Not wait4's ru_maxrss: after fork and exec Linux reports at least the parent's RSS at fork time.
    """
    start = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    peak = 0
    while child.poll() is None:
        try:
            status = Path(f"/proc/{child.pid}/status").read_text()
            peak = max(peak, next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")))
        except (OSError, StopIteration):
            pass
        time.sleep(0.005)
    assert child.stdout is not None
    out = child.stdout.read().decode()
    child.stdout.close()
    if child.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {child.returncode}")
    return time.perf_counter() - start, peak, out


def fill(store: kv.KV, url: str, target_mb: int) -> int:
    client = store.client_for(url)
    size, batch = 0, 0
    while size < target_mb * 1_000_000:
        ops = [
            client.transactions.put(
                f"/registry/pods/ns-{batch % 997:03d}/pod-{batch:07d}-{i:03d}", os.urandom(1024 + (i * 37) % 3072)
            )
            for i in range(100)
        ]
        client.transaction(compare=[], success=ops, failure=[])
        batch += 1
        if batch % 50 == 0:
            size = int(client.status().db_size)
    return size


def measure(url: str, work: Path, rounds: int, etcdctl: str) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {
        "ours_stream": [],
        "ours_wall": [],
        "ours_rss": [],
        "ctl_wall": [],
        "ctl_rss": [],
        "size": [],
    }
    for round_number in range(rounds):
        for tool in ("ours", "etcdctl") if round_number % 2 == 0 else ("etcdctl", "ours"):
            dest = work / f"{tool}-{round_number}.db"
            if tool == "ours":
                wall, _, out = run_measured([sys.executable, "-c", CHILD, url, str(dest)])
                data = json.loads(out)
                results["ours_stream"].append(data["seconds"])
                results["ours_wall"].append(wall)
                results["ours_rss"].append(data["peak_kib"] / 1024)
                results["size"].append(data["size"])
            else:
                wall, rss, _ = run_measured(
                    [etcdctl, f"--endpoints={url}", "snapshot", "save", str(dest)],
                    env={**os.environ, "ETCDCTL_API": "3"},
                )
                results["ctl_wall"].append(wall)
                results["ctl_rss"].append(rss / 1024)
            dest.unlink(missing_ok=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=220, help="MB of database for the throughput comparison")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    etcd = lab_create.find_etcd()
    etcdctl = tools.find("etcdctl", Path(etcd))
    assert etcdctl, "no etcdctl"
    work = Path(tempfile.mkdtemp(prefix="upgrader-bench-snapshot-"))
    client_port, peer_port = free_port(), free_port()
    url = f"http://127.0.0.1:{client_port}"
    log = (work / "etcd.log").open("wb")
    server = subprocess.Popen(
        [
            etcd,
            "--data-dir",
            str(work / "data"),
            "--listen-client-urls",
            url,
            "--advertise-client-urls",
            url,
            "--listen-peer-urls",
            f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls",
            f"http://127.0.0.1:{peer_port}",
            "--initial-cluster",
            f"default=http://127.0.0.1:{peer_port}",
            "--quota-backend-bytes",
            str(8 * 2**30),
        ],
        stdout=log,
        stderr=log,
    )
    identity = processes.ProcessId.of(server.pid)
    store = kv.KV(kv.Target(endpoints=(url,), timeout=30))
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                store.revision()
                break
            except kv.EtcdUnavailable:
                assert time.monotonic() < deadline, "etcd did not start"
                time.sleep(0.2)
        small = fill(store, url, 100)
        at_100 = measure(url, work, 1, etcdctl)
        big = fill(store, url, args.size)
        compare = measure(url, work, args.rounds, etcdctl)
        large = fill(store, url, 400)
        at_400 = measure(url, work, 1, etcdctl)
    finally:
        store.close()
        if identity is not None:
            identity.stop(timeout=30)
        server.wait(timeout=30)
        log.close()
        shutil.rmtree(work, ignore_errors=True)
    mb = statistics.median(compare["size"]) / 1e6
    ours = mb / statistics.median(compare["ours_stream"])
    ours_wall = mb / statistics.median(compare["ours_wall"])
    ctl = mb / statistics.median(compare["ctl_wall"])
    ratio = ours / ctl
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"etcd {etcd}, {datetime.now(UTC):%Y-%m-%d}"
    )
    print(
        f"databases: {small / 1e6:.0f} MB, {big / 1e6:.0f} MB (comparison, {args.rounds} alternating rounds), "
        f"{large / 1e6:.0f} MB"
    )
    print(f"  etcdctl snapshot save    {ctl:7.1f} MB/s (wall), peak RSS {max(compare['ctl_rss']):5.1f} MiB")
    print(
        f"  upgrader stream          {ours:7.1f} MB/s (stream), {ours_wall:.1f} MB/s with interpreter start-up, "
        f"peak RSS {max(compare['ours_rss']):5.1f} MiB"
    )
    print(f"  throughput ratio {ratio:.3f} (target >= 0.95)")
    print(
        f"  upgrader peak RSS at {small / 1e6:.0f} MB: {at_100['ours_rss'][0]:.1f} MiB, at {large / 1e6:.0f} MB: "
        f"{at_400['ours_rss'][0]:.1f} MiB (target <= 64 MiB, no growth)"
    )
    peak_ok = max(compare["ours_rss"] + at_100["ours_rss"] + at_400["ours_rss"]) <= 64
    growth_ok = at_400["ours_rss"][0] <= at_100["ours_rss"][0] * 1.1
    ok = ratio >= 0.95 and peak_ok and growth_ok
    print("result:", "ok" if ok else "OVER TARGET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
