"""The lab reached over real SSH: an OpenSSH server per node on the node's own loopback address, a
non-root lab user that becomes root with sudo, host-key checking on against a known_hosts the lab writes.

``lab create --ssh`` makes the keys (the client's, one host key per node) and each node's
``sshd_config``; ``prepare_host`` makes the lab users once per machine (it needs root, as adding any
user does): ``upgrader-lab``, which may run anything as root through sudo without a password (a
sudoers drop-in, as cloud images set it up for their default user), and ``upgrader-lab-nosudo``, which
may not. The supervisor starts the servers with the lab and stops them by pid. Only inventory
variables differ from the lab's local mode: ``ansible_connection=ssh``, ``ansible_user``, the key and
the known_hosts file.

sshd reads a user's authorized keys as that user, so the lab's public key goes to a directory the lab
user can read (``/run/upgrader-lab/LAB``), never into the lab directory, which is private.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from upgrader import errors
from upgrader.lab import processes, topology

USER = "upgrader-lab"
NOSUDO_USER = "upgrader-lab-nosudo"
PORT = topology.SSH_PORT
SUDOERS = Path("/etc/sudoers.d/upgrader-lab")
KEYS_BASE = Path("/run/upgrader-lab")


def sshd_binary() -> str:
    for candidate in ("/usr/sbin/sshd", shutil.which("sshd")):
        if candidate and Path(candidate).is_file():
            return candidate
    raise errors.OperationFailed("no sshd: the lab's SSH mode needs OpenSSH's server (apt-get install openssh-server)")


def prepare_host() -> None:
    """The lab users and the sudoers drop-in, made once on this machine; needs root."""
    if os.geteuid() != 0:
        raise errors.Refused("the lab's SSH mode adds its users and a sudoers drop-in: run it as root")
    if shutil.which("sudo") is None:
        raise errors.OperationFailed("no sudo: the lab's SSH mode needs it (apt-get install sudo)")
    sshd_binary()
    for user in (USER, NOSUDO_USER):
        try:
            pwd.getpwnam(user)
        except KeyError:
            processes.run(["useradd", "--system", "--create-home", "--shell", "/bin/sh", user])
        processes.run(["usermod", "-p", "*", user])  # no password login, but not locked (sshd refuses locked accounts)
    if not SUDOERS.is_file():
        tmp = SUDOERS.with_name(".upgrader-lab.tmp")
        tmp.write_text(
            f"# the upgrader lab's login user: root through sudo, as a cloud image's default user\n"
            f"{USER} ALL=(ALL) NOPASSWD: ALL\n"
        )
        tmp.chmod(0o440)
        processes.run(["visudo", "-c", "-f", str(tmp)])
        tmp.replace(SUDOERS)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory


def ssh_dir(lab: topology.Lab) -> Path:
    return lab.dir / "ssh"


def client_key(lab: topology.Lab) -> Path:
    return ssh_dir(lab) / "id_ed25519"


def known_hosts(lab: topology.Lab) -> Path:
    return ssh_dir(lab) / "known_hosts"


def keys_dir(lab: topology.Lab) -> Path:
    return KEYS_BASE / lab.block


def create(lab: topology.Lab) -> None:
    """The client key, each node's host key and sshd_config, and the known_hosts file."""
    directory = ssh_dir(lab)
    (directory / "hosts").mkdir(parents=True, mode=0o700, exist_ok=True)
    processes.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"upgrader-lab@{lab.name}", "-f", str(client_key(lab))]
    )
    lines = []
    for node in lab.nodes:
        key = directory / "hosts" / node.name
        processes.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", node.name, "-f", str(key)])
        public = key.with_suffix(".pub").read_text().split()
        lines.append(f"{node.ip} {public[0]} {public[1]}")
        (directory / "hosts" / f"{node.name}.sshd_config").write_text(_sshd_config(lab, node, key))
    known_hosts(lab).write_text("\n".join(lines) + "\n")


def _sshd_config(lab: topology.Lab, node: topology.LabNode, host_key: Path) -> str:
    return "\n".join(
        [
            f"# the upgrader lab's sshd for {node.name}",
            f"ListenAddress {node.ip}:{PORT}",
            f"HostKey {host_key}",
            f"PidFile {lab.run_dir / f'sshd-{node.name}.pid'}",
            f"AuthorizedKeysFile {keys_dir(lab)}/authorized_keys",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            "PermitRootLogin no",
            "UsePAM no",
            f"AllowUsers {USER} {NOSUDO_USER}",
            "StrictModes no",  # the lab's files live under a test's temporary directory
            "LogLevel ERROR",
            "",
        ]
    )


def publish_keys(lab: topology.Lab) -> None:
    """The lab's public key where sshd reads it as the lab user (world-readable: it is public)."""
    directory = keys_dir(lab)
    directory.mkdir(parents=True, mode=0o755, exist_ok=True)
    os.chmod(KEYS_BASE, 0o755)  # noqa: S103 - sshd reads it as the lab user; it holds only public keys
    os.chmod(directory, 0o755)  # noqa: S103 - the same
    target = directory / "authorized_keys"
    target.write_text(client_key(lab).with_suffix(".pub").read_text())
    os.chmod(target, 0o644)


def withdraw_keys(lab: topology.Lab) -> None:
    shutil.rmtree(keys_dir(lab), ignore_errors=True)


def start(lab: topology.Lab, node: topology.LabNode, log: Path) -> subprocess.Popen[bytes]:
    config = ssh_dir(lab) / "hosts" / f"{node.name}.sshd_config"
    return subprocess.Popen(
        [sshd_binary(), "-D", "-f", str(config), "-E", str(log)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields and int(fields[1]) == pid:
            child = int(stat.parent.name)
            found += [child, *_children(child)]
    return found


def stop(server: subprocess.Popen[bytes]) -> None:
    """Stops a node's sshd and the session processes it forked (a listener's SIGTERM leaves those)."""
    sessions = _children(server.pid)
    processes.stop_popen(server)
    for pid in sessions:
        process = processes.ProcessId.of(pid)
        if process is not None:
            process.stop(timeout=5.0)


def inventory_vars(lab: topology.Lab, user: str = USER) -> list[str]:
    return [
        "ansible_connection=ssh",
        f"ansible_user={user}",
        f"ansible_port={PORT}",
        f"ansible_ssh_private_key_file={client_key(lab)}",
        f"ansible_ssh_common_args='-o UserKnownHostsFile={known_hosts(lab)} -o IdentitiesOnly=yes'",
        "ansible_python_interpreter=/usr/bin/python3",  # any Python the node has (python-apt for apt labs)
    ]
