"""The lab: a simulated kubeadm cluster on one machine, with real etcd, that upgrader drives exactly
like a real one (same kubeconfig and Kubernetes client, same etcd3 client, same playbooks; only
inventory variables differ).

``topology`` describes a lab and its files, ``pki`` makes its certificates, ``manifests`` writes
kubeadm's static pod manifests, ``create`` lays a lab out on disk, ``mirror`` holds the kubeadm and
kubelet stand-ins per release; ``supervisor`` runs it (``kubelet`` per node, ``apiserver`` stand-ins,
``balancer`` in front of them) and ``control`` starts, stops and inspects it.
"""
