"""Writes an example cluster directory: cluster.yaml and every file it names.

Every address is on loopback, on ports where nothing listens: a test that reaches for this cluster
gets a refused connection at once and never sends traffic off the machine.

Used by the test fixtures and by the rehearsal (``./bootstrap.sh rehearse``):
    python tests/example_cluster.py DIR
The etcd TLS files are placeholders; ``config check`` checks that files exist, not their contents.
"""

from __future__ import annotations

import sys
from pathlib import Path

INVENTORY = """\
[kube_control_plane]
cp-1 ansible_host=127.0.0.11
cp-2 ansible_host=127.0.0.12
cp-3 ansible_host=127.0.0.13

[etcd:children]
kube_control_plane

[kube_node]
w-1 ansible_host=127.0.0.21
w-2 ansible_host=127.0.0.22 ansible_password=hunter2

[k8s_cluster:children]
kube_control_plane
kube_node

[all:vars]
ansible_connection=local
"""

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: prod
  cluster: {server: "https://127.0.0.1:9"}
users:
- name: admin
  user: {token: "not-a-real-token"}
contexts:
- name: admin@prod
  context: {cluster: prod, user: admin}
current-context: admin@prod
"""

CLUSTER_YAML = """\
name: prod-eu1
kubeconfig: admin.conf
context: admin@prod
inventory: inventory/hosts.ini
etcd:
  endpoints:
    - https://127.0.0.11:9
    - https://127.0.0.12:9
    - https://127.0.0.13:9
  ca: pki/etcd/ca.crt
  cert: pki/apiserver-etcd-client.crt
  key: pki/apiserver-etcd-client.key
packages:
  method: apt
snapshots:
  dir: snapshots
  keep: 3
upgrade:
  max_unavailable: 20%
  drain_timeout: 10m
  two_step: true
  soak: 30m
"""


def write(root: Path) -> Path:
    """Creates ``root`` with a valid cluster.yaml and the files it names; returns the cluster.yaml path."""
    (root / "inventory").mkdir(parents=True, exist_ok=True)
    (root / "inventory" / "hosts.ini").write_text(INVENTORY)
    (root / "admin.conf").write_text(KUBECONFIG)
    (root / "pki" / "etcd").mkdir(parents=True, exist_ok=True)
    for name in ("etcd/ca.crt", "apiserver-etcd-client.crt", "apiserver-etcd-client.key"):
        (root / "pki" / name).write_text("-----BEGIN PLACEHOLDER-----\n")
    (root / "cluster.yaml").write_text(CLUSTER_YAML)
    return root / "cluster.yaml"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: example_cluster.py DIR")
    print(write(Path(sys.argv[1])))
