"""End-of-run plots (PNG, matplotlib) and ``report.html`` in the results directory (DESIGN.md §6).

Written once the run is over, from what records.csv and summary.json already hold, so a failure here
never costs a measurement.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from kinfer.loadgen.recorder import Record


def write_plots(directory: Path, records: list[Record]) -> list[str]:
    """``rates.png`` (target, sent, completed) and ``latency.png`` (p50, p99, avg99th); returns names."""
    if not records:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r.t for r in records]
    written = []
    series: dict[str, list[tuple[str, list[float | None]]]] = {
        "rates.png": [
            ("targetRPS", [r.target_rps for r in records]),
            ("realRPS", [r.real_rps for r in records]),
            ("realQPS", [r.real_qps for r in records]),
        ],
        "latency.png": [
            ("p50Ms", [r.p50_ms for r in records]),
            ("p99Ms", [r.p99_ms for r in records]),
            ("avg99thMs", [r.avg99th_ms for r in records]),
        ],
    }
    for name, lines in series.items():
        fig, ax = plt.subplots(figsize=(9, 3.5))
        for label, values in lines:
            ax.plot(t, [float("nan") if v is None else v for v in values], label=label)
        ax.set_xlabel("t (s)")
        ax.set_ylabel("requests/s" if name == "rates.png" else "ms")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(directory / name, dpi=100)
        plt.close(fig)
        written.append(name)
    return written


def _cell(value: Any) -> str:
    return "-" if value is None else html.escape(str(value))


def write_report(directory: Path, summary: dict[str, Any], plots: list[str]) -> None:
    """A self-contained HTML page: totals, latency, per-stage table, plots."""
    lat = summary.get("latencyMs", {})
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{_cell(v)}</td>"
            for v in (
                s["index"], s["rps"], s["durationS"], s["sent"], s["completed"], s["errors"], s["dropped"],
                s["latencyMs"]["p50"], s["latencyMs"]["p99"], s["latencyMs"]["max"], s["serviceRate"],
            )
        )
        + "</tr>"
        for s in summary.get("stages", [])
    )
    images = "".join(f'<p><img src="{html.escape(p)}" alt="{html.escape(p)}"></p>' for p in plots)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>kinfer loadgen report</title>
<style>body{{font-family:system-ui,sans-serif;margin:1.5em}}td,th{{padding:2px 8px;text-align:right}}</style>
</head><body>
<h1>kinfer loadgen report</h1>
<p>{_cell(summary.get("url"))} &mdash; {_cell(summary.get("phase"))}, arrival {_cell(summary.get("arrival"))},
{_cell(summary.get("durationS"))} s, achieved {_cell(summary.get("achievedRPS"))} RPS</p>
<p>sent {_cell(summary.get("sent"))}, completed {_cell(summary.get("completed"))},
errors {_cell(summary.get("errors"))} {_cell(summary.get("errorsByClass"))}, dropped {_cell(summary.get("dropped"))}</p>
<p>latency from the scheduled send time (ms): p50 {_cell(lat.get("p50"))}, p90 {_cell(lat.get("p90"))},
p99 {_cell(lat.get("p99"))}, p99.9 {_cell(lat.get("p999"))}, max {_cell(lat.get("max"))};
send lag p99 {_cell(summary.get("sendLagMs", {}).get("p99"))} ms; SLO {_cell(summary.get("slo"))}</p>
<table><tr><th>stage</th><th>rps</th><th>s</th><th>sent</th><th>completed</th><th>errors</th><th>dropped</th>
<th>p50 ms</th><th>p99 ms</th><th>max ms</th><th>service rate</th></tr>{rows}</table>
{images}
</body></html>
"""
    (directory / "report.html").write_text(page, encoding="utf-8")
