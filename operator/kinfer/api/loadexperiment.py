"""The LoadExperiment resource: a load schedule (open loop: rates; closed loop: clients) run against a
target, with live status."""

from __future__ import annotations

import math
from typing import Literal, Self

from pydantic import ConfigDict, Field, model_validator

from kinfer.api.common import Condition, Duration, Model, Placement, Resources, StatusModel, seconds
from kinfer.api.schedule import Stage, check_one_kind, is_closed, total_duration

Arrival = Literal["poisson", "uniform", "burst"]
Protocol = Literal["raw", "v2"]
Method = Literal["GET", "POST"]
Mode = Literal["schedule", "capacity"]

DEFAULT_LOADGEN_IMAGE = "kinfer/loadgen:0.1.0"
DEFAULT_CONTROL_PORT = 8089
PAYLOAD_PATTERN = r"^(none|dataset:.+|file:.+)$"
#: Most images one request may carry.
MAX_BATCH_SIZE = 1024


class Target(Model):
    """What to load: an InferenceService of the namespace, or any URL."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": ["service"]}, {"required": ["url"]}]})

    service: str | None = Field(
        default=None, description="InferenceService name in this namespace (waits until it is Ready)."
    )
    url: str | None = Field(
        default=None, pattern=r"^https?://[^/\s]+", description="Base URL when not targeting a service."
    )
    path: str = Field(default="/gpu", pattern=r"^/", description="Request path appended to the base.")
    method: Method = Field(default="GET", description="HTTP method.")
    payload: str = Field(
        default="none",
        pattern=PAYLOAD_PATTERN,
        description="Request body: none, dataset:DIR (a random image of DIR each time) or file:PATH.",
    )
    protocol: Protocol = Field(default="raw", description="raw bytes or v2 (Open Inference Protocol JSON).")
    timeout_ms: int = Field(default=10_000, ge=1, le=600_000, description="Per-request timeout in ms.")
    batch_size: int = Field(
        default=1,
        ge=1,
        le=MAX_BATCH_SIZE,
        description="Images per request (protocol v2: one BYTES tensor of shape [batchSize]).",
    )

    @model_validator(mode="after")
    def _service_or_url(self) -> Self:
        if (self.service is None) == (self.url is None):
            raise ValueError("target needs exactly one of 'service' or 'url'")
        if self.batch_size > 1 and (self.protocol != "v2" or self.payload == "none"):
            raise ValueError("target.batchSize > 1 needs protocol v2 and a payload (dataset:DIR or file:PATH)")
        return self


class SLO(Model):
    """Service-level objective the experiment is judged against."""

    p99_ms: float | None = Field(default=None, gt=0, description="Highest acceptable p99 latency, ms.")
    min_success_rate: float | None = Field(
        default=None, ge=0, le=1, description="Lowest acceptable completed/sent ratio (0..1)."
    )


class ResultsSpec(Model):
    """Where the generator writes its results directory (the operator keeps a copy either way)."""

    volume_claim: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="An existing PersistentVolumeClaim mounted at the generator's results directory "
        "(instead of an emptyDir).",
    )


class CapacitySearch(Model):
    """Capacity mode: probe rates to find the highest one meeting the SLO."""

    min_rps: float = Field(default=1.0, gt=0, description="Lowest rate probed.")
    max_rps: float = Field(default=1000.0, gt=0, description="Highest rate probed.")
    probe_duration: Duration = Field(
        default="10s",
        description="A probe's measurement: 3 windows of probeDuration/3 after the warm-up, more (up to "
        "maxWindows) while they disagree.",
    )
    precision: float = Field(
        default=0.05, gt=0, lt=1, description="Stop when the bracket is narrower than this fraction."
    )
    warmup: Duration | None = Field(
        default=None, description="Sending before a probe's measurement starts, discarded (default: one window)."
    )
    tolerance: float = Field(
        default=0.1,
        gt=0,
        lt=1,
        description="A probe is stable when its last 3 windows' p99 and throughput lie within this "
        "fraction of their mean.",
    )
    max_windows: int = Field(
        default=10, ge=3, le=100, description="Most measurement windows per probe; unstable after that."
    )

    def max_duration_s(self) -> float:
        """An upper bound on the search's length: doubling from minRPS to maxRPS, then bisecting to
        the precision, one probe (warm-up, at most maxWindows windows of probeDuration/3, a pause) each."""
        growth = math.ceil(math.log2(self.max_rps / self.min_rps)) + 1
        bisection = math.ceil(math.log2(1 / self.precision)) + 1
        window = seconds(self.probe_duration) / 3
        warmup = window if self.warmup is None else seconds(self.warmup)
        return (growth + bisection) * (warmup + self.max_windows * (window + 1.0) + 2.0)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min_rps > self.max_rps:
            raise ValueError("capacity.minRPS must not exceed capacity.maxRPS")
        if seconds(self.probe_duration) <= 0:
            raise ValueError("capacity.probeDuration must be > 0")
        return self

    @property
    def warmup_s(self) -> float | None:
        """Warm-up in seconds (``None``: one window)."""
        return None if self.warmup is None else seconds(self.warmup)


class LoadExperimentSpec(Placement):
    """Desired state of a LoadExperiment."""

    target: Target = Field(description="Where requests go.")
    arrival: Arrival = Field(
        default="poisson", description="poisson (exponential gaps), uniform, or burst (the seed's)."
    )
    seed: int | None = Field(default=None, ge=0, description="Random seed for arrivals and payloads.")
    schedule: list[Stage] = Field(
        default_factory=list,
        description="Stages {rps, duration} or {rampTo, duration} (open loop), or {concurrency, duration} "
        "(closed loop), run in order; all-rate or all-concurrency.",
    )
    loop: bool = Field(default=False, description="Repeat the schedule until stopped.")
    think_time: Duration | None = Field(
        default=None, description="Closed loop: pause of each client between a response and its next request."
    )
    requests: int | None = Field(
        default=None, ge=1, description="Stop after this many requests in total (or at the schedule's end)."
    )
    intensity: float | None = Field(
        default=None,
        ge=0,
        le=1_000_000,
        description="Live override (requests/s; clients in a closed-loop stage); remove to resume.",
    )
    window_size: int = Field(default=60, ge=1, le=3600, description="Records in the moving window.")
    record_interval: Duration = Field(default="1s", description="Time between records.")
    max_in_flight: int = Field(
        default=1000, ge=1, le=1_000_000, description="Requests beyond this are counted as dropped."
    )
    parallelism: int = Field(default=1, ge=1, le=64, description="Generator pods; the rate is split.")
    slo: SLO | None = Field(default=None, description="Objective for the SLOMet condition.")
    mode: Mode = Field(default="schedule", description="schedule, or capacity (search the highest rate).")
    capacity: CapacitySearch | None = Field(default=None, description="Capacity-mode search settings.")
    stop: bool = Field(default=False, description="true ends the run gracefully, keeping results.")
    image: str = Field(default=DEFAULT_LOADGEN_IMAGE, min_length=1, description="Load-generator image.")
    control_port: int = Field(
        default=DEFAULT_CONTROL_PORT, ge=1, le=65535, description="Generator control API port."
    )
    resources: Resources | None = Field(default=None, description="Generator CPU/memory.")
    results: ResultsSpec | None = Field(
        default=None, description="Where the generator's own results directory lives (results.volumeClaim)."
    )

    @model_validator(mode="after")
    def _runnable(self) -> Self:
        interval = seconds(self.record_interval)
        if interval <= 0:
            raise ValueError("recordInterval must be > 0")
        if self.mode == "schedule" and not self.schedule:
            raise ValueError("schedule needs at least one stage (or mode: capacity)")
        if self.mode == "capacity" and self.slo is None:
            raise ValueError("mode capacity needs an slo to search against")
        if self.mode == "capacity" and self.parallelism > 1:
            raise ValueError("mode capacity runs one generator: parallelism must be 1")
        check_one_kind(self.schedule, "schedule")
        closed = is_closed(self.schedule)
        if closed and self.mode == "capacity":
            raise ValueError("schedule[0].concurrency: mode capacity searches a rate (open loop), not clients")
        if self.think_time is not None and not closed:
            raise ValueError("thinkTime needs a closed-loop schedule (stages {concurrency, duration})")
        if self.think_time is not None and seconds(self.think_time) < 0:
            raise ValueError("thinkTime must be >= 0")
        if closed and self.parallelism > 1:
            for index, stage in enumerate(self.schedule):
                if (stage.concurrency or 0) % self.parallelism:
                    raise ValueError(
                        f"schedule[{index}].concurrency {stage.concurrency} must be a multiple of "
                        f"parallelism {self.parallelism} (each generator pod runs its share of the clients)"
                    )
        return self

    @property
    def closed(self) -> bool:
        """Whether the schedule is closed loop (stages of ``concurrency``)."""
        return is_closed(self.schedule)

    @property
    def think_time_s(self) -> float:
        """Think time in seconds (0 when unset)."""
        return 0.0 if self.think_time is None else seconds(self.think_time)

    @property
    def record_interval_s(self) -> float:
        """Record interval in seconds."""
        return seconds(self.record_interval)

    @property
    def duration_s(self) -> float:
        """One pass through the schedule, in seconds (capacity mode: the search's upper bound)."""
        if self.mode == "capacity":
            return (self.capacity or CapacitySearch()).max_duration_s()
        return total_duration(self.schedule)


ExperimentPhase = Literal["Pending", "WaitingForTarget", "Running", "Succeeded", "Failed", "Stopped"]


class StageRef(StatusModel):
    """The stage being run now."""

    index: int = Field(description="0-based index into spec.schedule.")
    rps: float | None = Field(default=None, description="The stage's rate now (ramps change it).")
    concurrency: int | None = Field(default=None, description="Closed loop: the stage's clients.")
    ends_at: str | None = Field(default=None, description="RFC 3339 time the stage ends.")


class Record(StatusModel):
    """One record interval, as DESIGN.md §4 names it, plus the window aggregates at that time."""

    t: float = Field(description="Seconds since the start.")
    target_rps: float | None = Field(default=None, description="Offered rate set-point.")
    real_rps: float = Field(default=0, description="Requests actually sent in the interval (per s).")
    real_qps: float = Field(default=0, description="Responses completed in the interval (per s).")
    errors: int = Field(default=0, description="Failed requests in the interval.")
    dropped: int = Field(default=0, description="Requests not sent because maxInFlight was reached.")
    p50_ms: float | None = Field(default=None, description="Median latency from the scheduled time.")
    p99_ms: float | None = Field(default=None, description="p99 latency from the scheduled time.")
    max_ms: float | None = Field(default=None, description="Largest latency in the interval.")
    avg_rps: float | None = Field(default=None, description="Mean realRPS over the window.")
    avg_qps: float | None = Field(default=None, description="Mean realQPS over the window.")
    service_rate: float | None = Field(default=None, description="avgQPS / avgRPS over the window.")
    avg99th_ms: float | None = Field(default=None, description="Mean of per-record p99 over the window.")
    concurrency: int | None = Field(default=None, description="Closed loop: clients at the record's end.")
    images_per_s: float | None = Field(
        default=None, description="Images completed in the interval (per s): realQPS × batch size."
    )
    server_cpu: float | None = Field(
        default=None, alias="serverCPU", description="The target's CPU use in the interval, cores (all its pods)."
    )
    server_memory_mb: float | None = Field(
        default=None, alias="serverMemoryMB", description="The target's resident memory, MB (all its pods)."
    )
    server_gpu_util: float | None = Field(
        default=None, alias="serverGPUUtil", description="The target's GPU utilization, percent; empty without a GPU."
    )
    server_gpu_memory_mb: float | None = Field(
        default=None, alias="serverGPUMemoryMB", description="The target's GPU memory in use, MB; empty without a GPU."
    )


#: records.csv columns and the record fields of every snapshot, in order (DESIGN.md §9).
RECORD_COLUMNS: tuple[str, ...] = tuple(field.alias or name for name, field in Record.model_fields.items())


class Percentiles(StatusModel):
    """Latency percentiles in milliseconds."""

    p50: float | None = Field(default=None, description="Median, ms.")
    p90: float | None = Field(default=None, description="90th percentile, ms.")
    p99: float | None = Field(default=None, description="99th percentile, ms.")
    p999: float | None = Field(default=None, description="99.9th percentile, ms.")
    max: float | None = Field(default=None, description="Maximum, ms.")
    mean: float | None = Field(default=None, description="Mean, ms.")


class ServerUsage(StatusModel):
    """The target model server's resources (all its pods), read from its /metrics by the generator."""

    cpu: float | None = Field(default=None, description="CPU use, cores (all pods).")
    memory_mb: float | None = Field(default=None, alias="memoryMB", description="Resident memory, MB.")
    gpu_util: float | None = Field(
        default=None, alias="gpuUtil", description="GPU utilization, percent; empty without a GPU."
    )
    gpu_memory_mb: float | None = Field(
        default=None, alias="gpuMemoryMB", description="GPU memory in use, MB; empty without a GPU."
    )


class StageSummary(StatusModel):
    """Per-stage results."""

    index: int = Field(description="Stage index.")
    rps: float | None = Field(default=None, description="Offered rate (end rate for ramps).")
    concurrency: int | None = Field(default=None, description="Closed loop: the stage's clients.")
    duration_s: float | None = Field(default=None, description="Stage length, s.")
    sent: int = Field(default=0, description="Requests sent.")
    completed: int = Field(default=0, description="Responses received without error.")
    errors: int = Field(default=0, description="Failed requests.")
    dropped: int = Field(default=0, description="Dropped at maxInFlight.")
    latency_ms: Percentiles | None = Field(default=None, description="Latency from the scheduled time.")
    service_rate: float | None = Field(default=None, description="completed / sent.")
    requests_per_s: float | None = Field(default=None, description="Throughput: responses per second.")
    images_per_s: float | None = Field(default=None, description="Throughput: images per second.")
    server: ServerUsage | None = Field(default=None, description="The target's mean resources in the stage.")


class CapacityProbe(StatusModel):
    """One probed rate in capacity mode."""

    rps: float = Field(description="Probed rate.")
    p99_ms: float | None = Field(default=None, description="p99 at that rate, ms.")
    service_rate: float | None = Field(default=None, description="completed / sent at that rate.")
    samples: int | None = Field(default=None, description="Responses the verdict was judged on.")
    stable: bool | None = Field(default=None, description="Whether the last 3 windows agreed.")


class CapacityResult(StatusModel):
    """The highest rate found meeting the SLO."""

    rps: float | None = Field(default=None, description="Highest rate meeting the SLO.")
    p99_ms: float | None = Field(default=None, description="p99 at that rate, ms.")
    probes: list[CapacityProbe] | None = Field(default=None, description="Every probe, in order.")


class Results(StatusModel):
    """Where the full results are."""

    config_map: str | None = Field(default=None, description="ConfigMap holding summary.json.")
    path: str | None = Field(default=None, description="Results directory in the generator pod.")
    job: str | None = Field(default=None, description="The generator Job.")


class GeneratorCoverage(Model):
    """How many of the experiment's generator pods the status is built from."""

    expected: int = Field(description="Generator pods of the run (spec.parallelism).")
    reporting: int = Field(description="Pods whose numbers the status holds (running, or finished and read).")


class LoadExperimentStatus(StatusModel):
    """Observed state of a LoadExperiment (the live numbers `kubectl get lexp -w` shows)."""

    phase: ExperimentPhase | None = Field(default=None, description="Where the experiment is.")
    started_at: str | None = Field(default=None, description="RFC 3339 start time.")
    target_url: str | None = Field(default=None, description="Resolved URL requests go to.")
    stage: StageRef | None = Field(default=None, description="Current stage.")
    target_rps: float | None = Field(default=None, description="Offered rate now (schedule or intensity).")
    concurrency: int | None = Field(default=None, description="Closed loop: clients now.")
    live: Record | None = Field(default=None, description="The last record.")
    avg_rps: float | None = Field(default=None, description="Mean sent rate over the window.")
    avg_qps: float | None = Field(default=None, description="Mean completed rate over the window.")
    service_rate: float | None = Field(default=None, description="avgQPS / avgRPS over the window.")
    service_rate_percent: float | None = Field(default=None, description="serviceRate × 100 (SR column).")
    avg99th_ms: float | None = Field(default=None, description="Mean per-record p99 over the window.")
    sent: int | None = Field(default=None, description="Requests sent so far.")
    completed: int | None = Field(default=None, description="Responses so far.")
    errors: int | None = Field(default=None, description="Errors so far.")
    dropped: int | None = Field(default=None, description="Dropped so far.")
    latency_ms: Percentiles | None = Field(default=None, description="Whole-run latency percentiles.")
    stages: list[StageSummary] | None = Field(default=None, description="Per-stage summaries.")
    capacity: CapacityResult | None = Field(default=None, description="Capacity-mode result.")
    results: Results | None = Field(default=None, description="Where the full series is.")
    generators: GeneratorCoverage | None = Field(
        default=None, description="Generators covered: live numbers and the phase wait until all report."
    )
    conditions: list[Condition] | None = Field(default=None, description="SLOMet, Progressing, ...")
    observed_generation: int | None = Field(default=None, description="Generation last acted on.")
