"""A catalog brought up to date with the patch releases a release mirror publishes, as ``kubeadm upgrade
plan`` learns them: each minor's marker (``stable-1.X.txt``) names its newest patch, and a patch counts
only when the mirror also has its checksums. Only the patch lists change; every rule stays the bundled
catalog's. Pure: the caller fetches, this merges.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from upgrader.core.versions import Minor, Version


@dataclass(frozen=True)
class MinorChange:
    minor: Minor
    added: tuple[Version, ...]  # new patch releases, newest first
    marker: Version | None  # what the mirror's marker says (None: it has none for this minor)
    note: str = ""  # why nothing changed where something might have


def candidates(latest: Version, marker: Version) -> list[Version]:
    """The patch releases between the catalog's newest and the marker's, newest first (Kubernetes numbers
    a minor's patches without gaps, so each one in between is looked for)."""
    if marker.minor_version != latest.minor_version or marker <= latest:
        return []
    return [Version(latest.major, latest.minor, patch) for patch in range(marker.patch, latest.patch, -1)]


def refresh(
    data: Mapping[str, Any],
    found: Mapping[Minor, tuple[Version | None, tuple[Version, ...]]],
    *,
    source: str,
    at: datetime,
) -> tuple[dict[str, Any], list[MinorChange]]:
    """``data`` (a catalog document) with, for each minor in ``found``, the verified patches the mirror has
    (``found[minor]``: its marker and the releases whose checksums it has) added to the patch list, and
    that list marked complete as of ``at``. The result records where and when it was refreshed and what
    it was made from; its version says so (``2026-12-05.1+20261205T1210Z``)."""
    out: dict[str, Any] = copy.deepcopy(dict(data))
    based_on = str(out.get("refreshed", {}).get("based_on") or out["catalog_version"])
    changes: list[MinorChange] = []
    for key, entry in out["minors"].items():
        minor = Minor.parse(key)
        if minor not in found:
            continue
        marker, verified = found[minor]
        known = [Version.parse(p) for p in entry["patches"]]
        if marker is None:
            changes.append(MinorChange(minor, (), None, "no marker on the mirror"))
            continue
        if marker < known[0]:
            changes.append(MinorChange(minor, (), marker, f"the mirror is behind: its marker says {marker}"))
            continue
        added = tuple(sorted((v for v in verified if v not in known and v.minor_version == minor), reverse=True))
        missing = [v for v in candidates(known[0], marker) if v not in added]
        entry["patches"] = [str(v) for v in sorted({*known, *added}, reverse=True)]
        entry["patches_complete"] = not missing
        note = f"no checksums on the mirror for {', '.join(str(v) for v in missing)}" if missing else ""
        changes.append(MinorChange(minor, added, marker, note))
    out["refreshed"] = {"based_on": based_on, "at": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "source": source}
    out["catalog_version"] = f"{based_on}+{at:%Y%m%dT%H%MZ}"
    return out, changes
