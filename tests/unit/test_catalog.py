"""The shipped rules catalog: coverage, sources, and the facts it encodes, rule by rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from upgrader import errors
from upgrader.core.rules import catalog as catalog_mod
from upgrader.core.versions import Minor, Version

CATALOG = catalog_mod.load()


def test_covers_every_minor_from_1_25_to_1_37() -> None:
    assert sorted(CATALOG.minors) == [Minor(1, m) for m in range(25, 38)]
    assert not CATALOG.incomplete


@pytest.mark.parametrize("minor", [Minor(1, m) for m in range(25, 38)], ids=str)
def test_every_entry_is_sourced_and_sorted(minor: Minor) -> None:
    entry = CATALOG.entry(minor)
    assert list(entry.patches) == sorted(entry.patches, reverse=True)
    assert entry.patches[-1] == Version(minor.major, minor.minor, 0)
    for field in (
        "patches",
        "kubelet_max_older",
        "kubeadm_etcd",
        "emulation_min",
        "removed_apis",
        "containerd",
        "kubelet_refuses_cgroup_v1",
    ):
        assert entry.sources.get(field), f"{minor}: {field} has no source"


def test_1_37_moves_etcd_to_3_7_and_emulates_down_to_1_34() -> None:
    entry = CATALOG.entry(Minor(1, 37))
    assert entry.kubeadm_etcd == Version(3, 7, 0)  # kubernetes PR 140333, before the 1.37 freeze
    assert entry.emulation_min == Minor(1, 34) and entry.refuses_cgroup_v1 and not entry.removed_apis
    assert entry.containerd.minimum == (Version(1, 6, 15), Version(1, 7, 0)) and "1.38" in entry.containerd.note
    assert Minor(1, 37) not in CATALOG.external_etcd  # Kubespray's pin for 1.37 is not known


def test_a_minor_the_catalog_lacks_or_marks_incomplete_is_refused_not_guessed() -> None:
    with pytest.raises(errors.Refused, match=r"not in the rules catalog"):
        CATALOG.entry(Minor(1, 24))
    with pytest.raises(errors.Refused, match=r"1\.38 is not in the rules catalog"):
        CATALOG.entry(Minor(1, 38))
    data = catalog_mod.shipped_document()
    data["incomplete_minors"] = {"1.38": "its etcd is not known"}
    with pytest.raises(errors.Refused, match=r"incomplete for 1\.38: its etcd is not known"):
        catalog_mod.parse(data).entry(Minor(1, 38))


def test_resolve() -> None:
    assert CATALOG.resolve(Minor(1, 30)) == Version(1, 30, 14)
    assert CATALOG.resolve(Version(1, 30, 2)) == Version(1, 30, 2)
    with pytest.raises(errors.Refused, match=r"1\.30\.99 is not a release.*knows up to 1\.30\.14"):
        CATALOG.resolve(Version(1, 30, 99))


@pytest.mark.parametrize(
    ("minor", "older"), [(25, 2), (26, 2), (27, 2), (28, 3), (33, 3), (36, 3)], ids=lambda v: str(v)
)
def test_kubelet_skew_is_n_minus_3_from_1_28(minor: int, older: int) -> None:
    assert CATALOG.entry(Minor(1, minor)).kubelet_max_older == older


@pytest.mark.parametrize(
    ("binary", "emulated", "allowed"),
    [
        (30, 29, False),  # no --emulated-version before 1.31
        (31, 30, False),  # 1.31 can only emulate itself
        (32, 31, True),
        (33, 31, True),
        (34, 31, True),
        (34, 30, False),  # never below 1.31
        (35, 32, True),
        (35, 31, False),  # binary minus 3 at most
        (36, 33, True),
        (36, 32, False),
        (36, 36, True),
    ],
    ids=lambda v: str(v),
)
def test_emulation_ranges_follow_kep_4330(binary: int, emulated: int, allowed: bool) -> None:
    assert CATALOG.entry(Minor(1, binary)).can_emulate(Minor(1, emulated)) is allowed


def test_api_removals_crossed() -> None:
    crossed = {(r.group_version, str(r.removed_in)) for r in CATALOG.removals_crossed(Minor(1, 28), Minor(1, 32))}
    assert crossed == {
        ("flowcontrol.apiserver.k8s.io/v1beta2", "1.29"),
        ("flowcontrol.apiserver.k8s.io/v1beta3", "1.32"),
    }
    assert CATALOG.removals_crossed(Minor(1, 32), Minor(1, 34)) == []  # nothing removed in 1.33-1.34


def test_cgroup_v1_refused_from_1_35() -> None:
    assert [m.minor for m, e in sorted(CATALOG.minors.items()) if e.refuses_cgroup_v1] == [35, 36, 37]


def test_containerd_1x_still_runs_1_36_with_a_warning_naming_1_38() -> None:
    # kubernetes PRs 136846 and 139121 deferred the kubelet's cgroup-driver fallback removal to 1.38
    assert CATALOG.entry(Minor(1, 36)).containerd.minimum == (Version(1, 6, 15), Version(1, 7, 0))
    assert "1.38" in CATALOG.entry(Minor(1, 36)).containerd.note
    assert CATALOG.entry(Minor(1, 26)).containerd.minimum == (Version(1, 6, 15), Version(1, 7, 0))


def test_etcd_rules() -> None:
    assert CATALOG.etcd_min_patch_before_next_minor[Minor(3, 5)] == Version(3, 5, 32)
    assert CATALOG.entry(Minor(1, 33)).kubeadm_etcd.minor == 5
    assert CATALOG.entry(Minor(1, 34)).kubeadm_etcd.minor == 6


def test_a_malformed_catalog_file_is_bad_input(tmp_path: Path) -> None:
    broken = tmp_path / "catalog.json"
    data = json.loads(catalog_mod.CATALOG_FILE.read_text())
    data["minors"]["1.30"]["patches"] = ["1.30.1", "1.30.2"]  # not latest first
    broken.write_text(json.dumps(data))
    with pytest.raises(errors.InputError, match="latest first"):
        catalog_mod.load(broken)
    broken.write_text("{")
    with pytest.raises(errors.InputError, match="cannot read rules catalog"):
        catalog_mod.load(broken)
    data = json.loads(catalog_mod.CATALOG_FILE.read_text())
    del data["minors"]["1.30"]["kubeadm_etcd"]
    broken.write_text(json.dumps(data))
    with pytest.raises(errors.InputError, match="malformed"):
        catalog_mod.load(broken)
