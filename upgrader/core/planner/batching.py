"""Splits a node upgrade into drain batches.

Control-plane nodes go one at a time, first: a kubelet minor upgrade restarts every container on
the node, stacked etcd included, and two at once would cost a three-member etcd its quorum.
Workers follow in batches of ``max_unavailable`` (a count, or a percentage of the workers).
"""

from __future__ import annotations

from collections.abc import Iterator

from upgrader.core.planner.model import MaxUnavailable


def batches(
    control_plane: list[str], workers: list[str], max_unavailable: MaxUnavailable
) -> Iterator[tuple[tuple[str, ...], tuple[int, int]]]:
    """Yields (nodes, (batch number, of how many)) in drain order."""
    size = max_unavailable.batch_size(len(workers)) if workers else 1
    groups: list[tuple[str, ...]] = [(name,) for name in control_plane]
    groups += [tuple(workers[i : i + size]) for i in range(0, len(workers), size)]
    for index, group in enumerate(groups, start=1):
        yield group, (index, len(groups))
