"""Read-only access to a cluster through the official client (v37, the regenerated client).

Each apiserver is reached on its own address (from its mirror pod's kubeadm annotation), so the
version, readiness and metrics of every instance are seen, not just whichever one a load balancer
picks. Raw endpoints without a generated method (/readyz, /metrics) go through the client's own
request path, so authentication and TLS are exactly the kubeconfig's; readiness is decided from the
HTTP status code, as the Kubernetes documentation says.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import InsecureRequestWarning

from upgrader import errors

ENDPOINT_ANNOTATION = "kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint"
_ERRORS = (ApiException, Urllib3Error, OSError, ValueError)


class KubeUnavailable(errors.OperationFailed):
    """The Kubernetes API could not be reached or answered with an error."""


@dataclass(frozen=True)
class NodeInfo:
    name: str
    kubelet: str
    runtime: str
    ready: bool
    unschedulable: bool
    control_plane: bool
    revision: int = 0  # the Node object's resourceVersion: etcd's revision of its last write


@dataclass(frozen=True)
class Apiserver:
    """A kube-apiserver instance as its mirror pod describes it."""

    node: str
    endpoint: str  # host:port
    image_tag: str
    emulated_flag: str | None  # the --emulated-version its manifest passes, if any
    phase: str


@dataclass(frozen=True)
class EtcdPod:
    """A stacked etcd member as its mirror pod describes it."""

    node: str
    enable_v2: bool  # started with --enable-v2=true, which etcd 3.6 refuses


@dataclass(frozen=True)
class VersionInfo:
    git_version: str
    emulation: str | None  # "1.31" when the server reports it


def _text(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


class Cluster:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api

    @functools.cached_property
    def core(self) -> client.CoreV1Api:
        """Made on first use: its module imports some 250 models (about a second on a small machine),
        which a command can spend while a playbook runs."""
        return client.CoreV1Api(self.api)

    @classmethod
    def connect(cls, kubeconfig: Path, context: str | None = None, timeout: float = 10.0) -> Cluster:
        """A client for the kubeconfig's context. Nothing is sent until a call is made."""
        try:
            api = config.new_client_from_config(config_file=str(kubeconfig), context=context)
        except (ConfigException, OSError, ValueError, KeyError) as exc:
            raise errors.ConfigError(f"cannot use kubeconfig {kubeconfig}: {_text(exc)}") from exc
        except (TypeError, AttributeError):
            # The client indexes whatever YAML it finds: a list or a string fails deep inside it.
            raise errors.ConfigError(
                f"cannot use kubeconfig {kubeconfig}: not a kubeconfig (a YAML mapping with clusters, users, contexts)"
            ) from None
        made = cls(api)
        made.timeout = timeout
        return made

    timeout: float = 10.0

    def insecure_settings(self) -> list[str]:
        """What in the kubeconfig would send credentials or accept a server unverified."""
        conf = self.api.configuration
        found = []
        if str(conf.host).startswith("http://"):
            found.append(f"the kubeconfig's server {conf.host} is plain http: its credentials would travel unencrypted")
        if not conf.verify_ssl:
            found.append(
                "the kubeconfig sets insecure-skip-tls-verify: the apiserver's certificate would not be checked"
            )
        return found

    def accept_insecure(self) -> None:
        """The operator allowed ``insecure_settings`` (and was warned once): urllib3 need not warn per request."""
        urllib3.disable_warnings(InsecureRequestWarning)

    def close(self) -> None:
        self.api.close()

    def call(self, what: str, call: Any) -> Any:
        """Runs one client call; its errors become ``KubeUnavailable`` naming ``what``."""
        try:
            return call()
        except _ERRORS as exc:
            raise KubeUnavailable(f"Kubernetes API: {what} failed: {_text(exc)}") from exc

    def nodes(self) -> list[NodeInfo]:
        items = self.call("list nodes", lambda: self.core.list_node(_request_timeout=self.timeout)).items
        return [_node_info(item) for item in items]

    def node(self, name: str) -> NodeInfo | None:
        """One Node (a GET, not a list of every node), or None when there is no such Node."""
        try:
            item = self.core.read_node(name, _request_timeout=self.timeout)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise KubeUnavailable(f"Kubernetes API: read node {name} failed: {_text(exc)}") from exc
        except _ERRORS as exc:
            raise KubeUnavailable(f"Kubernetes API: read node {name} failed: {_text(exc)}") from exc
        return _node_info(item)

    def _static_pods(self, component: str) -> list[Any]:
        """The mirror pods of a control-plane component's static pods (kubeadm labels them ``component``)."""
        return list(
            self.call(
                f"list {component} pods",
                lambda: self.core.list_namespaced_pod(
                    "kube-system", label_selector=f"component={component}", _request_timeout=self.timeout
                ),
            ).items
        )

    def apiservers(self) -> list[Apiserver]:
        out = []
        for pod in self._static_pods("kube-apiserver"):
            annotations = pod.metadata.annotations or {}
            container = pod.spec.containers[0]
            emulated = next(
                (
                    str(a).split("=", 1)[1]
                    for a in (container.command or [])
                    if str(a).startswith("--emulated-version=")
                ),
                None,
            )
            out.append(
                Apiserver(
                    node=pod.spec.node_name or "",
                    endpoint=annotations.get(ENDPOINT_ANNOTATION, ""),
                    image_tag=str(container.image).rsplit(":", 1)[-1],
                    emulated_flag=emulated.split("=", 1)[-1] if emulated else None,
                    phase=(pod.status.phase if pod.status else "") or "",
                )
            )
        return sorted(out, key=lambda a: a.node)

    def etcd_pods(self) -> list[EtcdPod]:
        """The stacked etcd members' mirror pods (none with external etcd)."""
        out = []
        for pod in self._static_pods("etcd"):
            container = pod.spec.containers[0]
            flags = [str(a) for a in (container.command or []) + (container.args or [])]
            out.append(
                EtcdPod(
                    node=pod.spec.node_name or "",
                    enable_v2=any(f in ("--enable-v2", "--enable-v2=true") for f in flags),
                )
            )
        return sorted(out, key=lambda p: p.node)

    def _raw(self, endpoint: str | None, path: str) -> tuple[int, bytes]:
        host = f"https://{endpoint}" if endpoint else None

        def call() -> tuple[int, bytes]:
            method, url, headers, _, _ = self.api.param_serialize(
                "GET", path, auth_settings=["BearerToken"], _host=host, header_params={"Accept": "*/*"}
            )
            # v37's call_api returns error responses instead of raising; v36 raised. Handle both.
            try:
                response = self.api.call_api(method, url, header_params=headers, _request_timeout=self.timeout)
            except ApiException as exc:
                return int(exc.status or 0), (exc.body or "").encode() if isinstance(exc.body, str) else b""
            try:
                data = response.read()
            finally:
                # The client streams raw responses; hand the connection back, or it leaks open.
                response.response.release_conn()
            return int(response.status), bytes(data or b"")

        return self.call(f"GET {path} on {endpoint or 'the cluster'}", call)  # type: ignore[no-any-return]

    def version(self, endpoint: str) -> VersionInfo:
        status, body = self._raw(endpoint, "/version")
        if status != 200:
            raise KubeUnavailable(f"GET /version on {endpoint} answered HTTP {status}")
        data = json.loads(body)
        emulation = None
        if data.get("emulationMajor") and data.get("emulationMinor"):
            emulation = f"{data['emulationMajor']}.{data['emulationMinor']}"
        return VersionInfo(git_version=str(data.get("gitVersion", "")), emulation=emulation)

    def ready(self, endpoint: str) -> bool:
        try:
            status, _ = self._raw(endpoint, "/readyz")
        except KubeUnavailable:
            return False
        return status == 200

    def metrics(self, endpoint: str) -> str:
        status, body = self._raw(endpoint, "/metrics")
        if status != 200:
            raise KubeUnavailable(f"GET /metrics on {endpoint} answered HTTP {status}")
        return body.decode(errors="replace")

    def cluster_configuration(self) -> str | None:
        try:
            configmap = self.core.read_namespaced_config_map(
                "kubeadm-config", "kube-system", _request_timeout=self.timeout
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise KubeUnavailable(f"reading kubeadm-config failed: {_text(exc)}") from exc
        except _ERRORS as exc:
            raise KubeUnavailable(f"reading kubeadm-config failed: {_text(exc)}") from exc
        data = configmap.data or {}
        return data.get("ClusterConfiguration")


def _node_info(item: Any) -> NodeInfo:
    status = item.status
    conditions = {c.type: c.status for c in (status.conditions or [])}
    labels = item.metadata.labels or {}
    return NodeInfo(
        name=item.metadata.name,
        kubelet=status.node_info.kubelet_version if status.node_info else "",
        runtime=status.node_info.container_runtime_version if status.node_info else "",
        ready=conditions.get("Ready") == "True",
        unschedulable=bool(item.spec.unschedulable) if item.spec else False,
        control_plane="node-role.kubernetes.io/control-plane" in labels,
        revision=int(item.metadata.resource_version or 0),
    )
