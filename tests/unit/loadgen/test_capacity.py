"""The capacity search as a pure function, and the capacity-mode flags."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from kinfer.api.loadexperiment import SLO
from kinfer.loadgen.capacity import Probe, Search, Windows, search
from kinfer.loadgen.cli import parse
from kinfer.loadgen.config import ConfigError, LoadgenConfig, build_config
from kinfer.loadgen.stats import Bucket, record_seconds


def threshold(limit: float) -> tuple[list[float], Callable[[float], Probe]]:
    """A fake probe: rates up to ``limit`` meet the SLO; also the list of rates probed."""
    probed: list[float] = []

    def probe(rps: float) -> Probe:
        probed.append(rps)
        return Probe(rps=rps, met=rps <= limit, p99_ms=10.0 if rps <= limit else 500.0, service_rate=1.0)

    return probed, probe


@pytest.mark.parametrize("limit", [1.0, 7.3, 55.0, 512.0, 999.0])
def test_the_search_converges_within_precision_below_the_threshold(limit: float) -> None:
    probed, probe = threshold(limit)
    s = search(probe, 1.0, 1000.0, 0.05)
    assert s.lo is not None and s.lo <= limit
    assert s.hi is not None and s.hi > limit
    assert (s.hi - s.lo) / s.hi < 0.05
    grown = next(i for i, r in enumerate(probed) if r > limit)  # doubling up to the first failure
    assert probed[: grown + 1] == [min(2.0**k, 1000.0) for k in range(grown + 1)]
    result = s.to_json()
    assert result["rps"] == round(s.lo, 3) and result["p99Ms"] == 10.0
    assert [p["rps"] for p in result["probes"]] == [round(r, 3) for r in probed]
    assert all(1.0 <= r <= 1000.0 for r in probed)


def test_growth_stops_at_max_rps_when_everything_passes() -> None:
    probed, probe = threshold(10_000)
    s = search(probe, 3.0, 50.0, 0.05)
    assert probed == [3.0, 6.0, 12.0, 24.0, 48.0, 50.0]
    assert s.to_json()["rps"] == 50.0 and s.hi is None


def test_min_rps_failing_means_no_capacity() -> None:
    probed, probe = threshold(0.5)
    s = search(probe, 1.0, 1000.0, 0.05)
    assert probed == [1.0]
    assert s.best is None and s.to_json()["rps"] is None and s.to_json()["p99Ms"] is None


def test_min_equal_to_max_is_a_single_probe() -> None:
    probed, probe = threshold(100)
    assert search(probe, 20.0, 20.0, 0.1).to_json()["rps"] == 20.0
    assert probed == [20.0]


def test_a_noisy_probe_never_makes_the_bracket_invert() -> None:
    s = Search(10.0, 1000.0, 0.05)
    verdicts = iter([True, True, False, True, False, False, True, True, True, True])
    while (rate := s.next_rate()) is not None:
        s.record(Probe(rps=rate, met=next(verdicts)))
        assert s.lo is None or s.hi is None or s.lo < s.hi
    assert s.lo is not None and s.hi is not None and (s.hi - s.lo) / s.hi < 0.05


def _config(*argv: str) -> LoadgenConfig:
    return build_config(parse(["http://127.0.0.1:9/x", *argv]), resolve=False)


def test_capacity_flags_and_defaults() -> None:
    c = _config("--mode", "capacity", "--slo-p99-ms", "50", "--max-rps", "300", "--probe-duration", "2s")
    assert (c.mode, c.min_rps, c.max_rps, c.probe_duration, c.precision) == ("capacity", 1.0, 300.0, 2.0, 0.05)


def test_capacity_flags_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KINFER_LOADGEN_MODE", "capacity")
    monkeypatch.setenv("KINFER_LOADGEN_MIN_SUCCESS_RATE", "0.99")
    monkeypatch.setenv("KINFER_LOADGEN_PRECISION", "0.2")
    c = _config("--min-rps", "5")
    assert (c.mode, c.min_rps, c.precision, c.min_success_rate) == ("capacity", 5.0, 0.2, 0.99)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--mode", "capacity"], "needs an SLO"),
        (["--mode", "capacity", "--slo-p99-ms", "5", "--min-rps", "10", "--max-rps", "5"], "exceeds --max-rps"),
        (["--mode", "capacity", "--slo-p99-ms", "5", "--rps", "10"], "drop --rps"),
        (["--mode", "capacity", "--slo-p99-ms", "5", "--precision", "1"], "--precision must be"),
        (["--mode", "capacity", "--slo-p99-ms", "5", "--min-rps", "0"], "--min-rps must be > 0"),
        (["--mode", "capacity", "--slo-p99-ms", "5", "--probe-duration", "0"], "--probe-duration must be > 0"),
        (["--rps", "5", "--max-rps", "10"], "--max-rps needs --mode capacity"),
        (["--mode", "bisect"], "invalid choice"),
    ],
)
def test_bad_capacity_input_is_one_line(argv: list[str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as info:
        _config(*argv)
    assert "\n" not in str(info.value)


def _interval(latencies_ms: list[float], errors: int = 0) -> Bucket:
    b = Bucket(sent=len(latencies_ms) + errors, completed=len(latencies_ms))
    b.errors["http_500"] = errors
    for ms in latencies_ms:
        record_seconds(b.latency, ms / 1000)
    return b


def _windows(**kw: Any) -> Windows:
    args: dict[str, Any] = {"interval": 1.0, "warmup_intervals": 1, "window_intervals": 1, "tolerance": 0.1,
                            "max_windows": 6} | kw  # fmt: skip
    return Windows(SLO(p99_ms=50.0), **args)


def test_the_warmup_is_discarded_and_three_agreeing_windows_make_a_probe_stable() -> None:
    w = _windows()
    w.add_interval(_interval([900.0] * 100))  # the transient: far over the bound, and not counted
    for _ in range(2):
        w.add_interval(_interval([10.0] * 100))
        assert not w.done
    w.add_interval(_interval([10.5] * 100))
    assert w.done and w.stable and len(w.windows) == 3
    probe = w.verdict(40.0)
    assert probe.met and probe.stable and probe.samples == 300
    assert probe.p99_ms is not None and probe.p99_ms < 11
    assert [x["samples"] for x in probe.windows] == [100, 100, 100]
    assert "stable after 3 windows" in probe.message


def test_windows_that_never_agree_end_at_max_windows_judged_on_all_of_them() -> None:
    w = _windows(warmup_intervals=0, max_windows=4)
    for p99 in (10.0, 30.0, 10.0, 30.0):
        w.add_interval(_interval([5.0] * 97 + [p99] * 3))
    assert w.done and not w.stable and not w.early_fail
    probe = w.verdict(40.0)
    assert probe.met and probe.stable is False and probe.samples == 400
    assert "unstable" in probe.message and "judged on all of them" in probe.message


def test_a_probe_whose_windows_all_fail_clearly_stops_after_two() -> None:
    w = _windows(warmup_intervals=0)
    w.add_interval(_interval([100.0] * 50))
    assert not w.done
    w.add_interval(_interval([200.0] * 50))
    assert w.done and w.early_fail
    probe = w.verdict(99.0)
    assert not probe.met and "overloaded" in probe.message


def test_windows_span_whole_intervals_and_failures_count_against_the_verdict() -> None:
    w = _windows(warmup_intervals=0, window_intervals=2, max_windows=3)
    for _ in range(6):
        w.add_interval(_interval([5.0] * 50, errors=2))  # 2 of 52 fail: 3.8 % > the 1 % a p99 leaves
    assert len(w.windows) == 3 and w.windows[0].seconds == 2.0 and w.windows[0].throughput == 50.0
    assert not w.verdict(52.0).met
    # sends still in flight at a window's end are not failures: only the requests that ended count
    late = _windows(warmup_intervals=0, max_windows=3)
    for _ in range(3):
        bucket = _interval([5.0] * 50)
        bucket.sent += 3
        late.add_interval(bucket)
    assert late.verdict(53.0).met


def test_windows_that_agree_while_their_p99_still_climbs_are_not_stable() -> None:
    w = _windows(warmup_intervals=0, max_windows=5)
    for p99 in (30.0, 31.7, 33.0):  # within 10 % of their mean, but a queue still filling up
        w.add_interval(_interval([5.0] * 97 + [p99] * 3))
    assert not w.done and not w.stable
    w.add_interval(_interval([5.0] * 97 + [32.8] * 3))
    assert w.stable  # 31.7, 33.0, 32.8: levelled off
