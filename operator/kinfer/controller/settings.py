"""Operator configuration: ``KINFER_OPERATOR_*`` environment variables → a frozen, validated dataclass.

Read once at start; a bad value stops the operator with a message naming the variable and the value
(crate-operator's ``config.py`` pattern), instead of surfacing later as a confusing reconcile error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from kinfer.api.inferenceservice import DEFAULT_SERVER_IMAGE
from kinfer.api.loadexperiment import DEFAULT_LOADGEN_IMAGE

PREFIX = "KINFER_OPERATOR_"


class SettingsError(ValueError):
    """A ``KINFER_OPERATOR_*`` variable with an unusable value."""


@dataclass(frozen=True)
class Settings:
    """Everything the operator can be configured with."""

    hostpath_allow: tuple[str, ...] = ()
    """Host-path prefixes volumes may use; empty = no hostPath volume is allowed."""
    hostpath_writable: tuple[str, ...] = ()
    """The prefixes of ``hostpath_allow`` whose entry ends in ``:rw``: mounts under them may be writable.

    The check is textual: it cannot see symlinks on the node. A writable mount lets a pod plant a link
    that a later pod's read-only mount of the same tree follows out of the allowed prefix, so grant
    ``:rw`` only to trees nobody else mounts."""
    namespace: str | None = None
    """Watch only this namespace; ``None`` = all namespaces."""
    metrics_port: int = 8080
    """Port of the operator's own ``/healthz`` and ``/metrics``; 0 = do not serve them."""
    metrics_host: str = "0.0.0.0"
    """Address the health/metrics server binds to."""
    server_image: str = DEFAULT_SERVER_IMAGE
    """Model-server image used when an InferenceService names none."""
    loadgen_image: str = DEFAULT_LOADGEN_IMAGE
    """Load-generator image used when a LoadExperiment names none."""
    cluster_domain: str = "cluster.local"
    """DNS suffix of in-cluster Service names (``<svc>.<ns>.svc.<domain>``)."""
    resync_s: float = 30.0
    """Safety-net reconcile period of InferenceServices, seconds (events drive the fast path)."""
    max_backoff_s: float = 30.0
    """Longest wait between polls of an unreachable generator, seconds."""
    results_linger_s: float = 30.0
    """How long a finished generator keeps its control API up so the operator reads the final stats."""
    lease_namespace: str | None = None
    """Namespace of the leader-election Lease (the chart sets its own); ``None``: no election (one process)."""
    operator_namespace: str | None = None
    """The operator pods' namespace (the chart passes its own): generator pods admit only the operator's
    pods there to their control port (a NetworkPolicy per experiment); ``None``: no policy."""
    scraper_namespace: str | None = None
    """Namespace of a Prometheus that scrapes the generators' /metrics: also admitted to their port."""
    lease_name: str = "kinfer-operator"
    """Name of the Lease (the chart uses its release's name: one acting operator per release)."""
    lease_s: float = 15.0
    """How long a leader's claim lasts without renewal; it renews every third of it."""
    sweep_ready_timeout_s: float = 600.0
    """How long a Sweep point's experiment may wait for its InferenceService before the point is Failed."""
    sweep_teardown_timeout_s: float = 300.0
    """How long a Sweep waits for a point's server pods to be gone before the next point starts anyway."""
    extra: Mapping[str, str] = field(default_factory=dict)
    """Unrecognised ``KINFER_OPERATOR_*`` names (reported, not fatal)."""

    def hostpath_allowed(self, path: str) -> bool:
        """Whether ``path`` lies under one of the allowed prefixes (``..`` is resolved first)."""
        return self.hostpath_access(path) is not None

    def hostpath_access(self, path: str) -> str | None:
        """``"rw"`` or ``"ro"`` by the longest allowed prefix ``path`` lies under, ``None`` if none."""
        normalized = _normalize(path)
        matches = [p for p in self.hostpath_allow if normalized == p or normalized.startswith(p.rstrip("/") + "/")]
        if not matches:
            return None
        return "rw" if max(matches, key=len) in self.hostpath_writable else "ro"


def _normalize(path: str) -> str:
    parts: list[str] = []
    for part in PurePosixPath(path).parts[1:]:
        if part == "..":
            if parts:
                parts.pop()
        elif part not in (".", ""):
            parts.append(part)
    return "/" + "/".join(parts)


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(PREFIX + name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{PREFIX}{name}={raw!r}: not an integer") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{PREFIX}{name}={raw!r}: must be between {lo} and {hi}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(PREFIX + name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{PREFIX}{name}={raw!r}: not a number of seconds") from None
    if not value > 0:
        raise SettingsError(f"{PREFIX}{name}={raw!r}: must be > 0")
    return value


def _text(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(PREFIX + name)
    if raw is None or raw.strip() == "":
        return default
    if any(c.isspace() for c in raw.strip()):
        raise SettingsError(f"{PREFIX}{name}={raw!r}: must not contain whitespace")
    return raw.strip()


KNOWN = {
    "HOSTPATH_ALLOW",
    "NAMESPACE",
    "METRICS_PORT",
    "METRICS_HOST",
    "SERVER_IMAGE",
    "LOADGEN_IMAGE",
    "CLUSTER_DOMAIN",
    "RESYNC_S",
    "MAX_BACKOFF_S",
    "RESULTS_LINGER_S",
    "LEASE_NAMESPACE",
    "LEASE_NAME",
    "OPERATOR_NAMESPACE",
    "SCRAPER_NAMESPACE",
    "LEASE_S",
    "SWEEP_READY_TIMEOUT_S",
    "SWEEP_TEARDOWN_TIMEOUT_S",
}


def from_env(env: Mapping[str, str]) -> Settings:
    """Parse and validate the operator's settings; raise :class:`SettingsError` naming the variable."""
    allow_raw = env.get(PREFIX + "HOSTPATH_ALLOW", "")
    prefixes, writable = [], []
    for item in allow_raw.split(","):
        item = item.strip()
        if not item:
            continue
        path, _, mode = item.partition(":")
        if not path.startswith("/"):
            raise SettingsError(f"{PREFIX}HOSTPATH_ALLOW={allow_raw!r}: {item!r} is not an absolute path prefix")
        if mode not in ("", "ro", "rw"):
            raise SettingsError(f"{PREFIX}HOSTPATH_ALLOW={allow_raw!r}: {item!r}: the mode after ':' is ro or rw")
        prefixes.append(_normalize(path))
        if mode == "rw":
            writable.append(_normalize(path))
    namespace = env.get(PREFIX + "NAMESPACE", "").strip() or None
    if namespace is not None and not _is_dns_label(namespace):
        raise SettingsError(f"{PREFIX}NAMESPACE={namespace!r}: not a valid namespace name")
    lease_namespace = env.get(PREFIX + "LEASE_NAMESPACE", "").strip() or None
    if lease_namespace is not None and not _is_dns_label(lease_namespace):
        raise SettingsError(f"{PREFIX}LEASE_NAMESPACE={lease_namespace!r}: not a valid namespace name")
    operator_namespace = _namespace(env, "OPERATOR_NAMESPACE")
    scraper_namespace = _namespace(env, "SCRAPER_NAMESPACE")
    extra = {k: v for k, v in env.items() if k.startswith(PREFIX) and k.removeprefix(PREFIX) not in KNOWN}
    return Settings(
        hostpath_allow=tuple(prefixes),
        hostpath_writable=tuple(writable),
        namespace=namespace,
        metrics_port=_int(env, "METRICS_PORT", 8080, 0, 65535),
        metrics_host=_text(env, "METRICS_HOST", "0.0.0.0"),
        server_image=_text(env, "SERVER_IMAGE", DEFAULT_SERVER_IMAGE),
        loadgen_image=_text(env, "LOADGEN_IMAGE", DEFAULT_LOADGEN_IMAGE),
        cluster_domain=_text(env, "CLUSTER_DOMAIN", "cluster.local").strip("."),
        resync_s=_float(env, "RESYNC_S", 30.0),
        max_backoff_s=_float(env, "MAX_BACKOFF_S", 30.0),
        results_linger_s=_float(env, "RESULTS_LINGER_S", 30.0),
        lease_namespace=lease_namespace,
        lease_name=_text(env, "LEASE_NAME", "kinfer-operator"),
        operator_namespace=operator_namespace,
        scraper_namespace=scraper_namespace,
        lease_s=_float(env, "LEASE_S", 15.0),
        sweep_ready_timeout_s=_float(env, "SWEEP_READY_TIMEOUT_S", 600.0),
        sweep_teardown_timeout_s=_float(env, "SWEEP_TEARDOWN_TIMEOUT_S", 300.0),
        extra=extra,
    )


def _namespace(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(PREFIX + name, "").strip() or None
    if value is not None and not _is_dns_label(value):
        raise SettingsError(f"{PREFIX}{name}={value!r}: not a valid namespace name")
    return value


def _is_dns_label(name: str) -> bool:
    return (
        0 < len(name) <= 63
        and name[0].isalnum()
        and name[-1].isalnum()
        and all(c.islower() or c.isdigit() or c == "-" for c in name)
    )
