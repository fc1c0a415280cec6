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

from upgrader import names
from upgrader.etcd import kv
from upgrader.lab import faults
from upgrader.lab.apiserver import discovery, registry
from upgrader.versions import Minor, Version

PUBLIC = ("/version", "/livez", "/readyz", "/healthz")
JSON = "application/json"


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


def selector_matches(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


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


def pod_ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    if pod.get("metadata", {}).get("deletionTimestamp") or status.get("phase") != "Running":
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def _int_or_percent(value: Any, total: int, *, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        share = int(value[:-1]) * total
        return -(-share // 100) if round_up else share // 100
    return int(value)


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

        try:
            if name is None:
                if method == "GET":
                    return 200, self._list(resource, version, namespace, query)
                if method == "POST":
                    return 201, typed(self._create(resource, namespace, body, version))
                raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on a collection")
            if sub == "eviction":
                if method != "POST":
                    raise ApiError(405, "MethodNotAllowed", "evictions are created with POST")
                return self._evict(namespace or "default", name, body)
            if method == "GET":
                return 200, typed(self.registry.get(resource, name, namespace))
            if method == "DELETE":
                return 200, typed(self.registry.delete(resource, name, namespace))
            if method in ("PUT", "PATCH"):
                change = self._changer(method, resource, sub, body, content_type)
                return 200, typed(self.registry.update(resource, name, namespace, change))
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
        labels, fields = query.get("labelSelector", ""), query.get("fieldSelector", "")
        if labels:
            items = [i for i in items if selector_matches(i.get("metadata", {}).get("labels") or {}, labels)]
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

    def _create(self, resource: registry.Resource, namespace: str | None, body: Any, version: str) -> dict[str, Any]:
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
        return self.registry.create(resource, body, namespace)

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
            for immutable in ("uid", "creationTimestamp", "name", "namespace"):
                if immutable in current["metadata"]:
                    new["metadata"][immutable] = current["metadata"][immutable]
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

    def _evict(self, namespace: str, name: str, body: Any) -> tuple[int, dict[str, Any]]:
        pods = next(r for r in registry.RESOURCES if r.plural == "pods")
        pdbs = next(r for r in registry.RESOURCES if r.plural == "poddisruptionbudgets")
        try:
            pod = self.registry.get(pods, name, namespace)
        except registry.NotFound:
            raise not_found(pods, name) from None
        labels = pod.get("metadata", {}).get("labels") or {}
        budgets, _, _ = self.registry.list(pdbs, namespace)
        matching = [b for b in budgets if _selects(b, labels)]
        if len(matching) > 1:
            raise ApiError(
                500,
                "InternalError",
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            )
        if matching and pod_ready(pod):
            allowed = self._disruptions_allowed(matching[0], namespace)
            if allowed <= 0:
                budget = matching[0]["metadata"]["name"]
                raise ApiError(
                    429,
                    "TooManyRequests",
                    "Cannot evict pod as it would violate the pod's disruption budget.",
                    {
                        "causes": [
                            {
                                "reason": "DisruptionBudget",
                                "message": f"The disruption budget {budget} needs more healthy pods",
                            }
                        ]
                    },
                )
        self.registry.delete(pods, name, namespace)
        return 201, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    def _disruptions_allowed(self, budget: dict[str, Any], namespace: str) -> int:
        pods = next(r for r in registry.RESOURCES if r.plural == "pods")
        items, _, _ = self.registry.list(pods, namespace)
        selected = [p for p in items if _selects(budget, p.get("metadata", {}).get("labels") or {})]
        healthy = sum(1 for p in selected if pod_ready(p))
        spec = budget.get("spec") or {}
        if "minAvailable" in spec:
            desired = _int_or_percent(spec["minAvailable"], len(selected), round_up=True)
        else:
            desired = len(selected) - _int_or_percent(spec.get("maxUnavailable", 0), len(selected), round_up=True)
        return healthy - desired


def _selects(budget: dict[str, Any], labels: dict[str, str]) -> bool:
    wanted = ((budget.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return all(labels.get(k) == v for k, v in wanted.items())


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _send(self, code: int, body: Any, content_type: str = JSON) -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
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
        body = self._body() if method in ("POST", "PUT", "PATCH") else None
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
