"""What a snapshot's archive says about each control-plane node (its manifests) and about each etcd
member (name, peer and client URLs, data directory), each checked before it reaches a command line.

etcd runs either as kubeadm's static pod on the control planes (its ``etcd.yaml`` in the archive) or as
a service on its hosts, as Kubespray installs it (``HOST/etcd.env``, the host's ``/etc/etcd.env``)."""

from __future__ import annotations

import base64
import io
import re
import tarfile
from collections.abc import Mapping

import yaml

from upgrader import errors
from upgrader.snapshots.local import ETCD_ENV
from upgrader.support import units

_MEMBER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")


_URL = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+$")


_PATH = re.compile(r"^/[A-Za-z0-9._/-]+$")


def control_plane_hosts(archived: Mapping[str, bytes]) -> list[str]:
    return sorted({name.split("/", 1)[0] for name in archived if name.endswith("/manifests/kube-apiserver.yaml")})


def _flags(manifest: bytes) -> dict[str, str]:
    command = yaml.safe_load(manifest)["spec"]["containers"][0].get("command") or []
    return {str(a).split("=", 1)[0]: str(a).split("=", 1)[1] for a in command if "=" in str(a)}


def etcd_as_service(archived: Mapping[str, bytes]) -> bool:
    """Whether etcd ran as a service on its hosts (Kubespray's ``/etc/etcd.env``) when the snapshot was taken."""
    return any(name.endswith(f"/{ETCD_ENV}") for name in archived)


def etcd_members(archived: Mapping[str, bytes]) -> dict[str, dict[str, str]]:
    """Per etcd host: member name, peer URLs, data directory and client URLs, from its archived
    ``/etc/etcd.env`` (etcd as a service) or else each control plane's etcd manifest, each checked
    before it reaches a command line."""
    out: dict[str, dict[str, str]] = {}
    if etcd_as_service(archived):
        for name, text in sorted(archived.items()):
            if not name.endswith(f"/{ETCD_ENV}"):
                continue
            host = name.split("/", 1)[0]
            env = units.environment_file(text.decode("utf-8", errors="replace"))
            out[host] = _checked(
                host,
                "/etc/etcd.env",
                {
                    "member": env.get("ETCD_NAME", ""),
                    "peer_urls": env.get("ETCD_INITIAL_ADVERTISE_PEER_URLS", ""),
                    "data_dir": env.get("ETCD_DATA_DIR", ""),
                    "client_urls": env.get("ETCD_ADVERTISE_CLIENT_URLS", ""),
                },
            )
        return out
    for host in control_plane_hosts(archived):
        data = archived.get(f"{host}/manifests/etcd.yaml")
        if data is None:
            raise errors.Refused(
                f"the snapshot has neither an etcd manifest for {host} nor an etcd host's /etc/etcd.env: "
                "it does not say how etcd ran, so it cannot be restored"
            )
        flags = _flags(data)
        out[host] = _checked(
            host,
            "etcd manifest",
            {
                "member": flags.get("--name", ""),
                "peer_urls": flags.get("--initial-advertise-peer-urls", ""),
                "data_dir": flags.get("--data-dir", ""),
                "client_urls": flags.get("--advertise-client-urls", ""),
            },
        )
    return out


def _checked(host: str, source: str, member: dict[str, str]) -> dict[str, str]:
    urls = [u for key in ("peer_urls", "client_urls") for u in member[key].split(",")]
    if (
        not _MEMBER.match(member["member"])
        or not all(_URL.match(u) for u in urls)
        or not _PATH.match(member["data_dir"])
        or "/../" in member["data_dir"] + "/"
    ):
        raise errors.Refused(f"the snapshot's {source} for {host} has a name, URL or path upgrader refuses")
    return member


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
