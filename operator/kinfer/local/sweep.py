"""``kinfer run sweep.yaml``: a Sweep run locally, one point at a time (DESIGN.md §3 Sweep, §8).

Each point (``kinfer.api.sweep.points``) becomes an InferenceService and a LoadExperiment named
``<sweep>-p<i>`` and runs through the ordinary local runner: its replicas start as local gunicorn
process groups, the generator runs, and every process is stopped and gone before the next point starts
(then ``cooldown``). A point that fails (a server that never gets ready, a generator that dies) is
recorded with its reason and the sweep goes on. Each point writes its results directory
``<results>/<sweep>/p<i>/``; beside them the comparison (:mod:`kinfer.local.sweep_report`).

Exit codes: 0 when some point met the SLO (or, without an SLO, some point succeeded); 1 when none did;
2 on bad input (a matrix path or value that does not fit, a missing host path) before anything
starts; 130 when interrupted (the points run so far are written).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kinfer.api import API_VERSION, InferenceService, LoadExperiment, ManifestError, Sweep
from kinfer.api.sweep import Point, SweepError, best, failed_row, point_row, points
from kinfer.local import sweep_report
from kinfer.local.plan import Plan, build_plan
from kinfer.local.runner import RunOutcome, run
from kinfer.local.sweep_report import SweepResult

EXIT_OK, EXIT_NONE_MET, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
#: The report's first note when a point had a CPU limit (:mod:`kinfer.local.limits`).
AFFINITY_NOTE = (
    "CPU limits are enforced locally by CPU affinity (kinfer run writes no cgroup): each replica is pinned "
    "to ceil(limit) whole cores, so a fractional limit rounds up (0.2 and 0.5 run on one core); on a cluster "
    "the limit is the pod's CFS quota"
)


def point_resources(sweep: Sweep, point: Point) -> tuple[InferenceService, LoadExperiment]:
    """The point's InferenceService and LoadExperiment, named ``<sweep>-p<i>`` in the Sweep's namespace."""
    meta = {"name": point.name, "namespace": sweep.metadata.namespace}
    meta = {k: v for k, v in meta.items() if v is not None}
    svc = InferenceService.model_validate(
        {"apiVersion": API_VERSION, "kind": "InferenceService", "metadata": meta, "spec": point.service.wire()}
    )
    exp = LoadExperiment.model_validate(
        {"apiVersion": API_VERSION, "kind": "LoadExperiment", "metadata": meta, "spec": point.experiment.wire()}
    )
    return svc, exp


def expand(sweep: Sweep) -> list[tuple[Point, InferenceService, LoadExperiment]]:
    """Every point with its resources; ``ManifestError`` (exit 2) names the path and value that fail."""
    try:
        return [(p, *point_resources(sweep, p)) for p in points(sweep.name, sweep.spec)]
    except SweepError as exc:
        raise ManifestError(f"Sweep {sweep.name}: {exc}") from None
    except ValueError as exc:  # a point's name or spec refused by the resource models
        raise ManifestError(f"Sweep {sweep.name}: {exc}") from None


def local_status(outcome: RunOutcome, exp: LoadExperiment) -> dict[str, Any]:
    """A LoadExperiment status (what ``point_row`` reads) from a finished local run of one point."""
    if not outcome.experiments:
        return {"phase": "Failed", "conditions": [{"type": "Failed", "status": "True", "message": outcome.error or ""}]}
    done = outcome.experiments[0]
    summary = done.summary or {}
    phase = "Stopped" if outcome.interrupted else "Succeeded"
    if done.summary is None or summary.get("phase") == "Failed":
        phase = "Failed"
    status: dict[str, Any] = {
        "phase": phase,
        **{k: summary[k] for k in ("sent", "completed", "latencyMs", "capacity", "startedAt") if k in summary},
    }
    conditions = []
    if done.verdict is not None and (exp.spec.slo is not None or isinstance(summary.get("capacity"), dict)):
        conditions.append({"type": "SLOMet", "status": "True" if done.verdict.met else "False",
                           "message": done.verdict.message})  # fmt: skip
    if phase == "Failed":
        reason = summary.get("error") or outcome.error or "the generator wrote no summary"
        conditions.append({"type": "Failed", "status": "True", "message": str(reason).strip()})
    status["conditions"] = conditions
    return status


def row_for(point: Point, exp: LoadExperiment, outcome: RunOutcome) -> dict[str, Any]:
    """The point's row: ``point_row`` over the local status and summary (the same row a cluster Sweep
    writes), plus how the CPU limit was enforced locally (the comparison table shows it)."""
    summary = outcome.experiments[0].summary if outcome.experiments else None
    if not outcome.experiments:
        reason = (outcome.error or "the point could not start").strip()
        row = failed_row(point.index, point.parameters, point.name, reason)
    else:
        row = point_row(point.index, point.parameters, point.name, local_status(outcome, exp), summary)
    limits = sweep_report.get(summary, "serverLimits")
    if isinstance(limits, dict) and limits.get("mechanism"):
        row["cpuLimit"] = {
            "cores": limits.get("cpu"),
            "mechanism": limits.get("mechanism"),
            "pinned": limits.get("cores"),
        }
    row["results"] = f"p{point.index}"
    return row


def _write_point_report(results: Path) -> None:
    from kinfer.loadgen.report import write_report

    if (results / "summary.json").exists():
        write_report(results)


class SweepRun:
    """Runs one Sweep's points in order and writes the comparison after each point."""

    def __init__(self, sweep: Sweep, out: Path, ports: Callable[[], Iterator[int]], dashboard: int | None, base: Path,
                 console: Any, live: bool, check: Callable[[Plan, list[InferenceService]], None]) -> None:  # fmt: skip
        self.sweep = sweep
        self.out = out
        self.ports = ports
        self.dashboard = dashboard
        self.base = base
        self.console = console
        self.live = live
        self.check = check
        self.rows: list[dict[str, Any]] = []
        self.summaries: dict[int, dict[str, Any]] = {}
        self.notes: list[str] = []
        self.expanded = expand(sweep)
        for point, svc, exp in self.expanded:  # every point is checked before the first one starts
            self._plan(point, svc, exp)

    def _plan(self, point: Point, svc: InferenceService, exp: LoadExperiment) -> Plan:
        ports = self.ports()  # a fresh iterator: free_ports() holds its last port until it is closed
        try:
            plan = build_plan([svc, exp], ports, lambda _: self.out / f"p{point.index}", self.dashboard, self.base)
        finally:
            close = getattr(ports, "close", None)
            if close is not None:
                close()
        self.check(plan, [svc])
        return plan

    def result(self, phase: str) -> SweepResult:
        """The comparison as it stands."""
        objective = self.sweep.spec.objective_or_default
        has_slo = self.sweep.spec.experiment.slo is not None or self.sweep.spec.experiment.mode == "capacity"
        return SweepResult(
            name=self.sweep.name, objective=objective, phase=phase, total=len(self.expanded), rows=list(self.rows),
            best=best(self.rows, objective), summaries=dict(self.summaries), notes=tuple(self.notes),
            has_slo=has_slo,
        )  # fmt: skip

    def run_all(self) -> int:
        """Run every point; write the comparison; print the table; return the exit code."""
        interrupted = False
        for point, svc, exp in self.expanded:
            plan = self._plan(point, svc, exp)  # fresh ports, chosen right before the point starts
            shown = sweep_report.parameters_text(point.parameters)
            self.console.print(f"[bold]point {point.index + 1}/{len(self.expanded)}[/bold] {point.name}: {shown}")
            for note in plan.notes:
                self.console.print(f"note: {note}", soft_wrap=True)
            self._keep_notes(point, plan)
            results = self.out / f"p{point.index}"
            try:
                outcome = asyncio.run(run(plan, self.out / "logs" / f"p{point.index}", self.console, self.live))
            except KeyboardInterrupt:
                outcome = RunOutcome(interrupted=True, error="interrupted")
            if outcome.experiments and outcome.experiments[0].summary is not None:
                self.summaries[point.index] = outcome.experiments[0].summary or {}
                _write_point_report(results)
            row = row_for(point, exp, outcome)
            self.rows.append(row)
            self._say(row)
            sweep_report.write_all(self.out, self.result("Running"))
            if outcome.interrupted:
                interrupted = True
                break
            cooldown = self.sweep.spec.cooldown_s
            if cooldown > 0 and point.index + 1 < len(self.expanded):
                try:
                    time.sleep(cooldown)
                except KeyboardInterrupt:
                    interrupted = True
                    break
        final = self.result("Stopped" if interrupted else ("Succeeded" if self._any_ok() else "Failed"))
        report = sweep_report.write_all(self.out, final)
        sweep_report.print_tables(self.console, final)
        self.console.print(f"sweep results: {self.out} (report {report})", soft_wrap=True)
        return self._exit_code(final, interrupted)

    def _keep_notes(self, point: Point, plan: Plan) -> None:
        """The report's notes: how CPU limits and GPU devices were applied, per point, and what local
        mode could not honour (once)."""
        prefix = f"InferenceService {point.name}: "
        for note in plan.notes:
            text = note.removeprefix(prefix)
            if "CPU affinity" in text or "CUDA_VISIBLE_DEVICES" in text or "share" in text:
                self.notes.append(f"p{point.index}: {text}")
            elif "ignored locally" in note and text not in self.notes:
                self.notes.append(text)
        if any("CPU affinity" in n for n in self.notes) and AFFINITY_NOTE not in self.notes:
            self.notes.insert(0, AFFINITY_NOTE)

    def _any_ok(self) -> bool:
        return any(r.get("phase") == "Succeeded" for r in self.rows)

    def _say(self, row: dict[str, Any]) -> None:
        if row.get("phase") == "Failed":
            self.console.print(f"[red]point p{row['index']} failed[/red]: {row.get('message')}", soft_wrap=True)
        else:
            lat = row.get("latencyMs") or {}
            self.console.print(
                f"point p{row['index']} {row.get('phase')}: throughput {row.get('throughput', '-')}/s, "
                f"p99 {lat.get('p99', '-')} ms, SLO {sweep_report.slo_text(row)}",
                soft_wrap=True,
            )

    def _exit_code(self, result: SweepResult, interrupted: bool) -> int:
        if interrupted:
            self.console.print("interrupted: the points run so far are written")
            return EXIT_INTERRUPTED
        if result.has_slo:
            if not any(r.get("sloMet") is True and r.get("phase") == "Succeeded" for r in result.rows):
                self.console.print("[red]no point met the SLO[/red]")
                return EXIT_NONE_MET
            return EXIT_OK
        if not self._any_ok():
            self.console.print("[red]no point succeeded[/red]")
            return EXIT_NONE_MET
        return EXIT_OK


def write_resolved(out: Path, sweep: Sweep) -> None:
    """Keep the Sweep as run (``sweep.yaml`` beside the results) for reproducing the study."""
    import yaml

    out.mkdir(parents=True, exist_ok=True)
    doc = {"apiVersion": API_VERSION, "kind": "Sweep", "metadata": {"name": sweep.name}, "spec": sweep.spec.wire()}
    (out / "sweep.yaml").write_text(yaml.safe_dump(json.loads(json.dumps(doc)), sort_keys=False))


def run_sweeps(
    sweeps: list[Sweep],
    results_for: Callable[[str], Path],
    ports: Callable[[], Iterator[int]],
    dashboard: int | None,
    check: Callable[[Plan, list[InferenceService]], None],
    console: Any,
    live: bool,
) -> int:
    """Run each Sweep in turn (``results_for(name)`` is its directory); the worst exit code wins.

    Every Sweep is expanded and checked before the first point starts, so bad input is exit 2 with
    nothing run.
    """
    import sys

    try:
        runs = [SweepRun(s, results_for(s.name), ports, dashboard, Path.cwd(), console, live, check) for s in sweeps]
    except ManifestError as exc:
        print(f"kinfer run: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    codes = []
    for sweep_run in runs:
        write_resolved(sweep_run.out, sweep_run.sweep)
        console.print(
            f"Sweep {sweep_run.sweep.name}: {len(sweep_run.expanded)} point(s), one at a time, "
            f"objective {sweep_run.sweep.spec.objective_or_default}; results in {sweep_run.out}",
            soft_wrap=True,
        )
        codes.append(sweep_run.run_all())
        if codes[-1] == EXIT_INTERRUPTED:
            break
    return max(codes, key=lambda c: (c == EXIT_INTERRUPTED, c))
