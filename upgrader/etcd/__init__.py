"""The etcd adapter: the only package that imports etcd3 and grpc.

``kv`` is a small key-value interface with compare-and-swap on mod revisions (what an apiserver
needs), membership and status; errors come out as ``EtcdUnavailable`` or ``Conflict``.
"""
