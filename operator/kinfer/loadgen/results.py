"""The results directory: ``records.csv``, ``stages.csv`` and ``summary.json`` (DESIGN.md §9).

records.csv has §9's columns first, then the server's resources per record (``serverCPU``,
``serverMemoryMB``, ``serverGPUUtil``, ``serverGPUMemoryMB``); stages.csv ends with their per-stage means.

Written as the run goes, so that an interrupted run (SIGINT/SIGTERM, a crashed target) loses nothing
already measured: with every record, summary.json and stages.csv are rewritten atomically (write a
temporary file, then rename), and then the record is appended to records.csv and flushed at once. A
generator killed between the two leaves a summary one record ahead of records.csv, never behind it.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from kinfer.loadgen.recorder import CSV_COLUMNS, SERVER_SUMMARY_KEYS, Record
from kinfer.loadgen.server_resources import SERVER_FIELDS

STAGE_COLUMNS = (
    "index",
    "rps",
    "concurrency",
    "durationS",
    "sent",
    "completed",
    "errors",
    "dropped",
    "p50Ms",
    "p90Ms",
    "p99Ms",
    "p999Ms",
    "maxMs",
    "meanMs",
    "serviceRate",
    "requestsPerS",
    "imagesPerS",
    *SERVER_FIELDS,
)


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that readers see the old or the new file, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
    tmp.replace(path)


def stage_rows(stages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flatten per-stage summaries into stages.csv rows."""
    rows = []
    for s in stages:
        lat = s["latencyMs"]
        keys = ("index", "rps", "concurrency", "durationS", "sent", "completed", "errors", "dropped")
        row = {k: s.get(k) for k in keys}
        for name in ("p50", "p90", "p99", "p999", "max", "mean"):
            row[f"{name}Ms"] = lat.get(name)
        for key in ("serviceRate", "requestsPerS", "imagesPerS"):
            row[key] = s.get(key)
        server = s.get("server") or {}
        for column, key in zip(SERVER_FIELDS, SERVER_SUMMARY_KEYS, strict=True):
            row[column] = server.get(key)
        rows.append({k: ("" if v is None else v) for k, v in row.items()})
    return rows


class ResultsWriter:
    """Owns one results directory for one run."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._records: IO[str] = (directory / "records.csv").open("w", newline="", encoding="utf-8")
        self._csv = csv.DictWriter(self._records, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        self._csv.writeheader()
        self._records.flush()

    def append_record(self, record: Record) -> None:
        """Append one row to records.csv and flush it to the OS."""
        self._csv.writerow(record.csv_values())
        self._records.flush()

    def append_row(self, record: Mapping[str, Any]) -> None:
        """Append one row from a record as ``GET /api/records`` shows it (``kubectl kinfer report``
        rebuilds records.csv from the records the operator stored)."""
        self._csv.writerow({k: ("" if record.get(k) is None else record[k]) for k in CSV_COLUMNS})
        self._records.flush()

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Rewrite summary.json and stages.csv atomically."""
        write_atomic(self.directory / "summary.json", json.dumps(summary, indent=2) + "\n")
        lines = _csv_text(STAGE_COLUMNS, stage_rows(summary.get("stages", [])))
        write_atomic(self.directory / "stages.csv", lines)

    def close(self) -> None:
        """Close records.csv."""
        self._records.close()


def _csv_text(columns: tuple[str, ...], rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
