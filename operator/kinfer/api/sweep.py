"""The Sweep resource: one InferenceService template and one LoadExperiment template, run once per
point of a parameter matrix, one point at a time (DESIGN.md §3).

Besides the models, this module holds the study's pure logic, shared by the operator and local mode:

- :func:`points` expands the matrix into points: the cross product of the value lists, **the first
  path varying slowest** (like nested loops written in the matrix's order, and like
  ``itertools.product``), each path applied to a deep copy of the templates and the result validated
  through the InferenceService and LoadExperiment models, with errors naming the path and the value;
- :func:`point_row` turns a finished LoadExperiment's status (and its ``summary.json`` when at hand)
  into the point's row of ``status.points``;
- :func:`best` picks the best row for the objective.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Self

from pydantic import ConfigDict, Field, JsonValue, ValidationError, WithJsonSchema, model_validator

from kinfer.api.common import Condition, Duration, Model, StatusModel, seconds
from kinfer.api.inferenceservice import InferenceServiceSpec
from kinfer.api.loadexperiment import LoadExperimentSpec, ServerUsage, Target

#: Most points one Sweep may have: the point index goes into object names (``<sweep>-p<index>``), so
#: the Sweep's name rule leaves room for this many digits.
MAX_POINTS = 1000
#: Digits of the largest point index.
INDEX_DIGITS = len(str(MAX_POINTS - 1))
#: How a point's objects are named from the Sweep's name: ``<sweep>-p<index>``.
POINT_SUFFIX = "-p"

Objective = Literal["capacity", "throughput", "p99"]
SweepPhase = Literal["Pending", "Running", "Succeeded", "Failed"]

#: A value of the matrix: any JSON value (a number, a quantity string, a boolean, an object).
AnyValue = Annotated[JsonValue, WithJsonSchema({"x-kubernetes-preserve-unknown-fields": True})]
#: ``service.`` or ``experiment.``, then dotted field names (wire spelling), each with optional ``[i]``.
PATH_PATTERN = r"^(service|experiment)(\.[A-Za-z][A-Za-z0-9]*(\[[0-9]+\])*)+$"
_SEGMENT = re.compile(r"([A-Za-z][A-Za-z0-9]*)((?:\[[0-9]+\])*)")
_INDEX = re.compile(r"\[([0-9]+)\]")


class SweepError(ValueError):
    """A Sweep that cannot be expanded; the message names the matrix path and value."""


class Axis(Model):
    """One dimension of the matrix: a field path and the values it takes."""

    path: str = Field(
        pattern=PATH_PATTERN,
        max_length=253,
        description="Dotted field path under service. or experiment., as spelt in a manifest "
        "(service.workers, service.resources.limits.cpu, experiment.schedule[0].concurrency).",
    )
    values: list[AnyValue] = Field(
        min_length=1, max_length=MAX_POINTS, description="Values the field takes, in order."
    )


class SweepTarget(Target):
    """The experiment's target in a Sweep: the point's InferenceService unless ``url`` is given."""

    model_config = ConfigDict(json_schema_extra=None)

    @model_validator(mode="after")
    def _service_or_url(self) -> Self:
        if self.service is not None:
            raise ValueError(
                "target.service is set by the Sweep (each point's InferenceService): leave it out, "
                "or give target.url to load something else"
            )
        if self.batch_size > 1 and (self.protocol != "v2" or self.payload == "none"):
            raise ValueError("target.batchSize > 1 needs protocol v2 and a payload (dataset:DIR or file:PATH)")
        return self


class ExperimentTemplate(LoadExperimentSpec):
    """A LoadExperiment spec whose target defaults to the point's InferenceService."""

    target: SweepTarget = Field(
        default_factory=SweepTarget,
        description="Where requests go: the point's InferenceService (path, method, payload ...), or url.",
    )


class SweepSpec(Model):
    """Desired state of a Sweep."""

    service: InferenceServiceSpec = Field(description="InferenceService spec of every point (the template).")
    experiment: ExperimentTemplate = Field(
        description="LoadExperiment spec of every point; its target is the point's InferenceService "
        "unless it names a url."
    )
    matrix: list[Axis] = Field(
        min_length=1,
        max_length=16,
        description="Parameters to vary; points are the cross product, the first path varying slowest.",
    )
    objective: Objective | None = Field(
        default=None,
        description="What best means: capacity (highest rate meeting the SLO; the default in mode "
        "capacity), throughput (completed/s of points meeting the SLO; the default otherwise) or p99 "
        "(lowest p99).",
    )
    cooldown: Duration = Field(
        default="0s", description="Pause after a point's InferenceService is gone, before the next point."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        paths = [axis.path for axis in self.matrix]
        dupes = sorted({p for p in paths if paths.count(p) > 1})
        if dupes:
            raise ValueError(f"matrix: path(s) {', '.join(dupes)} given twice")
        total = math.prod(len(axis.values) for axis in self.matrix)
        if total > MAX_POINTS:
            raise ValueError(f"matrix: {total} points, at most {MAX_POINTS} (names carry the point index)")
        if self.experiment.loop and self.experiment.requests is None:
            raise ValueError("experiment.loop needs experiment.requests in a Sweep: every point must end")
        if self.objective == "capacity" and self.experiment.mode != "capacity":
            raise ValueError("objective capacity needs experiment.mode capacity (it reads the capacity found)")
        return self

    @property
    def objective_or_default(self) -> Objective:
        """The objective, defaulted from the experiment's mode."""
        if self.objective is not None:
            return self.objective
        return "capacity" if self.experiment.mode == "capacity" else "throughput"

    @property
    def total(self) -> int:
        """Number of points."""
        return math.prod(len(axis.values) for axis in self.matrix)

    @property
    def cooldown_s(self) -> float:
        """Cooldown in seconds."""
        return seconds(self.cooldown)


Parameters = Annotated[
    dict[str, AnyValue],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]


class PointRef(StatusModel):
    """The point being run now."""

    index: int = Field(description="0-based point index.")
    parameters: Parameters = Field(default_factory=dict, description="Matrix path -> value of the point.")


class PointLatency(StatusModel):
    """Whole-run latency of a point, ms."""

    p50: float | None = Field(default=None, description="Median, ms.")
    p99: float | None = Field(default=None, description="99th percentile, ms.")
    mean: float | None = Field(default=None, description="Mean (the seeds' average response time), ms.")


PointPhase = Literal["Running", "Succeeded", "Failed", "Stopped"]


class PointRow(StatusModel):
    """One point's results (a row of the comparison table)."""

    index: int = Field(description="0-based point index.")
    parameters: Parameters = Field(default_factory=dict, description="Matrix path -> value of the point.")
    experiment: str = Field(description="The point's LoadExperiment (and InferenceService) name.")
    phase: PointPhase = Field(description="Running, Succeeded, Failed or Stopped.")
    message: str | None = Field(default=None, description="Why the point failed, when it did.")
    started_at: str | None = Field(default=None, description="RFC 3339 time the point's objects were created.")
    finished_at: str | None = Field(default=None, description="RFC 3339 time the point's experiment ended.")
    achieved_rps: float | None = Field(
        default=None, alias="achievedRPS", description="Requests sent per second over the run."
    )
    throughput: float | None = Field(default=None, description="Responses completed per second over the run.")
    latency_ms: PointLatency | None = Field(default=None, description="Whole-run p50 and p99, ms.")
    capacity: float | None = Field(default=None, description="Capacity mode: highest rate meeting the SLO.")
    slo_met: bool | None = Field(default=None, description="The experiment's SLO verdict (empty without SLO).")
    server: ServerUsage | None = Field(default=None, description="Model server resources during the run.")


class Best(StatusModel):
    """The best point for the objective."""

    index: int = Field(description="0-based point index.")
    parameters: Parameters = Field(default_factory=dict, description="Matrix path -> value of the point.")
    value: float = Field(description="The objective's value at that point (requests/s, or ms for p99).")


class SweepStatus(StatusModel):
    """Observed state of a Sweep (``kubectl get sweep -w`` shows the progress)."""

    phase: SweepPhase | None = Field(default=None, description="Pending, Running, Succeeded or Failed.")
    objective: Objective | None = Field(default=None, description="The objective best is judged by.")
    total: int | None = Field(default=None, description="Number of points.")
    done: int | None = Field(default=None, description="Points finished (succeeded or failed).")
    current: PointRef | None = Field(default=None, description="The point running now.")
    points: list[PointRow] | None = Field(default=None, description="One row per point run, in order.")
    best: Best | None = Field(default=None, description="The best point so far for the objective.")
    conditions: list[Condition] | None = Field(default=None, description="Complete, Progressing, Failed.")
    observed_generation: int | None = Field(default=None, description="Generation last acted on.")


# --- expansion ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """One point of the matrix: its index, parameters and the two validated specs."""

    index: int
    name: str
    parameters: dict[str, Any]
    service: InferenceServiceSpec
    experiment: LoadExperimentSpec


def point_name(sweep: str, index: int) -> str:
    """``<sweep>-p<index>``: the point's InferenceService and LoadExperiment."""
    return f"{sweep}{POINT_SUFFIX}{index}"


def _steps(path: str) -> list[str | int]:
    """``experiment.schedule[0].concurrency`` -> ``["schedule", 0, "concurrency"]`` (root dropped)."""
    steps: list[str | int] = []
    for segment in path.split(".")[1:]:
        match = _SEGMENT.fullmatch(segment)
        if match is None:
            raise SweepError(f"matrix path {path!r}: {segment!r} is not a field name with optional [index]")
        steps.append(match.group(1))
        steps.extend(int(i) for i in _INDEX.findall(match.group(2)))
    return steps


def apply_path(doc: dict[str, Any], path: str, value: Any) -> None:
    """Set ``path`` (without its root) to ``value`` in ``doc``, creating missing objects on the way.

    A missing list or an index past a list's end is an error: a sweep varies what exists.
    """
    steps = _steps(path)
    node: Any = doc
    for depth, (step, nxt) in enumerate(itertools.pairwise([*steps, None])):
        where = path.split(".")[0] + "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in steps[: depth + 1])
        if isinstance(step, int):
            if not isinstance(node, list):
                raise SweepError(f"matrix path {path!r}: {where} indexes something that is not a list")
            if step >= len(node):
                raise SweepError(f"matrix path {path!r}: index {step} out of range ({len(node)} item(s) at {where})")
        elif not isinstance(node, dict):
            raise SweepError(f"matrix path {path!r}: {where} is inside something that is not an object")
        if nxt is None:
            node[step] = copy.deepcopy(value)
            return
        child = node[step] if isinstance(step, int) else node.get(step)
        if child is None:
            if isinstance(nxt, int):
                raise SweepError(f"matrix path {path!r}: {where} is not set in the template (no list to index)")
            child = node[step] = {}
        node = child


def _validation_message(exc: ValidationError, root: str) -> str:
    parts = []
    for err in exc.errors():
        where = root + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        parts.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


def points(sweep: str, spec: SweepSpec) -> list[Point]:
    """Every point of the sweep named ``sweep``, in order (the first matrix path varies slowest).

    Each point's specs are the templates with the point's values applied, validated through the
    InferenceService and LoadExperiment models; the experiment targets the point's InferenceService
    unless the template names a url. Raises :class:`SweepError` naming the path and value that fail.
    """
    service_template = spec.service.wire()
    experiment_template = spec.experiment.wire()
    out: list[Point] = []
    for index, values in enumerate(itertools.product(*(axis.values for axis in spec.matrix))):
        name = point_name(sweep, index)
        docs = {"service": copy.deepcopy(service_template), "experiment": copy.deepcopy(experiment_template)}
        parameters: dict[str, Any] = {}
        for axis, value in zip(spec.matrix, values, strict=True):
            apply_path(docs[axis.path.split(".")[0]], axis.path, value)
            parameters[axis.path] = value
        target = docs["experiment"].setdefault("target", {})
        if isinstance(target, dict) and target.get("url") is None:
            target["service"] = name
        shown = ", ".join(f"{p}={v!r}" for p, v in parameters.items())
        try:
            service = InferenceServiceSpec.model_validate(docs["service"])
        except ValidationError as exc:
            raise SweepError(f"point {index} ({shown}): {_validation_message(exc, 'service')}") from None
        try:
            experiment = LoadExperimentSpec.model_validate(docs["experiment"])
        except ValidationError as exc:
            raise SweepError(f"point {index} ({shown}): {_validation_message(exc, 'experiment')}") from None
        out.append(Point(index, name, parameters, service, experiment))
    return out


# --- results --------------------------------------------------------------------------------------


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _get(doc: Mapping[str, Any] | None, *keys: str) -> Any:
    node: Any = doc
    for key in keys:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def _duration_s(status: Mapping[str, Any]) -> float | None:
    stages = status.get("stages")
    if not isinstance(stages, Sequence):
        return None
    total = sum(_num(_get(s, "durationS")) or 0.0 for s in stages if isinstance(s, Mapping))
    return total or None


def _slo_met(status: Mapping[str, Any], summary: Mapping[str, Any] | None) -> bool | None:
    for condition in status.get("conditions") or []:
        ok = isinstance(condition, Mapping) and condition.get("type") == "SLOMet"
        if ok and condition.get("status") in ("True", "False"):
            return bool(condition.get("status") == "True")
    met = _get(summary, "slo", "met")
    return met if isinstance(met, bool) else None


def _server(status: Mapping[str, Any], summary: Mapping[str, Any] | None) -> dict[str, float] | None:
    """``{cpu, memoryMB, gpuUtil, gpuMemoryMB}`` from the summary's ``server`` object, else the last record's."""
    from_summary = _get(summary, "server")
    live = _get(status, "live")
    pairs = {
        "cpu": (_get(from_summary, "cpu"), _get(live, "serverCPU")),
        "memoryMB": (_get(from_summary, "memoryMB"), _get(live, "serverMemoryMB")),
        "gpuUtil": (_get(from_summary, "gpuUtil"), _get(live, "serverGPUUtil")),
        "gpuMemoryMB": (_get(from_summary, "gpuMemoryMB"), _get(live, "serverGPUMemoryMB")),
    }
    out = {}
    for key, (first, second) in pairs.items():
        value = _num(first) if _num(first) is not None else _num(second)
        if value is not None:
            out[key] = round(value, 3)
    return out or None


def point_row(
    index: int,
    parameters: Mapping[str, Any],
    experiment: str,
    status: Mapping[str, Any],
    summary: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``status.points[]`` row (wire form) of a finished LoadExperiment.

    ``status`` is the LoadExperiment's status; ``summary`` its ``summary.json`` when at hand (the
    generator's own numbers, preferred). Every field is read defensively: what is missing stays empty.
    """
    duration = _num(_get(summary, "durationS")) or _duration_s(status)
    sent, completed = _num(status.get("sent")), _num(status.get("completed"))
    achieved = _num(_get(summary, "achievedRPS"))
    if achieved is None and sent is not None and duration:
        achieved = sent / duration
    throughput = _num(_get(summary, "throughput", "requestsPerS"))
    if throughput is None and completed is not None and duration:
        throughput = completed / duration
    latency = {}
    for q in ("p50", "p99", "mean"):
        value = _num(_get(status, "latencyMs", q))
        value = value if value is not None else _num(_get(summary, "latencyMs", q))
        if value is not None:
            latency[q] = round(value, 3)
    capacity = _num(_get(status, "capacity", "rps"))
    capacity = capacity if capacity is not None else _num(_get(summary, "capacity", "rps"))
    phase = status.get("phase")
    row: dict[str, Any] = {
        "index": index,
        "parameters": dict(parameters),
        "experiment": experiment,
        "phase": phase if phase in ("Succeeded", "Failed", "Stopped") else "Failed",
        "startedAt": status.get("startedAt") if isinstance(status.get("startedAt"), str) else None,
        "achievedRPS": None if achieved is None else round(achieved, 3),
        "throughput": None if throughput is None else round(throughput, 3),
        "latencyMs": latency or None,
        "capacity": None if capacity is None else round(capacity, 3),
        "sloMet": _slo_met(status, summary),
        "server": _server(status, summary),
    }
    if row["phase"] == "Failed":
        row["message"] = _failure_message(status) or f"the experiment ended in phase {phase!r}"
    return {k: v for k, v in row.items() if v is not None}


def _failure_message(status: Mapping[str, Any]) -> str | None:
    for condition in status.get("conditions") or []:
        ok = isinstance(condition, Mapping) and condition.get("type") in ("Failed", "Progressing")
        if ok and condition.get("message"):
            return str(condition["message"])
    return None


def failed_row(index: int, parameters: Mapping[str, Any], experiment: str, message: str) -> dict[str, Any]:
    """The row of a point that could not run (refused, never Ready, ...)."""
    return {
        "index": index,
        "parameters": dict(parameters),
        "experiment": experiment,
        "phase": "Failed",
        "message": message,
    }


def objective_value(row: Mapping[str, Any], objective: Objective) -> float | None:
    """The row's value for the objective, or ``None`` when the row does not qualify.

    capacity: the capacity found; throughput: completed/s, only where the SLO was not missed; p99: the
    whole-run p99 (lower is better). Failed points never qualify.
    """
    if row.get("phase") != "Succeeded":
        return None
    if objective == "capacity":
        return _num(row.get("capacity"))
    if objective == "throughput":
        return None if row.get("sloMet") is False else _num(row.get("throughput"))
    return _num(_get(row, "latencyMs", "p99"))


def best(rows: Sequence[Mapping[str, Any]], objective: Objective) -> dict[str, Any] | None:
    """``{index, parameters, value}`` of the best row for the objective (the earliest on a tie), or
    ``None`` when no row qualifies."""
    scored = [(value, row) for row in rows if (value := objective_value(row, objective)) is not None]
    if not scored:
        return None
    sign = 1.0 if objective == "p99" else -1.0
    value, row = min(scored, key=lambda pair: sign * pair[0])  # min keeps the first of equal keys
    return {"index": row["index"], "parameters": dict(row.get("parameters") or {}), "value": value}
