"""playbooks/upgrade-etcd-service.yml, run by ansible-runner on an etcd host's root of its own, against a
real HTTP mirror laid out like etcd's GitHub releases: the binary the unit runs is replaced only by a
release that matches its SHA256SUMS and reports its version, the one it replaced is kept for a put-back
that needs no mirror, and the unit is restarted only when something changed (or a resumed run asks).

What cannot run here is faked at the host's edge: ``systemctl`` is a script that prints the unit and
logs restarts, and each "etcd" answers ``--version`` only (what the playbook asks of it)."""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import sys
import tarfile
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from upgrader.executor import inventory, runner

UNIT = "[Service]\nEnvironmentFile=/etc/etcd.env\nExecStart=/usr/local/bin/etcd\nRestart=always\n"
SYSTEMCTL = """#!/bin/sh
root=$(cd "$(dirname "$0")/../.." && pwd)
case "$1" in
  cat) echo "# /etc/systemd/system/etcd.service"; cat "$root/etc/systemd/system/etcd.service" ;;
  restart) echo "$2" >> "$root/restarts" ;;
  *) exit 1 ;;
esac
"""


def _etcd(version: str) -> bytes:
    return f'#!/bin/sh\n[ "$1" = --version ] && echo "etcd Version: {version}" && echo "Git SHA: lab"\n'.encode()


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    directory = tmp_path / "mirror"
    directory.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", directory
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def publish(directory: Path, version: str, *, reports: str | None = None, sums: str | None = None) -> None:
    """etcd ``version``'s release as etcd publishes it: the tarball and SHA256SUMS beside it."""
    name = f"etcd-v{version}-linux-amd64"
    body = io.BytesIO()
    with gzip.GzipFile(fileobj=body, mode="wb") as packed, tarfile.open(fileobj=packed, mode="w") as archive:
        content = _etcd(reports or version)
        info = tarfile.TarInfo(f"{name}/etcd")
        info.size, info.mode = len(content), 0o755
        archive.addfile(info, io.BytesIO(content))
    release = directory / f"v{version}"
    release.mkdir(parents=True)
    (release / f"{name}.tar.gz").write_bytes(body.getvalue())
    digest = sums or hashlib.sha256(body.getvalue()).hexdigest()
    (release / "SHA256SUMS").write_text(f"{'0' * 64}  etcd-v{version}-darwin-arm64.zip\n{digest}  {name}.tar.gz\n")


def host(tmp_path: Path, running: str) -> Path:
    root = tmp_path / "etcd-1"
    for sub in ("usr/local/bin", "usr/bin", "etc/systemd/system"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "etc" / "systemd" / "system" / "etcd.service").write_text(UNIT)
    (root / "usr" / "bin" / "systemctl").write_text(SYSTEMCTL)
    (root / "usr" / "bin" / "systemctl").chmod(0o755)
    (root / "usr" / "local" / "bin" / "etcd").write_bytes(_etcd(running))
    (root / "usr" / "local" / "bin" / "etcd").chmod(0o755)
    return root


def run(tmp_path: Path, root: Path, releases: str, version: str, *, restart: bool = False) -> runner.PlaybookResult:
    hosts = tmp_path / "hosts.ini"
    hosts.write_text(
        "[kube_control_plane]\ncp-1\n"
        f"[etcd]\netcd-1 node_root={root} etcd_member_name=etcd1\n"
        "[kube_node]\n[k8s_cluster:children]\nkube_control_plane\nkube_node\n"
        f"[all:vars]\nansible_connection=local\nansible_python_interpreter={sys.executable}\n"
    )
    variables = {"etcd_version": version, "etcd_releases": releases, "etcd_restart": restart}
    request = runner.PlaybookRequest(
        playbook="upgrade-etcd-service.yml",
        inventory=inventory.load(hosts),
        extravars=variables,
        limit=("etcd-1",),
    )
    return runner.run(request)


def version_of(root: Path) -> str:
    return (root / "usr" / "local" / "bin" / "etcd").read_text().split("etcd Version: ")[1].split('"')[0]


def restarts(root: Path) -> int:
    log = root / "restarts"
    return len(log.read_text().split()) if log.exists() else 0


def test_the_release_replaces_the_unit_s_binary_which_is_kept_and_the_unit_restarts_once(
    tmp_path: Path, mirror: tuple[str, Path]
) -> None:
    url, directory = mirror
    publish(directory, "3.5.30")
    root = host(tmp_path, "3.5.16")
    result = run(tmp_path, root, url, "3.5.30")
    assert result.status is runner.Status.SUCCESSFUL, result.failures()
    assert version_of(root) == "3.5.30" and restarts(root) == 1
    kept = root / "var" / "lib" / "upgrader" / "etcd"
    assert sorted(p.name for p in kept.iterdir()) == ["etcd-3.5.16", "etcd-3.5.30"]  # no tarball left
    assert kept.stat().st_mode & 0o777 == 0o700
    again = run(tmp_path, root, url, "3.5.30")
    assert again.status is runner.Status.SUCCESSFUL and not any(t.changed for t in again.tasks)
    assert restarts(root) == 1  # already there: not restarted
    resumed = run(tmp_path, root, url, "3.5.30", restart=True)
    assert resumed.status is runner.Status.SUCCESSFUL and restarts(root) == 2  # a resumed run restarts it


def test_a_release_that_does_not_match_its_sha256sums_replaces_nothing(
    tmp_path: Path, mirror: tuple[str, Path]
) -> None:
    url, directory = mirror
    publish(directory, "3.5.30", sums="f" * 64)
    root = host(tmp_path, "3.5.16")
    result = run(tmp_path, root, url, "3.5.30")
    assert result.status is runner.Status.FAILED
    assert "checksum" in " ".join(result.failures()).lower()
    assert version_of(root) == "3.5.16" and restarts(root) == 0
    assert not list((root / "var" / "lib" / "upgrader" / "etcd").iterdir())


def test_a_release_whose_etcd_reports_another_version_replaces_nothing(
    tmp_path: Path, mirror: tuple[str, Path]
) -> None:
    url, directory = mirror
    publish(directory, "3.5.30", reports="3.5.29")
    root = host(tmp_path, "3.5.16")
    result = run(tmp_path, root, url, "3.5.30")
    assert result.status is runner.Status.FAILED
    assert "does not report 3.5.30" in " ".join(result.failures())
    assert version_of(root) == "3.5.16" and restarts(root) == 0
    assert not list((root / "var" / "lib" / "upgrader" / "etcd").iterdir())  # never kept as 3.5.30


def test_the_old_version_goes_back_from_the_kept_binary_with_the_mirror_gone(
    tmp_path: Path, mirror: tuple[str, Path]
) -> None:
    url, directory = mirror
    publish(directory, "3.5.30")
    root = host(tmp_path, "3.5.16")
    assert run(tmp_path, root, url, "3.5.30").status is runner.Status.SUCCESSFUL
    gone = "http://127.0.0.1:9"  # the discard port: nothing answers
    back = run(tmp_path, root, gone, "3.5.16")
    assert back.status is runner.Status.SUCCESSFUL, back.failures()
    assert version_of(root) == "3.5.16" and restarts(root) == 2


def test_a_move_to_3_6_stops_on_a_host_whose_etcd_env_enables_v2_before_anything_changes(
    tmp_path: Path, mirror: tuple[str, Path]
) -> None:
    url, directory = mirror
    publish(directory, "3.6.14")
    root = host(tmp_path, "3.5.33")
    (root / "etc" / "etcd.env").write_text("ETCD_NAME=etcd1\nETCD_ENABLE_V2=true\n")
    result = run(tmp_path, root, url, "3.6.14")
    assert result.status is runner.Status.FAILED
    assert "ETCD_ENABLE_V2=true, which etcd 3.6.14 refuses" in " ".join(result.failures())
    assert version_of(root) == "3.5.33" and restarts(root) == 0
    (root / "etc" / "etcd.env").write_text("ETCD_NAME=etcd1\nETCD_ENABLE_V2=false\n")
    moved = run(tmp_path, root, url, "3.6.14")
    assert moved.status is runner.Status.SUCCESSFUL, moved.failures()
    assert version_of(root) == "3.6.14"


def test_a_failure_message_never_repeats_a_url_s_user_info() -> None:
    """get_url itself says only "Request failed" for a release it cannot fetch, but a module or Ansible's last
    lines may quote the URL a task was given: every failure line leaves with its user-info masked."""
    task = runner.TaskResult(
        "etcd-1", "fetch", ok=False, changed=False, result={"msg": "HTTP Error 401 for https://alice:S3cretPass@m/x"}
    )
    result = runner.PlaybookResult(runner.Status.FAILED, 2, {}, (task,))
    assert result.failures() == ["etcd-1: fetch: HTTP Error 401 for https://***@m/x"]
    tail = runner.PlaybookResult(runner.Status.FAILED, 4, {}, (), tail=("fatal: http://bob:pw@m/",))
    assert tail.failures() == ["fatal: http://***@m/"]
