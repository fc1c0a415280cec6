"""``upgrader catalog update`` against a real HTTP mirror laid out like dl.k8s.io/release (the lab's mirror,
served by Python's http.server): new patches are read from the markers and their checksums, the refreshed
catalog goes to the data directory and plans use it and say so; a mirror that is down or lies changes
nothing."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from typer.testing import CliRunner

from upgrader import cli
from upgrader.core.rules import catalog as catalog_mod
from upgrader.core.versions import Version
from upgrader.lab import mirror as lab_mirror

runner = CliRunner()
BUNDLED = catalog_mod.load()
LATEST_134 = BUNDLED.entry(Version.parse("1.34.0").minor_version).latest
NEWER = Version(1, 34, LATEST_134.patch + 2)  # two patches the bundled catalog does not know


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    root = tmp_path / "mirror"
    lab_mirror.build(root, "/usr/bin/python3", extra=(NEWER, Version(1, 34, LATEST_134.patch + 1)))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _plan_catalog(facts: Path) -> str:
    made = runner.invoke(cli.app, ["plan", "--facts", str(facts), "--to", "1.34", "-o", "json"])
    assert made.exit_code in (0, 3), made.output
    return str(json.loads(made.stdout)["catalog"])


@pytest.fixture
def facts(tmp_path: Path) -> Path:
    path = tmp_path / "facts.json"
    path.write_text(
        json.dumps(
            {
                "control_plane": [{"name": "cp-1", "apiserver": "1.33.5", "kubelet": "1.33.5", "cgroup": "v2"}],
                "nodes": [],
                "etcd": {"version": "3.5.32"},
            }
        )
    )
    return path


def test_update_adds_the_patches_the_markers_name_and_plans_use_it(
    served: tuple[Path, str], facts: Path, private_state_home: Path
) -> None:
    _, url = served
    assert _plan_catalog(facts) == BUNDLED.version
    done = runner.invoke(cli.app, ["catalog", "update", "--mirror", url, "-o", "json"])
    assert done.exit_code == 0, done.output
    body = json.loads(done.stdout)
    assert body["path"] == str(private_state_home / "catalog.json")
    assert body["catalog"].startswith(f"{BUNDLED.version}+") and body["refreshed"]["source"] == url
    by_minor = {m["minor"]: m for m in body["minors"]}
    assert by_minor["1.34"]["added"] == [str(NEWER), str(Version(1, 34, LATEST_134.patch + 1))]
    assert by_minor["1.34"]["marker"] == str(NEWER)
    # plans now use the refreshed catalog, say so, and may target the new patch
    assert _plan_catalog(facts) == body["catalog"]
    exact = runner.invoke(cli.app, ["plan", "--facts", str(facts), "--to", str(NEWER), "-o", "json"])
    assert exact.exit_code == 0, exact.output
    assert json.loads(exact.stdout)["target"] == str(NEWER)
    shown = json.loads(runner.invoke(cli.app, ["catalog", "show", "-o", "json"]).stdout)
    assert shown["source"] == str(private_state_home / "catalog.json")
    assert {m["minor"]: m["latest"] for m in shown["minors"]}["1.34"] == str(NEWER)
    # the refreshed catalog keeps the rules it was made from: external etcd's version per minor too
    assert {m["minor"]: m["external_etcd"] for m in shown["minors"]}["1.34"] == "3.5.33"


def test_a_patch_without_checksums_is_not_added_and_the_minor_stays_incomplete(served: tuple[Path, str]) -> None:
    root, url = served
    (root / f"v{NEWER}" / "bin" / "linux" / "amd64" / "kubeadm.sha256").unlink()
    body = json.loads(runner.invoke(cli.app, ["catalog", "update", "--mirror", url, "-o", "json"]).stdout)
    entry = {m["minor"]: m for m in body["minors"]}["1.34"]
    assert entry["added"] == [str(Version(1, 34, LATEST_134.patch + 1))]
    assert f"no checksums on the mirror for {NEWER}" in entry["note"]


@pytest.mark.parametrize(
    ("marker", "says"),
    [
        (b"<html>captive portal</html>\n", "is not a release marker"),
        (b"v1.33.9\n", "not a release of 1.34"),
        (b"v1.34.9" + b" " * 4096, "more than 256 bytes"),
        (b"v1.34.9/../../etc\n", "is not a release marker"),
    ],
)
def test_a_mirror_that_lies_changes_nothing(
    served: tuple[Path, str], facts: Path, private_state_home: Path, marker: bytes, says: str
) -> None:
    root, url = served
    (root / "stable-1.34.txt").write_bytes(marker)
    failed = runner.invoke(cli.app, ["catalog", "update", "--mirror", url])
    assert failed.exit_code == 1, failed.output
    assert says in failed.stderr and "nothing written" in failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1
    assert not (private_state_home / "catalog.json").exists()
    assert _plan_catalog(facts) == BUNDLED.version


def test_an_unreachable_mirror_is_one_line_and_exit_1(private_state_home: Path) -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    failed = runner.invoke(cli.app, ["catalog", "update", "--mirror", f"http://127.0.0.1:{port}"])
    assert failed.exit_code == 1
    assert "cannot reach the release mirror" in failed.stderr and f"plans still use catalog {BUNDLED.version}" in (
        failed.stderr
    )
    assert len(failed.stderr.strip().splitlines()) == 1
    assert not (private_state_home / "catalog.json").exists()
    hidden = runner.invoke(cli.app, ["catalog", "update", "--mirror", f"http://ops:s3cret@127.0.0.1:{port}"])
    assert hidden.exit_code == 1 and "s3cret" not in hidden.output and "***@127.0.0.1" in hidden.stderr
    bad = runner.invoke(cli.app, ["catalog", "update", "--mirror", "file:///etc"])
    assert bad.exit_code == 2 and "must be an http(s) URL" in bad.stderr


def test_a_refreshed_catalog_from_another_bundled_one_is_set_aside(
    served: tuple[Path, str], facts: Path, private_state_home: Path
) -> None:
    _, url = served
    assert runner.invoke(cli.app, ["catalog", "update", "--mirror", url]).exit_code == 0
    path = private_state_home / "catalog.json"
    data = json.loads(path.read_text())
    data["refreshed"]["based_on"] = "2020-01-01.1"
    path.write_text(json.dumps(data))
    made = runner.invoke(cli.app, ["plan", "--facts", str(facts), "--to", "1.34"])
    assert "made from catalog 2020-01-01.1" in made.stderr and "the bundled one is used" in made.stderr
    assert _plan_catalog(facts) == BUNDLED.version
    path.write_text("{not json")
    made = runner.invoke(cli.app, ["plan", "--facts", str(facts), "--to", "1.34"])
    assert "cannot read rules catalog" in made.stderr and made.exit_code in (0, 3)


def test_a_mirror_without_any_marker_is_not_a_release_mirror(
    served: tuple[Path, str], private_state_home: Path
) -> None:
    root, url = served
    for marker in root.glob("stable-*.txt"):
        marker.unlink()
    failed = runner.invoke(cli.app, ["catalog", "update", "--mirror", url])
    assert failed.exit_code == 1 and "has no release marker" in failed.stderr
    assert not (private_state_home / "catalog.json").exists()
