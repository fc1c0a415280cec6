"""The cluster config (``cluster.yaml``): its schema, and a loader that reports every problem at once.

``load(path)`` returns a frozen ``ClusterConfig`` or raises ``errors.ConfigError`` listing each
problem as ``FILE:LINE: key.path: what is wrong``. Paths in the file are relative to the file's
own directory and are resolved (and checked to exist) at load, so nothing downstream re-parses
strings or depends on the working directory. The inventory's groups are checked elsewhere
(``preflight``), because reading an inventory needs Ansible.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from upgrader import errors
from upgrader.core.planner.model import MaxUnavailable
from upgrader.core.tier import Tier
from upgrader.support import names, redaction

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h)?\s*$")
_DURATION_UNITS = {None: 1, "s": 1, "m": 60, "h": 3600}


class PackageMethod(enum.StrEnum):
    """How Kubernetes binaries reach a node."""

    APT = "apt"
    DNF = "dnf"
    BINARY = "binary"


def _base_dir(info: ValidationInfo) -> Path:
    context = info.context if isinstance(info.context, Mapping) else {}
    base = context.get("base_dir")
    return Path(base) if base is not None else Path.cwd()


def _resolve(value: Path, info: ValidationInfo) -> Path:
    path = value.expanduser()
    return path if path.is_absolute() else (_base_dir(info) / path).resolve()


def _existing_file(value: Path, info: ValidationInfo) -> Path:
    path = _resolve(value, info)
    if not path.exists():
        raise ValueError(f"file not found: {path}")
    if not path.is_file():
        raise ValueError(f"not a regular file: {path}")
    return path


def _existing_path(value: Path, info: ValidationInfo) -> Path:
    path = _resolve(value, info)
    if not path.exists():
        raise ValueError(f"not found: {path}")
    return path


def _directory_path(value: Path, info: ValidationInfo) -> Path:
    path = _resolve(value, info)
    if path.exists() and not path.is_dir():
        raise ValueError(f"exists and is not a directory: {path}")
    return path


def seconds(text: str) -> int | None:
    """Whole seconds (``600``) or ``90s``, ``10m``, ``1h`` as seconds; None if it is not a duration.
    The one duration syntax, in ``cluster.yaml`` and on the command line alike."""
    match = _DURATION.match(text)
    return int(match.group(1)) * _DURATION_UNITS[match.group(2)] if match else None


def _parse_duration(value: object) -> object:
    if isinstance(value, bool):
        return value  # let the int validator reject it
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        parsed = seconds(value)
        if parsed is None:
            raise ValueError(f"not a duration: {value!r} (use seconds, or a number with s, m or h)")
        return parsed
    return value


def _http_url(value: str) -> str:
    """An http(s) URL. Messages show it with its user-info masked: a mirror URL may carry a password."""
    parts = urlsplit(value)
    shown = redaction.url(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {shown!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port in URL {shown!r}") from exc
    host_and_port = parts.netloc.rpartition("@")[2].rsplit("]", 1)[-1]
    if port is None and ":" in host_and_port:
        raise ValueError(f"bad port in URL {shown!r}")
    return value.rstrip("/")


def _etcd_endpoint(value: str) -> str:
    url = _http_url(value)
    parts = urlsplit(url)
    shown = redaction.url(value)
    if "@" in parts.netloc:
        raise ValueError(f"an etcd endpoint takes no user-info (etcd authenticates by certificate): {shown!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"an etcd endpoint is scheme://host:port with no path: {value!r}")
    if parts.port is None:
        raise ValueError(f"an etcd endpoint needs a port (usually 2379): {value!r}")
    return url


ExistingFile = Annotated[Path, AfterValidator(_existing_file)]
ExistingPath = Annotated[Path, AfterValidator(_existing_path)]  # a file or a directory
DirectoryPath = Annotated[Path, AfterValidator(_directory_path)]
Seconds = Annotated[int, BeforeValidator(_parse_duration), Field(ge=0)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]
EtcdEndpoint = Annotated[str, AfterValidator(_etcd_endpoint)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class EtcdSettings(_Section):
    """How to reach etcd: client endpoints and the client TLS material."""

    endpoints: list[EtcdEndpoint] = Field(min_length=1)
    ca: ExistingFile | None = None
    cert: ExistingFile | None = None
    key: ExistingFile | None = None
    # A rollback's full restore moves the revision past the highest one served; without etcdutl's
    # --bump-revision it writes that many revisions (about 4 s per 10,000 here), so a larger gap is refused.
    max_revision_gap: int = Field(default=1_000_000, ge=0)
    # Where an etcd step on external etcd hosts downloads etcd's releases: laid out like etcd's GitHub
    # releases (vX.Y.Z/etcd-vX.Y.Z-linux-ARCH.tar.gz and vX.Y.Z/SHA256SUMS); None: GitHub itself
    releases: HttpUrl | None = None

    @model_validator(mode="after")
    def _tls_is_complete(self) -> EtcdSettings:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together: give both or neither")
        if self.uses_tls and self.ca is None:
            raise ValueError("https endpoints need ca (the etcd CA certificate)")
        return self

    @property
    def uses_tls(self) -> bool:
        return any(e.startswith("https://") for e in self.endpoints)


class PackageSettings(_Section):
    """Where the Kubernetes packages or binaries come from."""

    method: PackageMethod
    # Where kubeadm, kubelet and kubectl live on the nodes (the kubelet unit's ExecStart must agree): the
    # packages' /usr/bin, or the install docs' /usr/local/bin (Kubespray's bin_dir; /opt/bin on Flatcar)
    # with the binary method. An inventory's `bin_dir` variable (Kubespray's) wins for its hosts.
    bin_dir: str = Field(default="/usr/bin", pattern=r"^(/[A-Za-z0-9._+-]+)+$")
    # binary: the release tree (default https://dl.k8s.io/release, laid out vX.Y.Z/bin/linux/ARCH/NAME with
    # NAME.sha256 beside it); apt and dnf: the pkgs.k8s.io-shaped host (default https://pkgs.k8s.io)
    mirror: HttpUrl | None = None

    @field_validator("bin_dir")
    @classmethod
    def _plain_path(cls, value: str) -> str:
        if any(part in (".", "..") for part in value.split("/")):
            raise ValueError(f"not a plain absolute path: {value!r}")
        return value

    @model_validator(mode="after")
    def _packages_install_into_usr_bin(self) -> PackageSettings:
        if self.method is not PackageMethod.BINARY and self.bin_dir != "/usr/bin":
            raise ValueError(
                f"method '{self.method.value}' installs into /usr/bin; bin_dir {self.bin_dir} needs 'binary'"
            )
        return self


class AnsibleSettings(_Section):
    """How upgrader's playbooks reach the nodes."""

    # Off only for throw-away clusters: without it a man in the middle could feed forged manifests
    # into a snapshot. ``config check`` warns when it is off.
    host_key_checking: bool = True
    forks: int = Field(default=50, ge=1, le=1000)  # nodes a play reaches at once
    # One SSH round trip per task instead of three (as Kubespray sets it); needs no `requiretty` in sudoers.
    pipelining: bool = True
    # Privilege escalation for every playbook (kubeadm refuses a non-root user; packages, systemctl and
    # /var/lib/etcd need root). Off: what the inventory says (ansible_become per host or group) stands.
    become: bool = False
    become_user: str = Field(default="root", pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    become_method: str = Field(default="sudo", pattern=r"^(sudo|su|doas|pbrun|pfexec|dzdo|ksu|machinectl|runas)$")


class PeerSettings(_Section):
    """Copies on every control-plane node, under /var/lib/upgrader/snapshots."""

    keep: int = Field(default=2, ge=1, le=100)


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX = re.compile(r"^(?:[A-Za-z0-9._-]+/)*$")
_CREDENTIALS = ("access_key", "secret", "session_token", "password", "credentials", "aws_")


class ObjectStoreSettings(_Section):
    """An S3-compatible bucket. Credentials come from the AWS chain (environment, profile), never from here."""

    bucket: str
    endpoint: HttpUrl | None = None  # AWS itself when unset
    region: str | None = Field(default=None, pattern=r"^[a-z0-9-]{2,32}$")
    prefix: str = ""
    encrypt: bool = True
    key_file: ExistingFile | None = None
    keep: int = Field(default=30, ge=1, le=10000)
    # Parts of an upload in flight at once (8 MiB each, sealed as they are sent: about 1 MiB of memory each).
    concurrency: int = Field(default=4, ge=1, le=32)

    @model_validator(mode="before")
    @classmethod
    def _no_credentials(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            for key in data:
                if any(word in str(key).lower() for word in _CREDENTIALS):
                    raise ValueError(
                        f"{key}: credentials never go in cluster.yaml; upgrader uses the AWS chain "
                        "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, an instance role)"
                    )
        return data

    @field_validator("bucket")
    @classmethod
    def _bucket_name(cls, value: str) -> str:
        if not _BUCKET.match(value) or ".." in value:
            raise ValueError(f"not an S3 bucket name: {value!r} (3-63 of a-z, 0-9, '.', '-')")
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix_form(cls, value: str) -> str:
        value = value if not value or value.endswith("/") else value + "/"
        if not _PREFIX.match(value) or any(part in (".", "..") for part in value.split("/")):
            raise ValueError(f"not a key prefix: {value!r} (path segments of A-Z, a-z, 0-9, '.', '_', '-')")
        return value

    @model_validator(mode="after")
    def _key_when_encrypting(self) -> ObjectStoreSettings:
        if self.encrypt and self.key_file is None:
            raise ValueError(
                "key_file is required while encrypt is true (a snapshot holds every Secret of the cluster); "
                "`upgrader snapshot keygen FILE` writes one"
            )
        return self


class SnapshotSettings(_Section):
    """Where snapshots go, which tiers hold copies, and how many known-good ones ``snapshot prune`` keeps."""

    dir: DirectoryPath
    keep: int = Field(default=5, ge=1, le=1000)
    tiers: list[Tier] = Field(default_factory=lambda: [Tier.LOCAL])
    require: list[Tier] = Field(default_factory=lambda: [Tier.LOCAL])
    peer: PeerSettings = Field(default_factory=PeerSettings)
    s3: ObjectStoreSettings | None = None

    @model_validator(mode="after")
    def _tiers_consistent(self) -> SnapshotSettings:
        if Tier.LOCAL not in self.tiers:
            raise ValueError("tiers must include local: every other tier is copied from the verified local copy")
        if missing := [t.value for t in self.require if t not in self.tiers]:
            raise ValueError(f"require names tiers that are not in tiers: {', '.join(missing)}")
        if Tier.S3 in self.tiers and self.s3 is None:
            raise ValueError("tiers includes s3 but there is no s3 section (bucket, endpoint, key_file)")
        return self

    def keep_for(self, tier: Tier) -> int:
        if tier is Tier.PEER:
            return self.peer.keep
        if tier is Tier.S3 and self.s3 is not None:
            return self.s3.keep
        return self.keep


def _max_unavailable(value: object) -> object:
    """One parser for the config and the command line: ``MaxUnavailable.parse``."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("max_unavailable is a number of nodes or a percentage like '20%'")
    try:
        parsed = MaxUnavailable.parse(value)
    except errors.InputError:
        raise ValueError(
            f"max_unavailable is a number of nodes or a percentage from 1% to 100%, not {value!r}"
        ) from None
    return str(parsed) if parsed.percent is not None else parsed.count


class UpgradeSettings(_Section):
    """Defaults for upgrade runs; each can be overridden on the command line."""

    max_unavailable: Annotated[int | str, BeforeValidator(_max_unavailable)] = 1
    drain_timeout: Seconds = 600
    # how long a restarted apiserver, kubelet or etcd member may take to come back at its new version
    # (an etcd member with a large database replays it first); past it the step fails, resumable
    component_timeout: Seconds = 300
    two_step: bool = True
    soak: Seconds = 0
    # kubeadm's --patches directory on the nodes (as in Init/JoinConfiguration's patches.directory, which
    # the cluster does not keep): passed to every `kubeadm upgrade apply` and `upgrade node`, or the
    # patches are lost at the next upgrade. Facts refuse a cluster with /etc/kubernetes/patches unnamed.
    kubeadm_patches: str | None = Field(default=None, pattern=r"^(/[A-Za-z0-9._+-]+)+$")

    @field_validator("kubeadm_patches")
    @classmethod
    def _plain_patches_path(cls, value: str | None) -> str | None:
        if value is not None and any(part in (".", "..") for part in value.split("/")):
            raise ValueError(f"not a plain absolute path: {value!r}")
        return value


class ClusterConfig(_Section):
    """A validated ``cluster.yaml``. Paths are absolute; every referenced file existed at load."""

    name: str
    kubeconfig: ExistingFile
    context: str | None = None
    inventory: ExistingPath  # Ansible accepts a file, a directory or a script
    etcd: EtcdSettings
    packages: PackageSettings
    snapshots: SnapshotSettings
    upgrade: UpgradeSettings = UpgradeSettings()
    ansible: AnsibleSettings = AnsibleSettings()
    source: Path | None = Field(default=None, exclude=True)

    @field_validator("name")
    @classmethod
    def _name_is_dns_label(cls, value: str) -> str:
        try:
            return names.cluster_name(value)
        except errors.InputError as exc:
            raise ValueError(exc.message) from None

    @model_validator(mode="after")
    def _context_exists(self) -> ClusterConfig:
        if self.context is not None:
            contexts = _kubeconfig_contexts(self.kubeconfig)
            if contexts is not None and self.context not in contexts:
                known = ", ".join(sorted(contexts)) or "none"
                raise ValueError(f"context {self.context!r} is not in {self.kubeconfig} (it has: {known})")
        return self


def _kubeconfig_contexts(path: Path) -> set[str] | None:
    """The context names in a kubeconfig, or None when the file is not one we can read."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(data, dict):
        return None
    return {str(c["name"]) for c in data.get("contexts") or [] if isinstance(c, dict) and c.get("name")}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config file, and where."""

    file: Path
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else str(self.file)
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


def load(path: Path) -> ClusterConfig:
    """Reads and validates a cluster config, raising ``ConfigError`` with every problem found."""
    path = path.expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise errors.ConfigError(f"cluster config not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise errors.ConfigError(f"cannot read cluster config {path}: {exc}") from exc
    data, lines = _parse_yaml(path, text)
    problems = [str(p) for p in _template_problems(path, data, lines)]
    try:
        config = ClusterConfig.model_validate(data, context={"base_dir": path.resolve().parent})
    except ValidationError as exc:
        problems += [str(p) for p in _problems(path, exc, lines)]
    if problems:
        noun = "problem" if len(problems) == 1 else "problems"
        raise errors.ConfigError(f"{path}: {len(problems)} {noun} in the cluster config", tuple(problems)) from None
    return config.model_copy(update={"source": path.resolve()})


_TEMPLATE = re.compile(r"\{\{|\{%|\{#")


def _template_problems(path: Path, data: Any, lines: dict[tuple[str | int, ...], int]) -> Iterator[Problem]:
    """Every key or value holding a Jinja2 delimiter: values reach Ansible, which would evaluate them.

    The executor already hands values to Ansible marked unsafe; refusing them here as well means a
    config that tries it is named, with its key, instead of creating a directory called ``{{ ... }}``.
    """

    def walk(value: Any, loc: tuple[str | int, ...]) -> Iterator[Problem]:
        if isinstance(value, dict):
            for key, item in value.items():
                yield from walk(key, loc)
                yield from walk(item, (*loc, str(key)))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                yield from walk(item, (*loc, index))
        elif isinstance(value, str) and _TEMPLATE.search(value):
            message = "contains a Jinja2 template delimiter ({{, {% or {#), which upgrader refuses"
            yield Problem(path, _line_for(loc, lines), _key_path(loc), message)

    yield from walk(data, ())


def _parse_yaml(path: Path, text: str) -> tuple[Any, dict[tuple[str | int, ...], int]]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None and (size := _expanded_size(node, {})) > MAX_VALUES:
            shown = "a recursive alias" if size == _CYCLE else f"{size:,} values"
            raise errors.ConfigError(
                f"{path}: its aliases expand to {shown} (a cluster config has a few hundred): refused"
            )
        data = yaml.safe_load(text)
        if not isinstance(data, dict):
            raise errors.ConfigError(f"{path}: the cluster config must be a YAML mapping of keys to values")
        lines: dict[tuple[str | int, ...], int] = {}
        if node is not None:
            _index_lines(node, (), lines)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise errors.ConfigError(f"{path}{line}: not valid YAML: {reason}") from None
    except RecursionError:
        raise errors.ConfigError(f"{path}: nested too deeply to be a cluster config") from None
    return data, lines


MAX_VALUES = 100_000  # values a cluster config may expand to once its YAML aliases are followed
_CYCLE = 2**63


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many values ``node`` stands for once every alias is expanded, computed once per node, so an
    alias bomb (each level naming the previous one ten times) is measured in linear time, not expanded."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    sizes[id(node)] = _CYCLE  # seen again before it is measured: an alias inside itself
    if isinstance(node, yaml.MappingNode):
        total = 1 + sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        total = 1 + sum(_expanded_size(item, sizes) for item in node.value)
    else:
        total = 1
    sizes[id(node)] = min(total, _CYCLE)
    return sizes[id(node)]


def _index_lines(node: yaml.Node, prefix: tuple[str | int, ...], out: dict[tuple[str | int, ...], int]) -> None:
    out[prefix] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (*prefix, str(key_node.value))
            _index_lines(value_node, key, out)
            out[key] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _index_lines(item, (*prefix, index), out)


def _problems(path: Path, exc: ValidationError, lines: dict[tuple[str | int, ...], int]) -> Iterator[Problem]:
    for error in exc.errors():
        loc = tuple(part for part in error["loc"] if not _is_validator_tag(part))
        yield Problem(path, _line_for(loc, lines), _key_path(loc), _message(error))


def _is_validator_tag(part: object) -> bool:
    # pydantic inserts the union member or validator name into loc ("int", "str", "function-after[...]").
    return isinstance(part, str) and (part in {"int", "str"} or "[" in part)


def _line_for(loc: tuple[str | int, ...], lines: dict[tuple[str | int, ...], int]) -> int | None:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def _key_path(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        name = str(part) if str(part).isprintable() and str(part) else repr(str(part))  # one line, always
        out += f"[{part}]" if isinstance(part, int) else (f".{name}" if out else name)
    return out


def _message(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return message


def describe(config: ClusterConfig) -> dict[str, object]:
    """A JSON-ready summary of a config, with no secrets (paths only, never file contents)."""
    return {
        "name": config.name,
        "source": str(config.source) if config.source else None,
        "kubeconfig": str(config.kubeconfig),
        "context": config.context,
        "inventory": str(config.inventory),
        "etcd": {
            "endpoints": list(config.etcd.endpoints),
            "tls": config.etcd.uses_tls,
            "releases": redaction.url(config.etcd.releases) if config.etcd.releases else None,
        },
        "packages": {
            "method": config.packages.method.value,
            "mirror": redaction.url(config.packages.mirror) if config.packages.mirror else None,
        },
        "snapshots": {
            "dir": str(config.snapshots.dir),
            "keep": config.snapshots.keep,
            "tiers": [t.value for t in config.snapshots.tiers],
            "require": [t.value for t in config.snapshots.require],
            "s3": (
                {
                    **config.snapshots.s3.model_dump(mode="json", exclude={"endpoint"}),
                    "endpoint": redaction.url(config.snapshots.s3.endpoint) if config.snapshots.s3.endpoint else None,
                }
                if config.snapshots.s3
                else None
            ),
        },
        "upgrade": config.upgrade.model_dump(),
        "ansible": config.ansible.model_dump(),
    }
