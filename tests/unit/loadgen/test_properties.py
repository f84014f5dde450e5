"""Properties of the generator's pure parts, over generated inputs (hypothesis).

- merging buckets (process snapshots, pods) is exact whatever the order and grouping, and never
  reports more completions than sends;
- the recorder's records and totals, from any interleaving of several generators' snapshots, add up to
  what the generators measured, and never show more completions than sends;
- the response parser, fed any bytes in any pieces, completes a request at most once and never raises;
- ``Server-Timing`` parsing never raises on any header text.
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kinfer.api.schedule import Stage
from kinfer.loadgen.engine import Snapshot
from kinfer.loadgen.httpclient import Connection, ConnectionPool, Target
from kinfer.loadgen.plan import RatePlan
from kinfer.loadgen.recorder import Recorder
from kinfer.loadgen.stats import Bucket, parse_server_timing, percentile_ms, record_seconds

ERROR_CLASSES = ("http_503", "timeout", "connection", "reset", "closed")


@st.composite
def buckets(draw: st.DrawFn) -> Bucket:
    sent = draw(st.integers(0, 40))
    completed = draw(st.integers(0, sent))
    failed = sent - completed - draw(st.integers(0, sent - completed))  # some may still be in flight
    bucket = Bucket(sent=sent, completed=completed, dropped=draw(st.integers(0, 10)))
    for _ in range(failed):
        bucket.errors[draw(st.sampled_from(ERROR_CLASSES))] += 1
    for seconds in draw(st.lists(st.floats(0.0001, 30.0), min_size=completed, max_size=completed)):
        record_seconds(bucket.latency, seconds)
        bucket.latency_sum += seconds
    return bucket


def _merged(parts: list[Bucket]) -> Bucket:
    out = Bucket()
    for part in parts:
        out.merge(part)
    return out


def _fingerprint(b: Bucket) -> tuple[Any, ...]:
    return (
        b.sent, b.completed, b.dropped, dict(+b.errors), b.latency.get_total_count(),
        [percentile_ms(b.latency, q) for q in (50.0, 99.0, 100.0)], round(b.latency_sum, 6),
    )  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(parts=st.lists(buckets(), max_size=8), seed=st.integers(0, 2**32 - 1), encode=st.booleans())
def test_merging_buckets_is_exact_in_any_order_and_never_completes_more_than_it_sent(
    parts: list[Bucket], seed: int, encode: bool
) -> None:
    if encode:  # as snapshots cross the pipe from worker processes
        parts = [Bucket.decode(p.encode()) for p in parts]
    whole = _merged(parts)
    shuffled = parts[:]
    random.Random(seed).shuffle(shuffled)
    cut = len(shuffled) // 2
    regrouped = _merged([_merged(shuffled[:cut]), _merged(shuffled[cut:])])
    assert _fingerprint(whole) == _fingerprint(regrouped)
    assert whole.sent == sum(p.sent for p in parts)
    assert whole.completed == sum(p.completed for p in parts) <= whole.sent
    assert whole.completed + whole.error_count <= whole.sent
    assert whole.latency.get_total_count() == whole.completed


PLAN = RatePlan([Stage(rps=100, duration="2s"), Stage(rps=50, duration="2s")], loop=False, end=4)


@settings(max_examples=100, deadline=None)
@given(
    generators=st.integers(1, 4),
    intervals=st.integers(1, 5),
    data=st.data(),
)
def test_records_from_any_interleaving_of_generators_add_up_and_never_complete_more_than_sent(
    generators: int, intervals: int, data: st.DataObject
) -> None:
    snapshots = []
    for worker in range(generators):
        for index in range(intervals):
            stage = data.draw(st.sampled_from([0, 1]))
            snap = Snapshot(index, 1.0, 50.0, 0, {stage: data.draw(buckets())}, final=index == intervals - 1)
            snapshots.append((worker, snap))
    # a worker's snapshots arrive in its own order; workers interleave arbitrarily
    order = data.draw(st.permutations(range(len(snapshots))))
    queues: dict[int, list[Snapshot]] = {w: [s for ww, s in snapshots if ww == w] for w in range(generators)}
    arrivals = [snapshots[i][0] for i in order]
    recorder = Recorder(PLAN, interval=1.0, window=3, generators=generators)
    for worker in arrivals:
        recorder.add(worker, queues[worker].pop(0))
    assert recorder.finished
    sent = sum(b.sent for _, s in snapshots for b in s.buckets.values())
    completed = sum(b.completed for _, s in snapshots for b in s.buckets.values())
    assert len(recorder.records) <= intervals  # an empty final interval adds no record
    assert sum(r.real_rps for r in recorder.records) == sent == recorder.total.sent
    assert sum(r.real_qps for r in recorder.records) == completed == recorder.total.completed <= sent
    totals = recorder.totals()
    assert totals["completed"] <= totals["sent"]
    for summary in recorder.stage_summaries():
        assert summary["completed"] <= summary["sent"]
    for record in recorder.records:
        assert record.service_rate is None or record.service_rate >= 0


class _Transport:
    def __init__(self) -> None:
        self.closing = False

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def write(self, data: bytes) -> None:
        pass

    def get_extra_info(self, name: str) -> Any:
        return None


_http_like = st.sampled_from(
    [b"HTTP/1.1 200 OK\r\n", b"Content-Length: 3\r\n", b"Transfer-Encoding: chunked\r\n", b"\r\n", b"abc",
     b"3\r\nabc\r\n", b"0\r\n\r\n", b"HTTP/1.0 204 No\r\n", b"Connection: close\r\n", b"zz\r\n", b"HTTP/1.1 1"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(_http_like | st.binary(max_size=20), max_size=12),
    lost=st.sampled_from([None, ConnectionResetError(), BrokenPipeError()]),
)
def test_the_response_parser_completes_at_most_once_and_never_raises_on_any_bytes(
    pieces: list[bytes], lost: Exception | None
) -> None:
    done: list[tuple[Any, ...]] = []
    pool = ConnectionPool(Target("http", "h", 80, "/", "127.0.0.1"), lambda *a: done.append(a), timeout=1.0)
    conn = Connection(pool)
    conn.connection_made(_Transport())  # type: ignore[arg-type]
    conn.start(1.0, 2.0, 0, b"GET / HTTP/1.1\r\n\r\n")
    pool._busy.add(conn)
    for piece in pieces:
        conn.data_received(piece)
    conn.connection_lost(lost)  # a fresh connection: ends the request (never retried)
    assert len(done) <= 1
    assert pool.in_flight == 0
    if done:
        status, error = done[0][3], done[0][4]
        assert (status == 0) == (error is not None) or error.startswith("http_")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_server_timing_parsing_never_raises(header: str) -> None:
    for name, ms in parse_server_timing(header):
        assert name and isinstance(ms, float)
