"""The adapter to a Kubernetes release mirror (dl.k8s.io or one laid out like it): release markers and
checksums, read over HTTP(S)."""
