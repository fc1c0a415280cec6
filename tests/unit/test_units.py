"""Which binary a kubelet unit runs, as systemd reads it (systemd.service(5): an empty ExecStart=
resets the list, drop-ins apply after the unit file)."""

from __future__ import annotations

from pathlib import Path

from upgrader.support import units

# The kubernetes deb package's unit and kubeadm's drop-in, as `systemctl cat kubelet` shows them.
KUBEADM = """# /usr/lib/systemd/system/kubelet.service
[Service]
ExecStart=/usr/bin/kubelet
Restart=always

# /usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf
[Service]
Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf"
ExecStart=
ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS \\
  $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
"""

# Kubespray's kubelet.service.j2 with bin_dir=/usr/local/bin.
KUBESPRAY = """# /etc/systemd/system/kubelet.service
[Service]
EnvironmentFile=-/etc/kubernetes/kubelet.env
ExecStart=/usr/local/bin/kubelet \\
    $KUBE_LOGTOSTDERR $KUBE_LOG_LEVEL $KUBELET_API_SERVER
Restart=always
"""


def test_kubeadms_drop_in_resets_and_sets_the_command() -> None:
    assert units.exec_start(KUBEADM) == "/usr/bin/kubelet"


def test_kubespray_runs_the_kubelet_from_its_bin_dir() -> None:
    assert units.exec_start(KUBESPRAY) == "/usr/local/bin/kubelet"


def test_a_later_drop_in_wins_and_prefixes_are_not_part_of_the_path() -> None:
    local = "[Service]\nExecStart=\nExecStart=-/opt/bin/kubelet\n"
    text = KUBEADM + "\n# /etc/systemd/system/kubelet.service.d/20-local.conf\n" + local
    assert units.exec_start(text) == "/opt/bin/kubelet"


def test_the_first_line_of_a_continued_command_names_its_binary() -> None:
    """Node facts send only the last ExecStart= line: Kubespray's ends with a backslash."""
    assert units.exec_start("ExecStart=/usr/local/bin/kubelet \\") == "/usr/local/bin/kubelet"


def test_no_unit_or_a_reset_without_a_command_says_none() -> None:
    assert units.exec_start("") is None
    assert units.exec_start("[Service]\nExecStart=/usr/bin/kubelet\nExecStart=\n") is None


def test_the_labs_systemctl_cat_answers_in_shell_what_its_python_answers(tmp_path: Path) -> None:
    """The lab's systemctl answers `cat` in the shell (a Python start-up per node would slow node facts);
    both must follow systemd's order: the unit from the first directory, then the drop-ins by name."""
    import subprocess

    from upgrader.lab import create, mirror, systemctl, topology

    for layout in topology.Layout:
        root = tmp_path / layout.value
        root.mkdir()
        (root / mirror.NODE_MARKER).touch()
        mirror.install_systemctl(root, "/no/python/needed")
        create.write_kubelet_unit(root, layout)
        local = root / "etc" / "systemd" / "system" / "kubelet.service.d"
        local.mkdir(parents=True, exist_ok=True)
        (local / "20-local.conf").write_text("[Service]\nExecStart=\nExecStart=/opt/bin/kubelet\n")
        shell = subprocess.run(
            [str(root / "usr" / "bin" / "systemctl"), "cat", "kubelet"], capture_output=True, text=True
        )
        assert shell.returncode == 0 and shell.stdout.strip() == systemctl.cat(root, "kubelet").strip()
        assert units.exec_start(shell.stdout) == "/opt/bin/kubelet"
        assert systemctl.kubelet_binary(root) == root / "opt" / "bin" / "kubelet"
