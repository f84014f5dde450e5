"""A local Sweep's comparison: ``sweep.json``, ``sweep.csv``, comparison plots, ``report.html`` and the
terminal table, from the point rows (``kinfer.api.sweep.point_row``) and each point's ``summary.json``.

Every number is read defensively: a point that failed, or a summary without server resources, shows
``-`` rather than a zero. The table has one row per point: its parameters, then p50/p99 and mean
latency, throughput, capacity, the SLO verdict and the server's CPU (cores), memory and GPU.
"""

from __future__ import annotations

import csv
import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Server-Timing stages of the model server, in the order a request passes them.
TIMING_STAGES = ("queue", "preprocess", "infer", "postprocess")


@dataclass(frozen=True)
class SweepResult:
    """Everything the comparison is written from."""

    name: str
    objective: str
    phase: str
    total: int
    rows: list[dict[str, Any]]
    best: dict[str, Any] | None
    summaries: dict[int, dict[str, Any]]
    notes: tuple[str, ...] = ()
    has_slo: bool = False


def num(value: Any) -> float | None:
    """A finite number, else ``None`` (booleans and strings are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def get(doc: Any, *keys: str) -> Any:
    """``doc[k1][k2]...``, ``None`` where any level is missing or not a mapping."""
    for key in keys:
        if not isinstance(doc, Mapping):
            return None
        doc = doc.get(key)
    return doc


def short(path: str) -> str:
    """A matrix path as a column header: its last two segments (``limits.cpu``, ``[0].concurrency``)."""
    parts = path.split(".")
    return ".".join(parts[-2:]) if len(parts) > 2 else parts[-1]


def value_text(value: Any) -> str:
    """A parameter value as shown in tables and legends."""
    return json.dumps(value) if isinstance(value, dict | list | bool) or value is None else str(value)


def parameters_text(params: Mapping[str, Any]) -> str:
    """``replicas=2 cpu=0.5``: a point's parameters, short."""
    return " ".join(f"{short(p)}={value_text(v)}" for p, v in params.items())


def point_label(row: Mapping[str, Any]) -> str:
    """``p3 replicas=2 cpu=0.5``: the point's index and parameters."""
    return f"p{row.get('index')} " + parameters_text(row.get("parameters") or {})


def _fmt(value: Any, digits: int = 1) -> str:
    number = num(value)
    return "-" if number is None else f"{number:.{digits}f}"


def slo_text(row: Mapping[str, Any]) -> str:
    met = row.get("sloMet")
    return "-" if met is None else ("met" if met else "FAILED")


COLUMNS = ("phase", "achieved RPS", "req/s", "mean ms", "p50 ms", "p99 ms", "capacity", "SLO",
           "CPU cores", "mem MB", "GPU %")  # fmt: skip


def table_rows(result: SweepResult) -> tuple[list[str], list[list[str]]]:
    """Headers and text cells of the comparison table (one row per point)."""
    paths = list((result.rows[0].get("parameters") or {}) if result.rows else {})
    headers = ["point", *(short(p) for p in paths), *COLUMNS]
    out = []
    for row in result.rows:
        params = row.get("parameters") or {}
        lat, server = row.get("latencyMs") or {}, row.get("server") or {}
        out.append([
            f"p{row.get('index')}", *(value_text(params.get(p, "-")) for p in paths), str(row.get("phase", "-")),
            _fmt(row.get("achievedRPS")), _fmt(row.get("throughput")), _fmt(lat.get("mean")), _fmt(lat.get("p50")),
            _fmt(lat.get("p99")), _fmt(row.get("capacity")), slo_text(row), _fmt(server.get("cpu"), 2),
            _fmt(server.get("memoryMB"), 0), _fmt(server.get("gpuUtil")),
        ])  # fmt: skip
    return headers, out


def timing_rows(result: SweepResult) -> tuple[list[str], list[list[str]]] | None:
    """Mean ms per Server-Timing stage and the client's own time (from the actual send) per point, as
    seed 001's per-stage table; ``None`` when no point has Server-Timing."""
    if not any(get(s, "serverTimingMs") for s in result.summaries.values()):
        return None
    headers = ["point", *TIMING_STAGES, "server total", "client (service time)", "client mean (scheduled)"]
    out = []
    for row in result.rows:
        summary = result.summaries.get(int(row["index"])) or {}
        timing = summary.get("serverTimingMs") or {}
        means = [num(get(timing, stage, "mean")) for stage in TIMING_STAGES]
        known = [m for m in means if m is not None]
        total = sum(known) if known else None
        out.append([
            f"p{row['index']}", *(_fmt(m, 2) for m in means), _fmt(total, 2),
            _fmt(get(summary, "serviceTimeMs", "mean"), 2), _fmt(get(summary, "latencyMs", "mean"), 2),
        ])  # fmt: skip
    return headers, out


def status_document(result: SweepResult) -> dict[str, Any]:
    """``sweep.json``: the Sweep status (``phase``, ``total``, ``done``, ``points``, ``best``) of a local run."""
    done = sum(1 for r in result.rows if r.get("phase") in ("Succeeded", "Failed"))
    return {
        "name": result.name,
        "phase": result.phase,
        "objective": result.objective,
        "total": result.total,
        "done": done,
        "points": result.rows,
        "best": result.best,
        "notes": list(result.notes),
    }


def write_csv(path: Path, result: SweepResult) -> None:
    """``sweep.csv``: the comparison table with full parameter paths and raw numbers."""
    paths = list((result.rows[0].get("parameters") or {}) if result.rows else {})
    fields = ["index", *paths, "experiment", "phase", "achievedRPS", "throughput", "meanMs", "p50Ms", "p99Ms",
              "capacity", "sloMet", "serverCPU", "serverMemoryMB", "serverGPUUtil", "message"]  # fmt: skip
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(fields)
        for row in result.rows:
            params, lat, server = row.get("parameters") or {}, row.get("latencyMs") or {}, row.get("server") or {}
            writer.writerow([
                row.get("index"), *(value_text(params.get(p, "")) for p in paths), row.get("experiment"),
                row.get("phase"), row.get("achievedRPS"), row.get("throughput"), lat.get("mean"), lat.get("p50"),
                lat.get("p99"), row.get("capacity"), row.get("sloMet"), server.get("cpu"), server.get("memoryMB"),
                server.get("gpuUtil"), row.get("message"),
            ])  # fmt: skip


def _curves(result: SweepResult, x_key: str, y_of: Any, varied: str) -> dict[str, list[tuple[float, float]]]:
    """Per group of points (parameters other than those ending in ``varied``): (x, y) of every stage."""
    curves: dict[str, list[tuple[float, float]]] = {}
    for row in result.rows:
        summary = result.summaries.get(int(row["index"]))
        if summary is None:
            continue
        params = row.get("parameters") or {}
        label = " ".join(f"{short(p)}={value_text(v)}" for p, v in params.items() if not p.endswith(varied)) or "all"
        for stage in summary.get("stages") or []:
            x, y = num(stage.get(x_key)), num(y_of(stage))
            if x is not None and y is not None:
                curves.setdefault(label, []).append((x, y))
        if x_key == "rps":
            for probe in get(summary, "capacity", "probes") or []:
                x, y = num(get(probe, "rps")), num(get(probe, "p99Ms"))
                if x is not None and y is not None:
                    curves.setdefault(label, []).append((x, y))
    return {k: sorted(v) for k, v in curves.items()}


def write_plots(out: Path, result: SweepResult) -> list[str]:
    """The comparison plots that apply; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []

    def line_plot(name: str, curves: dict[str, list[tuple[float, float]]], xlabel: str, ylabel: str) -> None:
        if not curves:
            return
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for label, pts in curves.items():
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if len(curves) > 1 or next(iter(curves)) != "all":
            ax.legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(out / name, dpi=90)
        plt.close(fig)
        written.append(name)

    line_plot("p99_vs_rate.png", _curves(result, "rps", lambda s: get(s, "latencyMs", "p99"), "rps"),
              "offered rate (requests/s)", "p99 latency (ms)")  # fmt: skip
    line_plot("throughput_vs_concurrency.png",
              _curves(result, "concurrency", lambda s: s.get("requestsPerS"), "concurrency"),
              "concurrency (clients)", "throughput (responses/s)")  # fmt: skip

    def bar_plot(name: str, values: list[tuple[str, float | None]], ylabel: str) -> None:
        if not any(v is not None for _, v in values):
            return
        fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(values) + 2), 4.5))
        ax.bar(range(len(values)), [v or 0.0 for _, v in values])
        ax.set_xticks(range(len(values)), [label for label, _ in values], rotation=60, ha="right", fontsize="small")
        ax.set_ylabel(ylabel)
        fig.tight_layout()
        fig.savefig(out / name, dpi=90)
        plt.close(fig)
        written.append(name)

    bar_plot("capacity_per_point.png", [(point_label(r), num(r.get("capacity"))) for r in result.rows],
             "capacity (requests/s meeting the SLO)")  # fmt: skip
    bar_plot("latency_per_point.png", [(point_label(r), num(get(r, "latencyMs", "p99"))) for r in result.rows],
             "p99 latency (ms)")  # fmt: skip
    return written


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def best_line(result: SweepResult) -> str:
    """``best for throughput: p3 replicas=2 (value 451)``, or why there is none."""
    if result.best is None:
        return f"no point qualifies for objective {result.objective}"
    return f"best for {result.objective}: {point_label(result.best)} (value {result.best['value']:g})"


def write_html(out: Path, result: SweepResult, plots: Sequence[str]) -> Path:
    """``report.html``: the comparison table, the best point, notes, plots and links to each point."""
    headers, rows = table_rows(result)
    best_text = best_line(result)
    timing = timing_rows(result)
    links = "".join(
        f'<li><a href="p{r["index"]}/report.html">{html.escape(point_label(r))}</a>'
        + (f" - {html.escape(str(r['message']))}" if r.get("message") else "")
        + "</li>"
        for r in result.rows
    )
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>Sweep {html.escape(result.name)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}</style></head><body>",
        f"<h1>Sweep {html.escape(result.name)}</h1>",
        f"<p>phase {html.escape(result.phase)}; {len(result.rows)} of {result.total} point(s) run; "
        f"{html.escape(best_text)}</p>",
        "<h2>Comparison</h2>",
        _html_table(headers, rows),
        "<p>Latency from the scheduled send (open loop) or the actual send (closed loop; closed loops hide "
        "queueing). CPU in cores, GPU in percent; '-' where not measured.</p>",
    ]
    if timing:
        parts += ["<h2>Per-stage time (mean ms)</h2>", _html_table(*timing)]
    if result.notes:
        parts += ["<h2>Notes</h2><ul>", *(f"<li>{html.escape(n)}</li>" for n in result.notes), "</ul>"]
    parts += [f"<h2>{html.escape(p)}</h2><img src='{html.escape(p)}'>" for p in plots]
    parts += ["<h2>Points</h2><ul>", links, "</ul></body></html>"]
    path = out / "report.html"
    path.write_text("\n".join(parts))
    return path


def write_all(out: Path, result: SweepResult) -> Path:
    """Write ``sweep.json``, ``sweep.csv``, the plots and ``report.html`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "sweep.json.tmp"
    tmp.write_text(json.dumps(status_document(result), indent=2))
    tmp.replace(out / "sweep.json")
    write_csv(out / "sweep.csv", result)
    return write_html(out, result, write_plots(out, result))


def print_tables(console: Any, result: SweepResult) -> None:
    """The comparison table (and the per-stage table when there is Server-Timing) on the terminal."""
    from rich.table import Table

    headers, rows = table_rows(result)
    table = Table(title=f"sweep {result.name}: {result.objective}")
    for h in headers:
        table.add_column(h, justify="left" if h == "point" else "right")
    best_index = result.best["index"] if result.best else None
    for row in rows:
        table.add_row(*row, style="bold green" if row[0] == f"p{best_index}" else None)
    console.print(table)
    console.print(best_line(result), soft_wrap=True)
    timing = timing_rows(result)
    if timing:
        stage_table = Table(title="per-stage time, mean ms (server: Server-Timing; client: from the actual send)")
        for h in timing[0]:
            stage_table.add_column(h, justify="right")
        for row in timing[1]:
            stage_table.add_row(*row)
        console.print(stage_table)
