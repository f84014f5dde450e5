"""The command lines a spec turns into: ``kinfer serve`` for an InferenceService, ``kinfer loadgen``
for a LoadExperiment (DESIGN.md §9).

One mapping for the operator (container args of pods and Jobs) and for ``kinfer run`` (local
processes); they differ only in what is passed in: addresses, file locations, how the rate is shared.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kinfer.api.inferenceservice import KNOWN_MODELS
from kinfer.api.loadexperiment import CapacitySearch
from kinfer.api.resources import InferenceService, LoadExperiment


def fmt_number(value: float) -> str:
    """A number as a command-line argument: ``5`` not ``5.0``, ``0.25`` as is."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _same(path: str) -> str:
    return path


def serve_args(isvc: InferenceService, host: str, port: int, path: Callable[[str], str] = _same) -> list[str]:
    """``kinfer serve ...`` (without the program) for ``isvc`` listening on ``host:port``; ``path``
    maps the spec's file locations (local mode resolves relative ones)."""
    spec, model = isvc.spec, isvc.spec.model
    args = ["serve", "--format", model.format, "--model-name", model.name]
    if model.path:
        args += ["--model", path(model.path)]
    if model.name in KNOWN_MODELS:
        args += ["--known-model", model.name]
    if model.task:
        args += ["--task", model.task]
    if model.inputs:
        args += ["--inputs", ",".join(model.inputs)]
    if model.outputs:
        args += ["--outputs", ",".join(model.outputs)]
    if model.input_size:
        args += ["--input-size", ",".join(str(v) for v in model.input_size)]
    if model.preprocess:
        args += ["--preprocess", model.preprocess]
    if model.layout:
        args += ["--layout", model.layout]
    if model.delay_ms is not None:
        args += ["--delay-ms", fmt_number(model.delay_ms)]
    if model.delay_distribution:
        args += ["--delay-distribution", model.delay_distribution]
    if spec.dataset:
        args += ["--dataset", path(spec.dataset)]
    args += ["--workers", str(spec.workers), "--threads", str(spec.threads)]
    batching = spec.batching_or_default
    args += ["--max-batch-size", str(batching.max_batch_size), "--max-delay-ms", fmt_number(batching.max_delay_ms)]
    if spec.gpu and spec.gpu.memory_fraction is not None:
        args += ["--memory-fraction", fmt_number(spec.gpu.memory_fraction)]
    args += ["--host", host, "--port", str(port)]
    return args


@dataclass(frozen=True)
class GeneratorPlacement:
    """Where one generator runs and writes: what differs between a Job pod and a local process."""

    schedule_file: str
    output: str
    control_port: int
    linger_s: float
    control_host: str | None = None
    #: how many generators share the rate (each sends 1/share of it)
    share: int = 1
    path: Callable[[str], str] = _same
    #: pass the SLO in schedule mode too (the generator then judges the run and exits 1 when it fails;
    #: in a Job that would count as a failed pod, so the operator judges itself). Capacity mode always
    #: passes it: the search needs it.
    judge: bool = True


def _rate_args(lexp: LoadExperiment, schedule_file: str, judge: bool) -> list[str]:
    """Where the rate comes from: the schedule file, or (capacity mode) the search and its SLO."""
    spec = lexp.spec
    if spec.mode != "capacity":
        args = ["--schedule", schedule_file]
    else:
        search = spec.capacity or CapacitySearch()
        args = ["--mode", "capacity", "--min-rps", fmt_number(search.min_rps), "--max-rps",
                fmt_number(search.max_rps), "--probe-duration", search.probe_duration, "--precision",
                fmt_number(search.precision), "--tolerance", fmt_number(search.tolerance), "--max-windows",
                str(search.max_windows)]  # fmt: skip
        if search.warmup is not None:
            args += ["--warmup", search.warmup]
    if spec.slo is None or not (judge or spec.mode == "capacity"):
        return args
    if spec.slo.p99_ms is not None:
        args += ["--slo-p99-ms", fmt_number(spec.slo.p99_ms)]
    if spec.slo.min_success_rate is not None:
        args += ["--min-success-rate", fmt_number(spec.slo.min_success_rate)]
    return args


def _payload(payload: str, path: Callable[[str], str]) -> str:
    for prefix in ("dataset:", "file:"):
        if payload.startswith(prefix):
            return prefix + path(payload.removeprefix(prefix))
    return payload


def loadgen_args(lexp: LoadExperiment, url: str, where: GeneratorPlacement) -> list[str]:
    """``kinfer loadgen ...`` (without the program) for ``lexp`` sending to ``url`` (path included)."""
    spec, target = lexp.spec, lexp.spec.target
    args = ["loadgen", url, *_rate_args(lexp, where.schedule_file, where.judge), "--arrival", spec.arrival]
    if spec.seed is not None and where.share == 1:
        args += ["--seed", str(spec.seed)]  # generators sharing a rate must not share one arrival stream
    max_in_flight = max(1, -(-spec.max_in_flight // where.share))
    args += [
        "--method", target.method,
        "--payload", _payload(target.payload, where.path),
        "--protocol", target.protocol,
        "--timeout-ms", str(target.timeout_ms),
        "--max-in-flight", str(max_in_flight),
        "--window", str(spec.window_size),
        "--interval", fmt_number(spec.record_interval_s),
    ]  # fmt: skip
    if target.batch_size > 1:
        args += ["--batch-size", str(target.batch_size)]
    if spec.think_time is not None:
        args += ["--think-time", fmt_number(spec.think_time_s)]
    if spec.requests is not None:
        # generators sharing the load share the count too (rounded up: at most share - 1 extra in all)
        args += ["--requests", str(-(-spec.requests // where.share))]
    if where.control_host is not None:
        args += ["--control-host", where.control_host]
    args += ["--control-port", str(where.control_port), "--output", where.output]
    args += ["--linger", fmt_number(where.linger_s), "--quiet"]
    return args
