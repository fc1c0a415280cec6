"""Which rules catalog a plan uses, and ``catalog update``.

The bundled catalog ships with upgrader. ``catalog update`` refreshes its patch releases from a release
mirror (``rules.refresh``) and writes the result to upgrader's data directory (``catalog.json``, written
aside and renamed in), never into the package. Plans use, in order: ``--catalog FILE``; the refreshed
catalog, when it was made from the bundled catalog this upgrader ships (one made from another is set
aside with a warning: its rules may be older); the bundled one. Every plan records its catalog's version,
which says whether and when it was refreshed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from upgrader import errors
from upgrader.core import config
from upgrader.core.rules import catalog as catalog_mod
from upgrader.core.rules import refresh
from upgrader.core.versions import Minor, Version
from upgrader.executor import rendering
from upgrader.releases import mirror as release_mirror
from upgrader.support import environment

FILE = "catalog.json"


def mirror_of(cfg: config.ClusterConfig | None) -> str:
    """The release mirror a cluster installs binaries from (``packages.mirror`` with the binary method),
    else dl.k8s.io's."""
    if cfg is not None and cfg.packages.method is config.PackageMethod.BINARY and cfg.packages.mirror:
        return str(cfg.packages.mirror)
    return rendering.DL_K8S_IO


def refreshed_path() -> Path:
    return environment.data_dir() / FILE


@dataclass(frozen=True)
class InUse:
    catalog: catalog_mod.Catalog
    source: str  # "bundled", the refreshed file's path, or --catalog's
    warning: str | None = None


def current(explicit: Path | None = None) -> InUse:
    """The catalog a plan uses (see the module's docstring)."""
    if explicit is not None:
        return InUse(catalog_mod.load(explicit), str(explicit))
    bundled = catalog_mod.load()
    path = refreshed_path()
    if not path.is_file():
        return InUse(bundled, "bundled")
    try:
        found = catalog_mod.load(path)
    except errors.InputError as exc:
        return InUse(bundled, "bundled", f"{exc.message}; the bundled catalog is used: run `upgrader catalog update`")
    if found.refreshed.get("based_on") != bundled.version:
        return InUse(
            bundled,
            "bundled",
            f"the refreshed catalog {path} was made from catalog {found.refreshed.get('based_on')}, and this "
            f"upgrader ships {bundled.version}: the bundled one is used; run `upgrader catalog update` again",
        )
    return InUse(found, str(path))


@dataclass(frozen=True)
class Updated:
    catalog: catalog_mod.Catalog
    path: Path
    changes: tuple[refresh.MinorChange, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "catalog": self.catalog.version,
            "path": str(self.path),
            "refreshed": dict(self.catalog.refreshed),
            "minors": [
                {
                    "minor": str(c.minor),
                    "marker": str(c.marker) if c.marker else None,
                    "added": [str(v) for v in c.added],
                    "note": c.note,
                }
                for c in self.changes
            ],
        }


def update(mirror: release_mirror.Mirror, source: str, *, now: datetime | None = None) -> Updated:
    """Reads every catalog minor's marker and the checksums of the releases it adds from ``mirror`` (a
    ``releases.mirror.Mirror``), and writes the refreshed catalog. Raises (nothing written) if the mirror
    cannot be read: the catalog in use stays what it was."""
    bundled = catalog_mod.load()
    found: dict[Minor, tuple[Version | None, tuple[Version, ...]]] = {}
    for minor, entry in sorted(bundled.minors.items()):
        marker = mirror.marker(minor)
        verified = tuple(v for v in refresh.candidates(entry.latest, marker) if mirror.has_release(v)) if marker else ()
        found[minor] = (marker, verified)
    if not any(marker for marker, _ in found.values()):
        raise release_mirror.MirrorUnavailable(
            f"{source} has no release marker (stable-X.Y.txt) for any minor from {min(found)} to {max(found)}: "
            "not a release mirror laid out like dl.k8s.io/release"
        )
    data = catalog_mod.shipped_document()
    out, changes = refresh.refresh(data, found, source=source, at=now or datetime.now(UTC))
    parsed = catalog_mod.parse(out)  # what is written parses, or nothing is
    path = refreshed_path()
    _write(path, out)
    return Updated(parsed, path, tuple(changes))


def _write(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
