"""Results files have DESIGN.md §9's names and survive an interrupted run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from kinfer.loadgen.recorder import RECORD_COLUMNS, Record
from kinfer.loadgen.results import ResultsWriter


def rows_of(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.read_text().splitlines()))


def record(i: int) -> Record:
    return Record(i, i + 1.0, 100, 99, 98, 1, 0, 1.5, 9.5, 12.0, 99, 98, 0.99, 9.5)


def test_records_csv_has_the_design_columns_and_is_readable_after_each_record(tmp_path: Path) -> None:
    writer = ResultsWriter(tmp_path)
    writer.append_record(record(0))
    # not closed yet: a crash now must leave the row on disk
    rows = (rows_of(tmp_path / "records.csv"))
    assert tuple(rows[0].keys()) == RECORD_COLUMNS
    assert RECORD_COLUMNS == (
        "t", "targetRPS", "realRPS", "realQPS", "errors", "dropped", "p50Ms", "p99Ms", "maxMs",
        "avgRPS", "avgQPS", "serviceRate", "avg99thMs", "concurrency", "imagesPerS",
        "serverCPU", "serverMemoryMB", "serverGPUUtil", "serverGPUMemoryMB",
    )  # fmt: skip
    assert rows[0]["p99Ms"] == "9.5"
    writer.append_record(record(1))
    writer.close()
    assert len(rows_of(tmp_path / "records.csv")) == 2


def test_missing_measurements_are_empty_cells(tmp_path: Path) -> None:
    writer = ResultsWriter(tmp_path)
    writer.append_record(Record(0, 1.0, 10, 0, 0, 0, 0, None, None, None))
    writer.close()
    row = rows_of(tmp_path / "records.csv")[0]
    assert (row["p50Ms"], row["serviceRate"]) == ("", "")


def test_summary_and_stages_are_rewritten_whole(tmp_path: Path) -> None:
    writer = ResultsWriter(tmp_path)
    stage = {
        "index": 0, "rps": 10, "durationS": 5, "sent": 50, "completed": 49, "errors": 1, "dropped": 0,
        "latencyMs": {"p50": 1, "p90": 2, "p99": 3, "p999": 4, "max": 5, "mean": 1.5}, "serviceRate": 0.98,
    }  # fmt: skip
    writer.write_summary({"sent": 1, "stages": []})
    writer.write_summary({"sent": 50, "stages": [stage]})
    writer.close()
    assert json.loads((tmp_path / "summary.json").read_text())["sent"] == 50
    [row] = (rows_of(tmp_path / "stages.csv"))
    assert (row["rps"], row["p99Ms"], row["serviceRate"]) == ("10", "3", "0.98")
    assert not list(tmp_path.glob(".*.tmp"))
