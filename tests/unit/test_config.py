"""cluster.yaml validation: a valid file loads; each kind of problem is reported with where it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from upgrader import errors
from upgrader.core import config


def problems_of(path: Path) -> tuple[str, ...]:
    with pytest.raises(errors.ConfigError) as caught:
        config.load(path)
    assert caught.value.exit_code == errors.ExitCode.USAGE
    return caught.value.problems


def replace(path: Path, old: str, new: str) -> Path:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))
    return path


def test_valid_config_loads_with_absolute_paths_and_parsed_values(cluster_yaml: Path) -> None:
    cfg = config.load(cluster_yaml)
    root = cluster_yaml.parent.resolve()
    assert cfg.name == "prod-eu1"
    assert cfg.kubeconfig == root / "admin.conf"
    assert cfg.inventory == root / "inventory" / "hosts.ini"
    assert cfg.etcd.ca == root / "pki" / "etcd" / "ca.crt"
    assert cfg.etcd.uses_tls
    assert cfg.packages.method is config.PackageMethod.APT
    assert cfg.snapshots.dir == root / "snapshots"
    assert (cfg.upgrade.max_unavailable, cfg.upgrade.drain_timeout, cfg.upgrade.soak) == ("20%", 600, 1800)
    assert cfg.source == cluster_yaml.resolve()


def test_config_is_frozen(cluster_yaml: Path) -> None:
    cfg = config.load(cluster_yaml)
    with pytest.raises(ValueError, match="frozen"):
        cfg.name = "other"


def test_defaults_apply_when_upgrade_section_is_absent(cluster_yaml: Path) -> None:
    text = cluster_yaml.read_text().split("upgrade:")[0]
    cluster_yaml.write_text(text)
    cfg = config.load(cluster_yaml)
    assert (cfg.upgrade.max_unavailable, cfg.upgrade.drain_timeout, cfg.upgrade.two_step) == (1, 600, True)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match=r"cluster config not found: .*nope\.yaml"):
        config.load(tmp_path / "nope.yaml")


def test_broken_yaml_names_the_line(cluster_yaml: Path) -> None:
    replace(cluster_yaml, "  keep: 3\n", "  keep: [3\n")
    with pytest.raises(errors.ConfigError, match=r"cluster.yaml:\d+: not valid YAML"):
        config.load(cluster_yaml)


def test_yaml_that_is_not_a_mapping(cluster_yaml: Path) -> None:
    cluster_yaml.write_text("- just\n- a list\n")
    with pytest.raises(errors.ConfigError, match="must be a YAML mapping"):
        config.load(cluster_yaml)


def test_unknown_keys_are_reported_with_their_lines(cluster_yaml: Path) -> None:
    replace(cluster_yaml, "  keep: 3\n", "  keep: 3\n  kep: 4\n")
    replace(cluster_yaml, "name: prod-eu1\n", "name: prod-eu1\nnmae: typo\n")
    found = problems_of(cluster_yaml)
    assert f"{cluster_yaml}:2: nmae: unknown key" in found
    assert any(p.startswith(f"{cluster_yaml}:") and "snapshots.kep: unknown key" in p for p in found)


def test_missing_required_key(cluster_yaml: Path) -> None:
    replace(cluster_yaml, "inventory: inventory/hosts.ini\n", "")
    assert any(p.endswith("inventory: required key is missing") for p in problems_of(cluster_yaml))


def test_missing_files_are_named(cluster_yaml: Path) -> None:
    (cluster_yaml.parent / "admin.conf").unlink()
    (cluster_yaml.parent / "pki" / "etcd" / "ca.crt").unlink()
    found = problems_of(cluster_yaml)
    assert any(":2: kubeconfig: file not found:" in p and p.endswith("admin.conf") for p in found)
    assert any("etcd.ca: file not found:" in p and p.endswith("ca.crt") for p in found)


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("ftp://127.0.0.11:2379", "not an http(s) URL"),
        ("https://127.0.0.11", "needs a port"),
        ("https://127.0.0.11:99999", "bad port"),
        ("https://127.0.0.11:2379/v3", "no path"),
        ("127.0.0.11:2379", "not an http(s) URL"),
    ],
    ids=["scheme", "no-port", "bad-port", "path", "no-scheme"],
)
def test_bad_etcd_endpoint_urls(cluster_yaml: Path, endpoint: str, expected: str) -> None:
    replace(cluster_yaml, "    - https://127.0.0.12:9\n", f"    - {endpoint}\n")
    found = problems_of(cluster_yaml)
    assert any("etcd.endpoints[1]:" in p and expected in p for p in found), found


def test_bad_mirror_url(cluster_yaml: Path) -> None:
    replace(cluster_yaml, "  method: apt\n", "  method: binary\n  mirror: not a url\n")
    assert any("packages.mirror: not an http(s) URL" in p for p in problems_of(cluster_yaml))


def test_binary_method_defaults_to_the_official_release_tree(cluster_yaml: Path) -> None:
    from upgrader.core.versions import Version
    from upgrader.executor import rendering

    replace(cluster_yaml, "  method: apt\n", "  method: binary\n")
    out = rendering.package_vars(config.load(cluster_yaml).packages, Version.parse("1.33.5"))
    assert out["mirror"] == "https://dl.k8s.io/release"  # + /v1.33.5/bin/linux/amd64/kubelet(.sha256)


def test_unknown_package_method(cluster_yaml: Path) -> None:
    replace(cluster_yaml, "  method: apt\n", "  method: snap\n")
    assert any("packages.method:" in p and "'apt', 'dnf' or 'binary'" in p for p in problems_of(cluster_yaml))


def test_https_endpoints_need_a_ca(cluster_yaml: Path) -> None:
    replace(cluster_yaml, "  ca: pki/etcd/ca.crt\n", "")
    assert any("etcd: https endpoints need ca" in p for p in problems_of(cluster_yaml))


def test_cert_without_key(cluster_yaml: Path) -> None:
    replace(cluster_yaml, "  key: pki/apiserver-etcd-client.key\n", "")
    assert any("cert and key go together" in p for p in problems_of(cluster_yaml))


@pytest.mark.parametrize("name", ["Prod", "prod_eu", "-prod", "a" * 64, "prod eu"])
def test_cluster_name_must_be_a_dns_label(cluster_yaml: Path, name: str) -> None:
    replace(cluster_yaml, "name: prod-eu1\n", f"name: {name!r}\n")
    assert any(":1: name: cluster name" in p for p in problems_of(cluster_yaml))


@pytest.mark.parametrize("value", ["0", "0%", "150%", "many", "true"])
def test_bad_max_unavailable(cluster_yaml: Path, value: str) -> None:
    replace(cluster_yaml, "  max_unavailable: 20%\n", f"  max_unavailable: {value}\n")
    assert any("upgrade.max_unavailable:" in p for p in problems_of(cluster_yaml))


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("10m", 600), ("2h", 7200)])
def test_durations(cluster_yaml: Path, text: str, seconds: int) -> None:
    replace(cluster_yaml, "  drain_timeout: 10m\n", f"  drain_timeout: {text}\n")
    assert config.load(cluster_yaml).upgrade.drain_timeout == seconds


def test_bad_duration(cluster_yaml: Path) -> None:
    replace(cluster_yaml, "  soak: 30m\n", "  soak: 3 days\n")
    assert any("upgrade.soak: not a duration" in p for p in problems_of(cluster_yaml))


def test_context_must_exist_in_the_kubeconfig(cluster_yaml: Path) -> None:
    replace(cluster_yaml, "context: admin@prod\n", "context: admin@staging\n")
    found = problems_of(cluster_yaml)
    assert any("context 'admin@staging' is not in" in p and "admin@prod" in p for p in found)


def test_every_problem_is_reported_at_once(cluster_yaml: Path) -> None:
    replace(cluster_yaml, "name: prod-eu1\n", "name: Prod\nextra: 1\n")
    replace(cluster_yaml, "  keep: 3\n", "  keep: 0\n")
    (cluster_yaml.parent / "admin.conf").unlink()
    with pytest.raises(errors.ConfigError) as caught:
        config.load(cluster_yaml)
    assert len(caught.value.problems) == 4
    assert str(caught.value) == f"{cluster_yaml}: 4 problems in the cluster config"


def test_describe_has_no_file_contents(cluster_yaml: Path) -> None:
    summary = str(config.describe(config.load(cluster_yaml)))
    assert "not-a-real-token" not in summary
    assert "PLACEHOLDER" not in summary
    assert "prod-eu1" in summary


def test_the_documented_example_is_a_valid_config(cluster_dir: Path) -> None:
    # docs/configuration.md shows a cluster.yaml; it must load (with the files it names in place).
    docs = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    example = docs.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = cluster_dir / "cluster.yaml"
    path.write_text(example)
    cfg = config.load(path)
    assert cfg.name == "prod-eu1" and cfg.etcd.endpoints[0] == "https://10.0.0.11:2379"
