"""Model-zoo pieces that need no TensorFlow: anchors, the dataset, the command line."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from kinfer.modelzoo import ssd
from kinfer.modelzoo.cli import main
from kinfer.modelzoo.dataset import write_dataset


def test_full_ssd_has_the_1917_anchors_of_ssd_mobilenet_v1() -> None:
    anchors = ssd.anchors(ssd.FULL)
    assert anchors.shape == (1917, 4)
    assert float(anchors[:, :2].min()) > 0
    assert float(anchors[:, :2].max()) < 1


def test_tiny_ssd_keeps_its_anchor_table_small() -> None:
    assert ssd.anchors(ssd.TINY).shape == (5 * 5 * 3 + 3 * 3 * 6, 4)


def test_dataset_is_real_pictures_at_the_input_size(tmp_path: Path) -> None:
    files = write_dataset(tmp_path, (120, 160))
    names = {f.stem for f in files}
    assert {"astronaut", "camera", "chelsea", "coffee", "rocket"} <= names
    for path in files:
        with Image.open(path) as img:
            assert img.size == (160, 120)
    with Image.open(tmp_path / "camera.jpg") as img:
        assert img.mode == "L"  # kept grayscale: the server converts it


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["build", "yolo", "--output", "x"], "yolo"),
        (["build", "resnet50"], "--output"),
        (["build", "ssdlite-person", "--tiny", "--output", "x"], "--tiny"),
        ([], "command"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert needle in err


def test_list_names_the_buildable_models_and_says_which_are_random(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "ssdlite-person" in out
    assert "meaningless" in out
