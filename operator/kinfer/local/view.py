"""The live terminal view of ``kinfer run``: one row per experiment, refreshed every second.

On a terminal it is a rich table redrawn in place; otherwise (CI logs, pipes) one plain line per
experiment per refresh, so the output stays readable in a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text


@dataclass
class Row:
    """What the view knows of one experiment."""

    name: str
    dashboard: str | None
    duration_s: float
    snapshot: dict[str, Any] | None = None
    phase: str = "Pending"


def _num(value: Any, fmt: str = "{:.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def _fields(row: Row) -> dict[str, str]:
    s = row.snapshot or {}
    stage = s.get("stage") or {}
    sr = s.get("serviceRate")
    return {
        "phase": str(s.get("phase") or row.phase),
        "stage": "-" if stage.get("index") is None else str(stage["index"]),
        # a closed loop has no target rate: its clients instead
        "target": f"{s.get('concurrency')} clients" if s.get("mode") == "closed" else _num(s.get("targetRPS")),
        "rps": _num(s.get("realRPS")),
        "qps": _num(s.get("realQPS")),
        "p99": _num(s.get("p99Ms")),
        "avg99": _num(s.get("avg99thMs")),
        "sr": "-" if sr is None else f"{sr * 100:.1f}",
        "errors": str(s.get("errors", "-"))
        if not isinstance(s.get("errors"), dict)
        else str(sum(s["errors"].values())),
        "t": _num(s.get("t"), "{:.0f}"),
        # the target server's resources over the last record (empty: not measured, or no GPU)
        "cpu": _num(s.get("serverCPU"), "{:.2f}"),
        "mem": _num(s.get("serverMemoryMB"), "{:.0f}"),
        "gpu": _num(s.get("serverGPUUtil"), "{:.0f}"),
    }


def render_table(rows: list[Row]) -> Group:
    """The rich renderable for a terminal."""
    table = Table(title="kinfer run", expand=False)
    for col in ("experiment", "phase", "stage", "target", "realRPS", "realQPS", "p99 ms", "Avg99th ms", "SR %",
                "errors", "CPU cores", "mem MB", "GPU %", "progress"):  # fmt: skip
        table.add_column(col, justify="left" if col in ("experiment", "phase", "progress") else "right")
    for row in rows:
        f = _fields(row)
        t = (row.snapshot or {}).get("t") or 0.0
        bar = ProgressBar(total=max(row.duration_s, 1e-9), completed=min(float(t), row.duration_s), width=24)
        table.add_row(row.name, f["phase"], f["stage"], f["target"], f["rps"], f["qps"], f["p99"], f["avg99"],
                      f["sr"], f["errors"], f["cpu"], f["mem"], f["gpu"], bar)  # fmt: skip
    links = [Text(f"dashboard {r.name}: {r.dashboard}", style="dim") for r in rows if r.dashboard]
    return Group(table, *links)


def plain_lines(rows: list[Row]) -> list[str]:
    """One log line per experiment for non-terminal output."""
    lines = []
    for row in rows:
        f = _fields(row)
        lines.append(
            f"[{row.name}] t={f['t']}s phase={f['phase']} stage={f['stage']} target={f['target']} "
            f"realRPS={f['rps']} realQPS={f['qps']} p99={f['p99']}ms avg99th={f['avg99']}ms "
            f"SR={f['sr']}% errors={f['errors']} serverCPU={f['cpu']} serverMemoryMB={f['mem']} "
            f"serverGPUUtil={f['gpu']}"
        )
    return lines


def make_console() -> Console:
    """The console the view writes to (stdout); wide when not a terminal, so log lines never wrap."""
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=200)
    return console
