"""What a snapshot's archive says about each control-plane node: its manifests, and the etcd member
it ran (name, peer and client URLs, data directory), each checked before it reaches a command line."""

from __future__ import annotations

import base64
import io
import re
import tarfile
from collections.abc import Mapping

import yaml

from upgrader import errors

_MEMBER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")


_URL = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+$")


_PATH = re.compile(r"^/[A-Za-z0-9._/-]+$")


def control_plane_hosts(archived: Mapping[str, bytes]) -> list[str]:
    return sorted({name.split("/", 1)[0] for name in archived if name.endswith("/manifests/kube-apiserver.yaml")})


def _flags(manifest: bytes) -> dict[str, str]:
    command = yaml.safe_load(manifest)["spec"]["containers"][0].get("command") or []
    return {str(a).split("=", 1)[0]: str(a).split("=", 1)[1] for a in command if "=" in str(a)}


def etcd_members(archived: Mapping[str, bytes]) -> dict[str, dict[str, str]]:
    """Per control-plane host, from its archived etcd manifest: member name, peer URLs, data directory and
    client URLs, each checked before it reaches a command line."""
    out: dict[str, dict[str, str]] = {}
    for host in control_plane_hosts(archived):
        data = archived.get(f"{host}/manifests/etcd.yaml")
        if data is None:
            raise errors.Refused(f"the snapshot has no etcd manifest for {host}: a local etcd is needed to restore")
        flags = _flags(data)
        member = {
            "member": flags.get("--name", ""),
            "peer_urls": flags.get("--initial-advertise-peer-urls", ""),
            "data_dir": flags.get("--data-dir", ""),
            "client_urls": flags.get("--advertise-client-urls", ""),
        }
        urls = [u for key in ("peer_urls", "client_urls") for u in member[key].split(",")]
        if (
            not _MEMBER.match(member["member"])
            or not all(_URL.match(u) for u in urls)
            or not _PATH.match(member["data_dir"])
            or "/../" in member["data_dir"] + "/"
        ):
            raise errors.Refused(f"the snapshot's etcd manifest for {host} has a name, URL or path upgrader refuses")
        out[host] = member
    return out


def manifest_tar(archived: Mapping[str, bytes], host: str, names: tuple[str, ...] | None) -> str:
    """A host's archived manifests (all, or ``names`` only) as base64 of a gzipped tar of plain names."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in sorted(archived.items()):
            prefix = f"{host}/manifests/"
            file = name.removeprefix(prefix)
            if not name.startswith(prefix) or (names is not None and file.removesuffix(".yaml") not in names):
                continue
            info = tarfile.TarInfo(file)
            info.size, info.mode, info.mtime = len(data), 0o600, 0
            tar.addfile(info, io.BytesIO(data))
    return base64.b64encode(buffer.getvalue()).decode()


def apiserver_endpoint(manifest: bytes) -> tuple[str, int]:
    flags = _flags(manifest)
    return flags.get("--advertise-address", "127.0.0.1"), int(flags.get("--secure-port", "6443"))


def etcd_minor(manifest: bytes) -> str:
    image = str(yaml.safe_load(manifest)["spec"]["containers"][0]["image"])
    return ".".join(image.rsplit(":", 1)[-1].split(".")[:2])
