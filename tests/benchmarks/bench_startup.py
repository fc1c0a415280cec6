"""Benchmark: ``upgrader --help`` against ``python -c "import typer"`` (the framework's own floor).

Runs both commands alternately, N rounds, each as a fresh process, and prints the medians, the
ratio (target: at most 1.5) and the machine. Run from the project's virtual environment:
    .venv/bin/python tests/benchmarks/bench_startup.py [--rounds 40]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    script = Path(sys.executable).parent / "upgrader"
    commands = {
        "python -c 'import typer'": [sys.executable, "-c", "import typer"],
        "upgrader --help": [str(script), "--help"],
        "upgrader db --help": [str(script), "db", "--help"],
        "python -c 'pass' (interpreter)": [sys.executable, "-c", "pass"],
    }
    for argv in commands.values():  # warm the page cache and .pyc files
        timed(argv)
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.rounds):
        for name, argv in commands.items():
            samples[name].append(timed(argv))
    floor = statistics.median(samples["python -c 'import typer'"])
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {datetime.now(UTC):%Y-%m-%d}"
    )
    print(f"rounds: {args.rounds}, alternating, fresh process each")
    for name, values in samples.items():
        median = statistics.median(values)
        p90 = sorted(values)[int(len(values) * 0.9)]
        print(
            f"{name:34s} median {median * 1000:6.1f} ms  p90 {p90 * 1000:6.1f} ms"
            f"  ratio to import typer {median / floor:4.2f}"
        )
    ratio = statistics.median(samples["upgrader --help"]) / floor
    print(f"upgrader --help / import typer = {ratio:.2f} (target <= 1.50): {'ok' if ratio <= 1.5 else 'OVER'}")
    return 0 if ratio <= 1.5 else 1


if __name__ == "__main__":
    sys.exit(main())
