"""A LoadExperiment's results as the operator keeps them in ConfigMaps, so they outlive its generator pods.

Shared by the operator (``kinfer.controller``, which writes them) and ``kubectl kinfer report``
(which reads them back into a results directory); neither may import the other, so the layout lives
here. Layout, per experiment ``NAME`` (every object owned by the LoadExperiment: deleting the
experiment deletes them through the garbage collector):

- ``NAME-results``: ``summary.json`` (DESIGN.md §9's shape) and ``stages.csv``, written when the run
  starts (marked incomplete) and when it ends.
- ``NAME-results-<k>`` (k = 0, 1, ...): the records of each generator pod (completion index ``g``):
  ``binaryData["g<g>.<first>.jsonl.gz"]`` holds records ``first..`` as gzip-compressed JSON lines
  (``GET /api/records`` objects, as they came); ``data["g<g>.tail.jsonl"]`` the newest records not yet
  compressed; ``data["g<g>.summary.json"]`` the generator's latest summary (for a generator that dies
  before the end). A tail is compressed once it holds :data:`TAIL_RECORDS` records; a chunk is closed
  (its tails compressed) once it holds :data:`CHUNK_BYTES`, and the next one is started.

Bound: one write per record interval, of at most the tails and summaries (a few KB per generator);
each chunk ConfigMap stays near :data:`CHUNK_BYTES` (far below the API's 1 MiB object limit), and the
number of chunks grows with the run (about 130 bytes per 1 s record compressed: see the README).
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Records in a tail before it is compressed into a gzip member of its own.
TAIL_RECORDS = 30
#: Bytes (base64 + text) of a chunk ConfigMap after which the next chunk is started.
CHUNK_BYTES = 256 * 1024

_GZ_KEY = re.compile(r"^g(\d+)\.(\d+)\.jsonl\.gz$")
_TAIL_KEY = re.compile(r"^g(\d+)\.tail\.jsonl$")
_SUMMARY_KEY = re.compile(r"^g(\d+)\.summary\.json$")


def summary_name(name: str) -> str:
    """The ConfigMap with ``summary.json`` and ``stages.csv``."""
    return f"{name}-results"


def chunk_name(name: str, k: int) -> str:
    """The ``k``-th ConfigMap of records."""
    return f"{name}-results-{k}"


def chunk_index(experiment: str, configmap: str) -> int | None:
    """``k`` when ``configmap`` is chunk ``k`` of ``experiment``, else ``None``."""
    prefix = f"{experiment}-results-"
    rest = configmap.removeprefix(prefix)
    return int(rest) if rest != configmap and rest.isdigit() else None


def gz_key(generator: int, first: int) -> str:
    """Key of the compressed records ``first..`` of a generator."""
    return f"g{generator}.{first:07d}.jsonl.gz"


def tail_key(generator: int) -> str:
    """Key of a generator's uncompressed newest records."""
    return f"g{generator}.tail.jsonl"


def summary_key(generator: int) -> str:
    """Key of a generator's latest summary."""
    return f"g{generator}.summary.json"


def jsonl(records: Iterable[Mapping[str, Any]]) -> str:
    """Records as JSON lines (compact)."""
    return "".join(json.dumps(r, separators=(",", ":"), sort_keys=True) + "\n" for r in records)


def parse_jsonl(text: str) -> list[dict[str, Any]]:
    """JSON lines back to records (a torn last line is skipped, never fatal)."""
    out = []
    for line in text.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


def compress(records: Sequence[Mapping[str, Any]]) -> str:
    """Records as base64 gzip JSON lines (a ConfigMap ``binaryData`` value)."""
    return base64.b64encode(gzip.compress(jsonl(records).encode(), compresslevel=9, mtime=0)).decode("ascii")


def decompress(value: str) -> list[dict[str, Any]]:
    """A ``binaryData`` value of :func:`compress` back to records."""
    return parse_jsonl(gzip.decompress(base64.b64decode(value)).decode())


def object_bytes(configmap: Mapping[str, Any]) -> int:
    """What a ConfigMap's data and binaryData weigh (keys and values, as stored)."""
    return sum(len(k) + len(v) for part in ("data", "binaryData") for k, v in (configmap.get(part) or {}).items())


@dataclass
class Stored:
    """What is stored for one experiment: each generator's records and latest summary."""

    records: dict[int, dict[int, dict[str, Any]]] = field(default_factory=dict)
    """Generator → record index → record (deduplicated by the record's ``index``)."""
    tails: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    """Generator → the records in the newest chunk's tail (not compressed yet)."""
    summaries: dict[int, dict[str, Any]] = field(default_factory=dict)
    chunk: int = 0
    """The newest chunk's ``k`` (where the next write goes)."""
    sizes: dict[str, int] = field(default_factory=dict)
    """Key → bytes (key and value) of the newest chunk as stored."""
    chunk_exists: bool = False

    @property
    def chunk_bytes(self) -> int:
        """What the newest chunk weighs."""
        return sum(self.sizes.values())

    def next_index(self, generator: int) -> int:
        """``since`` for the generator's next ``GET /api/records`` (one past the last stored record)."""
        got = self.records.get(generator) or {}
        return max(got) + 1 if got else 0

    def series(self, generator: int) -> list[dict[str, Any]]:
        """A generator's records in order."""
        got = self.records.get(generator) or {}
        return [got[i] for i in sorted(got)]


def _record_index(record: Mapping[str, Any], fallback: int) -> int:
    value = record.get("index")
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else fallback


def read_chunks(chunks: Sequence[Mapping[str, Any]]) -> Stored:
    """The stored state from the chunk ConfigMaps (in ``k`` order): an operator that restarts resumes
    from here, and ``kubectl kinfer report`` rebuilds the results directory from it."""
    stored = Stored()
    for k, cm in enumerate(chunks):
        for key, value in sorted((cm.get("binaryData") or {}).items()):
            m = _GZ_KEY.match(key)
            if m:
                gen, first = int(m.group(1)), int(m.group(2))
                for offset, rec in enumerate(decompress(value)):
                    stored.records.setdefault(gen, {})[_record_index(rec, first + offset)] = rec
        for key, value in sorted((cm.get("data") or {}).items()):
            if m := _TAIL_KEY.match(key):
                gen = int(m.group(1))
                tail = parse_jsonl(value)
                base = stored.next_index(gen)
                for offset, rec in enumerate(tail):
                    stored.records.setdefault(gen, {})[_record_index(rec, base + offset)] = rec
                if k == len(chunks) - 1:
                    stored.tails[gen] = tail
            elif m := _SUMMARY_KEY.match(key):
                with contextlib.suppress(ValueError):
                    stored.summaries[int(m.group(1))] = json.loads(value)
        stored.chunk = k
        stored.sizes = {key: len(key) + len(value) for part in ("data", "binaryData")
                        for key, value in (cm.get(part) or {}).items()}  # fmt: skip
        stored.chunk_exists = True
    return stored


@dataclass(frozen=True)
class Write:
    """One write to the newest chunk: ``create`` it (``data``/``binaryData`` whole) or merge-patch it
    (``None`` values delete keys); then ``roll`` to a new chunk for the next write."""

    chunk: int
    create: bool
    data: dict[str, str | None]
    binary: dict[str, str]
    roll: bool


def plan_write(
    stored: Stored,
    fresh: Mapping[int, Sequence[Mapping[str, Any]]],
    summaries: Mapping[int, Mapping[str, Any]],
    final: bool = False,
) -> Write | None:
    """Add ``fresh`` records (per generator) and latest ``summaries`` to ``stored``; the one write that
    stores them (``None`` when there is nothing new). ``final`` compresses every tail (the run is over).

    ``stored`` is updated as if the write succeeded; a caller whose write fails re-reads the chunks.
    """
    data: dict[str, str | None] = {}
    binary: dict[str, str] = {}
    changed: set[int] = set()
    for gen, records in fresh.items():
        known = stored.records.setdefault(gen, {})
        for rec in records:
            index = _record_index(rec, stored.next_index(gen))
            if index in known:
                continue
            known[index] = dict(rec)
            stored.tails.setdefault(gen, []).append(dict(rec))
            changed.add(gen)
    for gen, summary in summaries.items():
        if stored.summaries.get(gen) != summary:
            stored.summaries[gen] = dict(summary)
            data[summary_key(gen)] = json.dumps(summary, separators=(",", ":"), sort_keys=True)
    full = stored.chunk_bytes >= CHUNK_BYTES
    for gen, tail in stored.tails.items():
        if not tail:
            continue
        if final or full or len(tail) >= TAIL_RECORDS:
            binary[gz_key(gen, _record_index(tail[0], 0))] = compress(tail)
            data[tail_key(gen)] = None if stored.chunk_exists else ""
            stored.tails[gen] = []
        elif gen in changed:
            data[tail_key(gen)] = jsonl(tail)
    if not data and not binary:
        return None
    if not stored.chunk_exists:  # a new chunk: no keys to delete, empty tails left out
        data = {k: v for k, v in data.items() if v}
    write = Write(stored.chunk, not stored.chunk_exists, data, binary, roll=full)
    for key, value in [*binary.items(), *data.items()]:
        if value is None:
            stored.sizes.pop(key, None)
        else:
            stored.sizes[key] = len(key) + len(value)
    stored.chunk_exists = True
    if full:
        stored.chunk += 1
        stored.sizes = {}
        stored.chunk_exists = False
        stored.tails = {}
    return write


# --- merging several generators ---------------------------------------------------------------------

_RECORD_SUMS = ("targetRPS", "realRPS", "realQPS", "errors", "dropped", "avgRPS", "avgQPS", "imagesPerS", "inFlight")
_RECORD_MAXES = ("p50Ms", "p99Ms", "maxMs", "avg99thMs", "sendLagP99Ms", "serviceTimeP99Ms")
_RECORD_SERVER = ("serverCPU", "serverMemoryMB", "serverGPUUtil", "serverGPUMemoryMB")


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def merge_records(per_generator: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """One series from several generators' records, aligned by record ``index`` (each pod's interval
    ``index`` covers the same time, as every pod starts the schedule at once).

    Rates and counts (``realRPS``, ``realQPS``, ``errors``, ``dropped``, ``targetRPS``, the window
    averages) are summed; ``serviceRate`` is recomputed from the summed window averages. Per-record
    percentiles (``p50Ms``, ``p99Ms``, ``avg99thMs``) are the largest pod's: records carry no histogram,
    so this is an upper bound of the merged percentile (``maxMs`` is exact). The server's resources are
    measured on the same target by every pod: the first pod's value is kept, never summed.
    """
    if len(per_generator) == 1:
        return [dict(r) for r in per_generator[0]]
    by_index: dict[int, list[Mapping[str, Any]]] = {}
    for series in per_generator:
        for offset, rec in enumerate(series):
            by_index.setdefault(_record_index(rec, offset), []).append(rec)
    out = []
    for index in sorted(by_index):
        parts = by_index[index]
        row: dict[str, Any] = {"index": index, "t": max(_num(p.get("t")) or 0.0 for p in parts)}
        for key in _RECORD_SUMS:
            nums = [v for p in parts if (v := _num(p.get(key))) is not None]
            if nums:
                total = round(sum(nums), 3)
                row[key] = int(total) if key in ("errors", "dropped", "inFlight") else total
        for key in _RECORD_MAXES:
            nums = [v for p in parts if (v := _num(p.get(key))) is not None]
            row[key] = max(nums) if nums else None
        clients = [v for p in parts if (v := _num(p.get("concurrency"))) is not None]
        row["concurrency"] = int(sum(clients)) if clients else None
        avg_rps, avg_qps = row.get("avgRPS"), row.get("avgQPS")
        row["serviceRate"] = round(avg_qps / avg_rps, 4) if avg_rps and avg_qps is not None else None
        for key in _RECORD_SERVER:
            row[key] = next((v for p in parts if (v := _num(p.get(key))) is not None), None)
        classes: dict[str, int] = {}
        for p in parts:
            for name, count in (p.get("errorsByClass") or {}).items():
                classes[name] = classes.get(name, 0) + int(count)
        row["errorsByClass"] = classes
        out.append(row)
    return out
