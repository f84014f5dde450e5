"""Model-zoo pieces that need no TensorFlow: anchors, the dataset, the command line."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kinfer.modelzoo import ssd, ssd_resnet34
from kinfer.modelzoo.cli import main
from kinfer.modelzoo.dataset import write_dataset
from kinfer.server.labels import COCO80_LABELS
from kinfer.server.modelspec import KNOWN_MODELS


def test_full_ssd_has_the_1917_anchors_of_ssd_mobilenet_v1() -> None:
    anchors = ssd.anchors(ssd.FULL)
    assert anchors.shape == (1917, 4)
    assert float(anchors[:, :2].min()) > 0
    assert float(anchors[:, :2].max()) < 1


def test_tiny_ssd_keeps_its_anchor_table_small() -> None:
    assert ssd.anchors(ssd.TINY).shape == (5 * 5 * 3 + 3 * 3 * 6, 4)


def test_full_ssd_resnet34_has_mlperfs_grids_and_15130_default_boxes() -> None:
    assert ssd_resnet34.head_grids(1200) == (50, 25, 13, 7, 3, 3)  # MLPerf's dboxes_R34_coco feat_size
    assert ssd_resnet34.FULL.feature_maps == (50, 25, 13, 7, 3, 3)
    assert ssd_resnet34.FULL.input_size == KNOWN_MODELS["ssd-resnet34"].input_size[0] == 1200
    boxes = ssd_resnet34.anchors(ssd_resnet34.FULL)
    assert boxes.shape == (50 * 50 * 4 + 25 * 25 * 6 + 13 * 13 * 6 + 7 * 7 * 6 + 3 * 3 * 4 + 3 * 3 * 4, 4) == (15130, 4)
    assert float(boxes.min()) >= 0.0
    assert float(boxes.max()) <= 1.0  # clamped, as MLPerf's DefaultBoxes
    # the first cell's boxes: centre (0.5/50, 0.5/50), MLPerf's smallest scale 21/300 and ratio 2
    first = boxes[:4]
    np.testing.assert_allclose(first[:, :2], 0.01, rtol=1e-6)
    np.testing.assert_allclose(first[0, 2:], 84 / 1200, rtol=1e-6)
    np.testing.assert_allclose(first[2, 2:], (84 / 1200 / math.sqrt(2), 84 / 1200 * math.sqrt(2)), rtol=1e-6)


def test_tiny_ssd_resnet34_keeps_the_interface_with_a_small_anchor_table() -> None:
    assert ssd_resnet34.TINY.input_size == 1200
    assert ssd_resnet34.anchors(ssd_resnet34.TINY).shape == (5 * 5 * 4 + 3 * 3 * 6, 4)


def test_ssd_resnet34_spec_is_mlperfs_file_nchw_input_and_contiguous_class_ids() -> None:
    spec = KNOWN_MODELS["ssd-resnet34"]
    assert spec.layout == "NCHW"  # MLPerf's profile ssd-resnet34-tf: "data-format": "NCHW"
    assert spec.row_shape == (3, 1200, 1200)
    # the graph emits contiguous ids 1..80 (PostProcessCocoTf maps them with use_inv_map)
    assert spec.labels == COCO80_LABELS
    assert sorted(spec.labels) == list(range(1, ssd_resnet34.NUM_CLASSES + 1))


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
    assert "ssd-resnet34" in out
    assert "meaningless" in out


def test_sizes_write_the_dataset_at_each_square_size(tmp_path: Path) -> None:
    from kinfer.modelzoo.dataset import parse_sizes, write_sizes

    sizes = parse_sizes("16, 64,16,2000")
    assert sizes == (16, 64, 2000)
    written = write_sizes(tmp_path, sizes)
    for size in sizes:
        files = sorted((tmp_path / f"dataset-{size}px").glob("*.jpg"))
        assert files and files == sorted(written[size])
        with Image.open(files[0]) as img:
            assert img.size == (size, size)


@pytest.mark.parametrize(("sizes", "needle"), [("16,abc", "'abc'"), ("0", "outside"), ("9000", "outside")])
def test_bad_sizes_exit_2_naming_the_entry(
    sizes: str, needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["build", "resnet50", "--output", str(tmp_path), "--sizes", sizes]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--sizes" in err and needle in err
