"""The real generator against a real local server: open loop, truthful latency, errors, drops."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path

import pytest

from kinfer.loadgen.recorder import Record
from kinfer.loadgen.results import ResultsWriter
from tests.app.loadgen.conftest import StartRun
from tests.app.loadgen.support import TargetServer, eventually


async def test_sends_the_scheduled_requests_and_the_server_sees_each_one(
    target: TargetServer, start_run: StartRun
) -> None:
    handle = await start_run(target.url(), "--rps", "100", "--duration", "2", "--arrival", "uniform")
    run = await handle.finished()
    summary = run.summary()
    assert summary["phase"] == "Succeeded"
    assert summary["sent"] == target.received == summary["completed"]
    assert summary["sent"] == pytest.approx(200, abs=2)
    assert summary["errors"] == summary["dropped"] == 0
    assert summary["latencyMs"]["p50"] > 0
    assert [r.index for r in run.recorder.records] == list(range(len(run.recorder.records)))
    assert run.recorder.records[0].real_rps == pytest.approx(100, abs=2)


async def test_a_stalled_server_shows_up_in_p99_from_the_scheduled_time(
    target: TargetServer, start_run: StartRun
) -> None:
    target.stall = asyncio.Event()
    handle = await start_run(target.url(), "--rps", "100", "--duration", "1.5", "--arrival", "uniform")
    await eventually(lambda: target.received >= 40)
    assert handle.run.t0 is not None
    due_by_now = (time.monotonic() - handle.run.t0) * 100
    received_while_stalled = target.received
    target.stall.set()
    summary = (await handle.finished()).summary()
    # open loop: nothing came back for 0.4 s, yet the server saw every request due by then
    assert received_while_stalled == pytest.approx(due_by_now, abs=5)
    assert summary["sent"] == pytest.approx(150, abs=2)
    # ... and those requests waited, which latency from the scheduled time shows
    assert summary["latencyMs"]["p99"] >= 350
    assert summary["latencyMs"]["max"] >= 390
    # the generator itself kept to its schedule (the burst of answers at the release, handled in
    # this same event loop as the target, may delay a few sends on a loaded machine: not asserted)
    assert summary["sendLagMs"]["p50"] < 10


async def test_beyond_max_in_flight_requests_are_dropped_not_delayed(
    target: TargetServer, start_run: StartRun
) -> None:
    target.stall = asyncio.Event()
    handle = await start_run(
        target.url(), "--rps", "100", "--duration", "1", "--arrival", "uniform", "--max-in-flight", "5"
    )
    await eventually(lambda: handle.run.elapsed() > 0.5)
    assert target.received <= 5
    target.stall.set()
    summary = (await handle.finished()).summary()
    assert summary["sent"] + summary["dropped"] == pytest.approx(100, abs=2)
    assert summary["dropped"] >= 40
    assert summary["sendLagMs"]["max"] < 100


async def test_http_errors_are_counted_by_status_class(target: TargetServer, start_run: StartRun) -> None:
    target.status = 503
    summary = (await (await start_run(target.url(), "--rps", "50", "--duration", "1")).finished()).summary()
    assert summary["completed"] == 0
    assert summary["errors"] == summary["sent"] > 0
    assert summary["errorsByClass"] == {"http_503": summary["sent"]}


async def test_an_unreachable_target_counts_connection_errors_and_the_run_ends_normally(
    start_run: StartRun, unused_tcp_port: int
) -> None:
    handle = await start_run(f"http://127.0.0.1:{unused_tcp_port}/gpu", "--rps", "50", "--duration", "1")
    run = await handle.finished()
    summary = run.summary()
    assert summary["phase"] == "Succeeded"
    assert summary["errorsByClass"] == {"connection": summary["sent"]}
    assert summary["sent"] > 20


async def test_requests_slower_than_the_timeout_are_counted_as_timeouts(
    target: TargetServer, start_run: StartRun
) -> None:
    target.delay = 5
    handle = await start_run(target.url(), "--rps", "20", "--duration", "0.5", "--timeout-ms", "200")
    summary = (await handle.finished(within=10)).summary()
    assert summary["sent"] > 0
    assert summary["errorsByClass"] == {"timeout": summary["sent"]}


@pytest.mark.parametrize("mode", ["chunked", "close"])
async def test_chunked_and_connection_close_responses_complete(
    target: TargetServer, start_run: StartRun, mode: str
) -> None:
    target.chunked = mode == "chunked"
    target.close_connection = mode == "close"
    summary = (await (await start_run(target.url(), "--rps", "50", "--duration", "1")).finished()).summary()
    assert summary["errors"] == 0
    assert summary["completed"] == summary["sent"] == target.received > 0


async def test_dataset_payload_sends_random_images_of_the_directory(
    target: TargetServer, start_run: StartRun, tmp_path: Path
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    contents = {f"img{i}.jpg": bytes([i]) * (100 + i) for i in range(3)}
    for name, data in contents.items():
        (images / name).write_bytes(data)
    (images / "notes.txt").write_text("not an image")
    await (await start_run(target.url(), "--rps", "60", "--duration", "1", "--payload", f"dataset:{images}")).finished()
    assert target.bodies
    assert set(target.bodies) == set(contents.values())
    assert set(target.content_types) == {"image/jpeg"}


async def test_v2_protocol_sends_open_inference_protocol_json(
    target: TargetServer, start_run: StartRun, tmp_path: Path
) -> None:
    image = tmp_path / "cat.png"
    image.write_bytes(b"\x89PNG fake image bytes")
    await (
        await start_run(
            target.url("/v2/models/m/infer"), "--rps", "20", "--duration", "0.5",
            "--payload", f"file:{image}", "--protocol", "v2", "--input-name", "images",
        )
    ).finished()
    body = json.loads(target.bodies[0])
    assert body == {
        "inputs": [
            {
                "name": "images",
                "shape": [1],
                "datatype": "BYTES",
                "data": [base64.b64encode(image.read_bytes()).decode()],
            }
        ]
    }
    assert target.content_types[0] == "application/json"


async def test_schedule_stages_are_summarised_separately(
    target: TargetServer, start_run: StartRun, tmp_path: Path
) -> None:
    schedule = tmp_path / "schedule.yaml"
    schedule.write_text("- {rps: 40, duration: 1s}\n- {rps: 120, duration: 1s}\n- {rampTo: 0, duration: 1s}\n")
    handle = await start_run(target.url(), "--schedule", str(schedule), "--arrival", "uniform")
    summary = (await handle.finished()).summary()
    sent = [s["sent"] for s in summary["stages"]]
    assert sent == [pytest.approx(40, abs=2), pytest.approx(120, abs=2), pytest.approx(60, abs=3)]
    assert [s["rps"] for s in summary["stages"]] == [40, 120, 0]
    assert summary["durationS"] == pytest.approx(3)


async def test_server_timing_stages_are_aggregated(target: TargetServer, start_run: StartRun) -> None:
    run = await (await start_run(target.url(), "--rps", "50", "--duration", "1")).finished()
    assert run.summary()["serverTimingMs"] == {
        "infer": {"mean": pytest.approx(2.0), "p99": pytest.approx(2.0, rel=1e-3)},
        "postprocess": {"mean": pytest.approx(0.25), "p99": pytest.approx(0.25, rel=1e-2)},
        "queue": {"mean": pytest.approx(0.5), "p99": pytest.approx(0.5, rel=1e-2)},
    }
    assert run.recorder.records[0].to_json()["serverTimingMs"] == {"infer": 2.0, "postprocess": 0.25, "queue": 0.5}


async def test_burst_reproduces_the_seeds_whole_second_bursts(target: TargetServer, start_run: StartRun) -> None:
    handle = await start_run(target.url(), "--rps", "30", "--duration", "2", "--arrival", "burst")
    summary = (await handle.finished()).summary()
    assert summary["sent"] == target.received == 60
    assert summary["durationS"] == pytest.approx(2.0, abs=0.05)
    assert summary["achievedRPS"] == pytest.approx(30, abs=1)
    first, second = target.arrivals[:30], target.arrivals[30:]
    assert max(first) - min(first) < 0.5
    assert min(second) - min(first) == pytest.approx(1.0, abs=0.2)


async def test_summary_json_covers_each_record_before_it_reaches_records_csv(
    target: TargetServer, start_run: StartRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A generator killed between the two writes leaves a summary that covers every record a reader
    sees in records.csv (``kinfer run`` then marks that summary Failed and keeps it)."""
    seen: list[tuple[float, float]] = []
    append = ResultsWriter.append_record

    def checked(writer: ResultsWriter, record: Record) -> None:
        summary = json.loads((writer.directory / "summary.json").read_text())
        seen.append((record.t, summary["durationS"]))
        append(writer, record)

    monkeypatch.setattr(ResultsWriter, "append_record", checked)
    await (await start_run(target.url(), "--rps", "40", "--duration", "3", "--interval", "0.5")).finished()
    assert len(seen) >= 5
    assert all(duration >= t - 0.002 for t, duration in seen), seen
