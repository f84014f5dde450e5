"""Bad input exits 2 with one line naming the problem; every flag also reads KINFER_LOADGEN_<FLAG>."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from kinfer.loadgen.cli import main, parse
from kinfer.loadgen.config import ConfigError, build_config

URL = "http://127.0.0.1:9/gpu"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        ([URL, "--rps", "10", "--bogus"], "--bogus"),
        ([URL, "--rps", "10", "--duration", "0"], "--duration"),
        ([URL, "--rps", "10", "--duration", "-5"], "--duration"),
        ([URL, "--rps", "10", "--duration", "soon"], "soon"),
        (["ftp://127.0.0.1/x", "--rps", "10"], "ftp://"),
        (["not a url", "--rps", "10"], "not a url"),
        (["http://no-such-host.invalid/gpu", "--rps", "10"], "no-such-host.invalid"),
        ([URL], "--rps"),
        ([URL, "--rps", "-1"], "--rps"),
        ([URL, "--rps", "10", "--arrival", "sometimes"], "sometimes"),
        ([URL, "--rps", "10", "--payload", "dataset:/no/such/dir"], "/no/such/dir"),
        ([URL, "--rps", "10", "--protocol", "v2"], "v2"),
        ([URL, "--rps", "10", "--max-in-flight", "0"], "--max-in-flight"),
        ([URL, "--rps", "10", "--min-success-rate", "2"], "--min-success-rate"),
        ([URL, "--rps", "10", "--concurrency", "2"], "--rps and --concurrency"),
        ([URL, "--concurrency", "0"], "--concurrency"),
        ([URL, "--rps", "10", "--think-time", "1"], "--think-time needs a closed loop"),
        ([URL, "--concurrency", "2", "--think-time", "-1"], "--think-time"),
        ([URL, "--rps", "10", "--requests", "0"], "--requests"),
        ([URL, "--rps", "10", "--batch-size", "2"], "--batch-size 2 needs --protocol v2"),
        ([URL, "--mode", "capacity", "--slo-p99-ms", "5", "--concurrency", "2"], "--concurrency"),
        ([URL, "--mode", "capacity", "--slo-p99-ms", "5", "--tolerance", "1"], "--tolerance"),
        ([URL, "--mode", "capacity", "--slo-p99-ms", "5", "--max-windows", "2"], "--max-windows"),
        ([URL, "--rps", "10", "--warmup", "1"], "--warmup needs --mode capacity"),
    ],
)
def test_bad_input_exits_2_with_one_line_naming_it(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert needle in err


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("- {rps: 10}\n", "duration"),
        ("- {rps: 10, rampTo: 5, duration: 1s}\n", "exactly one"),
        ("stages: []\n", "stages"),
        ("- {rps: 10, duration: 1s\n", "malformed"),
        ("- {rps: 10, duration: 1s, speed: 3}\n", "speed"),
        ("- {concurrency: 2, duration: 1s}\n- {rps: 3, duration: 1s}\n",
         "stages[1].rps: a schedule is all-rate or all-concurrency"),
    ],
)
def test_malformed_schedules_exit_2(
    tmp_path: Path, content: str, needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(content)
    assert main([URL, "--schedule", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert needle in err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "KINFER_LOADGEN_" in capsys.readouterr().out


def test_flags_fall_back_to_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KINFER_LOADGEN_URL", URL)
    monkeypatch.setenv("KINFER_LOADGEN_RPS", "25")
    monkeypatch.setenv("KINFER_LOADGEN_DURATION", "2m")
    monkeypatch.setenv("KINFER_LOADGEN_QUIET", "true")
    monkeypatch.setenv("KINFER_LOADGEN_CONTROL_PORT", "0")
    monkeypatch.setenv("KINFER_LOADGEN_ARRIVAL", "uniform")
    config = build_config(parse(["--rps", "30"]))
    assert config.stages[0].rps == 30  # the command line wins
    assert config.end == 120
    assert config.quiet is True
    assert config.control_port == 0
    assert config.arrival == "uniform"
    assert config.url == URL


def test_a_bad_environment_value_is_bad_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KINFER_LOADGEN_ARRIVAL", "sometimes")
    with pytest.raises(ConfigError, match="KINFER_LOADGEN_ARRIVAL"):
        parse([URL, "--rps", "1"])


def test_schedule_files_in_yaml_and_json(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text("stages:\n- {rps: 10, duration: 2s}\n- {rampTo: 50, duration: 1m}\nloop: true\n")
    (tmp_path / "s.json").write_text('[{"rps": 5, "duration": "3s"}]')
    looped = build_config(parse([URL, "--schedule", str(tmp_path / "s.yaml")]))
    assert looped.loop and math.isinf(looped.end)
    assert build_config(parse([URL, "--schedule", str(tmp_path / "s.yaml"), "--duration", "10"])).end == 10
    assert build_config(parse([URL, "--schedule", str(tmp_path / "s.json")])).end == 3


def test_defaults() -> None:
    config = build_config(parse([URL, "--rps", "5"]))
    assert (config.end, config.arrival, config.method, config.control_port) == (60, "poisson", "GET", 8089)
    assert (config.window_records, config.timeout, config.processes) == (60, 10.0, 1)


def test_concurrency_requests_and_batch_size_configure_a_closed_loop(tmp_path: Path) -> None:
    image = tmp_path / "a.jpg"
    image.write_bytes(b"jpeg")
    config = build_config(parse([URL, "--concurrency", "8", "--think-time", "50ms", "--requests", "1000",
                                 "--protocol", "v2", "--payload", f"file:{image}", "--batch-size", "4"]))  # fmt: skip
    assert config.closed and config.stages[0].concurrency == 8
    assert (config.think_time, config.requests, config.batch_size) == (0.05, 1000, 4)
    assert math.isinf(config.end)  # a request count without a duration runs until the count is reached
    assert not build_config(parse([URL, "--rps", "5"])).closed
