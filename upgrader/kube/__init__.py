"""The Kubernetes adapter: the only package that imports the official ``kubernetes`` client.

``cluster`` reads what upgrader needs from a cluster's API (nodes, the apiservers behind their
mirror pods, each apiserver's version, readiness and metrics, the kubeadm ClusterConfiguration) and
returns plain frozen values; client exceptions become ``KubeUnavailable`` here.
"""
