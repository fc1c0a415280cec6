"""``python -m upgrader.lab.apiserver --binary-version X [kube-apiserver flags]``: the stand-in's process.

It takes kube-apiserver's own flags (those it does not need are accepted and ignored), serves TLS
with the node's certificates, and verifies client certificates against ``--client-ca-file``. Under
the lab fault ``apiserver-crash`` it exits at once, as a crashing binary would.
"""

from __future__ import annotations

import argparse
import os
import signal
import ssl
import sys
import threading
from pathlib import Path

from upgrader import errors
from upgrader.core.versions import Minor, Version
from upgrader.etcd import kv
from upgrader.lab import faults
from upgrader.lab.apiserver import server


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kube-apiserver (upgrader lab)")
    parser.add_argument("--binary-version", required=True)
    parser.add_argument("--advertise-address", required=True)
    parser.add_argument("--secure-port", type=int, default=6443)
    parser.add_argument("--etcd-servers", required=True)
    parser.add_argument("--etcd-cafile")
    parser.add_argument("--etcd-certfile")
    parser.add_argument("--etcd-keyfile")
    parser.add_argument("--tls-cert-file", required=True)
    parser.add_argument("--tls-private-key-file", required=True)
    parser.add_argument("--client-ca-file", required=True)
    parser.add_argument("--emulated-version")
    known, _ignored = parser.parse_known_args(argv)
    return known


def _emulated(binary: Version, flag: str | None) -> Minor:
    if not flag:
        return binary.minor_version
    value = flag.split("=", 1)[1] if "=" in flag else flag  # "kube=1.31" or "1.31"
    emulated = Minor.parse(value, what="--emulated-version")
    floor = max(Minor(1, 31), binary.minor_version - 3)
    if binary.minor_version < Minor(1, 31) or not floor <= emulated <= binary.minor_version:
        raise errors.InputError(f"--emulated-version={value} is outside what kube-apiserver v{binary} supports")
    return emulated


def _crash_watch(view: faults.View) -> None:
    while True:
        if faults.Fault.APISERVER_CRASH in view:
            print("panic: lab fault apiserver-crash", file=sys.stderr, flush=True)
            os._exit(2)
        threading.Event().wait(0.3)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(sys.argv[1:] if argv is None else argv)
    run_dir = Path(os.environ.get("UPGRADER_LAB_RUN", "."))
    node = os.environ.get("UPGRADER_LAB_NODE", "")
    view = faults.View(run_dir, node)
    if faults.Fault.APISERVER_CRASH in view:
        print("panic: lab fault apiserver-crash", file=sys.stderr)
        return 2
    try:
        binary = Version.parse(args.binary_version)
        emulated = _emulated(binary, args.emulated_version)
    except errors.InputError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    store = kv.KV(
        kv.Target(
            endpoints=tuple(args.etcd_servers.split(",")),
            ca=Path(args.etcd_cafile) if args.etcd_cafile else None,
            cert=Path(args.etcd_certfile) if args.etcd_certfile else None,
            key=Path(args.etcd_keyfile) if args.etcd_keyfile else None,
            timeout=2.0,
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.tls_cert_file, args.tls_private_key_file)
    context.load_verify_locations(args.client_ca_file)
    context.verify_mode = ssl.CERT_OPTIONAL
    api = server.Api(binary=binary, emulated=emulated, store=store)
    httpd = server.Server((args.advertise_address, args.secure_port), api, view)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
    threading.Thread(target=_crash_watch, args=(view,), daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=httpd.shutdown, daemon=True).start())
    print(
        f"kube-apiserver v{binary} (emulating {emulated}) serving on {args.advertise_address}:{args.secure_port}",
        file=sys.stderr,
        flush=True,
    )
    try:
        httpd.serve_forever(poll_interval=0.2)
    finally:
        httpd.server_close()
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
