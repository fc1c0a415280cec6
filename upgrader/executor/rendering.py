"""Everything upgrader renders for Ansible: the variables of each playbook run, and the package
repository lines. One Jinja2 environment, ``StrictUndefined`` (a missing value is an error, never an
empty string), fed only validated values: ``Version`` objects, checked node names, and the config's
settings. The result goes to Ansible as ``!unsafe`` extra variables (``executor.runner``), so nothing
rendered here is templated again.
"""

from __future__ import annotations

from typing import Any

import jinja2

from upgrader import errors
from upgrader.core import config
from upgrader.core.versions import Version
from upgrader.support import names

PKGS_K8S_IO = "https://pkgs.k8s.io"
DL_K8S_IO = "https://dl.k8s.io/release"  # the official release binaries: vX.Y.Z/bin/linux/ARCH/NAME(.sha256)
ETCD_RELEASES = "https://github.com/etcd-io/etcd/releases/download"  # vX.Y.Z/etcd-vX.Y.Z-linux-ARCH.tar.gz, SHA256SUMS
_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)  # noqa: S701 - not HTML
_APT_URL = _ENV.from_string("{{ base }}/core:/stable:/v{{ minor }}/deb/")
_APT_KEY = _ENV.from_string("{{ base }}/core:/stable:/v{{ minor }}/deb/Release.key")
_DNF_URL = _ENV.from_string("{{ base }}/core:/stable:/v{{ minor }}/rpm/")


def package_vars(packages: config.PackageSettings, version: Version) -> dict[str, Any]:
    """The variables ``tasks/packages.yml`` reads to install ``version`` by the configured method."""
    minor = str(version.minor_version)
    default = DL_K8S_IO if packages.method is config.PackageMethod.BINARY else PKGS_K8S_IO
    base = (packages.mirror or default).rstrip("/")
    out: dict[str, Any] = {"package_method": packages.method.value, "version": str(version), "minor": minor}
    if packages.method is config.PackageMethod.BINARY:
        out["mirror"] = base
    elif packages.method is config.PackageMethod.APT:
        # the line itself is written by the playbook: its key path is below the node's root
        out["apt_repository_url"] = _APT_URL.render(base=base, minor=minor)
        out["apt_key_url"] = _APT_KEY.render(base=base, minor=minor)
    else:
        out["dnf_repository_url"] = _DNF_URL.render(base=base, minor=minor)
    return out


_ANSIBLE_PATTERNS = frozenset({"all", "ungrouped", "localhost"})  # valid node names Ansible reads as patterns


def node_limit(*nodes: str) -> tuple[str, ...]:
    """An Ansible ``--limit`` of node names, each checked (a name is never a pattern)."""
    for node in nodes:
        if node in _ANSIBLE_PATTERNS:
            raise errors.InputError(f"node name {node!r} means something else to Ansible; rename the host")
    return tuple(names.node_name(n) for n in nodes)
