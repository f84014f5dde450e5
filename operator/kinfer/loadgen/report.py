"""A results directory rendered for people: PNG plots and ``report.html`` (DESIGN.md §6).

Written once the run is over, from what is already on disk, so a failure here never costs a
measurement. Reads what the generator wrote (``summary.json``, ``records.csv``); the target server's
resources come from the records' ``serverCPU`` (cores), ``serverMemoryMB``, ``serverGPUUtil`` (%) and
``serverGPUMemoryMB`` and the summary's per-stage ``server`` means, wherever the run happened. Tables:
the seed's per-stage table (rate -> p99 -> GPU % -> CPU cores -> memory; an empty GPU column is "-",
never 0). Plots: offered/sent/completed rates and p50/p99 over time with stage boundaries, the
server's CPU and GPU over time beside the latency; p99 against offered rate per stage (the seed's
RPS -> p99 table as a curve). A closed-loop run (``"mode":
"closed"``) is labelled as such (latency from the actual send; closed loops hide queueing) and shows
throughput (requests/s and images/s) and latency against the number of clients instead.
"""

from __future__ import annotations

import csv
import html
import json
from pathlib import Path
from typing import Any

REPORT = "report.html"


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _col(rows: list[dict[str, str]], name: str) -> list[float]:
    out = []
    for row in rows:
        value = row.get(name, "")
        out.append(float(value) if value not in ("", None) else float("nan"))
    return out


def _stage_edges(summary: dict[str, Any]) -> list[float]:
    probes = (summary.get("capacity") or {}).get("probes") or []
    if probes:  # capacity mode: probes lie where they ran (pauses between them)
        marks = [p.get(k) for p in probes for k in ("startS", "endS")]
        return [float(m) for m in marks[1:] if m is not None]
    edges, t = [], 0.0
    for stage in summary.get("stages") or []:
        t += float(stage.get("durationS") or 0.0)
        edges.append(t)
    return edges[:-1]


def _has(rows: list[dict[str, str]], name: str) -> bool:
    return any(row.get(name) not in ("", None) for row in rows)


def _plots(out: Path, summary: dict[str, Any], records: list[dict[str, str]]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: list[tuple[str, str]] = []
    edges = _stage_edges(summary)

    def boundaries(ax: Any) -> None:
        for edge in edges:
            ax.axvline(edge, color="grey", linestyle=":", linewidth=0.8)

    closed = summary.get("mode") == "closed"
    if records:
        t = _col(records, "t")
        fig, ax = plt.subplots(figsize=(9, 3.6))
        if not closed:
            ax.plot(
                t,
                _col(records, "targetRPS"),
                label="target RPS",
                color="black",
                linestyle="--",
                linewidth=1,
                drawstyle="steps-pre",
            )
        else:
            ax2 = ax.twinx()
            ax2.plot(t, _col(records, "concurrency"), color="black", linestyle="--", linewidth=1,
                     drawstyle="steps-pre", label="clients")  # fmt: skip
            ax2.set_ylabel("clients")
            ax2.legend(loc="upper right")
        ax.plot(t, _col(records, "realRPS"), label="realRPS (sent)")
        ax.plot(t, _col(records, "realQPS"), label="realQPS (completed)")
        boundaries(ax)
        ax.set(xlabel="time (s)", ylabel="requests/s", title="Rates")
        ax.legend(loc="upper left")
        fig.tight_layout()
        fig.savefig(out / "rates.png", dpi=100)
        plt.close(fig)
        made.append(("rates.png", "Offered, sent and completed rates per record; dotted lines: stage boundaries"))

        fig, ax = plt.subplots(figsize=(9, 3.6))
        ax.plot(t, _col(records, "p50Ms"), label="p50")
        ax.plot(t, _col(records, "p99Ms"), label="p99 (queryTime)")
        ax.plot(t, _col(records, "avg99thMs"), label="Avg99th (window)")
        boundaries(ax)
        origin = "actual send, closed loop" if closed else "scheduled send"
        ax.set(xlabel="time (s)", ylabel=f"ms (from {origin})", title="Latency")
        ax.legend(loc="upper left")
        fig.tight_layout()
        fig.savefig(out / "latency.png", dpi=100)
        plt.close(fig)
        made.append(("latency.png", f"Latency per record, measured from the {origin} time"))
        if _has(records, "serverCPU") or _has(records, "serverMemoryMB"):
            made.append(_server_plot(out, records, boundaries))

    stages = [s for s in summary.get("stages") or [] if (s.get("latencyMs") or {}).get("p99") is not None]
    if stages and closed:
        by_clients = sorted(stages, key=lambda s: float(s.get("concurrency") or 0))
        clients = [float(s.get("concurrency") or 0) for s in by_clients]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(clients, [s.get("requestsPerS") for s in by_clients], marker="o", label="requests/s")
        if int(summary.get("batchSize") or 1) > 1:
            ax.plot(clients, [s.get("imagesPerS") for s in by_clients], marker="s", label="images/s")
        ax.set(xlabel="clients (concurrency)", ylabel="completed per second",
               title="Closed loop: throughput vs concurrency")  # fmt: skip
        ax2 = ax.twinx()
        ax2.plot(clients, [s["latencyMs"]["p99"] for s in by_clients], marker=".", color="tab:red",
                 linestyle=":", label="p99 ms (from send)")  # fmt: skip
        ax2.set_ylabel("p99 ms")
        fig.legend(loc="upper left")
        fig.tight_layout()
        fig.savefig(out / "throughput_vs_concurrency.png", dpi=100)
        plt.close(fig)
        made.append(("throughput_vs_concurrency.png",
                     "Closed loop: completed requests/s (and images/s) and p99 per stage against clients"))  # fmt: skip
    elif stages:
        fig, ax = plt.subplots(figsize=(6, 4))
        rps = [float(s.get("rps") or 0) for s in stages]
        ax.plot(rps, [s["latencyMs"]["p99"] for s in stages], marker="o", label="p99")
        ax.plot(rps, [s["latencyMs"].get("p50") for s in stages], marker=".", label="p50")
        ax.set(xlabel="offered rate (requests/s)", ylabel="ms", title="Latency vs offered rate (per stage)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "p99_vs_rps.png", dpi=100)
        plt.close(fig)
        made.append(("p99_vs_rps.png", "Per-stage latency against the offered rate"))

    capacity = summary.get("capacity") or {}
    probes = [p for p in capacity.get("probes") or [] if p.get("p99Ms") is not None]
    if probes:
        fig, ax = plt.subplots(figsize=(6, 4))
        for met, colour, label in ((True, "tab:green", "meets the SLO"), (False, "tab:red", "fails the SLO")):
            chosen = [p for p in probes if bool(p.get("met")) is met]
            ax.scatter([p["rps"] for p in chosen], [p["p99Ms"] for p in chosen], color=colour, label=label, zorder=3)
        for i, p in enumerate(probes):
            ax.annotate(str(i), (p["rps"], p["p99Ms"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        slo_p99 = (summary.get("slo") or {}).get("p99Ms")
        if slo_p99 is not None:
            ax.axhline(slo_p99, color="black", linestyle="--", linewidth=1, label=f"SLO p99 {slo_p99:g} ms")
        if capacity.get("rps") is not None:
            ax.axvline(capacity["rps"], color="tab:green", linestyle=":", label=f"capacity {capacity['rps']:g} rps")
        ax.set(xlabel="probe rate (requests/s)", ylabel="p99 ms", title="Capacity search: p99 per probe")
        ax.set_yscale("log")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "capacity.png", dpi=100)
        plt.close(fig)
        made.append(("capacity.png", "Each probe's whole-probe p99 against its rate (numbers: probe order)"))

    return made


def _server_plot(out: Path, records: list[dict[str, str]], boundaries: Any) -> tuple[str, str]:
    """The target server's CPU (cores) and GPU (%) per record above, its memory below."""
    import matplotlib.pyplot as plt

    t = _col(records, "t")
    gpu = _has(records, "serverGPUUtil")
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 4.8), sharex=True)
    top.plot(t, _col(records, "serverCPU"), label="server CPU (cores)", color="tab:red")
    top.set(ylabel="cores", title="Server resources (the target's pods, per record)")
    top.set_ylim(bottom=0)
    if gpu:
        right = top.twinx()
        right.plot(t, _col(records, "serverGPUUtil"), label="GPU utilization %", color="tab:green")
        right.set_ylabel("GPU %")
        right.set_ylim(0, 100)
        right.legend(loc="upper right")
    top.legend(loc="upper left")
    bottom.plot(t, _col(records, "serverMemoryMB"), label="server memory (MB)", color="tab:purple")
    if _has(records, "serverGPUMemoryMB"):
        bottom.plot(t, _col(records, "serverGPUMemoryMB"), label="GPU memory (MB)", color="tab:olive")
    bottom.set(xlabel="time (s)", ylabel="MB")
    bottom.set_ylim(bottom=0)
    bottom.legend(loc="lower right")
    boundaries(top)
    boundaries(bottom)
    fig.tight_layout()
    fig.savefig(out / "server_resources.png", dpi=100)
    plt.close(fig)
    what = "CPU (cores) and GPU utilization" if gpu else "CPU (cores; no GPU sampled)"
    return "server_resources.png", f"Server {what} and memory per record, beside the latency above"


def _fmt(value: Any, spec: str = ".1f") -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return format(value, spec)
    return html.escape(str(value))


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _stage_rows(summary: dict[str, Any]) -> list[list[Any]]:
    closed = summary.get("mode") == "closed"
    rows = []
    for i, s in enumerate(summary.get("stages") or []):
        lat = s.get("latencyMs") or {}
        sr = s.get("serviceRate")
        rows.append([i, s.get("concurrency") if closed else s.get("rps"), s.get("durationS"), s.get("sent"),
                     s.get("completed"), s.get("errors"), s.get("dropped"), s.get("requestsPerS"),
                     s.get("imagesPerS"), lat.get("p50"), lat.get("p90"), lat.get("p99"), lat.get("p999"),
                     lat.get("max"), None if sr is None else sr * 100])  # fmt: skip
    return rows


def _closed_loop_section(summary: dict[str, Any]) -> str:
    """Closed loop: the label, and throughput against concurrency (empty for an open loop)."""
    if summary.get("mode") != "closed":
        return ""
    rows = []
    for s in sorted(summary.get("stages") or [], key=lambda s: float(s.get("concurrency") or 0)):
        lat = s.get("latencyMs") or {}
        rows.append([s.get("concurrency"), s.get("requestsPerS"), s.get("imagesPerS"), lat.get("p50"),
                     lat.get("p99"), lat.get("mean"), s.get("completed"), s.get("errors")])  # fmt: skip
    table = _table(["clients", "requests/s", "images/s", "p50 ms", "p99 ms", "mean ms", "completed", "errors"],
                   rows)  # fmt: skip
    think = summary.get("thinkTimeS")
    note = summary.get("note") or "closed loop: closed loops hide queueing (coordinated omission)"
    return (f'<h2>Closed loop</h2><p id="closed-loop"><strong>Closed-loop results.</strong> '
            f"{html.escape(note)}. Think time {_fmt(think, 'g')} s.</p>"
            f"<h3>Throughput against concurrency</h3>{table}\n")  # fmt: skip


#: The server's record fields, their summary keys and how the report names them.
_SERVER = (("serverCPU", "cpu", "CPU (cores)"), ("serverMemoryMB", "memoryMB", "memory MB"),
           ("serverGPUUtil", "gpuUtil", "GPU %"), ("serverGPUMemoryMB", "gpuMemoryMB", "GPU memory MB"))  # fmt: skip


def _resource_rows(summary: dict[str, Any], records: list[dict[str, str]]) -> list[list[Any]]:
    """Whole run: each resource's mean (summary.json) and max (records) over the records that have it."""
    means = summary.get("server") or {}
    rows = []
    for column, key, label in _SERVER:
        values = [v for v in _col(records, column) if v == v]
        row = [label, means.get(key), max(values) if values else None]
        rows.append([label, *map(_cores, row[1:])] if key == "cpu" else row)
    return rows


def _cores(value: Any) -> Any:
    """CPU in cores with two decimals (the tables' default of one would round 0.04 cores to 0.0)."""
    return None if value is None else f"{float(value):.2f}"


def _seed_table(summary: dict[str, Any]) -> str:
    """The seed's central table, one column per stage: rate -> p99 -> GPU % -> CPU (cores) -> memory."""
    stages = summary.get("stages") or []
    closed = summary.get("mode") == "closed"
    rates = [s.get("concurrency") if closed else s.get("rps") for s in stages]
    headers = ["clients" if closed else "RPS", *[_fmt(r, "g") for r in rates]]
    rows: list[list[Any]] = [["99th latency ms", *[(s.get("latencyMs") or {}).get("p99") for s in stages]]]
    for _, key, label in (_SERVER[2], _SERVER[0], _SERVER[1], _SERVER[3]):
        values = [(s.get("server") or {}).get(key) for s in stages]
        rows.append([label, *(map(_cores, values) if key == "cpu" else values)])
    return _table(headers, rows)


def write_report(results: Path) -> Path:
    """Write the plots and ``report.html`` into ``results``; return the report's path."""
    summary: dict[str, Any] = json.loads((results / "summary.json").read_text())
    records = _read_csv(results / "records.csv")
    plots = _plots(results, summary, records)
    lat = summary.get("latencyMs") or {}
    svc = summary.get("serviceTimeMs") or {}
    lag = summary.get("sendLagMs") or {}
    slo = summary.get("slo") or {}
    timing = summary.get("serverTimingMs") or {}
    errors = summary.get("errors")
    errors_total = sum(errors.values()) if isinstance(errors, dict) else errors
    closed = summary.get("mode") == "closed"
    throughput = summary.get("throughput") or {}
    overview = _table(
        ["mode", "sent", "completed", "errors", "dropped", "duration s", "achieved RPS", "requests/s",
         "images/s", "batch size"],
        [["closed loop" if closed else "open loop", summary.get("sent"), summary.get("completed"), errors_total,
          summary.get("dropped"), summary.get("durationS"), summary.get("achievedRPS"),
          throughput.get("requestsPerS"), throughput.get("imagesPerS"), summary.get("batchSize", 1)]],
    )  # fmt: skip
    pcts = ["p50", "p90", "p99", "p999", "max", "mean"]
    latency = _table(
        ["measure", *pcts],
        [["latency (from the actual send: closed loop)" if closed else "latency (from schedule)",
          *[lat.get(p) for p in pcts]],
         ["service time (from send)", *[svc.get(p) for p in pcts]],
         ["send lag", lag.get("p50"), None, lag.get("p99"), None, lag.get("max"), None]],
    )  # fmt: skip
    stage_table = _table(
        ["stage", "clients" if closed else "rps", "duration s", "sent", "completed", "errors", "dropped",
         "requests/s", "images/s", "p50", "p90", "p99", "p99.9", "max", "SR %"],
        _stage_rows(summary),
    )  # fmt: skip
    timing_table = (
        _table(
            ["server stage", "mean ms", "p99 ms"],
            [[k, v.get("mean"), v.get("p99")] for k, v in timing.items()],
        )
        if timing
        else "<p>The server sent no <code>Server-Timing</code> header.</p>"
    )
    measured = any(_has(records, column) for column, _, _ in _SERVER)
    resource_table = (
        _table(["server", "mean", "max"], _resource_rows(summary, records))
        if measured
        else "<p>No server resources were measured: the generator had no <code>--server-metrics</code> "
        "(the target's pods' <code>/metrics</code>), or none of its scrapes succeeded.</p>"
    )
    limits = summary.get("serverLimits")  # kinfer run: how the server's CPU limit and GPUs were applied
    if isinstance(limits, dict) and limits.get("notes"):
        resource_table += f'<p id="server-limits">{html.escape("; ".join(map(str, limits["notes"])))}</p>'
    if slo.get("met") is None and not slo:
        verdict = "no SLO set"
    else:
        verdict = "met" if slo.get("met") else "NOT met"
        verdict += f" (p99 ≤ {_fmt(slo.get('p99Ms'))} ms, success rate ≥ {_fmt(slo.get('minSuccessRate'), '.3f')})"
    if slo.get("message"):  # why, with the success rate beside the latency (failures count against both)
        verdict += f": {slo['message']}"
    if summary.get("incomplete"):
        verdict += f". The run did not finish ({summary.get('error') or 'no reason given'}): results are partial."
    capacity_section = _capacity_section(summary.get("capacity")) + _closed_loop_section(summary)
    intro = (
        "Closed loop: latency is measured from each request's <em>actual</em> send; the clients wait for "
        "their responses, so closed loops hide queueing (coordinated omission)."
        if closed
        else "Latency is measured from each request's <em>scheduled</em> send time (no coordinated "
        "omission); service time from the actual send; send lag shows whether the generator kept up."
    )
    figures = "".join(
        f'<figure><img src="{name}" alt="{html.escape(c)}"><figcaption>{html.escape(c)}</figcaption></figure>'
        for name, c in plots
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>kinfer report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 1000px; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
th {{ background: #f3f3f3; }} img {{ max-width: 100%; }} figcaption {{ color: #555; font-size: 0.9em; }}
</style></head><body>
<h1>kinfer load experiment report{" (closed loop)" if closed else ""}</h1>
<p>{intro}</p>
<h2>Overview</h2>{overview}
<h2>SLO</h2><p id="slo">{html.escape(verdict)}</p>
{capacity_section}<h2>Latency (ms)</h2>{latency}
<h2>Stages</h2>{stage_table}
<h2>Latency and server resources per stage</h2><div id="seed-table">{_seed_table(summary)}</div>
<h2>Server time per stage (Server-Timing)</h2>{timing_table}
<h2>Server CPU, memory and GPU</h2>{resource_table}
<h2>Plots</h2>{figures}
<p>Files: summary.json, records.csv (the server's resources in its last columns), stages.csv.</p>
</body></html>
"""
    path = results / REPORT
    path.write_text(page, encoding="utf-8")
    return path


def _capacity_section(capacity: dict[str, Any] | None) -> str:
    """Capacity mode: the rate found and every probe (empty in schedule mode)."""
    if not capacity:
        return ""
    rps = capacity.get("rps")
    found = (f"{_fmt(rps, 'g')} requests/s meets the SLO (p99 {_fmt(capacity.get('p99Ms'), '.2f')} ms)"
             if rps is not None else "none: even the lowest rate probed fails the SLO")  # fmt: skip
    rows = []
    for i, p in enumerate(capacity.get("probes") or []):
        sr = p.get("serviceRate")
        rows.append([i, p.get("rps"), p.get("p99Ms"), None if sr is None else sr * 100,
                     "meets" if p.get("met") else "fails", p.get("message")])  # fmt: skip
    table = _table(["probe", "rps", "p99 ms", "SR %", "SLO", "why"], rows)
    return (f'<h2>Capacity</h2><p id="capacity">Highest rate found: {found}. The overview, latency and '
            f"server figures cover the whole search; the stages are the probes.</p>{table}\n")  # fmt: skip
