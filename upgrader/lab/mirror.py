"""The lab's binary mirror: kubeadm, kubelet and kubectl stand-ins for every release in the catalog.

Laid out like dl.k8s.io (``v1.30.6/bin/linux/amd64/kubeadm``) and served over HTTP by the supervisor,
so a playbook installs a version in the lab exactly as it does on a real cluster with the binary
package method: download from the mirror into /usr/bin. Each stand-in is a small script that runs
upgrader's own implementation with its release baked in.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shlex
import tarfile
from collections.abc import Mapping
from pathlib import Path

from upgrader import errors
from upgrader.core.rules import catalog as catalog_mod
from upgrader.core.versions import Version

ARCH_PATH = ("bin", "linux", "amd64")
TOOLS = ("kubeadm", "kubelet", "kubectl")
_MARKER = re.compile(r"^# upgrader-lab-stand-in: (\S+) v(\d+\.\d+\.\d+)$", re.MULTILINE)


# What each tool prints to the version questions upgrade tooling asks, answered by the shell: a real
# (compiled) binary answers them in milliseconds, and a Python start-up per node would make the lab's
# Ansible runs slower than a real cluster's for no reason of the product's.
_VERSION_ANSWERS = {
    "kubeadm": ('"$1" = version -a "$2" = -o -a "$3" = short', "v{v}"),
    "kubelet": ('"$1" = --version -o "$1" = version', "Kubernetes v{v}"),
    "kubectl": ('"$1" = version -a "$#" -eq 1 -o "$1" = version -a "$2" = --client', "Client Version: v{v}"),
}


def script(tool: str, version: Version, python: str) -> str:
    module = {"kubeadm": "upgrader.lab.kubeadm", "kubelet": "upgrader.lab.binaries", "kubectl": "upgrader.lab.binaries"}
    test, answer = _VERSION_ANSWERS[tool]
    # Installed as ROOT/BIN_DIR/TOOL (/usr/bin, /usr/local/bin, ...), a stand-in finds its node's root
    # where the real binary would find /: the nearest directory above it holding the lab's node marker.
    return (
        "#!/bin/sh\n"
        f"# upgrader-lab-stand-in: {tool} v{version}\n"
        f"if [ {test} ]; then echo {shlex.quote(answer.format(v=version))}; exit 0; fi\n"
        + FIND_ROOT
        + f"exec {shlex.quote(python)} -m {module[tool]} --tool {tool} --binary-version {version} "
        '--node-root "$root" "$@"\n'
    )


NODE_MARKER = ".upgrader-lab-node"  # in every node's root
FIND_ROOT = (  # parameter expansion only: no process for what a real binary gets for free
    'root=${0%/*}; case $root in /*) ;; *) root=$(cd "$root" && pwd) ;; esac\n'
    f'while [ -n "$root" ] && [ ! -e "$root/{NODE_MARKER}" ]; do root=${{root%/*}}; done\n'
    '[ -n "$root" ] || root=/\n'
)


def path(mirror: Path, version: Version, tool: str) -> Path:
    return mirror.joinpath(f"v{version}", *ARCH_PATH, tool)


def build(mirror: Path, python: str, extra: tuple[Version, ...] = ()) -> int:
    """Writes the stand-ins for every known release (and ``extra``), each with its ``TOOL.sha256`` as
    dl.k8s.io publishes it (the hex digest alone), and each minor's marker ``stable-X.Y.txt`` naming its
    newest release; returns how many releases."""
    catalog = catalog_mod.load()
    releases = {p for entry in catalog.minors.values() for p in entry.patches} | set(extra)
    for version in releases:
        for tool in TOOLS:
            target = path(mirror, version, tool)
            target.parent.mkdir(parents=True, exist_ok=True)
            content = script(tool, version, python).encode()
            target.write_bytes(content)
            target.chmod(0o755)
            target.with_name(f"{tool}.sha256").write_text(hashlib.sha256(content).hexdigest() + "\n")
    newest: dict[str, Version] = {}
    for version in releases:
        key = str(version.minor_version)
        newest[key] = max(newest.get(key, version), version)
    for minor, version in newest.items():  # dl.k8s.io's release markers, which kubeadm upgrade plan reads
        (mirror / f"stable-{minor}.txt").write_text(f"v{version}\n")
    return len(releases)


ETCD_RELEASES = "etcd"  # below the mirror: the etcd releases, laid out like etcd's GitHub releases


def publish_etcd(mirror: Path, binaries: Mapping[str, str]) -> int:
    """Each of the lab's real etcd binaries (version -> path) as etcd publishes a release, below
    ``mirror/etcd``: ``vX.Y.Z/etcd-vX.Y.Z-linux-amd64.tar.gz`` holding ``etcd-vX.Y.Z-linux-amd64/etcd``,
    and ``vX.Y.Z/SHA256SUMS`` naming its digest, for an etcd step on external etcd hosts to fetch and
    check as from GitHub. gzip at its fastest level: the lab's tarballs only cross the loopback."""
    for version, binary in binaries.items():
        name = f"etcd-v{version}-linux-amd64"
        directory = mirror / ETCD_RELEASES / f"v{version}"
        directory.mkdir(parents=True, exist_ok=True)
        tarball = directory / f"{name}.tar.gz"
        with (
            gzip.GzipFile(tarball, "wb", compresslevel=1, mtime=0) as packed,
            tarfile.open(fileobj=packed, mode="w") as archive,
        ):
            info = archive.gettarinfo(binary, arcname=f"{name}/etcd")
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            with open(binary, "rb") as content:
                archive.addfile(info, content)
        digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
        (directory / "SHA256SUMS").write_text(f"{digest}  {name}.tar.gz\n")
    return len(binaries)


def install_systemctl(root: Path, python: str) -> None:
    """The node's ``systemctl`` (``restart kubelet``), beside the other tools a playbook calls."""
    bin_dir = root / "usr" / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    target = bin_dir / "systemctl"
    target.write_text(
        "#!/bin/sh\n"
        "# upgrader-lab-stand-in: systemctl\n"
        + FIND_ROOT
        + _SYSTEMCTL_IN_SHELL
        + f'exec {shlex.quote(python)} -m upgrader.lab.systemctl --node-root "$root" "$@"\n'
    )
    os.chmod(target, 0o755)  # noqa: S103 - an executable


# ``daemon-reload`` and ``cat`` answered by the shell, as ``upgrader.lab.systemctl`` would (same search
# order, systemd.unit(5)): a compiled systemctl answers in milliseconds, and a Python start-up per node
# would make the node-facts playbook slower in the lab than on a real cluster for no reason of the product's.
_UNIT_DIRS = (
    "etc/systemd/system run/systemd/system usr/local/lib/systemd/system usr/lib/systemd/system lib/systemd/system"
)
_SYSTEMCTL_IN_SHELL = (
    '[ "$1" = daemon-reload ] && [ $# -eq 1 ] && exit 0\n'
    'if [ "$1" = cat ] && [ $# -eq 2 ]; then\n'
    '  u="${2%.service}.service"; main=""\n'
    f"  for d in {_UNIT_DIRS}; do\n"
    '    if [ -z "$main" ] && [ -f "$root/$d/$u" ]; then main="$d/$u"; fi\n'
    "  done\n"
    '  [ -n "$main" ] || { echo "No files found for $u." >&2; exit 1; }\n'
    '  echo "# /$main"; cat "$root/$main"\n'
    # drop-ins by name (the glob sorts), each from the first directory that has it; no process but cat
    '  names=" "\n'
    f"  for d in {_UNIT_DIRS}; do\n"
    '    for f in "$root/$d/$u.d/"*.conf; do [ -f "$f" ] && names="$names${f##*/} "; done\n'
    "  done\n"
    "  for name in $(printf '%s\\n' $names | LC_ALL=C sort -u); do\n"
    f"    for d in {_UNIT_DIRS}; do\n"
    '      if [ -f "$root/$d/$u.d/$name" ]; then echo; echo "# /$d/$u.d/$name"; cat "$root/$d/$u.d/$name"; break; fi\n'
    "    done\n"
    "  done\n"
    "  exit 0\n"
    "fi\n"
)


def install(
    mirror: Path, version: Version, root: Path, tools: tuple[str, ...] = TOOLS, *, bin_dir: str = "/usr/bin"
) -> None:
    """Installs a release's stand-ins into a node's ``bin_dir`` (what a playbook does on a real node)."""
    (root / NODE_MARKER).touch()
    bin_dir_path = root / bin_dir.lstrip("/")
    bin_dir_path.mkdir(parents=True, exist_ok=True)
    for tool in tools:
        source = path(mirror, version, tool)
        if not source.is_file():
            raise errors.InputError(f"the lab mirror has no {tool} v{version}")
        tmp = bin_dir_path / f".{tool}.tmp"
        tmp.write_bytes(source.read_bytes())
        os.chmod(tmp, 0o755)  # noqa: S103 - an executable, as the real binary is
        tmp.replace(bin_dir_path / tool)


def installed_version(binary: Path) -> Version | None:
    """The release of an installed stand-in, read from its marker line (no process started)."""
    try:
        match = _MARKER.search(binary.read_text(errors="replace")[:400])
    except OSError:
        return None
    return Version.parse(match.group(2)) if match else None
