"""What must never be printed, logged or stored: secret values in data, and the user-info of URLs.

Two mechanisms, used wherever data leaves upgrader (the state database, events, output):

- ``scrub(data)``: a deep copy of mappings and lists (nested at any depth) in which every value under
  a secret-looking key (passwords, tokens, kubeconfig key and certificate data, authorization
  headers, API keys) and every string holding a PEM block is replaced, and URLs lose their user-info.
- ``url(text)``: a URL with its ``user:password@`` part masked as ``***@``.

Pure: no I/O, no third-party imports.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "<redacted>"
_SECRET_KEY = re.compile(
    r"pass(word|wd|phrase)?|secret|token|private[_-]?key|credential|^key$|bearer|authori[sz]ation"
    r"|client[_-]key[_-]data|client[_-]certificate[_-]data|api[_-]?key|access[_-]?key|cookie",
    re.IGNORECASE,
)
_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]+-----")
# scheme://user-info@host: the user-info is everything between "//" and the last "@" before the path.
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/?#\s]*)@")


def is_secret_key(key: object) -> bool:
    return bool(_SECRET_KEY.search(str(key)))


def url(text: str) -> str:
    """``text`` with the user-info of every URL in it masked: ``https://***@host/path``."""
    return _USERINFO.sub(lambda m: f"{m.group('scheme')}***@", text)


def _value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return scrub(value)
    if isinstance(value, list | tuple):
        return [_value(item) for item in value]
    if isinstance(value, str):
        return REDACTED if _PEM.search(value) else url(value)
    return value


def scrub(data: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` with secret values replaced by ``<redacted>``, at any depth."""
    return {key: REDACTED if is_secret_key(key) else _value(value) for key, value in data.items()}
