"""What a release mirror laid out like dl.k8s.io/release says: ``stable-1.X.txt`` (the newest patch of a
minor, as ``kubeadm upgrade plan`` reads it) and ``vX.Y.Z/bin/linux/amd64/kubeadm.sha256``.

Everything read is bounded and checked before it is believed: a marker is one ``vX.Y.Z`` of the minor
asked for, a checksum 64 hex digits. A mirror that is down, slow or hostile gives ``MirrorUnavailable``
or ``MirrorLied``, one line naming the URL.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from upgrader import errors
from upgrader.core.versions import Minor, Version
from upgrader.support import redaction

MAX_BYTES = 256  # a marker or a checksum is a line; anything longer is not one
_MARKER = re.compile(rb"^v(\d+)\.(\d+)\.(\d+)\s*$")
_SHA256 = re.compile(rb"^[0-9a-f]{64}(\s.*)?\s*$", re.DOTALL)


class MirrorUnavailable(errors.OperationFailed):
    """The mirror could not be reached, or refused."""


class MirrorLied(errors.OperationFailed):
    """The mirror answered something that is not a marker or a checksum."""


class Mirror:
    def __init__(self, base: str, *, timeout: float = 10.0) -> None:
        parts = urlsplit(base)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise errors.InputError(f"the release mirror must be an http(s) URL, not {redaction.url(base)!r}")
        self.base = base.rstrip("/")
        self.shown = redaction.url(self.base)  # what messages say: a mirror URL may carry a password
        self.timeout = timeout

    def _get(self, path: str) -> bytes | None:
        """The body at ``path`` (None: 404, the file is not there)."""
        url, shown = f"{self.base}/{path}", f"{self.shown}/{path}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as reply:  # noqa: S310 - scheme checked above
                body: bytes = reply.read(MAX_BYTES + 1)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise MirrorUnavailable(f"{shown}: HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = redaction.url(str(getattr(exc, "reason", exc)))
            raise MirrorUnavailable(f"cannot reach the release mirror at {shown}: {reason}") from None
        if len(body) > MAX_BYTES:
            raise MirrorLied(f"{shown}: more than {MAX_BYTES} bytes where one line was expected")
        return body

    def marker(self, minor: Minor) -> Version | None:
        """The newest patch of ``minor`` the mirror's ``stable-X.Y.txt`` names (None: no such marker)."""
        path = f"stable-{minor}.txt"
        body = self._get(path)
        if body is None:
            return None
        match = _MARKER.match(body)
        if match is None:
            raise MirrorLied(f"{self.shown}/{path} is not a release marker (vX.Y.Z)")
        version = Version(*(int(g) for g in match.groups()))
        if version.minor_version != minor:
            raise MirrorLied(f"{self.shown}/{path} names {version}, not a release of {minor}")
        return version

    def has_release(self, version: Version) -> bool:
        """Whether the mirror publishes ``version``'s kubeadm with its checksum (what a node installs)."""
        path = f"v{version}/bin/linux/amd64/kubeadm.sha256"
        body = self._get(path)
        if body is None:
            return False
        if _SHA256.match(body) is None:
            raise MirrorLied(f"{self.shown}/{path} is not a sha256 checksum")
        return True
