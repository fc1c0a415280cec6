"""The kubeadm stand-in: ``version``, ``upgrade plan``, ``upgrade apply vX``, ``upgrade node``.

It behaves as kubeadm does where upgrader depends on it: it refuses a jump of more than one minor
and a target newer than itself (mandatory errors, as in kubeadm's policy.go), checks that the API is
reachable and every node Ready, upgrades etcd first (never downgrading it), rewrites the static pod
manifests of this node (keeping their flags, applying the ClusterConfiguration's ``extraArgs`` and
``--patches``), backs the old manifests up under /etc/kubernetes/tmp, waits for the new apiserver to
answer at the new version and, if it does not, puts the old manifests back and fails.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from upgrader import errors
from upgrader.core.rules import catalog as catalog_mod
from upgrader.core.versions import Version
from upgrader.lab import faults, http, manifests
from upgrader.lab.apiserver.server import json_patch, merge_patch

PATCH_TARGETS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


class KubeadmError(Exception):
    pass


class Node:
    """This node's kubeadm view: its /etc/kubernetes and its admin credentials."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.kube = root / "etc" / "kubernetes"
        self.manifests = self.kube / "manifests"

    @property
    def control_plane(self) -> bool:
        return (self.manifests / "kube-apiserver.yaml").is_file()

    def client(self) -> http.Client:
        config = self.kube / ("admin.conf" if (self.kube / "admin.conf").is_file() else "kubelet.conf")
        return http.Client(config, timeout=5.0)

    def advertise(self) -> str:
        command = manifests.read(self.manifests / "kube-apiserver.yaml")["spec"]["containers"][0]["command"]
        for arg in command:
            if str(arg).startswith("--advertise-address="):
                return str(arg).split("=", 1)[1]
        raise KubeadmError("the kube-apiserver manifest has no --advertise-address")


def _cluster_configuration(api: http.Client) -> tuple[dict[str, Any], dict[str, Any]]:
    reply = api.get("/api/v1/namespaces/kube-system/configmaps/kubeadm-config")
    if reply.status != 200:
        raise KubeadmError(f"[upgrade/config] FATAL: failed to get the kubeadm-config ConfigMap (HTTP {reply.status})")
    configmap = reply.json()
    return configmap, yaml.safe_load(configmap["data"]["ClusterConfiguration"]) or {}


def _current_version(config: dict[str, Any]) -> Version:
    return Version.parse(str(config.get("kubernetesVersion", "")).lstrip("v"), what="kubernetesVersion")


def _check_policy(current: Version, target: Version, kubeadm: Version, *, force: bool) -> None:
    """kubeadm's EnforceVersionPolicies: the mandatory errors cannot be skipped with --force."""
    if target.minor_version > current.minor_version + 1:
        raise KubeadmError(
            f"[upgrade/version] FATAL: the --version argument is invalid due to these fatal errors:\n"
            f'\t- Specified version to upgrade to "v{target}" is too high; kubeadm can upgrade only '
            f"1 minor version at a time"
        )
    if target.minor_version < current.minor_version - 1:
        raise KubeadmError(
            f'[upgrade/version] FATAL: Specified version to downgrade to "v{target}" is too low; '
            f"kubeadm can downgrade only 1 minor version at a time"
        )
    if target.minor_version > kubeadm.minor_version:
        raise KubeadmError(
            f'[upgrade/version] FATAL: Specified version to upgrade to "v{target}" is at least one '
            f"minor release higher than the kubeadm minor release ({target.minor} > {kubeadm.minor}). "
            "Such an upgrade is not supported"
        )
    if target > kubeadm and not force:
        raise KubeadmError(
            f'[upgrade/version] FATAL: Specified version to upgrade to "v{target}" is higher than the '
            f'kubeadm version "v{kubeadm}". Upgrade kubeadm first using the tool you used to install '
            "kubeadm (can be skipped with --force)"
        )


def _preflight(api: http.Client, ignore: set[str]) -> None:
    reply = api.get("/api/v1/nodes")
    if reply.status != 200:
        raise KubeadmError(f"[preflight] FATAL: the API server is not reachable (HTTP {reply.status})")
    not_ready = [
        n["metadata"]["name"]
        for n in reply.json()["items"]
        if not any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in n.get("status", {}).get("conditions", [])
        )
    ]
    if not_ready and "all" not in ignore and "controlplanenodesready" not in ignore:
        raise KubeadmError(
            f"[preflight] Some fatal errors occurred:\n\t[ERROR ControlPlaneNodesReady]: there are "
            f"NotReady nodes in the cluster: {not_ready}\n[preflight] If you know what you are doing, "
            "you can make a check non-fatal with `--ignore-preflight-errors=...`"
        )


def _extra_args(config: dict[str, Any], component: str) -> dict[str, str]:
    key = {
        "kube-apiserver": "apiServer",
        "kube-controller-manager": "controllerManager",
        "kube-scheduler": "scheduler",
    }.get(component)
    section = (config.get(key) or {}) if key else ((config.get("etcd") or {}).get("local") or {})
    extra = section.get("extraArgs") or []
    if isinstance(extra, dict):  # v1beta3
        return {str(k): str(v) for k, v in extra.items()}
    return {str(e["name"]): str(e["value"]) for e in extra}  # v1beta4: a list of name/value


def _with_args(command: list[str], extra: dict[str, str], managed: set[str]) -> list[str]:
    """Drops the extraArgs kubeadm manages that are gone, then sets the ones given (in flag order)."""
    kept = [a for a in command[1:] if a.split("=", 1)[0].lstrip("-") not in (set(extra) | managed)]
    return [command[0], *sorted(kept + [f"--{k}={v}" for k, v in extra.items()])]


def _patches(directory: Path | None, component: str) -> list[tuple[str, Any]]:
    if directory is None:
        return []
    found = []
    for path in sorted(directory.iterdir()):
        stem = path.stem
        target, _, kind = stem.partition("+")
        if target.split(".")[0] != component:
            continue
        data = yaml.safe_load(path.read_text())
        found.append((kind or "strategic", data))
    return found


def _render(
    node: Node,
    component: str,
    *,
    version: Version,
    etcd: str | None,
    config: dict[str, Any],
    patches: Path | None,
) -> dict[str, Any] | None:
    path = node.manifests / f"{component}.yaml"
    if not path.is_file():
        return None
    manifest = manifests.read(path)
    container = manifest["spec"]["containers"][0]
    image = str(container["image"]).rsplit(":", 1)[0]
    if component == "etcd":
        if etcd is None:
            return manifest
        container["image"] = f"{image}:{etcd}"
    else:
        container["image"] = f"{image}:v{version}"
    annotations = manifest["metadata"].setdefault("annotations", {})
    managed = set(json.loads(annotations.get("upgrader.lab/extra-args", "[]")))
    extra = _extra_args(config, component)
    container["command"] = _with_args([str(c) for c in container["command"]], extra, managed)
    annotations["upgrader.lab/extra-args"] = json.dumps(sorted(extra))
    for kind, patch in _patches(patches, component):
        manifest = json_patch(manifest, patch) if kind == "json" else merge_patch(manifest, patch)
    return manifest


def _mirror_hash(node: Node, api: http.Client) -> str | None:
    """The static-pod hash on this node's kube-apiserver mirror pod (kubeadm's way to see a restart)."""
    try:
        reply = api.get(f"/api/v1/namespaces/kube-system/pods/kube-apiserver-{node.root.name}")
    except OSError:
        return None
    if reply.status != 200:
        return None
    pod = reply.json()
    if pod.get("status", {}).get("phase") != "Running":
        return None
    return str(pod["metadata"].get("annotations", {}).get("kubernetes.io/config.mirror", "")) or None


def _wait_for_apiserver(node: Node, api: http.Client, version: Version, timeout: float, old_hash: str | None) -> bool:
    """Waits for the static pod hash to change (the new manifest runs), then for /version and /readyz."""
    client = api.at(f"https://{node.advertise()}:6443", timeout=2.0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = _mirror_hash(node, api)
        if current is not None and current != old_hash:
            try:
                reply = client.get("/version")
                at_version = reply.status == 200 and reply.json().get("gitVersion") == f"v{version}"
                if at_version and client.get("/readyz").status == 200:
                    return True
            except OSError:
                pass
        time.sleep(0.3)
    return False


def etcd_tag(config: dict[str, Any], current: str, wanted: Version) -> str | None:
    """The etcd image tag kubeadm writes at this upgrade, or None to leave etcd.yaml as it is.

    As kubeadm's ``images.GetEtcdImageTag``: an ``etcd.local.imageTag`` in the ClusterConfiguration
    replaces the version kubeadm would pick, at every upgrade (kubernetes PR 89588); without one, the
    release's own etcd, never lower than the running one (staticpods.go: "Won't downgrade etcd")."""
    override = ((config.get("etcd") or {}).get("local") or {}).get("imageTag")
    if override:
        if str(override) != current:
            print(f"[upgrade/etcd] Using etcd image tag {override} from the ClusterConfiguration")
            return str(override)
        return None
    running = Version.parse(current.split("-", maxsplit=1)[0])
    if wanted > running:
        print(f"[upgrade/etcd] Upgrading etcd from {running} to {wanted}")
        return f"{wanted}-0"
    if wanted < running:
        print(f"[upgrade/etcd] Won't downgrade etcd, instead just continue ({running} > {wanted})")
    return None


def _upgrade_static_pods(
    node: Node, version: Version, config: dict[str, Any], *, etcd_upgrade: bool, patches: Path | None, timeout: float
) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d-%H-%M-%S")
    backup = node.kube / "tmp" / f"kubeadm-backup-manifests-{stamp}"
    backup.mkdir(parents=True, exist_ok=True)
    etcd_target = None
    etcd_path = node.manifests / "etcd.yaml"
    if etcd_upgrade and (config.get("etcd") or {}).get("external"):
        # performEtcdStaticPodUpgrade: "external etcd detected, won't try to change any etcd state"
        print("[upgrade/etcd] External etcd detected, won't try to change any etcd state")
    elif etcd_upgrade and etcd_path.is_file():
        current = manifests.image_version(manifests.read(etcd_path))
        etcd_target = etcd_tag(config, current, catalog_mod.load().entry(version.minor_version).kubeadm_etcd)
    written: list[str] = []
    api = node.client()
    old_hash = _mirror_hash(node, api)
    try:
        for component in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
            new = _render(node, component, version=version, etcd=etcd_target, config=config, patches=patches)
            path = node.manifests / f"{component}.yaml"
            if new is None or new == manifests.read(path):
                continue
            shutil.copy2(path, backup / path.name)
            manifests.write(path, new)
            written.append(component)
            print(
                f"[upgrade/staticpods] Moving new manifest to {path.relative_to(node.root)} and backing up old "
                f"manifest to {(backup / path.name).relative_to(node.root)}"
            )
        if "kube-apiserver" in written and not _wait_for_apiserver(node, api, version, timeout, old_hash):
            raise KubeadmError(
                f"[upgrade/apply] FATAL: couldn't upgrade control plane. kubeadm has tried to recover "
                f"everything into the earlier state. Errors faced: the kube-apiserver did not come up "
                f"at v{version} within {timeout:.0f}s"
            )
    except KubeadmError:
        for component in written:
            shutil.copy2(backup / f"{component}.yaml", node.manifests / f"{component}.yaml")
        print(f"[upgrade/rollback] Rolled back manifests: {', '.join(written)}", file=sys.stderr)
        raise
    shutil.rmtree(backup, ignore_errors=True)  # kubeadm keeps backups only when something failed


def cmd_version(kubeadm: Version, output: str | None) -> int:
    if output == "short":
        print(f"v{kubeadm}")
    else:
        info = {
            "major": str(kubeadm.major),
            "minor": str(kubeadm.minor),
            "gitVersion": f"v{kubeadm}",
            "platform": "linux/amd64",
        }
        print(
            json.dumps({"clientVersion": info})
            if output == "json"
            else f'kubeadm version: &version.Info{{Major:"{kubeadm.major}", Minor:"{kubeadm.minor}", '
            f'GitVersion:"v{kubeadm}", Platform:"linux/amd64"}}'
        )
    return 0


def cmd_plan(node: Node, kubeadm: Version) -> int:
    _, config = _cluster_configuration(node.client())
    current = _current_version(config)
    print('[upgrade/config] Reading configuration from the "kubeadm-config" ConfigMap in namespace "kube-system"')
    print(
        f"[upgrade] Running cluster health checks\n[upgrade] Fetching available versions to upgrade to\n"
        f"[upgrade/versions] Cluster version: v{current}\n[upgrade/versions] kubeadm version: v{kubeadm}"
    )
    try:
        _check_policy(current, kubeadm, kubeadm, force=False)
    except KubeadmError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    if kubeadm > current:
        print(
            f"\nYou can now apply the upgrade by executing the following command:\n\n"
            f"\tkubeadm upgrade apply v{kubeadm}\n"
        )
    else:
        print("\nAwesome, you're up-to-date! Enjoy!")
    return 0


def cmd_apply(node: Node, kubeadm: Version, args: argparse.Namespace) -> int:
    target = Version.parse(args.version, what="version")
    if not node.control_plane:
        raise KubeadmError("[upgrade/apply] FATAL: this is not a control-plane node (no kube-apiserver manifest)")
    if not args.yes:
        if not sys.stdin.isatty():
            raise KubeadmError("[upgrade/confirm] FATAL: won't proceed without --yes when stdin is not a terminal")
        answer = input("[upgrade/confirm] Are you sure you want to proceed? [y/N]: ")
        if answer.strip().lower() not in ("y", "yes"):
            raise KubeadmError(
                "[upgrade/confirm] FATAL: won't proceed; the user didn't answer (Y|y) in order to continue"
            )
    api = node.client()
    configmap, config = _cluster_configuration(api)
    current = _current_version(config)
    _check_policy(current, target, kubeadm, force=args.force)
    _preflight(api, {i.strip().lower() for i in (args.ignore_preflight_errors or "").split(",") if i.strip()})
    print(f'[upgrade/version] You have chosen to change the cluster version to "v{target}"')
    _upgrade_static_pods(
        node, target, config, etcd_upgrade=args.etcd_upgrade, patches=args.patches, timeout=args.timeout
    )
    config["kubernetesVersion"] = f"v{target}"
    configmap["data"]["ClusterConfiguration"] = yaml.safe_dump(config, sort_keys=False)
    reply = api.request("PUT", "/api/v1/namespaces/kube-system/configmaps/kubeadm-config", configmap)
    if reply.status >= 300:
        raise KubeadmError(
            f"[upgrade/apply] FATAL: could not update the kubeadm-config ConfigMap (HTTP {reply.status})"
        )
    print(f'[upgrade/successful] SUCCESS! Your cluster was upgraded to "v{target}". Enjoy!')
    return 0


def cmd_node(node: Node, kubeadm: Version, args: argparse.Namespace) -> int:
    _, config = _cluster_configuration(node.client())
    version = _current_version(config)
    if version > kubeadm:
        raise KubeadmError(
            f"[upgrade/node] FATAL: the cluster is at v{version}, newer than this kubeadm v{kubeadm}: "
            "upgrade kubeadm first"
        )
    if node.control_plane:
        print(f"[upgrade/node] Upgrading the control plane instance on this node to v{version}")
        _upgrade_static_pods(
            node, version, config, etcd_upgrade=args.etcd_upgrade, patches=args.patches, timeout=args.timeout
        )
    print("[upgrade/kubelet-config] The kubelet configuration for this node was successfully upgraded!")
    print("[upgrade] The configuration for this node was successfully upgraded!")
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kubeadm")
    parser.add_argument("--tool", default="kubeadm")
    parser.add_argument("--binary-version", required=True)
    parser.add_argument("--node-root", required=True)
    commands = parser.add_subparsers(dest="command", required=True)
    version = commands.add_parser("version")
    version.add_argument("-o", "--output")
    upgrade = commands.add_parser("upgrade").add_subparsers(dest="upgrade", required=True)
    upgrade.add_parser("plan")
    for name in ("apply", "node"):
        sub = upgrade.add_parser(name)
        if name == "apply":
            sub.add_argument("version")
            sub.add_argument("-y", "--yes", action="store_true")
            sub.add_argument("-f", "--force", action="store_true")
            sub.add_argument("--ignore-preflight-errors", default="")
        sub.add_argument("--etcd-upgrade", type=lambda v: v.lower() != "false", default=True)
        sub.add_argument("--patches", type=Path)
        sub.add_argument("--certificate-renewal", default="true")
        sub.add_argument("--config")
        sub.add_argument("--timeout", type=float, default=90.0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    node = Node(Path(args.node_root))
    try:
        kubeadm = Version.parse(args.binary_version)
        if args.command == "version":
            return cmd_version(kubeadm, args.output)
        if args.upgrade == "plan":
            return cmd_plan(node, kubeadm)
        if faults.Fault.KUBEADM_FAIL in faults.View(node.root.parent.parent / "run", node.root.name):
            # as when a preflight check or an image pull fails: nothing on the node has changed yet
            raise KubeadmError(f"[upgrade/{args.upgrade}] FATAL: lab fault kubeadm-fail on this node")
        if args.upgrade == "apply":
            return cmd_apply(node, kubeadm, args)
        return cmd_node(node, kubeadm, args)
    except (KubeadmError, errors.UpgraderError, OSError) as exc:
        print(str(exc), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
