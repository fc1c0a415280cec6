"""After a restore, the etcd revision never goes backwards: ``etcd.revisions.advance_past`` against a
real etcd process (the 3.5.1 or 3.4.23 here, whose restore has no --bump-revision)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.etcd_cluster import EtcdCluster
from upgrader import errors
from upgrader.etcd import kv, revisions, snapshot, tools
from upgrader.support import bundled


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[kv.KV]:
    cluster = EtcdCluster(tmp_path, members=1)
    try:
        store = cluster.start()
        try:
            yield store
        finally:
            store.close()
    finally:
        cluster.stop()


def test_the_revision_ends_above_the_highest_served_and_older_revisions_are_compacted(etcd: kv.KV) -> None:
    for i in range(5):
        etcd.write(f"/registry/things/{i}", b"x")
    restored = etcd.revision()  # as a restore from a snapshot leaves it
    highest_served = restored + 2500  # what clients saw before the rollback
    seen: list[tuple[int, int]] = []
    advanced = revisions.advance_past(
        etcd, highest_served, max_gap=10_000, progress=lambda done, total: seen.append((done, total))
    )
    assert advanced.start == restored and advanced.writes == 2501
    assert advanced.reached > highest_served and etcd.revision() == advanced.reached
    assert not etcd.readable_at(highest_served)  # a watcher resuming from what it saw is told to list again
    assert etcd.readable_at(advanced.reached)
    assert etcd.get(revisions.KEY) is None  # upgrader's own key is gone
    assert [etcd.get(f"/registry/things/{i}") is not None for i in range(5)] == [True] * 5  # data untouched
    assert seen[-1] == (2501, 2501) and len(seen) >= 3


def test_a_gap_beyond_the_limit_is_refused_before_anything_is_written(etcd: kv.KV) -> None:
    before = etcd.revision()
    with pytest.raises(revisions.RevisionGap, match=r"(?s)10001 behind .* the limit is 1000 .*--allow-revision"):
        revisions.advance_past(etcd, before + 10_000, max_gap=1000)
    assert etcd.revision() == before


def test_a_cluster_already_past_the_served_revision_is_only_compacted(etcd: kv.KV) -> None:
    for i in range(10):
        etcd.write("/registry/x", str(i).encode())
    now = etcd.revision()
    advanced = revisions.advance_past(etcd, now - 5, max_gap=1000)
    assert advanced.writes == 0 and advanced.reached == now  # nothing written (deleting no key is no revision)
    assert not etcd.readable_at(now - 5)


def test_a_three_member_restore_comes_back_as_the_snapshot_then_past_every_served_revision(tmp_path: Path) -> None:
    """The full-restore mechanism end to end on real etcd: the same snapshot restored on every member
    (its name and peer URLs, a new cluster token) into new data directories, the cluster started from
    them, then the revision moved past what the old cluster served."""
    cluster = EtcdCluster(tmp_path / "cluster", members=3)
    try:
        store = cluster.start()
        try:
            store.write("/registry/before", b"kept")
            saved = tmp_path / "snapshot.db"
            snapshot.save(store, saved)
            snapshot_revision = store.revision()
            for i in range(50):
                store.write(f"/registry/after/{i}", b"lost")
            highest_served = store.revision()
        finally:
            store.close()
        cluster.stop()
        old_dirs = dict(cluster.data_dirs)
        cluster.data_dirs = {n: tmp_path / "restored" / n for n in cluster.names}
        for name in cluster.names:
            bumped = tools.restore_member(
                saved, cluster.data_dirs[name], member=name, cluster=cluster.peers, token="rollback-1", bump=10_000
            )
            assert bumped == ({"--bump-revision", "--mark-compacted"} <= tools.restore_flags())
        assert all(d.is_dir() for d in old_dirs.values())  # the old data is kept aside, never deleted first
        restored = cluster.start(token="rollback-1")
        try:
            assert restored.get("/registry/before") is not None
            assert restored.range("/registry/after/") == []  # written after the snapshot: gone
            assert len(restored.members()) == 3
            if not bumped:  # the tools here: the fallback
                assert restored.revision() == snapshot_revision
                revisions.advance_past(restored, highest_served, max_gap=10_000)
            assert restored.revision() > highest_served
            assert not restored.readable_at(highest_served)
        finally:
            restored.close()
    finally:
        cluster.stop()


def test_a_restore_never_writes_over_a_data_directory(tmp_path: Path) -> None:
    taken = tmp_path / "data"
    taken.mkdir()
    with pytest.raises(errors.Refused, match="already exists"):
        tools.restore_member(tmp_path / "s.db", taken, member="m0", cluster={"m0": ("http://127.0.0.1:1",)}, token="t")


def test_the_bump_flags_are_used_when_the_tool_has_them(tmp_path: Path) -> None:
    """etcdutl 3.5.10+ cannot be installed here: a stand-in that advertises the flags in its help and
    records its arguments shows they are detected and passed."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "etcd").write_text("#!/bin/sh\n")
    recorded = tmp_path / "argv"
    etcdutl = bin_dir / "etcdutl"
    etcdutl.write_text(
        "#!/bin/sh\n"
        'if [ "$3" = --help ]; then echo "  --bump-revision uint  --mark-compacted"; exit 0; fi\n'
        f'echo "$@" > {recorded}\n'
        'while [ $# -gt 0 ]; do [ "$1" = --data-dir ] && mkdir -p "$2"; shift; done\n'
    )
    for tool in (bin_dir / "etcd", etcdutl):
        tool.chmod(0o755)
    near = bin_dir / "etcd"
    assert tools.restore_flags(near) == {"--bump-revision", "--mark-compacted"}
    peers = {"m0": ("http://10.0.0.1:2380",), "m1": ("http://10.0.0.2:2380",)}
    assert tools.restore_member(
        tmp_path / "s.db", tmp_path / "d", member="m1", cluster=peers, token="t2", bump=500, near=near
    )
    argv = recorded.read_text().split()
    assert argv[argv.index("--bump-revision") + 1] == "500" and "--mark-compacted" in argv
    assert argv[argv.index("--name") + 1] == "m1"
    assert argv[argv.index("--initial-cluster") + 1] == "m0=http://10.0.0.1:2380,m1=http://10.0.0.2:2380"
    assert argv[argv.index("--initial-cluster-token") + 1] == "t2"


def _script(*args: str) -> subprocess.CompletedProcess[str]:
    tool = tools._tool(None)[0][0]
    script = bundled.playbooks_dir() / "files" / "etcd-restore.sh"
    return subprocess.run(
        ["/bin/sh", str(script), "--tool", tool, *args], capture_output=True, text=True, check=False, timeout=120
    )


def test_the_node_restore_script_run_again_after_a_kill_between_its_renames_finishes_the_same_restore(
    etcd_snapshot_file: Path, tmp_path: Path
) -> None:
    """What a rollback runs on each node (files/etcd-restore.sh): killed after the old data directory was
    put aside but before the restored one took its place, the next run of the same rollback moves the
    restored one in and restores nothing again; a run after that finds the work done."""
    data = tmp_path / "etcd"
    data.mkdir()
    (data / "old").write_text("the member's data before the rollback")
    args = ["--snapshot", str(etcd_snapshot_file), "--data-dir", str(data), "--run", "r1", "--name", "m0"]
    args += ["--initial-cluster", "m0=http://127.0.0.1:2380", "--token", "t", "--peer-urls", "http://127.0.0.1:2380"]
    first = _script(*args, "--bump", "1000")
    assert first.returncode == 0, first.stderr
    assert "restored=now" in first.stdout
    assert (tmp_path / "etcd.before-r1" / "old").is_file()  # kept aside, never deleted
    assert (data / "member").is_dir() and not (data / "old").exists()
    assert oct(data.stat().st_mode & 0o777) == "0o700"
    # the state a kill between the two renames leaves: old kept aside, restored dir not yet in place
    data.rename(tmp_path / "etcd.upgrader-r1")
    again = _script(*args)
    assert again.returncode == 0 and "restored=earlier" in again.stdout, again.stderr
    assert (data / "member").is_dir() and not (tmp_path / "etcd.upgrader-r1").exists()
    assert "restored=earlier" in _script(*args).stdout


def test_the_node_restore_script_leaves_nothing_behind_when_the_snapshot_is_bad(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"not a snapshot" * 100)
    data = tmp_path / "etcd"
    done = _script(
        *["--snapshot", str(bad), "--data-dir", str(data), "--run", "r1", "--name", "m0", "--token", "t"],
        *["--initial-cluster", "m0=http://127.0.0.1:2380", "--peer-urls", "http://127.0.0.1:2380"],
    )
    assert done.returncode == 1 and done.stderr.strip()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.db"]


def test_the_node_restore_script_refuses_a_missing_argument(tmp_path: Path) -> None:
    done = _script("--snapshot", str(tmp_path / "s.db"), "--data-dir", str(tmp_path / "d"))
    assert done.returncode == 2 and "--run is required" in done.stderr
