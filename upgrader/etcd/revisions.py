"""After a restore from a snapshot, no client may see the etcd revision go backwards.

Kubernetes clients remember revisions (resourceVersions): a watch resumes from the last one it saw,
and an informer's cache is only as right as that number. A restore puts etcd back at the snapshot's
revision, lower than what the cluster served since; a client resuming from a revision the restored
cluster has not reached yet would wait for "future" events, and one in between would be handed events
that are not the ones it missed. The cure is the one ``etcdutl snapshot restore --bump-revision
--mark-compacted`` applies (etcd 3.5.10+ and 3.4.27+): move the revision past the highest one served,
and compact at it, so every client that resumes from an older revision is told its revision is
compacted and lists again.

Where the restore tool lacks those flags (the 3.5.1 and 3.4.23 here do), ``advance_past`` does the same
on the running, restored cluster before any apiserver starts: no-op writes on a key of upgrader's own
(each write is one revision), then a compaction at the new revision. A gap larger than ``max_gap`` is
refused: writing millions of revisions takes minutes, and a gap that large says something is wrong
with the recorded revision or the snapshot.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from upgrader import errors
from upgrader.etcd import kv

KEY = "/upgrader/revision-bump"  # outside /registry: no Kubernetes object is touched
WRITERS = 16  # concurrent writes (one HTTP/2 channel multiplexes them)


class RevisionGap(errors.Refused):
    """The restored revision is further behind what the cluster served than the configured limit."""


@dataclass(frozen=True)
class Advanced:
    start: int  # the revision before
    reached: int  # the revision compacted at: above every revision the cluster served
    writes: int
    seconds: float


def advance_past(
    store: kv.KV,
    highest_served: int,
    *,
    max_gap: int,
    progress: Callable[[int, int], None] | None = None,
) -> Advanced:
    """Moves the revision above ``highest_served`` and compacts at it. Nothing else may write meanwhile
    (the apiservers are stopped during a restore), so N writes are exactly N revisions."""
    started = time.monotonic()
    start = store.revision()
    gap = highest_served + 1 - start
    if gap > max_gap:
        raise RevisionGap(
            f"the restored etcd is at revision {start}, {gap} behind the highest revision the cluster served "
            f"({highest_served}); the limit is {max_gap} (etcd.max_revision_gap): raise it, or accept that "
            "clients see the revision go backwards with --allow-revision-regression"
        )
    writes = max(0, gap)
    if writes:
        _write(store, writes, progress)
    store.delete(KEY)  # one more revision; leaves no key of upgrader's behind
    reached = store.revision()
    if reached <= highest_served:
        raise errors.OperationFailed(
            f"etcd reached revision {reached} after {writes} writes, not above {highest_served}: "
            "something else wrote or a write was lost"
        )
    store.compact(reached)
    return Advanced(start=start, reached=reached, writes=writes, seconds=time.monotonic() - started)


def _write(store: kv.KV, writes: int, progress: Callable[[int, int], None] | None) -> None:
    done = 0
    lock = threading.Lock()
    failed = threading.Event()

    def writer(count: int) -> None:
        nonlocal done
        for _ in range(count):
            if failed.is_set():
                return
            store.write(KEY, b"")
            with lock:
                done += 1
                if progress is not None and done % 1000 == 0:
                    progress(done, writes)

    shares = [writes // WRITERS + (1 if i < writes % WRITERS else 0) for i in range(WRITERS)]
    with ThreadPoolExecutor(max_workers=WRITERS, thread_name_prefix="revision") as pool:
        futures = [pool.submit(writer, share) for share in shares if share]
        try:
            for future in futures:
                future.result()
        except BaseException:
            failed.set()
            raise
    if progress is not None:
        progress(writes, writes)
