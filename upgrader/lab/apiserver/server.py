"""The HTTP side of the apiserver stand-in: TLS, routing, and the semantics of the resources it serves.

Served: ``/version``, ``/livez``, ``/readyz``, ``/healthz`` (``?verbose``), discovery (``/api``,
``/apis``, ``/api/v1``, ``/apis/G/V``), nodes, pods (with ``fieldSelector=spec.nodeName=...``),
pod eviction (policy/v1, honouring PodDisruptionBudgets: 429 when an eviction would break one),
namespaces, configmaps, PodDisruptionBudgets, flow-control objects, and ``/metrics`` with
``apiserver_requested_deprecated_apis``. Anonymous clients may only read the version and health
endpoints, as with kube-apiserver's defaults; everything else needs a client certificate from the CA.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from upgrader.core.versions import Minor, Version
from upgrader.etcd import kv
from upgrader.lab import disruption, faults
from upgrader.lab.apiserver import discovery, labels, registry, tables
from upgrader.support import names

PUBLIC = ("/version", "/livez", "/readyz", "/healthz")
JSON = "application/json"
ACCEPTED = (
    JSON,
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
)


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details or {}

    def status(self) -> dict[str, Any]:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }


def not_found(resource: registry.Resource, name: str) -> ApiError:
    group = resource.group
    return ApiError(
        404,
        "NotFound",
        f'{resource.plural}{"." + group if group else ""} "{name}" not found',
        {"name": name, "group": group, "kind": resource.plural},
    )


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (also used for strategic merge patches: lists are replaced)."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: Any, operations: list[dict[str, Any]]) -> Any:
    """RFC 6902 add, replace, remove and test, enough for kubectl and the Python client."""
    doc = json.loads(json.dumps(target))
    for op in operations:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in str(op["path"]).split("/")[1:]]
        parent = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent.setdefault(part, {})
        last = parts[-1] if parts else ""
        kind = op["op"]
        if kind == "test":
            current = parent[int(last)] if isinstance(parent, list) else parent.get(last)
            if current != op.get("value"):
                raise ApiError(422, "Invalid", f"test operation failed at {op['path']}")
        elif kind in ("add", "replace"):
            if isinstance(parent, list):
                if last == "-":
                    parent.append(op["value"])
                elif kind == "add":
                    parent.insert(int(last), op["value"])
                else:
                    parent[int(last)] = op["value"]
            else:
                parent[last] = op["value"]
        elif kind == "remove":
            if isinstance(parent, list):
                parent.pop(int(last))
            else:
                parent.pop(last, None)
        else:
            raise ApiError(422, "Invalid", f"unsupported json-patch operation {kind!r}")
    return doc


def _field(obj: dict[str, Any], dotted: str) -> str:
    value: Any = obj
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def fields_match(obj: dict[str, Any], selector: str) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        negate = "!=" in term
        key, value = term.replace("!=", "=").replace("==", "=").split("=", 1)
        if (_field(obj, key.strip()) == value.strip()) == negate:
            return False
    return True


class Api:
    """Resource semantics over the registry, independent of HTTP."""

    def __init__(self, *, binary: Version, emulated: Minor, store: kv.KV) -> None:
        self.binary = binary
        self.emulated = emulated
        self.store = store
        self.registry = registry.Registry(store)
        self.discovery = discovery.Discovery(emulated)
        self.deprecated_requests: set[tuple[str, str, str, str, str]] = set()
        self.lock = threading.Lock()

    # -- fixed endpoints -----------------------------------------------------------------------

    def version(self) -> dict[str, Any]:
        """What a real apiserver of this binary answers: apimachinery's ``version.Info`` has the emulation
        and minimum-compatibility fields from v0.33 (Kubernetes 1.33) on, ``omitempty``; a 1.31 or 1.32
        apiserver started with ``--emulated-version`` reports its binary's version alone."""
        info: dict[str, Any] = {
            "major": str(self.binary.major),
            "minor": str(self.binary.minor),
            "gitVersion": f"v{self.binary}",
            "gitCommit": "upgrader-lab",
            "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z",
            "goVersion": "go1.24",
            "compiler": "gc",
            "platform": "linux/amd64",
        }
        if self.binary.minor_version >= Minor(1, 33):
            info.update(
                emulationMajor=str(self.emulated.major),
                emulationMinor=str(self.emulated.minor),
                minCompatibilityMajor=str(self.emulated.major),
                minCompatibilityMinor=str(self.emulated.minor - 1),
            )
        return info

    def health(self, path: str, verbose: bool) -> tuple[int, str]:
        checks = [("ping", True), ("log", True)]
        if path in ("/readyz", "/healthz"):
            try:
                self.store.revision()
                etcd_ok = True
            except kv.EtcdUnavailable:
                etcd_ok = False
            checks += [("etcd", etcd_ok), ("etcd-readiness", etcd_ok), ("informer-sync", True)]
        ok = all(passed for _, passed in checks)
        name = path.strip("/")
        if not verbose:
            return (200, "ok") if ok else (500, f"[-]etcd failed: reason withheld\n{name} check failed")
        lines = [f"[+]{check} ok" if passed else f"[-]{check} failed: reason withheld" for check, passed in checks]
        lines.append(f"{name} check passed" if ok else f"{name} check failed")
        return (200 if ok else 500), "\n".join(lines) + "\n"

    def metrics(self) -> str:
        lines = [
            "# HELP apiserver_requested_deprecated_apis [STABLE] Gauge of deprecated APIs that have been requested, "
            "broken out by API group, version, resource, subresource, and removed_release.",
            "# TYPE apiserver_requested_deprecated_apis gauge",
        ]
        with self.lock:
            for group, version, resource, sub, removed in sorted(self.deprecated_requests):
                lines.append(
                    f'apiserver_requested_deprecated_apis{{group="{group}",removed_release="{removed}",'
                    f'resource="{resource}",subresource="{sub}",version="{version}"}} 1'
                )
        return "\n".join(lines) + "\n"

    def _note_deprecated(self, resource: registry.Resource, version: str, sub: str) -> None:
        gv = f"{resource.group}/{version}" if resource.group else version
        if self.discovery.deprecated(gv):
            removed = self.discovery.removed_in(gv)
            with self.lock:
                self.deprecated_requests.add((resource.group, version, resource.plural, sub, str(removed)))

    # -- resources -----------------------------------------------------------------------------

    @staticmethod
    def _api_version(resource: registry.Resource, version: str) -> str:
        return f"{resource.group}/{version}" if resource.group else version

    def _typed(self, resource: registry.Resource, version: str, obj: dict[str, Any]) -> dict[str, Any]:
        api_version = f"{resource.group}/{version}" if resource.group else version
        return {
            "kind": resource.kind,
            "apiVersion": api_version,
            **{k: v for k, v in obj.items() if k not in ("kind", "apiVersion")},
        }

    def _require_namespace(self, namespace: str) -> None:
        ns = next(r for r in registry.RESOURCES if r.plural == "namespaces")
        try:
            self.registry.get(ns, namespace, None)
        except registry.NotFound:
            raise ApiError(
                404, "NotFound", f'namespaces "{namespace}" not found', {"name": namespace, "kind": "namespaces"}
            ) from None

    def handle(
        self,
        method: str,
        resource: registry.Resource,
        *,
        version: str,
        namespace: str | None,
        name: str | None,
        sub: str,
        query: dict[str, str],
        body: Any,
        content_type: str,
    ) -> tuple[int, dict[str, Any]]:
        self._note_deprecated(resource, version, sub)

        def typed(obj: dict[str, Any]) -> dict[str, Any]:
            return self._typed(resource, version, obj)

        # Server-side dry run (?dryRun=All, or DeleteOptions.dryRun): every check, no write.
        dry_run = _dry_run(query.get("dryRun"))
        try:
            if name is None:
                if method == "GET":
                    return 200, self._list(resource, version, namespace, query)
                if method == "POST":
                    return 201, typed(self._create(resource, namespace, body, version, dry_run))
                raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on a collection")
            if sub == "eviction":
                if method != "POST":
                    raise ApiError(405, "MethodNotAllowed", "evictions are created with POST")
                return self._evict(namespace or "default", name, body, dry_run)
            if method == "GET":
                return 200, typed(self.registry.get(resource, name, namespace))
            if method == "DELETE":
                options = body if isinstance(body, dict) else {}
                precondition = options.get("preconditions") or {}
                deleted = self.registry.delete(
                    resource,
                    name,
                    namespace,
                    revision=precondition.get("resourceVersion"),
                    uid=precondition.get("uid"),
                    dry_run=dry_run or _dry_run(options.get("dryRun")),
                )
                return 200, typed(deleted)
            if method in ("PUT", "PATCH"):
                change = self._changer(method, resource, sub, body, content_type)
                return 200, typed(self.registry.update(resource, name, namespace, change, dry_run=dry_run))
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported")
        except registry.NotFound:
            raise not_found(resource, name or "") from None
        except registry.AlreadyExists as exc:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{resource.plural} "{exc}" already exists',
                {"name": str(exc), "kind": resource.plural},
            ) from None
        except registry.Conflict as exc:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {resource.plural} "{exc}": '
                "the object has been modified; please apply your changes to the latest version and "
                "try again",
                {"name": str(exc), "kind": resource.plural},
            ) from None
        except kv.NoSpace as exc:
            raise ApiError(500, "InternalError", f"etcdserver: mvcc: database space exceeded ({exc})") from None
        except kv.EtcdUnavailable as exc:
            raise ApiError(503, "ServiceUnavailable", f"etcd is unavailable: {exc}") from None

    def _list(
        self, resource: registry.Resource, version: str, namespace: str | None, query: dict[str, str]
    ) -> dict[str, Any]:
        if query.get("watch") in ("1", "true"):
            raise ApiError(405, "MethodNotAllowed", "watch is not served by the lab apiserver; poll instead")
        limit = int(query.get("limit") or 0)
        items, revision, token = self.registry.list(
            resource, namespace, limit=limit, after=registry.continue_key(query.get("continue"))
        )
        selector, fields = query.get("labelSelector", ""), query.get("fieldSelector", "")
        if selector:
            try:
                items = [i for i in items if labels.query_matches(i.get("metadata", {}).get("labels") or {}, selector)]
            except labels.BadSelector as exc:
                raise ApiError(400, "BadRequest", f"unable to parse requirement: {exc}") from None
        if fields:
            items = [i for i in items if fields_match(i, fields)]
        metadata: dict[str, Any] = {"resourceVersion": revision}
        if token:
            metadata["continue"] = token
        api_version = f"{resource.group}/{version}" if resource.group else version
        for item in items:
            item.pop("kind", None)
            item.pop("apiVersion", None)
        return {"kind": f"{resource.kind}List", "apiVersion": api_version, "metadata": metadata, "items": items}

    def _create(
        self, resource: registry.Resource, namespace: str | None, body: Any, version: str, dry_run: bool
    ) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body must be a JSON object")
        meta = body.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = f"{meta['generateName']}{int(time.time() * 1000) % 100000:05d}"
        name = str(meta.get("name") or "")
        if not names.is_node_name(name):
            raise ApiError(422, "Invalid", f'{resource.kind} "{name}" is invalid: metadata.name: Invalid value')
        if resource.namespaced:
            namespace = namespace or str(meta.get("namespace") or "default")
            self._require_namespace(namespace)
        if resource.plural == "namespaces":
            body.setdefault("status", {"phase": "Active"})
        if resource.plural == "pods":  # status on create is ignored; the kubelet reports it
            body["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
        # Stored with the apiVersion it was written with (kube-apiserver stores its storage version;
        # the lab keeps the writer's so that old-version objects can be simulated).
        body["apiVersion"] = self._api_version(resource, version)
        body["kind"] = resource.kind
        return self.registry.create(resource, body, namespace, dry_run=dry_run)

    def _changer(
        self, method: str, resource: registry.Resource, sub: str, body: Any, content_type: str
    ) -> Callable[[dict[str, Any]], dict[str, Any]]:
        has_status = "status" in resource.subresources

        def change(current: dict[str, Any]) -> dict[str, Any]:
            if method == "PUT":
                if not isinstance(body, dict):
                    raise ApiError(400, "BadRequest", "the body must be a JSON object")
                new = dict(body)
                expected = (body.get("metadata") or {}).get("resourceVersion")
                new["metadata"] = {**current["metadata"], **(body.get("metadata") or {})}
                if not expected:
                    new["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            elif "json-patch" in content_type:
                new = json_patch(current, body)
            else:
                new = merge_patch(current, body)
            for immutable in ("uid", "creationTimestamp", "name", "namespace", "generation"):
                if immutable in current["metadata"]:
                    new["metadata"][immutable] = current["metadata"][immutable]
            if sub != "status" and new.get("spec") != current.get("spec"):
                new["metadata"]["generation"] = int(current["metadata"].get("generation", 1)) + 1
            if sub == "status":  # the status subresource changes status only
                return {
                    **current,
                    "status": new.get("status", current.get("status")),
                    "metadata": {**current["metadata"], "resourceVersion": new["metadata"].get("resourceVersion")},
                }
            if has_status:  # the main resource never changes status
                new["status"] = current.get("status")
            # Every write stores the object at the storage version: rewriting is a storage migration.
            new["apiVersion"] = self._api_version(resource, resource.versions[0])
            new["kind"] = resource.kind
            return new

        return change

    # -- eviction, as pkg/registry/core/pod/storage/eviction.go ----------------------------------

    def _evict(self, namespace: str, name: str, body: Any, dry_run: bool) -> tuple[int, dict[str, Any]]:
        """Evicts ``name`` if its budget's status (the disruption controller's) allows it, spending one
        disruption with a compare-and-swap on the budget first: concurrent evictions, through this
        apiserver or another, cannot all spend the last one."""
        pods, pdbs = registry.find("pods"), registry.find("poddisruptionbudgets")
        if isinstance(body, dict):
            if (body.get("metadata") or {}).get("name") not in (None, name):
                raise ApiError(400, "BadRequest", "name in URL does not match name in Eviction object")
            dry_run = dry_run or _dry_run((body.get("deleteOptions") or {}).get("dryRun"))
        for _ in range(EVICTION_RETRIES):
            try:
                pod = self.registry.get(pods, name, namespace)
            except registry.NotFound:
                raise not_found(pods, name) from None
            meta, phase = pod["metadata"], (pod.get("status") or {}).get("phase")
            if phase in ("Succeeded", "Failed", "Pending") or meta.get("deletionTimestamp"):
                # a terminal, pending or terminating pod is deleted without asking its budget (canIgnorePDB)
                return self._evicted(pods, namespace, name, dry_run)
            budgets, _, _ = self.registry.list(pdbs, namespace)
            pod_labels = meta.get("labels") or {}
            matching = [b for b in budgets if _selects(b, pod_labels)]
            if len(matching) > 1:
                raise ApiError(
                    500,
                    "InternalError",
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                )
            if not matching:
                return self._evicted(pods, namespace, name, dry_run)
            budget = matching[0]
            state = budget.get("status") or {}
            if not disruption.pod_ready(pod):
                always = (budget.get("spec") or {}).get("unhealthyPodEvictionPolicy") == "AlwaysAllow"
                healthy_budget = state.get("currentHealthy", 0) >= state.get("desiredHealthy", 0) > 0
                if always or healthy_budget:  # an unready pod does not count: nothing to spend
                    return self._evicted(pods, namespace, name, dry_run, revision=meta["resourceVersion"])
            try:
                self._spend(budget, name, dry_run)
            except registry.Conflict:
                time.sleep(EVICTION_RETRY_SECONDS)
                continue
            return self._evicted(pods, namespace, name, dry_run)
        raise ApiError(
            504, "Timeout", f'couldn\'t update PodDisruptionBudget "{budget["metadata"]["name"]}" due to conflicts'
        )

    def _spend(self, budget: dict[str, Any], pod: str, dry_run: bool) -> None:
        """checkAndDecrement: refuses unless the controller has seen this generation and allows a
        disruption; then records the pod in disruptedPods, only if the budget is unchanged since read."""
        name = budget["metadata"]["name"]
        state = budget.get("status") or {}
        if state.get("observedGeneration", 0) < budget["metadata"].get("generation", 1):
            raise _too_many(f"The disruption budget {name} is still being processed by the server.")
        allowed = int(state.get("disruptionsAllowed", 0))
        if allowed < 0 or len(state.get("disruptedPods") or {}) > MAX_DISRUPTED_PODS:
            raise ApiError(403, "Forbidden", f'poddisruptionbudgets.policy "{name}" is forbidden')
        if allowed == 0:
            raise _too_many(
                f"The disruption budget {name} needs {state.get('desiredHealthy', 0)} healthy pods "
                f"and has {state.get('currentHealthy', 0)} currently"
            )
        if dry_run:
            return
        read = budget["metadata"]["resourceVersion"]

        def spend(current: dict[str, Any]) -> dict[str, Any]:
            if current["metadata"]["resourceVersion"] != read:
                raise registry.Conflict(name)
            status = dict(current.get("status") or {})
            status["disruptionsAllowed"] = allowed - 1
            status["disruptedPods"] = {**(status.get("disruptedPods") or {}), pod: registry.timestamp()}
            return {**current, "status": status}

        self.registry.update(registry.find("poddisruptionbudgets"), name, budget["metadata"]["namespace"], spend)

    def _evicted(
        self, pods: registry.Resource, namespace: str, name: str, dry_run: bool, *, revision: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        try:
            if not dry_run:
                self.registry.delete(pods, name, namespace, revision=revision)
        except registry.NotFound:
            raise not_found(pods, name) from None
        except registry.Conflict:  # an unready pod changed since it was read: the client retries
            raise _too_many(
                f"The disruption budget for {namespace}/{name} is still being processed by the server."
            ) from None
        return 201, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}


EVICTION_RETRIES = 20  # eviction.go's EvictionsRetry: 20 steps of 500 ms
EVICTION_RETRY_SECONDS = 0.5
MAX_DISRUPTED_PODS = 2000


def _too_many(message: str) -> ApiError:
    return ApiError(
        429,
        "TooManyRequests",
        "Cannot evict pod as it would violate the pod's disruption budget.",
        {"causes": [{"reason": "DisruptionBudget", "message": message}]},
    )


def _selects(budget: dict[str, Any], pod_labels: dict[str, str]) -> bool:
    try:
        return labels.object_matches((budget.get("spec") or {}).get("selector"), pod_labels)
    except labels.BadSelector:  # an invalid selector matches no pod (eviction.go)
        return False


def _dry_run(value: Any) -> bool:
    """``dryRun`` as the apiserver takes it: absent, or ``All``; anything else is refused."""
    if value in (None, "", []):
        return False
    values = value if isinstance(value, list) else [value]
    if values != ["All"]:
        raise ApiError(400, "BadRequest", f'Invalid dryRun value {value!r}: supported values: "All"')
    return True


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server
    _raw = b""

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _send(self, code: int, body: Any, content_type: str = JSON) -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _raw_body(self) -> bytes:
        """The whole request body, whatever the method: a body left unread would be parsed as the next
        request on this connection (DELETE carries DeleteOptions; Go's client may send chunks)."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _body(self) -> Any:
        raw = self._raw
        if not raw:
            return None
        content_type = (self.headers.get("Content-Type") or JSON).split(";", 1)[0].strip()
        if content_type not in ACCEPTED:
            # kube-apiserver also reads protobuf (and CBOR); the lab reads JSON only and says so, as an
            # apiserver does for a type it does not accept
            accepted = ", ".join(ACCEPTED)
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types include: {accepted}",
            )
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            raise ApiError(400, "BadRequest", "the request body is not valid JSON") from None

    def _authenticated(self) -> bool:
        try:
            return bool(self.connection.getpeercert())
        except (AttributeError, ValueError):
            return False

    def _dispatch(self, method: str) -> None:
        api = self.server.api
        self._raw = self._raw_body()  # read before any answer, so the connection stays in step
        if faults.Fault.SLOW in self.server.faults:
            time.sleep(faults.SLOW_SECONDS)
        url = urlsplit(self.path)
        path = unquote(url.path).rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        try:
            if path == "/version":
                self._send(200, api.version())
                return
            if path in ("/livez", "/readyz", "/healthz") or path.startswith(("/livez/", "/readyz/")):
                code, text = api.health("/" + path.strip("/").split("/")[0], "verbose" in query)
                self._send(code, text, "text/plain; charset=utf-8")
                return
            if not self._authenticated():
                raise ApiError(401, "Unauthorized", "Unauthorized")
            if path == "/metrics":
                self._send(200, api.metrics(), "text/plain; version=0.0.4")
                return
            self._route(method, path, query)
        except ApiError as exc:
            self._send(exc.code, exc.status())

    def _route(self, method: str, path: str, query: dict[str, str]) -> None:
        api = self.server.api
        parts = path.strip("/").split("/")
        if parts == ["api"]:
            self._send(
                200,
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": self.server.advertise}],
                },
            )
            return
        if parts == ["apis"]:
            self._send(200, api.discovery.api_group_list())
            return
        if parts[0] == "api" and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        elif parts[0] == "apis" and len(parts) == 2:
            versions = api.discovery.group_versions(parts[1])
            if not versions:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            entries = [{"groupVersion": gv, "version": gv.split("/")[1]} for gv in versions]
            self._send(
                200,
                {
                    "kind": "APIGroup",
                    "apiVersion": "v1",
                    "name": parts[1],
                    "versions": entries,
                    "preferredVersion": entries[0],
                },
            )
            return
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            listing = api.discovery.resource_list(group, version)
            if listing is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            self._send(200, listing)
            return
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        plural, name, sub = rest[0], rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else ""
        resource = api.discovery.resource(group, version, plural)
        if resource is None or (sub and sub not in resource.subresources) or len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if namespace is not None and not resource.namespaced:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if resource.namespaced and namespace is None and name is not None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        body = self._body()
        content_type = self.headers.get("Content-Type") or JSON
        code, payload = api.handle(
            method,
            resource,
            version=version,
            namespace=namespace,
            name=name,
            sub=sub,
            query=query,
            body=body,
            content_type=content_type,
        )
        if method == "GET" and code == 200 and tables.wants_table(self.headers.get("Accept") or ""):
            items = payload.get("items") if name is None else [payload]
            for item in items or []:
                item.setdefault("kind", resource.kind)
                item.setdefault("apiVersion", payload.get("apiVersion"))
            revision = str((payload.get("metadata") or {}).get("resourceVersion") or "")
            payload = tables.table(resource.kind, items or [], revision, query.get("includeObject", "Metadata"))
        self._send(code, payload)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-response (health checks do) is not worth a traceback.
        return

    def __init__(self, address: tuple[str, int], api: Api, fault_view: faults.View | Any) -> None:
        super().__init__(address, Handler)
        self.api = api
        self.faults = fault_view
        self.advertise = f"{address[0]}:{address[1]}"
