"""``kubectl kinfer report NAME --output DIR``: the results directory rebuilt from what the operator stored.

The operator keeps each run's records and summaries in ConfigMaps owned by the LoadExperiment
(:mod:`kinfer.stored_results`), so this works after any ending, with the generator pods gone. The
directory is the one ``kinfer run`` / ``kinfer loadgen --output`` writes, through the same code
(:class:`kinfer.loadgen.results.ResultsWriter`, :func:`kinfer.loadgen.report.write_report`):
``summary.json`` (DESIGN.md §9), ``records.csv`` (with ``parallelism`` > 1 the generators' records
merged per record: see :func:`kinfer.stored_results.merge_records`; each generator's own series beside
it as ``records-g<i>.csv``), ``stages.csv``, the plots and ``report.html``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kinfer import stored_results
from kinfer.controller.results import merge_summaries, server_resources
from kinfer.loadgen.recorder import CSV_COLUMNS
from kinfer.loadgen.report import write_report
from kinfer.loadgen.results import ResultsWriter

#: Phases after which the stored summary is final.
TERMINAL = ("Succeeded", "Failed", "Stopped")


class NoResults(Exception):
    """Nothing is stored for the experiment (yet)."""


def owned(items: Sequence[Mapping[str, Any]], uid: str | None) -> list[Mapping[str, Any]]:
    """The objects the experiment controls (a same-named object of someone else's is never read)."""
    out = []
    for item in items:
        refs = (item.get("metadata") or {}).get("ownerReferences") or []
        if uid is None or any(r.get("uid") == uid and r.get("controller") for r in refs):
            out.append(item)
    return out


def load(
    experiment: Mapping[str, Any], configmaps: Sequence[Mapping[str, Any]]
) -> tuple[dict[str, Any], stored_results.Stored, bool]:
    """(summary, stored records, final) from the experiment and its ConfigMaps.

    ``final``: the run is over and the summary is the operator's last word; otherwise the summary is
    built from the generators' latest stored summaries and marked incomplete."""
    meta = experiment.get("metadata") or {}
    name = str(meta.get("name"))
    mine = owned(configmaps, meta.get("uid"))
    by_name = {str((cm.get("metadata") or {}).get("name")): cm for cm in mine}
    chunks = sorted(
        ((k, cm) for n, cm in by_name.items() if (k := stored_results.chunk_index(name, n)) is not None),
        key=lambda pair: pair[0],
    )
    stored = stored_results.read_chunks([cm for _, cm in chunks])
    phase = (experiment.get("status") or {}).get("phase") or "Pending"
    summary: dict[str, Any] = {}
    text = ((by_name.get(stored_results.summary_name(name)) or {}).get("data") or {}).get("summary.json")
    if text:
        try:
            summary = json.loads(text)
        except ValueError:
            summary = {}
    final = phase in TERMINAL and bool(summary) and "sent" in summary
    if not final:
        parts = [stored.summaries[g] for g in sorted(stored.summaries)]
        if not parts and not stored.records:
            why = "it has not started sending yet" if phase not in TERMINAL else "none were stored"
            raise NoResults(f"loadexperiment/{name} has no results yet ({phase}: {why})")
        summary = merge_summaries(parts) if parts else {"phase": phase}
        summary["incomplete"] = True
        summary["incompleteReason"] = (
            f"the run is {phase}: results up to the last stored record"
            if phase not in TERMINAL
            else "the operator stored no final summary: built from the generators' last stored summaries"
        )
        summary["error"] = summary.get("error") or summary["incompleteReason"]
    return summary, stored, final


def _write_csv(path: Path, records: Sequence[Mapping[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: ("" if r.get(k) is None else r[k]) for k in CSV_COLUMNS} for r in records)


def write_directory(summary: Mapping[str, Any], stored: stored_results.Stored, output: Path) -> Path:
    """Write the results directory; the path of ``report.html``."""
    generators = sorted(stored.records)
    series = stored_results.merge_records([stored.series(g) for g in generators]) if generators else []
    full = dict(summary)
    if full.get("server") is None:
        full["server"] = server_resources(series)
    writer = ResultsWriter(output)
    try:
        for record in series:
            writer.append_row(record)
        writer.write_summary(full)
    finally:
        writer.close()
    if len(generators) > 1:
        for g in generators:
            _write_csv(output / f"records-g{g}.csv", stored.series(g))
    return write_report(output)


def report_to_directory(
    name: str,
    output: Path,
    get_experiment: Callable[[], dict[str, Any]],
    list_configmaps: Callable[[], list[dict[str, Any]]],
    say: Callable[[str], None],
) -> dict[str, Any]:
    """The ``--output`` path of ``kubectl kinfer report``: the summary written (``NoResults`` when
    nothing is stored)."""
    experiment = get_experiment()
    summary, stored, final = load(experiment, list_configmaps())
    phase = (experiment.get("status") or {}).get("phase") or "Pending"
    if not final:
        say(f"loadexperiment/{name} is {phase}: writing what is stored so far")
    report = write_directory(summary, stored, output)
    records = sum(len(v) for v in stored.records.values())
    say(f"wrote {output} ({records} records from {len(stored.records)} generator(s)); report: {report}")
    return dict(summary)
