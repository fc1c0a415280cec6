"""upgrader: upgrade self-managed Kubernetes clusters across minors and roll back to a verified snapshot.

The package is layered (see docs/architecture.md): ``cli`` on top, domain services, adapters for
the state store, Ansible, Kubernetes and etcd, and a pure core of versions, rules and the planner.
Nothing here imports a heavy library at import time, so ``upgrader --help`` stays fast.
"""

__version__ = "0.1.0"
