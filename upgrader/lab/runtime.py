"""The lab's container runtime: turns a static pod manifest into a process on the node.

A container sees its hostPath volumes at their mount paths and, with hostNetwork, 127.0.0.1 as its
node. Here every node shares one filesystem and one loopback interface, so the runtime maps instead:
a path under a mount path goes to the node root plus the hostPath, and 127.0.0.1 or localhost to the
node's own address. The image picks the program: etcd images run a real etcd binary, of the tag's
version where the lab has one (``etcd_binary``); kube-apiserver images run upgrader's stand-in at the
image's release; the controller manager and scheduler have no process in the lab and count as running
when their manifest is valid.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from upgrader import errors
from upgrader.core.versions import Version
from upgrader.lab import topology

_IMAGE = re.compile(r"^(?:[^/]+/)*(?P<name>[a-z0-9-]+):(?P<tag>[A-Za-z0-9._-]+)$")
VIRTUAL = ("kube-controller-manager", "kube-scheduler")


class ManifestError(ValueError):
    """A manifest the runtime cannot run (the kubelet reports the pod as failing)."""


@dataclass(frozen=True)
class Container:
    component: str
    image: str
    tag: str
    argv: tuple[str, ...]  # empty for virtual components
    digest: str  # what changes when the manifest changes

    @property
    def virtual(self) -> bool:
        return not self.argv


def _mounts(spec: dict[str, Any], container: dict[str, Any], root: Path) -> list[tuple[str, Path]]:
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    out: list[tuple[str, Path]] = []
    for mount in container.get("volumeMounts") or []:
        volume = volumes.get(mount["name"], {})
        host = (volume.get("hostPath") or {}).get("path")
        if host:
            out.append((str(mount["mountPath"]).rstrip("/"), root / str(host).lstrip("/")))
    return sorted(out, key=lambda m: len(m[0]), reverse=True)  # longest mount path wins


def _translate(arg: str, mounts: list[tuple[str, Path]], ip: str) -> str:
    arg = arg.replace("127.0.0.1", ip).replace("//localhost:", f"//{ip}:")
    if "=" in arg:
        flag, value = arg.split("=", 1)
        return f"{flag}={','.join(_translate_value(v, mounts) for v in value.split(','))}"
    return _translate_value(arg, mounts)


def _translate_value(value: str, mounts: list[tuple[str, Path]]) -> str:
    for mount_path, host in mounts:
        if value == mount_path or value.startswith(mount_path + "/"):
            return str(host) + value[len(mount_path) :]
    return value


def etcd_binary(lab: topology.Lab, tag: str) -> str:
    """The etcd binary for an image tag ("3.5.24-0", "v3.5.1"): the lab's binary of that version; else its
    newest binary older than the tag, within the tag's minor first; else its oldest binary. A member
    reports the version of the binary it runs, never the tag's (``docs/lab.md``)."""
    binaries = {Version.parse(v): path for v, path in lab.etcd_binaries.items()}
    if not binaries:
        return lab.etcd_binary
    wanted = _tag_version(tag)
    if wanted is None:
        return binaries[min(binaries)]
    older = [v for v in binaries if v <= wanted]
    same_minor = [v for v in older if v.minor_version == wanted.minor_version]
    pick = max(same_minor or older) if older else min(binaries)
    return binaries[pick]


def _tag_version(tag: str) -> Version | None:
    try:
        return Version.parse(tag.lstrip("v").split("-")[0])
    except errors.InputError:
        return None


def container(manifest: dict[str, Any], *, node: topology.LabNode, root: Path, lab: topology.Lab) -> Container:
    try:
        spec = manifest["spec"]
        first = spec["containers"][0]
        image = str(first["image"])
        command = [str(c) for c in first.get("command") or []] + [str(a) for a in first.get("args") or []]
    except (KeyError, IndexError, TypeError) as exc:
        raise ManifestError(f"not a static pod manifest: missing {exc}") from exc
    match = _IMAGE.match(image)
    if not match or not command:
        raise ManifestError(f"cannot run image {image!r}")
    name, tag = match.group("name"), match.group("tag")
    digest = hashlib.sha256(repr((image, command, spec.get("volumes"))).encode()).hexdigest()[:16]
    if name in VIRTUAL:
        return Container(name, image, tag, (), digest)
    mounts = _mounts(spec, first, root)
    args = [_translate(a, mounts, node.ip) for a in command[1:]]
    if name == "etcd":
        argv = (etcd_binary(lab, tag), *args)
    elif name == "kube-apiserver":
        argv = (lab.python, "-m", "upgrader.lab.apiserver", f"--binary-version={tag.lstrip('v')}", *args)
    else:
        raise ManifestError(f"the lab cannot run image {image!r}")
    return Container(name, image, tag, argv, digest)
