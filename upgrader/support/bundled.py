"""Finds the playbooks and migrations whether upgrader runs from a wheel or from a source checkout.

The repository keeps ``playbooks/`` and ``migrations/`` at its top level (fixed layout); the wheel
carries them as ``upgrader/_bundled/...`` (hatch force-include). An installed copy must never
reach back into a source tree, so the bundled copy wins whenever it exists.
"""

from __future__ import annotations

from pathlib import Path

from upgrader import errors

_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # the upgrader package


def _find(name: str) -> Path:
    bundled = _PACKAGE_DIR / "_bundled" / name
    if bundled.is_dir():
        return bundled
    checkout = _PACKAGE_DIR.parent / name
    if checkout.is_dir():
        return checkout
    raise errors.OperationFailed(
        f"cannot find upgrader's {name}/ directory (looked in {bundled} and {checkout}): reinstall upgrader"
    )


def migrations_dir() -> Path:
    """The Alembic script directory."""
    return _find("migrations")


def playbooks_dir() -> Path:
    """The Ansible project directory holding upgrader's playbooks."""
    return _find("playbooks")
