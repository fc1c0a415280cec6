"""Snapshots good enough to bet a rollback on, kept in up to three tiers.

``local`` takes a snapshot into the controller's directory and checks it; ``peer`` keeps copies on
every control-plane node; ``remote`` keeps sealed copies in an S3-compatible bucket; ``tiers`` ties
them together (create, verify, pull, prune, import, and what a rollback needs).
"""

from upgrader.snapshots.local import archive_members, check_archive, fetch_control_plane, orphans, remove_orphan
from upgrader.snapshots.tiers import Created, Verified, create, ready, verify

__all__ = [
    "Created",
    "Verified",
    "archive_members",
    "check_archive",
    "create",
    "fetch_control_plane",
    "orphans",
    "ready",
    "remove_orphan",
    "verify",
]
