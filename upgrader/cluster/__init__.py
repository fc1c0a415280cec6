"""The cluster as the use cases see it: a session joining the inventory, the API and etcd
(``session``), live facts and health read from it, the preflight checks, the gates after a step,
draining, and the rollout of kubelets and control planes through Ansible. These modules implement
the engine's ports; they never drive the engine."""
