"""Validation of the names that reach templates, file names and command lines.

Node names come from inventories and facts files written by people; a name with a space, a quote
or a leading dash must never reach an Ansible limit, a Jinja template or an argv. The rules are
Kubernetes' own (a node name is a DNS-1123 subdomain), so a valid cluster never trips them.
"""

from __future__ import annotations

import re

from upgrader import errors

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_DNS_SUBDOMAIN = re.compile(rf"^{_DNS_LABEL}(\.{_DNS_LABEL})*$")
_CLUSTER_NAME = re.compile(rf"^{_DNS_LABEL}$")


def is_node_name(value: str) -> bool:
    return len(value) <= 253 and bool(_DNS_SUBDOMAIN.match(value))


def is_cluster_name(value: str) -> bool:
    """A cluster name ends up in file names, lock keys and log lines: a DNS label keeps it safe everywhere."""
    return bool(_CLUSTER_NAME.match(value))


def cluster_name(value: str) -> str:
    """Returns ``value`` if it is a valid cluster name, else raises ``InputError``."""
    if not is_cluster_name(value):
        raise errors.InputError(
            f"cluster name {value[:80]!r} must be a DNS label: lower-case letters, digits and '-', at most 63"
        )
    return value


def node_name(value: str) -> str:
    """Returns ``value`` if it is a valid Kubernetes node name, else raises ``InputError``."""
    if not is_node_name(value):
        raise errors.InputError(
            f"invalid node name {value[:80]!r}: node names are DNS-1123 subdomains "
            "(lower-case letters, digits, '-' and '.', at most 253 characters)"
        )
    return value
