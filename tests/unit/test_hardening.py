"""The hostile and careless inputs of issue #8 that need no lab: each was reproduced on the code
before the fix and fails without it."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import text
from typer.testing import CliRunner

from tests.unit.test_plan_cli import FACTS
from upgrader import cli, errors
from upgrader.core import config
from upgrader.executor import inventory, runner
from upgrader.snapshots import local as local_tier
from upgrader.state import store
from upgrader.support import files, redaction

cli_runner = CliRunner()


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return cli_runner.invoke(cli.app, list(args))


def edit(cluster_yaml: Path, change: dict[str, object]) -> Path:
    data = yaml.safe_load(cluster_yaml.read_text())
    for dotted, value in change.items():
        *parents, last = dotted.split(".")
        target = data
        for key in parents:
            target = target.setdefault(key, {})
        target[last] = value
    cluster_yaml.write_text(yaml.safe_dump(data))
    return cluster_yaml


# -- 1. template injection -----------------------------------------------------------------------


@pytest.mark.parametrize("delimiter", ["{{ 7*7 }}", "{% if true %}x{% endif %}", "{# c #}"])
def test_template_delimiters_in_config_values_are_refused_with_the_key(cluster_yaml: Path, delimiter: str) -> None:
    edit(cluster_yaml, {"snapshots.dir": f"/var/backups/j{delimiter}"})
    result = invoke("config", "check", "-c", str(cluster_yaml))
    assert result.exit_code == 2
    assert "snapshots.dir: contains a Jinja2 template delimiter" in result.stderr
    assert "Traceback" not in result.output


def test_a_template_in_any_key_is_named_with_its_line(cluster_yaml: Path) -> None:
    text = cluster_yaml.read_text().replace("context: admin@prod", "context: \"{{ lookup('pipe', 'id') }}\"")
    cluster_yaml.write_text(text)
    with pytest.raises(errors.ConfigError) as caught:
        config.load(cluster_yaml)
    assert f"{cluster_yaml}:3: context: contains a Jinja2 template delimiter" in "\n".join(caught.value.problems)


def test_every_string_handed_to_ansible_is_tagged_unsafe() -> None:
    document = runner.unsafe_yaml({"dest": "/x/j{{ 7*7 }}", "nested": {"list": ["{{ a }}", 3, True, None]}, "n": 1.5})
    loader = yaml.SafeLoader
    tagged: list[str] = []

    class Recording(loader):  # type: ignore[valid-type,misc]
        pass

    def unsafe(loader_: yaml.SafeLoader, node: yaml.Node) -> str:
        tagged.append(str(node.value))
        return str(node.value)

    Recording.add_constructor("!unsafe", unsafe)
    loaded = yaml.load(document, Loader=Recording)
    assert loaded == {"dest": "/x/j{{ 7*7 }}", "nested": {"list": ["{{ a }}", 3, True, None]}, "n": 1.5}
    assert sorted(tagged) == sorted(["/x/j{{ 7*7 }}", "{{ a }}"])


# -- 2. path traversal through host names ----------------------------------------------------------


def test_an_inventory_with_a_traversing_host_name_cannot_be_loaded(cluster_yaml: Path) -> None:
    hosts = cluster_yaml.parent / "inventory" / "hosts.ini"
    hosts.write_text(hosts.read_text().replace("cp-3 ansible_host", "../../../escaped ansible_host"))
    with pytest.raises(errors.ConfigError) as caught:
        inventory.load(hosts)
    assert any("'../../../escaped' is not a valid Kubernetes node name" in p for p in caught.value.problems)
    # and so no command that runs a playbook gets as far as Ansible: the session is the only way in
    result = invoke("facts", "-c", str(cluster_yaml))
    assert result.exit_code == 2 and "escaped" in result.stderr


def test_a_static_inventory_is_read_by_ansible_once_per_content(cluster_yaml: Path, private_state_home: Path) -> None:
    hosts = cluster_yaml.parent / "inventory" / "hosts.ini"
    first = inventory.load(hosts)
    kept = list((private_state_home / "inventories").glob("*.json"))
    assert len(kept) == 1 and oct(kept[0].stat().st_mode & 0o777) == "0o600"
    assert oct(kept[0].parent.stat().st_mode & 0o777) == "0o700"
    assert "ansible_host" not in kept[0].read_text()  # group membership, never how a host is reached
    assert inventory.load(hosts) == first
    # other bytes, another reading: an edit is never hidden by what was kept
    hosts.write_text(hosts.read_text().replace("cp-3 ansible_host", "../../../escaped ansible_host"))
    with pytest.raises(errors.ConfigError, match="1 problem in the inventory"):
        inventory.load(hosts)
    # a damaged entry is read again from Ansible
    kept[0].write_text("{not json")
    hosts.write_text(hosts.read_text().replace("../../../escaped ansible_host", "cp-3 ansible_host"))
    assert inventory.load(hosts) == first


def test_kubespray_s_etcd_member_names_are_read_and_kept_with_the_groups(
    cluster_yaml: Path, private_state_home: Path
) -> None:
    hosts = cluster_yaml.parent / "inventory" / "hosts.ini"
    hosts.write_text(hosts.read_text().replace("cp-2 ansible_host", "cp-2 etcd_member_name=etcd2 ansible_host"))
    first = inventory.load(hosts)
    assert first.etcd_member_names == {"cp-2": "etcd2"}
    assert inventory.load(hosts).etcd_member_names == {"cp-2": "etcd2"}  # from the kept reading
    # a reading kept before member names were: read again from Ansible, never taken as "none set"
    (kept,) = (private_state_home / "inventories").glob("*.json")
    data = json.loads(kept.read_text())
    del data["etcd_member_names"]
    kept.write_text(json.dumps(data))
    assert inventory.load(hosts).etcd_member_names == {"cp-2": "etcd2"}


def test_an_inventory_script_is_run_every_time(cluster_yaml: Path, private_state_home: Path, tmp_path: Path) -> None:
    script = tmp_path / "inventory.py"
    groups = {"kube_control_plane": {"hosts": ["cp-1"]}, "etcd": {"hosts": ["cp-1"]}, "kube_node": {"hosts": ["w-1"]}}
    script.write_text(f"#!/bin/sh\necho '{json.dumps({**groups, '_meta': {'hostvars': {}}})}'\n")
    script.chmod(0o755)
    assert inventory.load(script).all_hosts() == ("cp-1", "w-1")
    assert not (private_state_home / "inventories").exists()


def test_a_playbook_limit_names_only_inventory_hosts(cluster_yaml: Path) -> None:
    loaded = inventory.load(cluster_yaml.parent / "inventory" / "hosts.ini")
    with pytest.raises(errors.InputError, match="not in the inventory"):
        runner.PlaybookRequest("node-facts.yml", loaded, limit=("cp-1", "all"))


# -- 3. secrets stored ---------------------------------------------------------------------------


def test_the_scrubber_covers_kubeconfig_data_headers_pem_blocks_and_nested_lists() -> None:
    pem = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEI...\n-----END EC PRIVATE KEY-----\n"
    data = {
        "users": [[{"user": {"client-key-data": "a2V5", "client-certificate-data": "Y2VydA=="}}]],
        "headers": {"Authorization": "Bearer abc", "X-Api-Key": "k"},
        "password": "p",
        "api_key": "k2",
        "token": "t",
        "notes": [pem, "plain", {"deeper": [{"passwd": "x"}]}],
        "mirror": "https://alice:S3cretPass@mirror.example/k8s",
        "node": "cp-1",
    }
    scrubbed = redaction.scrub(data)
    flat = json.dumps(scrubbed)
    for secret in ("a2V5", "Y2VydA==", "Bearer abc", '"k"', "k2", '"t"', "MHcCAQEEI", "S3cretPass", '"x"'):
        assert secret not in flat, secret
    assert scrubbed["node"] == "cp-1" and scrubbed["notes"][1] == "plain"
    assert scrubbed["mirror"] == "https://***@mirror.example/k8s"


# -- 4. passwords in URLs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mirror", ["https://alice:S3cretPass@mirror.example/k8s", "https://alice:S3cretPass@mirror.example:8443/k8s"]
)
def test_a_mirror_password_is_never_printed(cluster_yaml: Path, mirror: str) -> None:
    edit(cluster_yaml, {"packages.method": "binary", "packages.mirror": mirror})
    for args in ((), ("-o", "json")):
        result = invoke("config", "check", "-c", str(cluster_yaml), *args)
        assert result.exit_code == 0, result.output
        assert "S3cretPass" not in result.output and "***@mirror.example" in result.output


def test_a_bad_port_names_the_url_without_its_password(cluster_yaml: Path) -> None:
    edit(
        cluster_yaml, {"packages.method": "binary", "packages.mirror": "https://alice:S3cretPass@mirror.example:99999/"}
    )
    result = invoke("config", "check", "-c", str(cluster_yaml), "-o", "json")
    assert result.exit_code == 2
    assert "bad port" in result.output and "S3cretPass" not in result.output


# -- 5. orphans ----------------------------------------------------------------------------------


def test_files_without_a_row_are_listed_and_pruned_after_confirmation(cluster_yaml: Path, db_url: str) -> None:
    cfg = config.load(cluster_yaml)
    directory = files.private_dir(cfg.snapshots.dir)
    stray = [
        directory / "prod-eu1-20261201T010203Z-abcd.db",
        directory / "prod-eu1-20261201T010203Z-abcd.tar.gz.part",
    ]
    for path in stray:
        path.write_bytes(b"every secret of the cluster")
    with store.Store.open(db_url) as state:  # what create journals before it writes: the proof they are ours
        local_tier.announce(
            state,
            "prod-eu1",
            "prod-eu1-20261201T010203Z-abcd",
            (stray[0], directory / "prod-eu1-20261201T010203Z-abcd.tar.gz"),
        )
    mine_not = [
        directory / "notes.txt",
        directory / "other-cluster-20261201T010203Z-abcd.db",
        directory / "prod-eu1-20261130T000000Z-ffff.db",  # this cluster's name, never announced here
    ]
    for path in mine_not:
        path.write_text("not upgrader's, or another cluster's")
    mine_not.append(directory / "prod-eu1-20261201T010203Z-abcd.d")  # a name like ours, not a file create writes
    mine_not[-1].mkdir()
    listed = invoke("snapshot", "list", "-c", str(cluster_yaml), "--db", db_url, "-o", "json")
    assert listed.exit_code == 0, listed.output
    assert sorted(json.loads(listed.stdout)["orphans"]) == sorted(str(p) for p in stray)
    text_listing = invoke("snapshot", "list", "-c", str(cluster_yaml), "--db", db_url)
    assert "belongs to no snapshot" in text_listing.stderr
    refused = invoke("snapshot", "prune", "-c", str(cluster_yaml), "--db", db_url)
    assert refused.exit_code == 2 and all(p.exists() for p in stray)
    pruned = invoke("snapshot", "prune", "-c", str(cluster_yaml), "--db", db_url, "--yes")
    assert pruned.exit_code == 0, pruned.output
    assert not any(p.exists() for p in stray)
    assert all(p.exists() for p in mine_not)


def test_a_dead_process_private_ansible_directory_is_removed_by_the_next_run(private_state_home: Path) -> None:
    stale = files.private_dir(private_state_home / "ansible") / "run-999999999-abc123"
    (stale / "artifacts").mkdir(parents=True)
    (stale / "artifacts" / "env").write_text("PATH=... everything")
    fresh = runner._private_data_dir()
    try:
        assert not stale.exists()
        assert fresh.parent == private_state_home / "ansible" and oct(fresh.parent.stat().st_mode & 0o777) == "0o700"
    finally:
        fresh.rmdir()


# -- 6. durability -------------------------------------------------------------------------------


def test_the_archive_rename_is_followed_by_a_directory_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[tuple[str, str]] = []
    real_replace, real_fsync = os.replace, os.fsync

    def replace(src: str | Path, dst: str | Path) -> None:
        real_replace(src, dst)
        order.append(("rename", str(dst)))

    def fsync(fd: int) -> None:
        real_fsync(fd)
        order.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "fsync", fsync)
    dest = tmp_path / "s.tar.gz"
    local_tier._archive({"facts.json": b"{}"}, dest)
    rename = order.index(("rename", str(dest)))
    assert ("fsync", str(tmp_path)) in order[rename + 1 :]


# -- 7. the lock ---------------------------------------------------------------------------------


def test_check_fails_once_renewals_have_failed_for_a_whole_ttl(db_url: str) -> None:
    with store.Store.open(db_url) as state:
        held = state.lock("prod-eu1", "test", ttl=timedelta(seconds=1.5))
        with held:
            held.check()
            with state.engine.begin() as connection:  # every renewal from now on fails
                connection.execute(text("ALTER TABLE locks RENAME TO locks_gone"))
            time.sleep(1.7)
            with pytest.raises(errors.LockLost, match="could not be renewed"):
                held.check()
            with state.engine.begin() as connection:
                connection.execute(text("ALTER TABLE locks_gone RENAME TO locks"))


def test_mutating_snapshot_commands_take_the_cluster_lock(cluster_yaml: Path, db_url: str) -> None:
    with store.Store.open(db_url) as state, state.lock("prod-eu1", "upgrader apply (test)"):
        for args in (("snapshot", "create"), ("snapshot", "prune", "--yes")):
            result = invoke(*args, "-c", str(cluster_yaml), "--db", db_url)
            assert result.exit_code == 3, result.output
            assert "locked by `upgrader apply (test)`" in result.stderr


# -- 8. host-key checking ------------------------------------------------------------------------


def test_host_key_checking_is_ansibles_default_unless_the_config_turns_it_off(cluster_yaml: Path) -> None:
    loaded = inventory.load(cluster_yaml.parent / "inventory" / "hosts.ini")
    private = Path("/nonexistent")
    default = runner.PlaybookRequest("node-facts.yml", loaded)
    assert "ANSIBLE_HOST_KEY_CHECKING" not in runner._environment(default, private)
    off = runner.PlaybookRequest("node-facts.yml", loaded, host_key_checking=False)
    assert runner._environment(off, private)["ANSIBLE_HOST_KEY_CHECKING"] == "false"
    assert config.load(cluster_yaml).ansible.host_key_checking is True
    edit(cluster_yaml, {"ansible.host_key_checking": False})
    result = invoke("config", "check", "-c", str(cluster_yaml))
    assert result.exit_code == 0 and "warning: ansible.host_key_checking is off" in result.stderr


# -- 9. insecure transport -----------------------------------------------------------------------


def test_a_plain_http_etcd_endpoint_is_refused_without_insecure(cluster_yaml: Path) -> None:
    edit(cluster_yaml, {"etcd.endpoints": ["http://127.0.0.11:9"]})
    result = invoke("facts", "-c", str(cluster_yaml))
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert "plain http" in result.stderr and "client certificate would not be used" in result.stderr
    assert "--insecure" in result.stderr


def test_a_kubeconfig_that_skips_tls_verification_is_refused_without_insecure(cluster_yaml: Path) -> None:
    kubeconfig = cluster_yaml.parent / "admin.conf"
    data = yaml.safe_load(kubeconfig.read_text())
    data["clusters"][0]["cluster"]["insecure-skip-tls-verify"] = True
    kubeconfig.write_text(yaml.safe_dump(data))
    result = invoke("snapshot", "create", "-c", str(cluster_yaml), "--db", f"sqlite:///{cluster_yaml.parent / 's.db'}")
    assert result.exit_code == 2, result.output
    assert "insecure-skip-tls-verify" in result.stderr and "--insecure" in result.stderr


# -- 10. tracebacks ------------------------------------------------------------------------------


@pytest.mark.parametrize("content", ["- a\n- list\n", "just a string\n", "42\n"])
def test_a_kubeconfig_that_is_not_a_mapping_is_a_one_line_input_error(cluster_yaml: Path, content: str) -> None:
    (cluster_yaml.parent / "admin.conf").write_text(content)
    edit(cluster_yaml, {"context": None})
    result = invoke("facts", "-c", str(cluster_yaml))
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "not a kubeconfig" in result.stderr


def test_a_deeply_nested_facts_file_is_a_one_line_input_error(tmp_path: Path) -> None:
    path = tmp_path / "facts.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    result = invoke("plan", "--facts", str(path), "--to", "1.33")
    assert result.exit_code == 2 and "nested too deeply" in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)


# -- 12. smaller ---------------------------------------------------------------------------------


def test_the_facts_cluster_name_is_validated(tmp_path: Path) -> None:
    path = tmp_path / "facts.json"
    path.write_text(json.dumps({**FACTS, "cluster": "../../etc;$(id)"}))
    result = invoke("plan", "--facts", str(path), "--to", "1.33")
    assert result.exit_code == 2 and "cluster: cluster name '../../etc;$(id)' must be a DNS label" in result.stderr


def test_db_upgrade_refuses_a_database_that_is_not_upgraders(tmp_path: Path) -> None:
    other = tmp_path / "app.db"
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    before = other.read_bytes()
    result = invoke("db", "upgrade", "--db", f"sqlite:///{other}")
    assert result.exit_code == 3 and "not an upgrader state database" in result.stderr
    assert other.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]  # no tables added, no copy made


def _marked_sleeper(private: Path, seconds: float) -> subprocess.Popen[bytes]:
    """A process carrying the mark the runner gives each ansible-playbook it starts."""
    import subprocess
    import sys

    private.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, runner.MARK: f"{private}:upgrade-control-plane.yml"}
    return subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"], env=env)


def _dead_pid() -> int:
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    return gone.pid


def test_a_playbook_left_by_a_killed_upgrader_is_found_and_waited_for(private_state_home: Path) -> None:
    ansible_dir = private_state_home / "ansible"
    owner = _dead_pid()
    ours = _marked_sleeper(ansible_dir / f"run-{os.getpid()}-alive", 30)  # a live upgrader's: not a leftover
    left = _marked_sleeper(ansible_dir / f"run-{owner}-dead", 1.5)
    try:
        time.sleep(0.3)  # let both processes exist with their environment
        found = runner.leftovers()
        assert [(x.playbook, x.pids, x.owner) for x in found] == [("upgrade-control-plane.yml", (left.pid,), owner)]
        assert found[0].describe() == (
            f"upgrade-control-plane.yml (pid {left.pid}), left running by upgrader pid {owner}, which is gone"
        )
        started = time.monotonic()
        runner.wait_for_leftovers(timeout=30)
        assert time.monotonic() - started >= 0.5 and left.poll() is not None
        assert runner.leftovers() == []
    finally:
        for process in (ours, left):
            process.kill()
            process.wait()


def test_a_leftover_that_does_not_end_stops_the_next_playbook_with_what_to_do(private_state_home: Path) -> None:
    left = _marked_sleeper(private_state_home / "ansible" / f"run-{_dead_pid()}-dead", 30)
    try:
        time.sleep(0.3)
        with pytest.raises(
            errors.ExecutorError, match=rf"pid {left.pid}\).* is still running after 1s; .*kill -TERM -- -{left.pid}"
        ):
            runner.wait_for_leftovers(timeout=1)
    finally:
        left.kill()
        left.wait()


def test_a_leftover_whose_events_stopped_is_called_stuck_not_waited_for(private_state_home: Path) -> None:
    """The orphan of issue 17 made no progress for minutes; resume must say so instead of waiting 30 minutes."""
    private = private_state_home / "ansible" / f"run-{_dead_pid()}-dead"
    left = _marked_sleeper(private, 30)
    events = private / "events.jsonl"
    events.write_text(
        json.dumps({"event": "runner_on_start", "event_data": {"task": "binaries from the mirror", "host": "w-2"}})
        + "\n"
    )
    os.utime(events, (time.time() - 120, time.time() - 120))  # its last event, two minutes ago
    try:
        time.sleep(0.3)
        with pytest.raises(errors.NeedsHuman) as raised:
            runner.wait_for_leftovers(timeout=30, stalled_after=60)
        assert raised.value.exit_code == 5
        message = raised.value.message
        assert "has sent no event for 12" in message and "task 'binaries from the mirror' on w-2" in message
        assert f"kill -TERM -- -{left.pid}" in message
        assert left.poll() is None  # told, not killed: a human decides
    finally:
        left.kill()
        left.wait()


def test_a_playbook_gets_only_the_environment_ansible_needs() -> None:
    passed = runner.passed_environment(
        {
            "PATH": "/usr/bin",
            "HOME": "/root",
            "SSH_AUTH_SOCK": "/run/agent",
            "ANSIBLE_CONFIG": "/etc/ansible.cfg",
            "LC_ALL": "C.UTF-8",
            "AWS_SECRET_ACCESS_KEY": "s3cr3t",
            "AWS_ACCESS_KEY_ID": "AKIA",
            "PGPASSWORD": "pw",
            "UPGRADER_DB": "postgresql://up:pw@db/up",
            "KUBECONFIG": "/root/.kube/config",
        }
    )
    assert passed == {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "SSH_AUTH_SOCK": "/run/agent",
        "ANSIBLE_CONFIG": "/etc/ansible.cfg",
        "LC_ALL": "C.UTF-8",
    }


def test_prune_calls_orphan_only_what_this_database_announced_whatever_the_path(
    tmp_path: Path, cluster_yaml: Path
) -> None:
    """Issue 17: prune deleted every known-good snapshot when the directory was reached through a link,
    or when a second database shared it: a file name and a path string proved nothing."""
    from tests.unit.test_rollback import Catalog
    from upgrader.core import config
    from upgrader.snapshots import local

    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    catalog = Catalog(real)
    kept = [catalog.add("1.30.6"), catalog.add("1.31.13")]
    link = tmp_path / "link"
    link.symlink_to(real)
    base = config.load(cluster_yaml)
    cfg = base.model_copy(update={"name": "c", "snapshots": config.SnapshotSettings(dir=link)})
    assert local.orphans(cfg, catalog.state) == []  # the rows name /real/..., the directory is /link
    with store.Store.open(f"sqlite:///{tmp_path / 'second.db'}") as second:
        assert local.orphans(cfg, second) == []  # another database's snapshots are not its orphans
        # what this database announced and never recorded (a killed create) is, through either path
        stray = "c-20261203T000000Z-abcd"
        local.announce(second, "c", stray, (real / f"{stray}.db", real / f"{stray}.tar.gz"))
        (real / f"{stray}.db.part").write_bytes(b"half a snapshot")
        assert local.orphans(cfg, second) == [link / f"{stray}.db.part"]
        assert local.orphans(cfg, catalog.state) == []
    assert all(Path(r.etcd_path).exists() for r in kept)


def test_a_shared_snapshot_directory_is_refused_and_never_chmodded(tmp_path: Path) -> None:
    from upgrader.support import files

    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    with pytest.raises(files.NotPrivate, match=r"others may enter it \(mode 755\)") as refused:
        files.private_dir(shared, what="snapshot directory")
    assert refused.value.exit_code == 3
    assert shared.stat().st_mode & 0o777 == 0o755
    link = tmp_path / "link"
    link.symlink_to(shared)
    with pytest.raises(files.NotPrivate):
        files.private_dir(link, what="snapshot directory")
    assert shared.stat().st_mode & 0o777 == 0o755  # through a link, its target is left alone too
    created = files.private_dir(tmp_path / "new" / "snapshots")
    assert created.stat().st_mode & 0o777 == 0o700


# -- issue 17: the careless and hostile operator, each a reproduction that once gave a traceback -------


def _one_line(result, code: int, needle: str) -> str:  # type: ignore[no-untyped-def]
    assert result.exit_code == code, (result.exit_code, result.output)
    assert ("Traceback" not in result.output and result.exc_info is None) or isinstance(result.exception, SystemExit)
    first = result.stderr.splitlines()[0]
    assert first.startswith("upgrader: error: ") and needle in first, result.stderr
    return str(result.stderr)


def test_a_password_that_breaks_the_url_is_never_shown(tmp_path: Path) -> None:
    said = _one_line(
        invoke("db", "current", "--db", "postgresql://up:Tr0ub@dor:Xyzzy-Secret-Tail@host/db"), 2, "not a database URL"
    )
    assert "Xyzzy" not in said and "Tr0ub" not in said and "quote" in said
    pgpass = tmp_path / "db.url"
    pgpass.write_text("db.example:5432:upgrader:up:Pgpass-Secret\n")
    pgpass.chmod(0o600)
    said = _one_line(invoke("db", "current", "--db", f"@{pgpass}"), 2, "not a database URL")
    assert "Pgpass-Secret" not in said


@pytest.mark.parametrize("window", ["99999999999999h", "80000000h"])
def test_an_absurd_window_is_one_line(cluster_yaml: Path, db_url: str, window: str) -> None:
    _one_line(invoke("apply", "abc123", "-c", str(cluster_yaml), "--db", db_url, "--window", window), 2, "--window")


def test_keygen_into_a_missing_directory_or_with_a_long_name_is_one_line(tmp_path: Path) -> None:
    _one_line(invoke("snapshot", "keygen", str(tmp_path / "missing" / "k")), 2, "cannot write the key file")
    _one_line(invoke("snapshot", "keygen", str(tmp_path / ("k" * 300))), 2, "cannot write the key file")


def test_an_argument_that_is_not_utf8_is_refused_before_it_reaches_a_query(cluster_yaml: Path, db_url: str) -> None:
    bad = b"snap-\xff\xfe".decode("utf-8", "surrogateescape")
    for args in (
        ("snapshot", "show", bad, "--db", db_url),
        ("rollback", "-c", str(cluster_yaml), "--to", bad, "--db", db_url, "--dry-run"),
        ("apply", bad, "-c", str(cluster_yaml), "--db", db_url),
    ):
        _one_line(invoke(*args), 2, "is not valid UTF-8 text")


def test_a_yaml_alias_bomb_is_refused_before_it_is_expanded(cluster_yaml: Path) -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    original = cluster_yaml.read_text()
    cluster_yaml.write_text(original + "\n".join(lines) + "\n")
    said = _one_line(invoke("config", "check", "-c", str(cluster_yaml)), 2, "aliases expand to")
    counted = int(said.split("expand to ")[1].split(" values")[0].replace(",", ""))
    assert counted > 10**9  # measured, not built: expanded, it grew past 2 GB
    cluster_yaml.write_text(original + "loop: &loop [*loop]\n")
    _one_line(invoke("config", "check", "-c", str(cluster_yaml)), 2, "aliases expand to a recursive alias")


def test_a_state_database_others_can_read_or_a_dangling_link_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared.db"
    shared.touch(mode=0o644)
    shared.chmod(0o644)
    _one_line(invoke("db", "upgrade", "--db", f"sqlite:///{shared}"), 1, "readable by others (mode 644)")
    assert shared.stat().st_mode & 0o777 == 0o644 and shared.stat().st_size == 0
    link = tmp_path / "state.db"
    link.symlink_to(tmp_path / "nowhere" / "state.db")
    _one_line(invoke("db", "upgrade", "--db", f"sqlite:///{link}"), 1, "is a link to a missing file")
    assert not (tmp_path / "nowhere").exists()


def test_a_saved_plan_whose_body_was_replaced_is_refused(db_url: str) -> None:
    from tests.unit.plan_helpers import make_facts, make_plan
    from upgrader.state import records
    from upgrader.usecases import apply

    facts = make_facts([("cp-1", "1.31.13", None, "1.31.13")], [("w-1", "1.31.13"), ("w-2", "1.31.13")])
    plan = make_plan(facts, "1.32")
    smaller = make_plan(make_facts([("cp-1", "1.31.13", None, "1.31.13")], [("w-1", "1.31.13")]), "1.32")
    with store.Store.open(db_url) as state:
        # the row of the reviewed plan now holds another plan whose body hashes to its own id
        state.save_plan(
            plan_id=records.PlanId(plan.id),
            body=smaller.as_dict(),
            facts=smaller.facts.as_mapping(),
            target=str(smaller.target),
            executable=True,
            cluster="prod-eu1",
        )
        with pytest.raises(errors.InputError, match=f"saved plan {plan.id} holds the content of plan {smaller.id}"):
            apply.load_plan(state, plan.id, "prod-eu1")


def test_a_restore_test_works_in_upgraders_private_directory(private_state_home: Path) -> None:
    from upgrader.snapshots import local
    from upgrader.support import scratch

    killed = scratch.parent(local.RESTORE_TESTS, what="restore-test directory") / "run-999999999-x"
    (killed / "data" / "member").mkdir(parents=True)  # what a SIGKILLed restore test left
    fresh = scratch.directory(local.RESTORE_TESTS, what="restore-test directory")
    assert not killed.exists() and fresh.parent == private_state_home / local.RESTORE_TESTS
    assert fresh.parent.stat().st_mode & 0o777 == 0o700


def test_status_says_a_stopped_runs_process_is_gone() -> None:
    from datetime import UTC, datetime

    from upgrader.cli import status_cmd
    from upgrader.state import records

    run = records.RunRecord(
        id=records.RunId("prod-eu1-rb"),
        cluster="prod-eu1",
        plan_id=None,
        kind=records.RunKind.ROLLBACK,
        status=records.RunStatus.RUNNING,
        created_at=datetime.now(UTC),
        started_at=datetime.now(UTC),
        finished_at=None,
        host="vm",
        pid=4242,
        options={},
        steps=(),
        error=None,
        stopped_reason=None,
    )
    assert status_cmd._next(run, "alive", "c.yaml").startswith("run prod-eu1-rb is in progress")
    said = status_cmd._next(run, "gone", "c.yaml")
    assert said.startswith("run prod-eu1-rb stopped: its process (pid 4242 on vm) is gone; ")
    assert "upgrader rollback --resume prod-eu1-rb -c c.yaml" in said


def test_config_check_names_a_shared_snapshot_directory_and_plain_s3(cluster_yaml: Path, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    key = tmp_path / "k"
    edit(
        cluster_yaml,
        {
            "snapshots.dir": str(shared),
            "snapshots.tiers": ["local", "s3"],
            "snapshots.s3": {"bucket": "snaps", "endpoint": "http://127.0.0.1:9", "encrypt": False},
        },
    )
    del key
    result = invoke("config", "check", "-c", str(cluster_yaml), "-o", "json")
    assert result.exit_code == 0, result.output
    warnings = json.loads(result.stdout)["warnings"]
    assert any(f"snapshots.dir {shared} is not private (others may enter it (mode 755))" in w for w in warnings)
    assert any("unencrypted (encrypt: false) over plain http" in w for w in warnings)
    assert shared.stat().st_mode & 0o777 == 0o755


# -- issue 18: who the playbooks run as ------------------------------------------------------------


def test_config_check_warns_when_a_non_root_login_has_nothing_that_becomes_root(cluster_yaml: Path) -> None:
    inventory_file = cluster_yaml.parent / "inventory" / "hosts.ini"
    inventory_file.write_text(
        inventory_file.read_text().replace("ansible_connection=local\n", "ansible_user=ops\n")
        + "\n[kube_node:vars]\nansible_become=true\n"
    )
    result = invoke("config", "check", "-c", str(cluster_yaml), "-o", "json")
    assert result.exit_code == 0, result.output
    warned = [w for w in json.loads(result.stdout)["warnings"] if "nothing becomes root" in w]
    assert warned and warned[0].startswith("cp-1 (ops), cp-2 (ops), cp-3 (ops): logged in as a user other than root")
    assert "w-1" not in warned[0]  # its group becomes root
    assert "hunter2" not in result.output  # the inventory's other variables never come back
    edit(cluster_yaml, {"ansible.become": True})
    result = invoke("config", "check", "-c", str(cluster_yaml), "-o", "json")
    assert not [w for w in json.loads(result.stdout)["warnings"] if "becomes root" in w]


def test_ansible_become_reaches_every_playbook_as_ansible_s_own_settings(cluster_yaml: Path) -> None:
    from upgrader.executor import inventory as inventory_mod

    loaded = inventory_mod.load(cluster_yaml.parent / "inventory" / "hosts.ini")
    request = runner.PlaybookRequest("node-facts.yml", loaded, become=True, become_user="root", become_method="sudo")
    env = runner._environment(request, Path("/x"))
    assert (env["ANSIBLE_BECOME"], env["ANSIBLE_BECOME_USER"], env["ANSIBLE_BECOME_METHOD"]) == ("true", "root", "sudo")
    assert "ANSIBLE_BECOME" not in runner._environment(runner.PlaybookRequest("node-facts.yml", loaded), Path("/x"))
    bad = edit(cluster_yaml, {"ansible.become_method": "sudo; rm -rf /"})
    _one_line(invoke("config", "check", "-c", str(bad)), 2, "problem")
