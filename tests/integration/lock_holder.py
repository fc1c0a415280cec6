"""A second process for the lock tests: takes a cluster lock, reports, and holds it until told.

Usage: python lock_holder.py DB_URL CLUSTER TTL_SECONDS
Prints one JSON line ({"acquired": true, "pid": ...} or {"acquired": false, "error": ...}), then
holds the lease (renewing it) until a line arrives on stdin or stdin closes, then releases it.
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta

from upgrader import errors
from upgrader.state import db, lease


def main() -> int:
    url, cluster, ttl = sys.argv[1], sys.argv[2], float(sys.argv[3])
    engine = db.open_engine(url)
    try:
        held = lease.acquire(engine, cluster=cluster, command="test-holder", ttl=timedelta(seconds=ttl))
    except errors.LockHeld as exc:
        print(json.dumps({"acquired": False, "error": str(exc)}), flush=True)
        return 3
    with held:
        print(json.dumps({"acquired": True, "pid": held.info.pid, "lost": held.lost}), flush=True)
        sys.stdin.readline()
        print(json.dumps({"lost": held.lost}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
