"""A run's configuration: validated once at start, frozen afterwards.

Every problem is a :class:`ConfigError` whose message names the flag (or environment variable) and
the value, so the command can print one line and exit 2.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import socket
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import ValidationError

from kinfer.api.durations import parse_duration
from kinfer.api.loadexperiment import MAX_BATCH_SIZE, CapacitySearch
from kinfer.api.schedule import MAX_CONCURRENCY, Schedule, Stage, is_closed
from kinfer.loadgen.arrivals import ArrivalKind
from kinfer.loadgen.httpclient import Target
from kinfer.loadgen.payloads import PayloadError, PayloadSpec, Protocol, load_bodies
from kinfer.loadgen.server_resources import validate_urls

DEFAULT_DURATION_S = 60.0
#: Highest rate a capacity search may probe, requests/s (the control API's limit).
MAX_CAPACITY_RPS = 1_000_000.0
#: Capacity-mode defaults: the LoadExperiment API's (``spec.capacity``).
_CAPACITY_DEFAULTS = CapacitySearch()


class ConfigError(ValueError):
    """Bad input; the message is one line naming the problem."""


@dataclass(frozen=True)
class LoadgenConfig:
    """Everything ``kinfer loadgen`` was asked to do."""

    url: str
    target: Target
    stages: list[Stage]
    loop: bool
    #: When sending ends, seconds after the start (``inf``: a looping schedule without --duration).
    end: float
    arrival: ArrivalKind = ArrivalKind.POISSON
    seed: int | None = None
    method: str = "GET"
    payload: PayloadSpec = field(default_factory=lambda: PayloadSpec("none"))
    protocol: Protocol = Protocol.RAW
    input_name: str = "input"
    timeout: float = 10.0
    max_in_flight: int = 1000
    window: float = 60.0
    interval: float = 1.0
    processes: int = 1
    #: Loopback unless a control token is set (then every address, ``0.0.0.0``, by default).
    control_host: str = "127.0.0.1"
    #: ``None``: no control API; 0: any free port.
    control_port: int | None = 8089
    #: Bearer token every state-changing control call must carry (DESIGN.md §6); None: loopback only.
    control_token: str | None = field(default=None, repr=False)
    output: Path | None = None
    quiet: bool = False
    linger: float = 0.0
    slo_p99_ms: float | None = None
    min_success_rate: float | None = None
    #: Pin generator process ``i`` to ``worker_cpus[i % len]`` (the parent stays unpinned).
    worker_cpus: tuple[int, ...] = ()
    #: ``schedule`` (send ``stages``) or ``capacity`` (search the highest rate meeting the SLO).
    mode: str = "schedule"
    #: Capacity mode: the search's bounds, each probe's length (s) and the bracket's relative width.
    min_rps: float = _CAPACITY_DEFAULTS.min_rps
    max_rps: float = _CAPACITY_DEFAULTS.max_rps
    probe_duration: float = 10.0
    precision: float = _CAPACITY_DEFAULTS.precision
    #: Capacity mode: discarded sending before each probe's windows (``None``: one window), the
    #: windows' agreement needed (relative) and the most windows a probe may take.
    warmup: float | None = None
    tolerance: float = _CAPACITY_DEFAULTS.tolerance
    max_windows: int = _CAPACITY_DEFAULTS.max_windows
    #: Closed loop: each client's pause between a response and its next request, seconds.
    think_time: float = 0.0
    #: Stop after this many requests (offered: sent + dropped) in total; ``None``: no limit.
    requests: int | None = None
    #: Images per request (``--protocol v2``: one BYTES tensor of shape [batch_size]).
    batch_size: int = 1
    #: The target's pods' Prometheus ``/metrics`` URLs, scraped once per record for the server's
    #: resources (replaced at run time by ``POST /api/server-metrics``).
    server_metrics: tuple[str, ...] = ()

    @property
    def window_records(self) -> int:
        """How many records the window aggregates span."""
        return max(1, round(self.window / self.interval))

    @property
    def closed(self) -> bool:
        """Whether the schedule is closed loop (clients, not rates)."""
        return is_closed(self.stages)


def parse_target(url: str, *, resolve: bool = True) -> Target:
    """Validate an ``http(s)://host[:port]/path`` URL and resolve its host once, up front."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"invalid URL {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"invalid URL {url!r}: expected http://host[:port]/path or https://...")
    host = parts.hostname
    port = port or (443 if parts.scheme == "https" else 80)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    address = host
    if resolve:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise ConfigError(f"cannot resolve host {host!r} of URL {url!r}: {exc}") from None
        address = str(infos[0][4][0])
    return Target(parts.scheme, host, port, path, address)


def load_schedule(path: Path) -> Schedule:
    """Read a YAML or JSON schedule file (a list of stages, or ``{stages, loop}``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read --schedule {str(path)!r}: {exc.strerror}") from None
    try:
        data: Any = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"malformed --schedule {str(path)!r}: {first}") from None
    try:
        return Schedule.from_data(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "schedule"
        raise ConfigError(f"malformed --schedule {str(path)!r}: {where}: {err['msg']}") from None


def duration_arg(name: str, value: str | float | None, *, positive: bool = True) -> float | None:
    """Parse a duration flag; ``positive`` refuses zero."""
    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    if positive and seconds <= 0:
        raise ConfigError(f"{name} must be > 0, got {value!r}")
    return seconds


def build_config(args: dict[str, Any], *, resolve: bool = True) -> LoadgenConfig:
    """Validate parsed flags (names as argparse ``dest``) into a :class:`LoadgenConfig`."""
    url = args.get("url")
    if not url:
        raise ConfigError("missing URL (positional argument or KINFER_LOADGEN_URL)")
    target = parse_target(url, resolve=resolve)

    rps, schedule_file, concurrency = args.get("rps"), args.get("schedule"), args.get("concurrency")
    given = [flag for flag, v in (("--rps", rps), ("--schedule", schedule_file), ("--concurrency", concurrency))
             if v is not None]  # fmt: skip
    if len(given) > 1:
        raise ConfigError(f"give one of --rps, --schedule or --concurrency, not {' and '.join(given)}")
    duration = duration_arg("--duration", args.get("duration"))
    requests = args.get("requests")
    if requests is not None and requests < 1:
        raise ConfigError(f"--requests must be >= 1, got {requests!r}")
    # a request count without a duration runs until the count is reached
    open_end = math.inf if requests is not None else DEFAULT_DURATION_S
    mode = args.get("mode") or "schedule"
    capacity = capacity_args(args, mode)
    if capacity is not None:
        if rps is not None or schedule_file is not None or duration is not None or concurrency is not None:
            raise ConfigError(
                "--mode capacity chooses the rates itself: drop --rps/--schedule/--duration/--concurrency"
            )
        if requests is not None:
            raise ConfigError("--requests does not apply to --mode capacity (each probe decides its length)")
        if args.get("slo_p99_ms") is None and args.get("min_success_rate") is None:
            raise ConfigError("--mode capacity needs an SLO: --slo-p99-ms X and/or --min-success-rate R")
        end = capacity["probe_duration"]
        stages, loop = [Stage(rps=capacity["min_rps"], duration=f"{end:.6f}s")], False
    elif schedule_file is not None:
        schedule = load_schedule(Path(schedule_file))
        stages, loop = schedule.stages, schedule.loop
        end = duration if duration is not None else math.inf if loop else schedule.duration_s
    elif concurrency is not None:
        if not 1 <= concurrency <= MAX_CONCURRENCY:
            raise ConfigError(f"--concurrency must be 1..{MAX_CONCURRENCY}, got {concurrency!r}")
        end = duration if duration is not None else open_end
        stage_s = end if math.isfinite(end) else 365 * 86400.0
        stages, loop = [Stage(concurrency=concurrency, duration=f"{stage_s:.6f}s")], False
    else:
        if rps is None:
            raise ConfigError("give a rate: --rps N or --schedule FILE")
        if not math.isfinite(rps) or rps < 0:
            raise ConfigError(f"--rps must be a number >= 0, got {rps!r}")
        end = duration if duration is not None else open_end
        stage_s = end if math.isfinite(end) else 365 * 86400.0
        stages, loop = [Stage(rps=rps, duration=f"{stage_s:.6f}s")], False
    closed = is_closed(stages)
    think = duration_arg("--think-time", args.get("think_time"), positive=False)
    if think is not None and not closed:
        raise ConfigError("--think-time needs a closed loop: --concurrency N or a schedule of {concurrency, duration}")

    try:
        payload = PayloadSpec.parse(args.get("payload") or "none")
    except PayloadError as exc:
        raise ConfigError(str(exc)) from None
    protocol = Protocol(args.get("protocol") or "raw")
    method = (args.get("method") or ("GET" if payload.kind == "none" else "POST")).upper()
    if protocol is Protocol.V2 and method != "POST":
        raise ConfigError(f"--protocol v2 sends POST requests, not --method {method}")
    input_name = args.get("input_name") or "input"
    batch_size = args.get("batch_size") or 1
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ConfigError(f"--batch-size must be 1..{MAX_BATCH_SIZE}, got {batch_size!r}")
    if batch_size > 1 and protocol is not Protocol.V2:
        raise ConfigError(f"--batch-size {batch_size} needs --protocol v2 (one BYTES tensor of shape [N])")
    try:
        load_bodies(payload, protocol, input_name, batch_size)
    except PayloadError as exc:
        raise ConfigError(str(exc)) from None

    timeout_ms = args.get("timeout_ms")
    timeout = 10.0 if timeout_ms is None else timeout_ms / 1000.0
    if not timeout > 0:
        raise ConfigError(f"--timeout-ms must be > 0, got {timeout_ms!r}")
    positive_ints = {"--max-in-flight": "max_in_flight", "--processes": "processes"}
    for flag, key in positive_ints.items():
        if args.get(key) is not None and args[key] < 1:
            raise ConfigError(f"{flag} must be >= 1, got {args[key]!r}")
    control_token, control_host = control_args(args.get("control_token"), args.get("control_host"))
    port = args.get("control_port")
    if port is not None and not -1 <= port <= 65535:
        raise ConfigError(f"--control-port must be 0..65535 (or -1 for none), got {port!r}")
    rate = args.get("min_success_rate")
    if rate is not None and not 0 <= rate <= 1:
        raise ConfigError(f"--min-success-rate must be between 0 and 1, got {rate!r}")
    slo_p99 = args.get("slo_p99_ms")
    if slo_p99 is not None and not slo_p99 > 0:
        raise ConfigError(f"--slo-p99-ms must be > 0, got {slo_p99!r}")
    output = args.get("output")
    worker_cpus = parse_cpus(args.get("worker_cpus"))
    try:
        server_metrics = tuple(validate_urls(args.get("server_metrics") or []))
    except ValueError as exc:
        raise ConfigError(f"--server-metrics: {exc}") from None

    return LoadgenConfig(
        url=url,
        target=target,
        stages=list(stages),
        loop=loop,
        end=end,
        arrival=ArrivalKind(args.get("arrival") or "poisson"),
        seed=args.get("seed"),
        method=method,
        payload=payload,
        protocol=protocol,
        input_name=input_name,
        timeout=timeout,
        max_in_flight=args.get("max_in_flight") or 1000,
        window=duration_arg("--window", args.get("window")) or 60.0,
        interval=duration_arg("--interval", args.get("interval")) or 1.0,
        processes=args.get("processes") or 1,
        control_host=control_host,
        control_token=control_token,
        control_port=None if port == -1 else (8089 if port is None else port),
        output=Path(output) if output else None,
        quiet=bool(args.get("quiet")),
        linger=duration_arg("--linger", args.get("linger"), positive=False) or 0.0,
        slo_p99_ms=slo_p99,
        min_success_rate=rate,
        worker_cpus=worker_cpus,
        mode=mode,
        think_time=think or 0.0,
        requests=requests,
        batch_size=batch_size,
        server_metrics=server_metrics,
        **(capacity or {}),
    )


#: Characters a control token may use (it travels in an HTTP header and a query string).
_TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "-._~+/=")
MIN_TOKEN_LENGTH = 16


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is only reachable from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def control_args(token: str | None, host: str | None) -> tuple[str | None, str]:
    """The control API's token and bind address: without a token it listens on loopback only, and a
    non-loopback ``--control-host`` without one is refused (anyone who reaches it could steer the run)."""
    token = token or None  # an empty KINFER_LOADGEN_CONTROL_TOKEN is no token
    if token is not None and (len(token) < MIN_TOKEN_LENGTH or not set(token) <= _TOKEN_CHARS):
        raise ConfigError(
            f"--control-token must be at least {MIN_TOKEN_LENGTH} characters of A-Z a-z 0-9 - . _ ~ + / = "
            f"(got {len(token)} characters)"
        )
    if host is None:
        return token, "0.0.0.0" if token is not None else "127.0.0.1"
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"--control-host {host} would let anyone who reaches it change or stop the run: set --control-token "
            "(or KINFER_LOADGEN_CONTROL_TOKEN), or bind a loopback address such as 127.0.0.1"
        )
    return token, host


def capacity_args(args: dict[str, Any], mode: str) -> dict[str, Any] | None:
    """The capacity search's settings (``None`` in schedule mode, where giving any is an error)."""
    flags = {"--min-rps": "min_rps", "--max-rps": "max_rps", "--probe-duration": "probe_duration",
             "--precision": "precision", "--warmup": "warmup", "--tolerance": "tolerance",
             "--max-windows": "max_windows"}  # fmt: skip
    if mode != "capacity":
        given = [flag for flag, key in flags.items() if args.get(key) is not None]
        if given:
            raise ConfigError(f"{given[0]} needs --mode capacity")
        return None
    d = _CAPACITY_DEFAULTS
    lo = d.min_rps if args.get("min_rps") is None else args["min_rps"]
    hi = d.max_rps if args.get("max_rps") is None else args["max_rps"]
    for flag, value in (("--min-rps", lo), ("--max-rps", hi)):
        if not math.isfinite(value) or not 0 < value <= MAX_CAPACITY_RPS:
            raise ConfigError(f"{flag} must be > 0 and <= {MAX_CAPACITY_RPS:g}, got {value!r}")
    if lo > hi:
        raise ConfigError(f"--min-rps {lo:g} exceeds --max-rps {hi:g}")
    precision = d.precision if args.get("precision") is None else args["precision"]
    if not 0 < precision < 1:
        raise ConfigError(f"--precision must be between 0 and 1 (exclusive), got {precision!r}")
    probe = duration_arg("--probe-duration", args.get("probe_duration") or d.probe_duration)
    assert probe is not None
    warmup = duration_arg("--warmup", args.get("warmup"), positive=False)
    tolerance = d.tolerance if args.get("tolerance") is None else args["tolerance"]
    if not 0 < tolerance < 1:
        raise ConfigError(f"--tolerance must be between 0 and 1 (exclusive), got {tolerance!r}")
    max_windows = d.max_windows if args.get("max_windows") is None else args["max_windows"]
    if not 3 <= max_windows <= 100:
        raise ConfigError(f"--max-windows must be 3..100, got {max_windows!r}")
    return {"min_rps": float(lo), "max_rps": float(hi), "probe_duration": probe, "precision": float(precision),
            "warmup": warmup, "tolerance": float(tolerance), "max_windows": int(max_windows)}  # fmt: skip


def parse_cpus(text: str | None) -> tuple[int, ...]:
    """``"2,3"`` or ``"2-5"`` -> CPU numbers this machine lets us use."""
    if not text:
        return ()
    cpus: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            cpus.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ConfigError(f"invalid --worker-cpus {text!r}: use a list like 2,3 or 2-5") from None
    count = os.cpu_count() or 1
    if not cpus or max(cpus) >= count:
        raise ConfigError(f"--worker-cpus {text!r}: this machine has CPUs 0-{count - 1}")
    return tuple(cpus)
