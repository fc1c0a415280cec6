"""Where a snapshot's copies live. A name of the domain, shared by the config schema (which tiers a
cluster keeps), the state store (which copy a row records) and the snapshot service, so that the
store's records do not depend on the config file's schema."""

from __future__ import annotations

import enum


class Tier(enum.StrEnum):
    """Where a snapshot's copies live: the controller, every control-plane node, an object store."""

    LOCAL = "local"
    PEER = "peer"
    S3 = "s3"
