"""The etcd adapter: the only package that imports etcd3 and grpc.

``kv`` is a small key-value interface with compare-and-swap on mod revisions (what an apiserver
needs), membership and status; errors come out as ``EtcdUnavailable`` or ``Conflict``.

gRPC's fork support is switched off before grpc is imported. upgrader forks while its etcd channels
are open (ansible-runner starts ansible-playbook through pexpect, the lab starts its components), and
with fork support on, grpcio 1.80 and later restart their epoll poller in the forked child, which then
dies on ``epoll_wait: Bad file descriptor`` before it can exec (grpc/grpc#43055, open as of grpcio
1.85). upgrader never uses gRPC in a forked child, so it needs no fork support.
"""

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
