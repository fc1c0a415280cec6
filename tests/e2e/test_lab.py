"""The lab end to end: real etcd, the apiserver stand-ins, the official Kubernetes client, kubeadm, faults."""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import threading
import time
from http.client import HTTPSConnection
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.e2e.conftest import Labs, state, wait_for
from upgrader import errors
from upgrader.core.versions import Version
from upgrader.lab import control, http, manifests, mirror, topology

pytestmark = pytest.mark.slow


def core(lab: topology.Lab) -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(str(lab.kubeconfig)))


def apiserver(lab: topology.Lab, node: str) -> http.Client:
    return http.Client(lab.kubeconfig, server=f"https://{lab.node(node).ip}:{topology.APISERVER_PORT}", timeout=3.0)


def etcdctl(lab: topology.Lab, *args: str) -> subprocess.CompletedProcess[str]:
    binary = Path(lab.etcd_binary).with_name("etcdctl")
    return subprocess.run(
        [
            str(binary),
            f"--endpoints={','.join(lab.etcd_endpoints())}",
            f"--cacert={lab.pki_dir / 'etcd' / 'ca.crt'}",
            f"--cert={lab.pki_dir / 'apiserver-etcd-client.crt'}",
            f"--key={lab.pki_dir / 'apiserver-etcd-client.key'}",
            "--command-timeout=5s",
            *args,
        ],
        capture_output=True,
        text=True,
        env={"ETCDCTL_API": "3"},
        check=False,
    )


def test_the_kubernetes_client_sees_every_node_ready_with_its_version(shared_lab: topology.Lab) -> None:
    nodes = core(shared_lab).list_node().items
    seen = {
        n.metadata.name: (
            n.status.node_info.kubelet_version,
            next(c.status for c in n.status.conditions if c.type == "Ready"),
        )
        for n in nodes
    }
    assert seen == {name: ("v1.30.6", "True") for name in ("cp-1", "cp-2", "cp-3", "w-1", "w-2", "w-3")}
    version = client.VersionApi(config.new_client_from_config(str(shared_lab.kubeconfig))).get_code()
    assert version.git_version == "v1.30.6"


def test_etcd_has_three_healthy_members(shared_lab: topology.Lab) -> None:
    members = etcdctl(shared_lab, "member", "list", "-w", "json")
    assert members.returncode == 0, members.stderr
    assert sorted(m["name"] for m in json.loads(members.stdout)["members"]) == ["cp-1", "cp-2", "cp-3"]
    health = etcdctl(shared_lab, "endpoint", "health")
    assert health.returncode == 0 and health.stderr.count("is healthy") + health.stdout.count("is healthy") == 3


def test_objects_live_in_etcd_under_the_registry_prefix(shared_lab: topology.Lab) -> None:
    keys = etcdctl(shared_lab, "get", "/registry/minions/", "--prefix", "--keys-only")
    assert "/registry/minions/w-1" in keys.stdout.split()
    node = core(shared_lab).read_node("w-1")
    revision = etcdctl(shared_lab, "get", "/registry/minions/w-1", "-w", "json")
    assert int(node.metadata.resource_version) <= json.loads(revision.stdout)["kvs"][0]["mod_revision"]


def test_static_pods_have_mirror_pods_and_pods_are_listed_by_node(shared_lab: topology.Lab) -> None:
    api = core(shared_lab)
    mirror_pods = api.list_namespaced_pod("kube-system", label_selector="tier=control-plane").items
    names = {p.metadata.name for p in mirror_pods}
    assert {"etcd-cp-1", "kube-apiserver-cp-2", "kube-scheduler-cp-3"} <= names
    assert all("kubernetes.io/config.mirror" in p.metadata.annotations for p in mirror_pods)
    on_w1 = api.list_pod_for_all_namespaces(field_selector="spec.nodeName=w-1").items
    assert {p.spec.node_name for p in on_w1} == {"w-1"}
    assert any(p.metadata.owner_references[0].kind == "DaemonSet" for p in on_w1)


def _web_ready_and_budget_settled(api: client.CoreV1Api, policy: client.PolicyV1Api) -> bool:
    pods = api.list_namespaced_pod("demo", label_selector="app=web").items
    ready = [p for p in pods if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]
    budget = policy.read_namespaced_pod_disruption_budget("web", "demo").status
    return len(pods) == len(ready) == 3 and budget is not None and budget.disruptions_allowed == 1


def test_concurrent_evictions_through_three_apiservers_spend_a_budget_once(shared_lab: topology.Lab) -> None:
    """Issue 19, item 5: the lab checked the budget and deleted in two steps, so simultaneous evictions
    were all accepted. Now, as eviction.go does, an eviction spends the disruption controller's
    disruptionsAllowed with a compare-and-swap on the budget first: three simultaneous POSTs, one
    through each apiserver, and exactly one is accepted, every trial."""
    api = core(shared_lab)
    policy = client.PolicyV1Api(api.api_client)
    names = [n.metadata.name for n in api.list_node().items]
    for trial in range(3):
        wait_for(lambda: _web_ready_and_budget_settled(api, policy), what=f"web settled before trial {trial}")
        for name in names:  # nowhere to put a replacement: the budget cannot recover while we evict
            api.patch_node(name, {"spec": {"unschedulable": True}})
        try:
            pods = [p.metadata.name for p in api.list_namespaced_pod("demo", label_selector="app=web").items]
            barrier = threading.Barrier(len(pods))
            servers = [apiserver(shared_lab, shared_lab.control_plane[i % 3].name) for i in range(len(pods))]

            def evict(server: http.Client, pod: str) -> tuple[int, bytes]:
                body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod}}
                barrier.wait()  # noqa: B023 (each trial's barrier, used within the trial)
                reply = server.request("POST", f"/api/v1/namespaces/demo/pods/{pod}/eviction", body)
                return reply.status, reply.body

            with concurrent.futures.ThreadPoolExecutor(len(pods)) as pool:
                replies = list(pool.map(evict, servers, pods))
            assert sorted(status for status, _ in replies) == [201, 429, 429], replies  # minAvailable 2 of 3
            assert all(b"disruption budget" in body for status, body in replies if status == 429)
            left = api.list_namespaced_pod("demo", label_selector="app=web").items
            assert len(left) == 2
        finally:
            for name in names:
                api.patch_node(name, {"spec": {"unschedulable": False}})
    wait_for(lambda: _web_ready_and_budget_settled(api, policy), what="the replacement web pod")


def test_an_unready_pod_is_evicted_only_from_a_healthy_budget_unless_it_always_allows(
    shared_lab: topology.Lab,
) -> None:
    """Issue 19, item 6: the lab evicted a not-Ready pod whatever its budget's health. As eviction.go
    does, an unready pod goes without spending only when the budget is healthy (or says AlwaysAllow);
    from an unhealthy budget (minAvailable 3 with two Ready) it is refused."""
    api = core(shared_lab)
    policy = client.PolicyV1Api(api.api_client)
    names = [n.metadata.name for n in api.list_node().items]
    wait_for(lambda: _web_ready_and_budget_settled(api, policy), what="web settled")
    for name in names:
        api.patch_node(name, {"spec": {"unschedulable": True}})

    def observed() -> bool:
        budget = policy.read_namespaced_pod_disruption_budget("web", "demo")
        return bool(budget.status and budget.status.observed_generation == budget.metadata.generation)

    def evict(pod: str) -> int:
        body = client.V1Eviction(metadata=client.V1ObjectMeta(name=pod, namespace="demo"))
        try:
            api.create_namespaced_pod_eviction(pod, "demo", body)
        except ApiException as exc:
            return int(exc.status)
        return 201

    try:
        victim = api.list_namespaced_pod("demo", label_selector="app=web").items[0].metadata.name
        unready = {"status": {"conditions": [{"type": "Ready", "status": "False"}]}}
        api.patch_namespaced_pod_status(victim, "demo", unready)
        policy.patch_namespaced_pod_disruption_budget("web", "demo", {"spec": {"minAvailable": 3}})
        wait_for(observed, what="the budget's new generation observed")
        assert evict(victim) == 429  # two Ready of three needed: unhealthy, so not even the unready pod
        policy.patch_namespaced_pod_disruption_budget(
            "web", "demo", {"spec": {"unhealthyPodEvictionPolicy": "AlwaysAllow"}}
        )
        assert evict(victim) == 201
    finally:
        policy.patch_namespaced_pod_disruption_budget(
            "web", "demo", {"spec": {"minAvailable": 2, "unhealthyPodEvictionPolicy": None}}
        )
        for name in names:
            api.patch_node(name, {"spec": {"unschedulable": False}})
    wait_for(lambda: _web_ready_and_budget_settled(api, policy), what="web settled again")


def test_a_request_body_is_read_whatever_the_method_so_the_connection_stays_in_step(
    shared_lab: topology.Lab,
) -> None:
    """Issue 19, item 7: a DELETE's body (DeleteOptions, as kubectl sends) and a chunked body were left
    unread, so the next request on the kept-alive connection was parsed from their bytes (400)."""
    ip = shared_lab.node("cp-1").ip
    connection = HTTPSConnection(ip, topology.APISERVER_PORT, context=apiserver(shared_lab, "cp-1").context, timeout=5)
    path = "/api/v1/namespaces/demo/configmaps"
    json_type = {"Content-Type": "application/json"}

    def call(method: str, url: str, body: object = None, headers: dict[str, str] | None = None) -> int:
        chunked = isinstance(body, list)
        payload = iter(body) if isinstance(body, list) else (json.dumps(body) if body is not None else None)
        connection.request(method, url, body=payload, headers=headers or {}, encode_chunked=chunked)
        reply = connection.getresponse()
        reply.read()
        return reply.status

    try:
        pieces = [b'{"metadata": ', b'{"name": "chunked"}}']
        assert call("POST", path, pieces, {**json_type, "Transfer-Encoding": "chunked"}) == 201
        assert call("GET", f"{path}/chunked") == 200
        options = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        assert call("DELETE", f"{path}/chunked", options, json_type) == 200
        assert call("GET", path) == 200  # the same connection, in step
    finally:
        connection.close()


def test_cordon_is_a_patch_of_the_node(shared_lab: topology.Lab) -> None:
    api = core(shared_lab)
    api.patch_node("w-2", {"spec": {"unschedulable": True}})
    try:
        assert api.read_node("w-2").spec.unschedulable is True
    finally:
        api.patch_node("w-2", {"spec": {"unschedulable": False}})
    assert not api.read_node("w-2").spec.unschedulable


def test_stopping_one_etcd_member_keeps_the_api_available(shared_lab: topology.Lab) -> None:
    control.fault(shared_lab.dir, node="cp-2", kind=control.faults.Fault.ETCD_STOP, clear=False)
    try:
        wait_for(lambda: apiserver(shared_lab, "cp-2").get("/readyz").status == 500, what="cp-2 apiserver unready")
        cp2 = f"{shared_lab.node('cp-2').ip}:{topology.APISERVER_PORT}"
        wait_for(lambda: cp2 not in state(shared_lab)["balancer"], what="the balancer to drop cp-2")  # type: ignore[operator]
        for _ in range(10):  # through the balancer, on the other two
            assert len(core(shared_lab).list_node().items) == 6
        health = etcdctl(shared_lab, "endpoint", "health")
        assert (health.stdout + health.stderr).count("is healthy") == 2
        verbose = apiserver(shared_lab, "cp-2").get("/readyz?verbose")
        assert b"[-]etcd failed" in verbose.body and b"readyz check failed" in verbose.body
    finally:
        control.fault(shared_lab.dir, node="cp-2", kind=control.faults.Fault.ETCD_STOP, clear=True)
    wait_for(lambda: apiserver(shared_lab, "cp-2").get("/readyz").status == 200, timeout=30, what="cp-2 ready again")


def test_faults_crash_slow_notready_and_disk_full(shared_lab: topology.Lab) -> None:
    faults = control.faults.Fault
    control.fault(shared_lab.dir, node="cp-3", kind=faults.APISERVER_CRASH, clear=False)
    control.fault(shared_lab.dir, node="w-3", kind=faults.KUBELET_NOTREADY, clear=False)
    try:

        def crashed() -> bool:
            try:
                return apiserver(shared_lab, "cp-3").get("/livez").status != 200
            except OSError:
                return True

        wait_for(crashed, what="cp-3 apiserver down")
        wait_for(
            lambda: (
                control.status(shared_lab.dir)["components"]["cp-3"]["kube-apiserver"]["state"] == "CrashLoopBackOff"
            ),
            what="cp-3 apiserver in CrashLoopBackOff",
        )
        cp3 = f"{shared_lab.node('cp-3').ip}:{topology.APISERVER_PORT}"
        wait_for(lambda: cp3 not in state(shared_lab)["balancer"], what="the balancer to drop cp-3")  # type: ignore[operator]
        assert len(core(shared_lab).list_node().items) == 6  # the balancer skips the crashed apiserver
        wait_for(
            lambda: (
                next(c.status for c in core(shared_lab).read_node("w-3").status.conditions if c.type == "Ready")
                == "False"
            ),
            what="w-3 NotReady",
        )
    finally:
        control.fault(shared_lab.dir, node="cp-3", kind=None, clear=True)
        control.fault(shared_lab.dir, node="w-3", kind=None, clear=True)
    wait_for(lambda: control.health(shared_lab).healthy, timeout=40, what="healthy again")

    control.fault(shared_lab.dir, node="cp-1", kind=faults.SLOW, clear=False)
    try:

        def slow() -> bool:
            start = time.monotonic()
            assert apiserver(shared_lab, "cp-1").get("/version").status == 200
            return time.monotonic() - start >= 1.0

        wait_for(slow, what="a slow answer")
    finally:
        control.fault(shared_lab.dir, node="cp-1", kind=None, clear=True)

    control.fault(shared_lab.dir, node="cp-1", kind=faults.DISK_FULL, clear=False)
    try:

        def refused() -> bool:
            try:
                core(shared_lab).create_namespaced_config_map("default", {"metadata": {"generateName": "probe-"}})
            except ApiException as exc:
                return exc.status == 500 and "database space exceeded" in str(exc.body)
            return False

        wait_for(refused, what="writes refused with NOSPACE")
        assert core(shared_lab).list_node().items  # reads still work
    finally:
        control.fault(shared_lab.dir, node="cp-1", kind=None, clear=True)

    def writes_again() -> bool:
        try:
            core(shared_lab).create_namespaced_config_map("default", {"metadata": {"generateName": "probe-"}})
            return True
        except ApiException:
            return False

    wait_for(writes_again, what="writes accepted again")


def test_discovery_reflects_the_served_api_versions(shared_lab: topology.Lab) -> None:
    groups = apiserver(shared_lab, "cp-1").get("/apis").json()["groups"]
    flowcontrol = next(g for g in groups if g["name"] == "flowcontrol.apiserver.k8s.io")
    assert [v["version"] for v in flowcontrol["versions"]] == ["v1", "v1beta3"]  # 1.30: v1beta2 gone in 1.29
    assert "policy/v1beta1" not in json.dumps(groups)  # removed in 1.25


def test_lab_up_twice_is_refused(shared_lab: topology.Lab) -> None:
    pid = control.supervisor(shared_lab)
    assert pid is not None
    with pytest.raises(errors.Refused, match=rf"already up \(supervisor pid {pid.pid}\)$"):
        control.up(shared_lab.dir)


def test_manifest_image_change_restarts_the_apiserver_at_the_new_version_and_emulation(labs: Labs) -> None:
    lab = labs.up("restart", control_planes=1, workers=1)
    path = lab.manifests("cp-1") / "kube-apiserver.yaml"
    manifest = manifests.read(path)
    manifest["spec"]["containers"][0]["image"] = "registry.k8s.io/kube-apiserver:v1.32.9"
    manifest["spec"]["containers"][0]["command"].append("--emulated-version=1.31")
    manifests.write(path, manifest)

    def version() -> dict[str, str]:
        try:
            reply = apiserver(lab, "cp-1").get("/version")
            return dict(reply.json()) if reply.status == 200 else {}
        except OSError:
            return {}

    wait_for(lambda: version().get("gitVersion") == "v1.32.9", what="the apiserver at v1.32.9")
    # apimachinery's version.Info has the emulation fields from v0.33 (1.33): a 1.32 binary says nothing
    assert "emulationMajor" not in version() and "emulationMinor" not in version()
    groups = json.dumps(apiserver(lab, "cp-1").get("/apis").json())
    assert "flowcontrol.apiserver.k8s.io/v1beta3" in groups  # 1.32 stops serving it, but it emulates 1.31
    manifest["spec"]["containers"][0]["command"].remove("--emulated-version=1.31")
    manifests.write(path, manifest)

    def still_serves_v1beta3() -> bool:
        try:
            return "flowcontrol.apiserver.k8s.io/v1beta3" in json.dumps(apiserver(lab, "cp-1").get("/apis").json())
        except (OSError, ValueError):
            return True

    wait_for(lambda: not still_serves_v1beta3(), what="emulation committed")


def test_moving_a_manifest_out_stops_its_component(labs: Labs) -> None:
    lab = labs.up("moved", control_planes=1, workers=0)
    pid = control.status(lab.dir)["components"]["cp-1"]["kube-apiserver"]["pid"]
    assert pid
    path = lab.manifests("cp-1") / "kube-apiserver.yaml"
    path.rename(lab.root("cp-1") / "kube-apiserver.yaml")
    wait_for(lambda: "kube-apiserver" not in control.status(lab.dir)["components"]["cp-1"], what="apiserver gone")
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


def test_kubeadm_refuses_two_minors_and_upgrades_one(labs: Labs) -> None:
    lab = labs.up("kubeadm", control_planes=2, workers=1)
    root = lab.root("cp-1")
    before = (lab.manifests("cp-1") / "kube-apiserver.yaml").read_text()
    mirror.install(lab.mirror_dir, Version.parse("1.32.9"), root, ("kubeadm",))
    kubeadm = str(root / "usr" / "bin" / "kubeadm")
    refused = subprocess.run(
        [kubeadm, "upgrade", "apply", "v1.32.9", "--yes"], capture_output=True, text=True, check=False
    )
    assert refused.returncode == 1
    assert "kubeadm can upgrade only 1 minor version at a time" in refused.stderr
    assert (lab.manifests("cp-1") / "kube-apiserver.yaml").read_text() == before

    mirror.install(lab.mirror_dir, Version.parse("1.31.13"), root, ("kubeadm",))
    newer = subprocess.run(
        [kubeadm, "upgrade", "apply", "v1.31.14", "--yes"], capture_output=True, text=True, check=False
    )
    assert newer.returncode == 1 and "Upgrade kubeadm first" in newer.stderr
    done = subprocess.run(
        [kubeadm, "upgrade", "apply", "v1.31.13", "--yes"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert apiserver(lab, "cp-1").get("/version").json()["gitVersion"] == "v1.31.13"
    assert apiserver(lab, "cp-2").get("/version").json()["gitVersion"] == "v1.30.6"  # until `upgrade node`
    assert manifests.image_version(manifests.read(lab.manifests("cp-1") / "etcd.yaml")) == "3.5.24-0"
    cluster_config = core(lab).read_namespaced_config_map("kubeadm-config", "kube-system").data
    assert "kubernetesVersion: v1.31.13" in cluster_config["ClusterConfiguration"]
    assert not list((root / "etc" / "kubernetes" / "tmp").glob("kubeadm-backup-manifests-*"))


def test_deprecated_api_requests_show_in_the_metric_and_removed_versions_are_gone(shared_lab: topology.Lab) -> None:
    api = apiserver(shared_lab, "cp-1")
    assert api.get("/apis/flowcontrol.apiserver.k8s.io/v1beta3/flowschemas").status == 200  # deprecated in 1.30
    assert api.get("/apis/flowcontrol.apiserver.k8s.io/v1beta2/flowschemas").status == 404  # gone since 1.29
    metrics = api.get("/metrics").body.decode()
    assert (
        'apiserver_requested_deprecated_apis{group="flowcontrol.apiserver.k8s.io",removed_release="1.32",'
        'resource="flowschemas",subresource="",version="v1beta3"} 1'
    ) in metrics
    assert 'version="v1"}' not in metrics  # the GA version is not deprecated
    anonymous = subprocess.run(
        [
            "python3",
            "-c",
            "import ssl,urllib.request as u;"
            f"u.urlopen('https://{shared_lab.node('cp-1').ip}:6443/api/v1/nodes',"
            "context=ssl._create_unverified_context())",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "401" in anonymous.stderr  # only the version and health endpoints are public


def test_the_binary_mirror_is_served_over_http(shared_lab: topology.Lab) -> None:
    import urllib.request

    with urllib.request.urlopen(f"{shared_lab.mirror_url}/v1.31.13/bin/linux/amd64/kubeadm", timeout=5) as reply:
        assert b"upgrader-lab-stand-in: kubeadm v1.31.13" in reply.read()
    kubelet = subprocess.run(
        [str(shared_lab.root("w-1") / "usr" / "bin" / "kubelet"), "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert kubelet.stdout.strip() == "Kubernetes v1.30.6"


def test_kubeadm_two_step_with_extra_args_then_commit(labs: Labs) -> None:
    lab = labs.up("twostep", version="1.31.13", control_planes=1, workers=1)
    root = lab.root("cp-1")
    mirror.install(lab.mirror_dir, Version.parse("1.32.9"), root, ("kubeadm",))
    kubeadm = str(root / "usr" / "bin" / "kubeadm")
    plan = subprocess.run([kubeadm, "upgrade", "plan"], capture_output=True, text=True, check=False)
    assert plan.returncode == 0 and "kubeadm upgrade apply v1.32.9" in plan.stdout

    def set_extra_args(extra: list[dict[str, str]]) -> None:
        api = core(lab)
        configmap = api.read_namespaced_config_map("kubeadm-config", "kube-system")
        import yaml

        cluster = yaml.safe_load(configmap.data["ClusterConfiguration"])
        cluster.setdefault("apiServer", {})["extraArgs"] = extra
        configmap.data["ClusterConfiguration"] = yaml.safe_dump(cluster)
        api.replace_namespaced_config_map("kubeadm-config", "kube-system", configmap)

    set_extra_args([{"name": "emulated-version", "value": "1.31"}])
    step_one = subprocess.run(
        [kubeadm, "upgrade", "apply", "v1.32.9", "--yes"], capture_output=True, text=True, check=False
    )
    assert step_one.returncode == 0, step_one.stderr
    version = apiserver(lab, "cp-1").get("/version").json()
    assert version["gitVersion"] == "v1.32.9" and "emulationMinor" not in version  # 1.32: no such field
    assert "--emulated-version=1.31" in (lab.manifests("cp-1") / "kube-apiserver.yaml").read_text()

    set_extra_args([])
    commit = subprocess.run(
        [kubeadm, "upgrade", "apply", "v1.32.9", "--yes"], capture_output=True, text=True, check=False
    )
    assert commit.returncode == 0, commit.stderr
    assert apiserver(lab, "cp-1").get("/version").json()["gitVersion"] == "v1.32.9"  # kubeadm waited for it
    assert "emulated-version" not in (lab.manifests("cp-1") / "kube-apiserver.yaml").read_text()
