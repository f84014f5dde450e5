"""``kinfer serve`` flag parsing, environment variables, validation and exit codes (no gunicorn)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kinfer.server.cli import main, parse_config
from kinfer.server.config import ServerConfig, resolve
from kinfer.server.modelspec import KNOWN_MODELS, spec_to_json


def test_flags_fill_the_config() -> None:
    config, dry = parse_config(
        ["--format", "null", "--workers", "3", "--threads", "4", "--max-batch-size", "8",
         "--inputs", "a:0,b:0", "--input-size", "224,200", "--port", "0"],
        environ={},
    )  # fmt: skip
    assert not dry
    assert (config.workers, config.threads, config.max_batch_size, config.port) == (3, 4, 8, 0)
    assert config.inputs == ("a:0", "b:0")
    assert config.input_size == (224, 200)


def test_every_flag_reads_its_environment_variable() -> None:
    env = {"KINFER_SERVE_WORKERS": "5", "KINFER_SERVE_FORMAT": "null", "KINFER_SERVE_MAX_DELAY_MS": "2.5"}
    config, _ = parse_config([], environ=env)
    assert (config.workers, config.format, config.max_delay_ms) == (5, "null", 2.5)
    config, _ = parse_config(["--workers", "2"], environ=env)
    assert config.workers == 2  # the flag wins


@pytest.mark.parametrize(
    ("argv", "env", "needle"),
    [
        (["--workers", "many"], {}, "--workers"),
        (["--format", "pytorch"], {}, "--format"),
        ([], {"KINFER_SERVE_WORKERS": "x"}, "KINFER_SERVE_WORKERS"),
        ([], {"KINFER_SERVE_FORMAT": "caffe"}, "KINFER_SERVE_FORMAT"),
        (["--format", "null", "--workers", "0"], {}, "--workers"),
        (["--format", "onnx"], {}, "--model"),
        (["--format", "onnx", "--model", "/does/not/exist.onnx"], {}, "/does/not/exist.onnx"),
        (["--format", "null", "--dataset", "/no/such/dir"], {}, "--dataset"),
        (["--format", "null", "--memory-fraction", "1.5"], {}, "--memory-fraction"),
        (["--format", "null", "--layout", "CHW"], {}, "--layout"),
        (["--format", "null"], {"KINFER_SERVE_LAYOUT": "nchw"}, "KINFER_SERVE_LAYOUT"),
        ([], {}, "--format"),
    ],
)
def test_bad_input_exits_2_with_one_line_naming_the_problem(
    argv: list[str], env: dict[str, str], needle: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    for key in [k for k in __import__("os").environ if k.startswith("KINFER_SERVE_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert needle in err


def test_dry_run_prints_the_resolved_known_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--format", "null", "--known-model", "resnet50", "--dry-run"]) == 0
    spec = json.loads(capsys.readouterr().out)
    assert spec["name"] == "resnet50"
    assert spec["inputs"] == ["input_tensor:0"]
    assert spec["input_size"] == [224, 224]
    assert spec["preprocess"] == "imagenet-vgg"


def test_layout_flag_and_its_variable_override_the_known_models_layout(capsys: pytest.CaptureFixture[str]) -> None:
    config, _ = parse_config(["--format", "null", "--layout", "NCHW"], environ={})
    assert config.layout == "NCHW"
    assert parse_config(["--format", "null"], environ={"KINFER_SERVE_LAYOUT": "NCHW"})[0].layout == "NCHW"
    assert parse_config(["--format", "null"], environ={})[0].layout is None  # the model's own, else NHWC
    assert resolve(ServerConfig(format="null"))[0].layout == "NHWC"
    assert resolve(ServerConfig(format="null", known_model="ssd-resnet34"))[0].layout == "NCHW"
    assert resolve(ServerConfig(format="null", known_model="ssd-resnet34", layout="NHWC"))[0].layout == "NHWC"
    assert main(["--format", "null", "--known-model", "ssd-resnet34", "--dry-run"]) == 0
    spec = json.loads(capsys.readouterr().out)
    assert (spec["layout"], spec["input_shape"]) == ("NCHW", [-1, 3, 1200, 1200])


def test_bad_layout_is_exit_2_naming_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--format", "null", "--layout", "HWC"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kinfer serve: argument --layout: invalid choice: 'HWC'")
    assert "NHWC" in err and "NCHW" in err


def test_model_json_records_the_layout_and_a_bad_one_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    meta = spec_to_json(KNOWN_MODELS["ssd-resnet34"], {"onnx": "model.onnx"}, None)
    assert meta["layout"] == "NCHW"
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    (tmp_path / "model.json").write_text(json.dumps({**meta, "knownModel": None}))
    spec, _ = resolve(ServerConfig(model=str(tmp_path)))  # read from model.json, not the known model
    assert (spec.layout, spec.row_shape) == ("NCHW", (3, 1200, 1200))
    (tmp_path / "model.json").write_text(json.dumps({**meta, "layout": "CHW"}))
    assert main(["--model", str(tmp_path)]) == 2
    assert "model.json layout must be one of NHWC, NCHW, got 'CHW'" in capsys.readouterr().err


def test_model_dir_with_model_json_needs_no_other_flags(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    (tmp_path / "dataset").mkdir()
    meta = spec_to_json(KNOWN_MODELS["ssdlite-person"], {"onnx": "model.onnx"}, "dataset")
    (tmp_path / "model.json").write_text(json.dumps(meta))
    spec, dataset = resolve(ServerConfig(model=str(tmp_path)))
    assert spec.format == "onnx"
    assert spec.path == str(tmp_path / "model.onnx")
    assert spec.name == "ssdlite-mobilenetv2-person"
    assert spec.labels == {1: "person"}
    assert dataset == tmp_path / "dataset"


def test_format_follows_the_file_name(tmp_path: Path) -> None:
    model = tmp_path / "m.pb"
    model.write_bytes(b"")
    spec, _ = resolve(ServerConfig(model=str(model), known_model="ssd-mobilenet"))
    assert spec.format == "tf-graphdef"
    assert spec.name == "ssd-mobilenet"


def test_unknown_graph_needs_tensor_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "m.pb"
    model.write_bytes(b"")
    assert main(["--model", str(model)]) == 2
    assert "--inputs" in capsys.readouterr().err
