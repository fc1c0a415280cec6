"""The kube-apiserver stand-in: the part of the Kubernetes REST API upgrader uses, backed by real etcd.

Objects are stored as JSON under kube-apiserver's own key layout (``/registry/pods/NS/NAME``,
``/registry/minions/NAME``), resourceVersion is the etcd revision, writes are compare-and-swap. It
serves what its binary version (the image tag) serves, narrowed by ``--emulated-version``.
"""
