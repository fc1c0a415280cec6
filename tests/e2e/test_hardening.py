"""Issue #8 on the lab: what reaches Ansible is never templated, host names never become paths, an
interrupted or killed snapshot leaves nothing unaccounted for, insecure transport is refused unless
asked for and then recorded, and nothing secret is written anywhere by an end-to-end run."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.e2e.conftest import descendants, wait_for
from upgrader import cli
from upgrader.core import config
from upgrader.executor import inventory, runner
from upgrader.lab import topology
from upgrader.state import store

pytestmark = pytest.mark.slow
cli_runner = CliRunner()


def lab_config(lab: topology.Lab, tmp_path: Path, **changes: object) -> Path:
    """A copy of the lab's cluster.yaml with absolute paths, its own snapshot directory, and ``changes``."""
    data = yaml.safe_load((lab.dir / "cluster.yaml").read_text())
    for key in ("kubeconfig", "inventory"):
        data[key] = str(lab.dir / data[key])
    for key in ("ca", "cert", "key"):
        data["etcd"][key] = str(lab.dir / data["etcd"][key])
    data["snapshots"]["dir"] = str(tmp_path / "snapshots")
    data.update(changes)
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_extra_variables_reach_ansible_as_text_never_as_templates(
    shared_lab: topology.Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``node_root`` given as an extra variable with Jinja in it: the node-facts playbook reads the
    directory of that literal name, and the lookup in the other name never runs its command."""
    marker = tmp_path / "ran-a-command"
    # a path without "/" in the template; ANSIBLE_* is what a playbook inherits of the environment
    monkeypatch.setenv("ANSIBLE_UPGRADER_TEST_MARKER", str(marker))
    loaded = inventory.load(shared_lab.dir / "inventory" / "hosts.ini")
    for name in ("j{{ 7*7 }}", "p{{ lookup('pipe', 'touch $ANSIBLE_UPGRADER_TEST_MARKER') }}"):
        root = tmp_path / name
        (root / "usr" / "bin").mkdir(parents=True)
        (root / "sys" / "fs" / "cgroup").mkdir(parents=True)
        (root / "sys" / "fs" / "cgroup" / "cgroup.controllers").write_text("cpu memory\n")
        kubelet = root / "usr" / "bin" / "kubelet"
        kubelet.write_text("#!/bin/sh\necho Kubernetes v1.99.0\n")
        kubelet.chmod(0o755)
        result = runner.run(runner.PlaybookRequest("node-facts.yml", loaded, extravars={"node_root": str(root)}))
        assert result.status is runner.Status.SUCCESSFUL, result.failures()
        printed = result.by_host("upgrader: node facts")
        assert set(printed) == set(loaded.all_hosts())
        assert all("kubelet=Kubernetes v1.99.0" in str(r["stdout"]) for r in printed.values()), printed
    assert not (tmp_path / "j49").exists()
    assert not marker.exists()


def test_a_traversing_host_name_stops_snapshot_create_before_any_playbook(
    shared_lab: topology.Lab, tmp_path: Path
) -> None:
    hosts = tmp_path / "hosts.ini"
    original = (shared_lab.dir / "inventory" / "hosts.ini").read_text()
    first = next(line for line in original.splitlines() if line.startswith("cp-1 "))
    hosts.write_text(original.replace(first, first + "\n" + first.replace("cp-1", "../../../escaped", 1), 1))
    cluster_yaml = lab_config(shared_lab, tmp_path, inventory=str(hosts))
    result = cli_runner.invoke(
        cli.app, ["snapshot", "create", "-c", str(cluster_yaml), "--db", f"sqlite:///{tmp_path / 'state.db'}"]
    )
    assert result.exit_code == 2, result.output
    assert "'../../../escaped' is not a valid Kubernetes node name" in result.stderr
    assert not (tmp_path / "snapshots").exists() or not list((tmp_path / "snapshots").iterdir())
    assert not (tmp_path.parent / "escaped").exists()  # where dest/../../../escaped would land


class Create:
    """``upgrader snapshot create`` as its own process, as automation runs it."""

    def __init__(self, cluster_yaml: Path, db_url: str, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "upgrader", "snapshot", "create", "-c", str(cluster_yaml), "--db", db_url],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    def descendants(self) -> set[int]:
        return descendants(self.process.pid)

    def finish(self) -> tuple[int, str]:
        _, stderr = self.process.communicate(timeout=120)
        return self.process.returncode, stderr

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate(timeout=60)


@dataclass
class Fetching:
    """A ``snapshot create`` process caught while its manifest-fetch playbook runs: the etcd copy is
    on disk, a playbook is a child process, and nothing is recorded yet."""

    cluster_yaml: Path
    db_url: str
    snapshots_dir: Path
    create: Create
    children: set[int]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@pytest.fixture
def fetching(shared_lab: topology.Lab, tmp_path: Path, private_state_home: Path) -> Iterator[Fetching]:
    cluster_yaml = lab_config(shared_lab, tmp_path)
    db_url = f"sqlite:///{tmp_path / 'state.db'}"
    snapshots_dir = config.load(cluster_yaml).snapshots.dir
    create = Create(cluster_yaml, db_url, {**os.environ, "XDG_DATA_HOME": str(private_state_home.parent)})
    try:

        def started() -> bool:
            return any(b"snapshot-fetch.yml" in _cmdline(pid) for pid in create.descendants())

        wait_for(started, timeout=60, what="the manifest fetch playbook to start")
        yield Fetching(cluster_yaml, db_url, snapshots_dir, create, create.descendants())
    finally:
        create.stop()


def test_sigterm_during_snapshot_create_cleans_up_like_ctrl_c(fetching: Fetching, private_state_home: Path) -> None:
    fetching.create.process.send_signal(signal.SIGTERM)
    code, stderr = fetching.create.finish()
    assert code == 1 and "interrupted by SIGTERM" in stderr, stderr
    assert "Traceback" not in stderr
    assert list(fetching.snapshots_dir.iterdir()) == []  # no etcd copy, no .part, no archive
    assert list((private_state_home / "ansible").iterdir()) == []  # no artifacts recording the environment
    wait_for(
        lambda: not any(Path(f"/proc/{pid}").exists() for pid in fetching.children), timeout=20, what="children gone"
    )
    with store.Store.open(fetching.db_url) as state:
        assert state.snapshots() == [] and state.locks() == []


def test_files_left_by_a_killed_snapshot_create_are_reported_and_pruned(
    fetching: Fetching, private_state_home: Path
) -> None:
    cluster_yaml, db_url, snapshots_dir = fetching.cluster_yaml, fetching.db_url, fetching.snapshots_dir
    fetching.create.process.send_signal(signal.SIGKILL)  # no clean-up can run
    fetching.create.finish()
    for pid in fetching.children:  # the orphaned ansible-playbook ends on its own; do not leave it running
        wait_for(lambda pid=pid: not Path(f"/proc/{pid}").exists(), timeout=60, what=f"pid {pid} to end")
    left = sorted(p.name for p in snapshots_dir.iterdir())
    assert any(name.endswith(".db") for name in left), left
    listed = cli_runner.invoke(cli.app, ["snapshot", "list", "-c", str(cluster_yaml), "--db", db_url, "-o", "json"])
    assert sorted(Path(p).name for p in json.loads(listed.stdout)["orphans"]) == left
    assert list((private_state_home / "ansible").iterdir()), "the killed run's private directory is still there"
    # A second state database sharing the directory (a team moving to PostgreSQL, say) proves nothing
    # about these files: it lists no orphan and its prune deletes nothing.
    other_db = f"sqlite:///{snapshots_dir.parent / 'other-state.db'}"
    for args in (["snapshot", "list"], ["snapshot", "prune", "--yes"]):
        seen = cli_runner.invoke(cli.app, [*args, "-c", str(cluster_yaml), "--db", other_db, "-o", "json"])
        assert seen.exit_code == 0, seen.output
        assert json.loads(seen.stdout)["orphans"] == []
    assert sorted(p.name for p in snapshots_dir.iterdir()) == left
    # The killed create's lease is still in the database, but its process is gone from this host: prune
    # takes the lock over at once instead of waiting a minute for it to expire.
    pruned = cli_runner.invoke(cli.app, ["snapshot", "prune", "-c", str(cluster_yaml), "--db", db_url, "--yes"])
    assert pruned.exit_code == 0, pruned.output
    assert list(snapshots_dir.iterdir()) == []
    facts = cli_runner.invoke(cli.app, ["facts", "-c", str(cluster_yaml), "-o", "json"])  # runs a playbook
    assert facts.exit_code == 0, facts.output
    assert list((private_state_home / "ansible").iterdir()) == []  # the dead process's directory went with it


def test_insecure_transport_is_refused_then_allowed_and_recorded_with_insecure(
    shared_lab: topology.Lab, tmp_path: Path
) -> None:
    kubeconfig = yaml.safe_load(shared_lab.kubeconfig.read_text())
    for entry in kubeconfig["clusters"]:
        entry["cluster"].pop("certificate-authority-data", None)
        entry["cluster"]["insecure-skip-tls-verify"] = True
    unverified = tmp_path / "unverified.conf"
    unverified.write_text(yaml.safe_dump(kubeconfig))
    unverified.chmod(0o600)
    cluster_yaml = lab_config(shared_lab, tmp_path, kubeconfig=str(unverified))
    db_url = f"sqlite:///{tmp_path / 'state.db'}"
    refused = cli_runner.invoke(cli.app, ["snapshot", "create", "-c", str(cluster_yaml), "--db", db_url])
    assert refused.exit_code == 2 and "insecure-skip-tls-verify" in refused.stderr
    allowed = cli_runner.invoke(
        cli.app, ["snapshot", "create", "-c", str(cluster_yaml), "--db", db_url, "--insecure", "-o", "json"]
    )
    assert allowed.exit_code == 0, allowed.output
    assert "--insecure: the kubeconfig sets insecure-skip-tls-verify" in allowed.stderr
    snapshot_id = json.loads(allowed.stdout)["id"]
    with store.Store.open(db_url) as state:
        recorded = [e for e in state.events(cluster=shared_lab.name) if e.kind == "insecure-transport"]
    assert len(recorded) == 1 and recorded[0].data["snapshot"] == snapshot_id
    # An apply run over the same connections records it too: in the run's options and as an event. A
    # one-second window stops it before its first step, so the shared lab is not changed.
    planned = cli_runner.invoke(
        cli.app, ["plan", "-c", str(cluster_yaml), "--to", "1.32", "--save", "--db", db_url, "--insecure", "-o", "json"]
    )
    assert planned.exit_code == 0, planned.output
    args = [
        "apply",
        json.loads(planned.stdout)["id"],
        "-c",
        str(cluster_yaml),
        "--db",
        db_url,
        "--yes",
        "--window",
        "1s",
    ]
    assert cli_runner.invoke(cli.app, args).exit_code == 2  # refused without --insecure, before any run
    paused = cli_runner.invoke(cli.app, [*args, "--insecure", "-o", "json"])
    assert paused.exit_code == 6, paused.output
    run_id = json.loads(paused.stdout)["run"]
    with store.Store.open(db_url) as state:
        run = state.run(run_id)
        by_run = [e for e in state.events(cluster=shared_lab.name) if e.kind == "insecure-transport" and e.run_id]
    assert any("insecure-skip-tls-verify" in allowed for allowed in run.options["insecure"])
    assert [e.run_id for e in by_run] == [run_id]
    abandoned = cli_runner.invoke(
        cli.app, ["apply", "--abandon", run_id, "-c", str(cluster_yaml), "--db", db_url, "--yes"]
    )
    assert abandoned.exit_code == 0, abandoned.output


def _secrets_of(lab: topology.Lab) -> dict[str, bytes]:
    """Every private key of the lab, as a PEM body line and as the base64 a kubeconfig carries."""
    needles: dict[str, bytes] = {}
    for key in lab.dir.rglob("*.key"):
        pem = key.read_bytes()
        body = [line for line in pem.splitlines() if line and not line.startswith(b"-----")]
        needles[f"{key} (PEM)"] = body[0]
        needles[f"{key} (base64)"] = base64.b64encode(pem)[:48]
    kubeconfig = yaml.safe_load(lab.kubeconfig.read_text())
    for user in kubeconfig["users"]:
        needles[f"{user['name']} client-key-data"] = user["user"]["client-key-data"].encode()[:48]
    return needles


def test_nothing_secret_is_written_by_an_end_to_end_run(
    shared_lab: topology.Lab, tmp_path: Path, private_state_home: Path
) -> None:
    cluster_yaml = lab_config(shared_lab, tmp_path)
    db_url = f"sqlite:///{tmp_path / 'state' / 'state.db'}"
    outputs: list[str] = []
    for args in (
        ["config", "check", "-c", str(cluster_yaml), "-o", "json"],
        ["facts", "-c", str(cluster_yaml), "-o", "json"],
        ["plan", "-c", str(cluster_yaml), "--to", "1.31", "--save", "--db", db_url, "-o", "json"],
        ["snapshot", "create", "-c", str(cluster_yaml), "--db", db_url, "-o", "json"],
        ["snapshot", "list", "-c", str(cluster_yaml), "--db", db_url, "-o", "json"],
        ["snapshot", "prune", "-c", str(cluster_yaml), "--db", db_url, "--yes", "-o", "json"],
    ):
        result = cli_runner.invoke(cli.app, args)
        assert result.exit_code in (0, 3), result.output
        outputs.append(result.stdout + result.stderr)
    snapshot = json.loads(outputs[3])
    written: dict[str, bytes] = {f"output of {i}": text.encode() for i, text in enumerate(outputs)}
    for directory in (tmp_path / "state", private_state_home):
        for path in directory.rglob("*"):
            if path.is_file():
                written[str(path)] = path.read_bytes()
    with tarfile.open(snapshot["archive_path"]) as archive:
        for member in archive.getmembers():
            extracted = archive.extractfile(member)
            if extracted is not None:
                written[f"archive:{member.name}"] = extracted.read()
    assert any(name.endswith("state.db") for name in written)
    leaks = [
        f"{needle_name} in {where}"
        for needle_name, needle in _secrets_of(shared_lab).items()
        for where, data in written.items()
        if needle in data
    ]
    assert leaks == []
