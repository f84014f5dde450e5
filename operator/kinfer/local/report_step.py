"""The end of ``kinfer run``: reports written, a verdict table printed, the exit code decided."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from kinfer.local.runner import RunOutcome

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130


def _write_report(results: Path) -> Path | None:
    from kinfer.loadgen.report import write_report

    if not (results / "summary.json").exists():
        return None
    return write_report(results)


def finish(outcome: RunOutcome, console: Any, logs: Path) -> int:
    """Write each experiment's report, print the verdicts, return the exit code."""
    if outcome.error:
        console.print(f"[red]kinfer run: {outcome.error}[/red]", soft_wrap=True)
        console.print(f"process logs: {logs}")
    table = Table(title="results")
    for col in ("experiment", "sent", "completed", "errors", "dropped", "p50 ms", "p99 ms", "server CPU cores",
                "GPU %", "SLO", "results"):  # fmt: skip
        table.add_column(col)
    failed = bool(outcome.error)
    for exp in outcome.experiments:
        exp.report = _write_report(exp.plan.results_dir)
        s = exp.summary or {}
        lat = s.get("latencyMs") or {}
        server = s.get("server") or {}  # the run's means over the records that measured them
        verdict = exp.verdict
        if verdict is None:
            slo_text = "[red]no results[/red]"
            failed = True
        elif verdict.met:
            slo_text = f"[green]met[/green] ({verdict.message})"
        else:
            slo_text = f"[red]FAILED[/red] ({verdict.message})"
            failed = True
        table.add_row(
            exp.plan.name, str(s.get("sent", "-")), str(s.get("completed", "-")), str(s.get("errors", "-")),
            str(s.get("dropped", "-")), _ms(lat.get("p50")), _ms(lat.get("p99")), _num(server.get("cpu"), ".2f"),
            _num(server.get("gpuUtil"), ".0f"), slo_text,
            str(exp.report or exp.plan.results_dir),
        )  # fmt: skip
    console.print(table)
    if outcome.interrupted:
        console.print("interrupted: partial results kept")
        return EXIT_INTERRUPTED
    return EXIT_FAILED if failed else EXIT_OK


def _ms(value: Any) -> str:
    return "-" if value is None else f"{float(value):.1f}"


def _num(value: Any, spec: str) -> str:
    return "-" if value is None else format(float(value), spec)
