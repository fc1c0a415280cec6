"""Writes an example facts file (a 1.30 cluster with nodes spread over the skew policy).

Used by the rehearsal (``./bootstrap.sh rehearse``) until facts are collected from a live cluster:
    python tests/example_facts.py FILE
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

FACTS = {
    "control_plane": [
        {
            "name": f"cp-{i}",
            "apiserver": "1.30.6",
            "kubelet": "1.30.6",
            "cgroup": "v2",
            "container_runtime": "containerd://2.1.4",
        }
        for i in (1, 2, 3)
    ],
    "nodes": [
        {"name": "w-1", "kubelet": "1.30.6", "cgroup": "v2", "container_runtime": "containerd://2.1.4"},
        {"name": "w-2", "kubelet": "1.29.10", "cgroup": "v2", "container_runtime": "containerd://2.1.4"},
        {"name": "w-3", "kubelet": "1.27.16", "cgroup": "v2", "container_runtime": "containerd://1.7.28"},
    ],
    "etcd": {"version": "3.5.15"},
    "apis_in_use": [{"group": "flowcontrol.apiserver.k8s.io", "version": "v1", "resource": "flowschemas"}],
}

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: example_facts.py FILE")
    Path(sys.argv[1]).write_text(json.dumps(FACTS, indent=2) + "\n")
    print(sys.argv[1])
