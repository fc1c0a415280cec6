"""The lab's pkgs.k8s.io: a signed apt repository per minor, and a dpkg database in each node's root.

Laid out as pkgs.k8s.io is (``core:/stable:/v1.32/deb/``: a flat repository with ``Packages``,
``Release``, ``InRelease`` clear-signed and ``Release.key``, the armored public key), served by the
lab's mirror, holding ``kubeadm``, ``kubelet`` and ``kubectl`` packages of the lab's stand-ins built
with ``dpkg-deb`` (versions ``1.32.9-1.1``, as pkgs.k8s.io names them) for the latest release of each
minor and the lab's own. The key is the lab's, made with gpg at ``lab create``.

Each node of an apt lab has its own apt configuration and dpkg database below its root: apt reads
``APT_CONFIG`` (``etc/apt/apt.conf`` there, every ``Dir::`` below the root, dpkg called with
``--root``) and dpkg ``DPKG_ROOT``/``DPKG_ADMINDIR``, which the inventory gives each node as
``node_environment``: the real apt-get, dpkg and python-apt run the playbooks' apt path (repository
switch, key, unhold, pinned install, hold) exactly as on a node, against the node's own root.
"""

from __future__ import annotations

import datetime
import gzip
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from upgrader import errors
from upgrader.core.rules import catalog as catalog_mod
from upgrader.core.versions import Version
from upgrader.lab import mirror, processes, topology

TOOLS = mirror.TOOLS
REVISION = "1.1"  # pkgs.k8s.io's package revision: kubelet 1.32.9-1.1


def repo_dir(lab: topology.Lab, version: Version) -> Path:
    return lab.mirror_dir / "core:" / "stable:" / f"v{version.minor_version}" / "deb"


def gnupg_home(lab: topology.Lab) -> Path:
    return lab.dir / "gnupg"


def _gpg(lab: topology.Lab, *args: str) -> str:
    return processes.run(["gpg", "--batch", "--quiet", "--homedir", str(gnupg_home(lab)), *args])


def build(lab: topology.Lab) -> None:
    """The signing key, then one signed repository per minor with its releases' packages."""
    if shutil.which("dpkg-deb") is None or shutil.which("gpg") is None:
        raise errors.OperationFailed("an apt lab needs dpkg-deb and gpg (apt-get install dpkg gnupg)")
    home = gnupg_home(lab)
    home.mkdir(mode=0o700, exist_ok=True)
    try:
        _sign(lab)
    finally:  # gpg starts an agent for its home and leaves it running: stop it through its own socket
        stop_agent(home)


def stop_agent(home: Path) -> None:
    if shutil.which("gpgconf"):
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], capture_output=True, check=False)


def _sign(lab: topology.Lab) -> None:
    _gpg(
        lab,
        "--pinentry-mode",
        "loopback",
        "--passphrase",
        "",
        "--quick-gen-key",
        f"upgrader lab {lab.name} <lab@{lab.name}.invalid>",
        "ed25519",
        "sign",
        "never",
    )
    key = _gpg(lab, "--armor", "--export")
    catalog = catalog_mod.load()
    wanted = {e.latest for e in catalog.minors.values() if e.minor >= lab.version.minor_version} | {lab.version}
    by_minor: dict[str, list[Version]] = {}
    for version in sorted(wanted):
        by_minor.setdefault(str(version.minor_version), []).append(version)
    for versions in by_minor.values():
        directory = repo_dir(lab, versions[0])
        directory.mkdir(parents=True, exist_ok=True)
        for version in versions:
            for tool in TOOLS:
                _deb(directory, tool, version, mirror.path(lab.mirror_dir, version, tool))
        _index(directory)
        _gpg(lab, "--yes", "--clearsign", "-o", str(directory / "InRelease"), str(directory / "Release"))
        (directory / "Release.key").write_text(key)


def deb_name(tool: str, version: Version) -> str:
    return f"{tool}_{version}-{REVISION}_amd64.deb"


def _deb(directory: Path, tool: str, version: Version, binary: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="upgrader-lab-deb-") as tmp:
        root = Path(tmp)
        (root / "DEBIAN").mkdir()
        (root / "usr" / "bin").mkdir(parents=True)
        shutil.copyfile(binary, root / "usr" / "bin" / tool)
        os.chmod(root / "usr" / "bin" / tool, 0o755)  # noqa: S103 - an executable, as in the real package
        (root / "DEBIAN" / "control").write_text(
            f"Package: {tool}\nVersion: {version}-{REVISION}\nArchitecture: amd64\n"
            "Maintainer: upgrader lab <lab@upgrader.invalid>\n"
            f"Description: the upgrader lab's stand-in for {tool} v{version}\n"
        )
        processes.run(
            ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(directory / deb_name(tool, version))]
        )


def _index(directory: Path) -> None:
    """``Packages`` (and ``.gz``) and an unsigned ``Release`` listing their sha256, as a flat repository has."""
    entries = []
    for deb in sorted(directory.glob("*.deb")):
        data = deb.read_bytes()
        control = processes.run(["dpkg-deb", "-f", str(deb)]).strip()
        entries.append(
            f"{control}\nFilename: ./{deb.name}\nSize: {len(data)}\nSHA256: {hashlib.sha256(data).hexdigest()}\n"
        )
    packages = "\n".join(entries).encode()
    (directory / "Packages").write_bytes(packages)
    (directory / "Packages.gz").write_bytes(gzip.compress(packages, mtime=0))
    lines = [
        f"Date: {datetime.datetime.now(datetime.UTC):%a, %d %b %Y %H:%M:%S UTC}",
        "Architectures: amd64",
        "SHA256:",
    ]
    for name in ("Packages", "Packages.gz"):
        data = (directory / name).read_bytes()
        lines.append(f" {hashlib.sha256(data).hexdigest()} {len(data)} {name}")
    (directory / "Release").write_text("\n".join(lines) + "\n")


_APT_DIRS = (
    "etc/apt/sources.list.d",
    "etc/apt/keyrings",
    "etc/apt/apt.conf.d",
    "etc/apt/preferences.d",
    "etc/apt/trusted.gpg.d",
    "var/lib/dpkg/info",
    "var/lib/dpkg/updates",
    "var/lib/apt/lists/partial",
    "var/cache/apt/archives/partial",
    "var/log/apt",
)


def apt_config(root: Path) -> Path:
    return root / "etc" / "apt" / "apt.conf"


def environment(root: Path) -> dict[str, str]:
    """What a node's tasks need in their environment for apt and dpkg to work on its root."""
    return {
        "APT_CONFIG": str(apt_config(root)),
        "DPKG_ROOT": str(root),
        "DPKG_ADMINDIR": str(root / "var" / "lib" / "dpkg"),
    }


def prepare_node(lab: topology.Lab, root: Path) -> None:
    """The node's apt and dpkg below its root, with the lab's release installed and held, as a node
    installed from pkgs.k8s.io by the install docs is."""
    for sub in _APT_DIRS:
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "var" / "lib" / "dpkg" / "status").touch()
    (root / "etc" / "apt" / "sources.list").touch()
    r = str(root)
    apt_config(root).write_text(
        "\n".join(
            [
                f'Dir::State "{r}/var/lib/apt";',
                f'Dir::State::status "{r}/var/lib/dpkg/status";',
                f'Dir::Cache "{r}/var/cache/apt";',
                f'Dir::Etc "{r}/etc/apt";',
                f'Dir::Log "{r}/var/log/apt";',
                f'Dir::Etc::SourceList "{r}/etc/apt/sources.list";',
                f'Dir::Etc::SourceParts "{r}/etc/apt/sources.list.d";',
                f'Dir::Etc::Parts "{r}/etc/apt/apt.conf.d";',
                f'Dir::Etc::Preferences "{r}/etc/apt/preferences";',
                f'Dir::Etc::PreferencesParts "{r}/etc/apt/preferences.d";',
                f'Dir::Etc::Trusted "{r}/etc/apt/trusted.gpg";',
                f'Dir::Etc::TrustedParts "{r}/etc/apt/trusted.gpg.d";',
                f'DPkg::Options {{ "--root={r}"; "--admindir={r}/var/lib/dpkg"; "--force-script-chrootless"; '
                f'"--log={r}/var/log/dpkg.log"; }};',
                'APT::Sandbox::User "root";',  # the lab's files are under a private directory
                "",
            ]
        )
    )
    repo = repo_dir(lab, lab.version)
    env = {**os.environ, **environment(root)}
    processes.run(
        ["dpkg", "--force-script-chrootless", "-i", *(str(repo / deb_name(t, lab.version)) for t in TOOLS)],
        env=env,
    )
    processes.run(["dpkg", "--set-selections"], env=env, stdin="".join(f"{t} hold\n" for t in TOOLS))
