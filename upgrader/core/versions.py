"""Version value objects: Kubernetes and etcd versions, and minors. Pure; imports nothing above it.

Parsing is strict: ``1.30.6`` or ``v1.30.6`` (and ``1.30``/``v1.30`` for a minor); anything else is an
``InputError`` naming the bad string, so a malformed version never reaches a plan, a template or a
command line. Ordering is numeric, never lexical (1.9 < 1.10).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

from upgrader import errors

_FULL = re.compile(r"^v?(0|[1-9]\d{0,3})\.(0|[1-9]\d{0,3})\.(0|[1-9]\d{0,4})$")
_MINOR = re.compile(r"^v?(0|[1-9]\d{0,3})\.(0|[1-9]\d{0,3})$")


@total_ordering
@dataclass(frozen=True, slots=True)
class Minor:
    """A major.minor pair such as 1.30: the unit of Kubernetes' skew and emulation rules."""

    major: int
    minor: int

    @classmethod
    def parse(cls, text: str, *, what: str = "minor version") -> Minor:
        match = _MINOR.match(text.strip()) if isinstance(text, str) else None
        if not match:
            raise errors.InputError(f"malformed {what} {str(text)[:40]!r}: expected MAJOR.MINOR such as 1.30")
        return cls(int(match.group(1)), int(match.group(2)))

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Minor):
            return NotImplemented
        return (self.major, self.minor) < (other.major, other.minor)

    def __add__(self, steps: int) -> Minor:
        return Minor(self.major, self.minor + steps)

    def __sub__(self, steps: int) -> Minor:
        return Minor(self.major, self.minor - steps)

    def distance(self, other: Minor) -> int:
        """How many minors ``other`` is ahead of ``self`` (negative when behind); same major only."""
        if self.major != other.major:
            raise errors.InputError(f"cannot compare minors across majors: {self} and {other}")
        return other.minor - self.minor

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


@total_ordering
@dataclass(frozen=True, slots=True)
class Version:
    """A full major.minor.patch release, for Kubernetes components and etcd alike."""

    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str, *, what: str = "version") -> Version:
        match = _FULL.match(text.strip()) if isinstance(text, str) else None
        if not match:
            raise errors.InputError(f"malformed {what} {str(text)[:40]!r}: expected MAJOR.MINOR.PATCH such as 1.30.6")
        return cls(int(match.group(1)), int(match.group(2)), int(match.group(3)))

    @property
    def minor_version(self) -> Minor:
        return Minor(self.major, self.minor)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return (self.major, self.minor, self.patch) < (other.major, other.minor, other.patch)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


def parse_target(text: str) -> Version | Minor:
    """A ``--to`` value: an exact release (1.33.4) or a minor (1.33, meaning its latest known patch)."""
    stripped = text.strip() if isinstance(text, str) else ""
    if _FULL.match(stripped):
        return Version.parse(stripped, what="target version")
    if _MINOR.match(stripped):
        return Minor.parse(stripped, what="target version")
    raise errors.InputError(
        f"malformed target version {str(text)[:40]!r}: expected 1.33 (latest known patch) or 1.33.4"
    )
