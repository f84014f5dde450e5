"""MLPerf's pre-processing math, image decoding and post-processing."""

from __future__ import annotations

import io
from typing import Literal

import cv2
import numpy as np
import pytest
from PIL import Image

from kinfer.server import preprocess as preprocess_module
from kinfer.server.errors import InvalidInput
from kinfer.server.labels import COCO80_LABELS, COCO_CATEGORY_IDS, COCO_LABELS
from kinfer.server.modelspec import KNOWN_MODELS
from kinfer.server.postprocess import detections, top_classes
from kinfer.server.preprocess import (
    RESNET34_MEAN,
    RESNET34_STD,
    VGG_MEANS,
    decode_image,
    jpeg_orientation,
    preprocess,
)
from tests.unit.server.conftest import image_bytes


def test_coco_mobilenet_resizes_to_uint8_of_the_input_size() -> None:
    img = np.full((40, 60, 3), 200, dtype=np.uint8)
    out = preprocess(img, "coco-mobilenet", (30, 20), "uint8")
    assert out.shape == (30, 20, 3)
    assert out.dtype == np.uint8
    assert int(out.min()) == int(out.max()) == 200


def test_coco_resnet34_scales_then_normalises_with_mean_and_std() -> None:
    img = np.full((8, 8, 3), 255, dtype=np.uint8)
    out = preprocess(img, "coco-resnet34", (8, 8), None)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0], (1.0 - RESNET34_MEAN) / RESNET34_STD, rtol=1e-6)


def test_coco_resnet34_tf_subtracts_the_channel_means() -> None:
    img = np.zeros((4, 4, 3), dtype=np.uint8)
    out = preprocess(img, "coco-resnet34-tf", (4, 4), "float32")
    np.testing.assert_allclose(out[2, 2], -VGG_MEANS)


def test_imagenet_vgg_resizes_by_aspect_then_center_crops() -> None:
    # a wide image whose left and right thirds differ from its centre: the crop keeps the centre
    img = np.zeros((100, 300, 3), dtype=np.uint8)
    img[:, 100:200] = 255
    out = preprocess(img, "imagenet-vgg", (20, 20), "float32")
    assert out.shape == (20, 20, 3)
    np.testing.assert_allclose(out[10, 10], 255 - VGG_MEANS, atol=1e-3)


def test_imagenet_mobilenet_crops_the_centre_and_scales_to_minus_one_one() -> None:
    img = np.zeros((100, 300, 3), dtype=np.uint8)
    img[:, 100:200] = 255
    out = preprocess(img, "imagenet-mobilenet", (20, 20), "float32")
    assert out.shape == (20, 20, 3)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[10, 10], [1.0, 1.0, 1.0], atol=1e-6)
    black = preprocess(np.zeros((8, 8, 3), np.uint8), "imagenet-mobilenet", (4, 4), None)
    np.testing.assert_allclose(black[0, 0], -1.0)


def test_float_output_is_clipped_when_the_graph_wants_uint8() -> None:
    img = np.zeros((4, 4, 3), dtype=np.uint8)
    out = preprocess(img, "coco-resnet34-tf", (4, 4), "uint8")
    assert out.dtype == np.uint8
    assert int(out.max()) == 0


def test_decode_converts_grayscale_and_rgba_to_rgb() -> None:
    for mode in ("L", "RGBA", "RGB"):
        arr = decode_image(image_bytes(10, 7, "PNG", mode))
        assert arr.shape == (7, 10, 3)
        assert arr.dtype == np.uint8


def test_decode_reads_every_format_as_the_same_rgb_pixels() -> None:
    # JPEG, PNG and BMP go through OpenCV, GIF through Pillow; lossless ones give back the exact pixels
    png = decode_image(image_bytes(12, 9, "PNG"))
    np.testing.assert_array_equal(decode_image(image_bytes(12, 9, "BMP")), png)
    gray = np.zeros((5, 6), dtype=np.uint8)
    gray[2, 3] = 200
    buf = io.BytesIO()
    Image.fromarray(gray, "L").save(buf, format="GIF")
    gif = decode_image(buf.getvalue())
    assert gif.shape == (5, 6, 3)
    assert tuple(gif[2, 3]) == (200, 200, 200)
    jpeg = decode_image(image_bytes(12, 9, "JPEG"))
    assert jpeg.shape == png.shape
    assert float(np.abs(jpeg.astype(int) - png.astype(int)).mean()) < 80  # lossy, but the same picture


def _jpeg(pixels: np.ndarray, **save: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", **save)
    return buf.getvalue()


def _photo(height: int = 48, width: int = 64) -> np.ndarray:
    """Smooth gradients with texture: a picture whose decoding exercises chroma upsampling."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // width, y * 255 // height, (x * y) % 256], axis=-1)
    return rgb.astype(np.uint8)


@pytest.mark.parametrize(
    "save",
    [{}, {"progressive": True}, {"subsampling": 0, "quality": 95}, {"mode": "L"}],
    ids=["baseline-420", "progressive", "444", "grayscale"],
)
def test_jpeg_pixels_are_exactly_those_of_mlperfs_cv2_decoder(save: dict[str, object]) -> None:
    pixels = _photo()
    mode = save.pop("mode", "RGB")
    data = _jpeg(np.asarray(Image.fromarray(pixels).convert(str(mode))), **save)
    reference = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)
    np.testing.assert_array_equal(decode_image(data), reference)


def test_plain_jpegs_do_not_go_through_opencv(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object) -> None:
        raise AssertionError("an upright JPEG was decoded by OpenCV")

    monkeypatch.setattr(preprocess_module.cv2, "imdecode", refuse)
    assert decode_image(_jpeg(_photo())).shape == (48, 64, 3)


def _exif_jpeg(orientation: int, byte_order: str) -> bytes:
    """A JPEG with an EXIF block (in either TIFF byte order) of two SHORT tags, the orientation last."""
    order: Literal["little", "big"] = "little" if byte_order == "II" else "big"

    def short_tag(tag: int, value: int) -> bytes:
        return b"".join(n.to_bytes(k, order) for n, k in ((tag, 2), (3, 2), (1, 4), (value, 2), (0, 2)))

    tiff = byte_order.encode() + (42).to_bytes(2, order) + (8).to_bytes(4, order) + (2).to_bytes(2, order)
    tiff += short_tag(0x0128, 2) + short_tag(0x0112, orientation) + (0).to_bytes(4, order)
    segment = b"Exif\0\0" + tiff
    plain = _jpeg(_photo())
    return plain[:2] + b"\xff\xe1" + (len(segment) + 2).to_bytes(2, "big") + segment + plain[2:]


@pytest.mark.parametrize("byte_order", ["II", "MM"])
@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_exif_orientation_is_read_and_applied_as_cv2_imread_does(orientation: int, byte_order: str) -> None:
    data = _exif_jpeg(orientation, byte_order)
    assert jpeg_orientation(data) == orientation
    reference = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)
    decoded = decode_image(data)
    assert decoded.shape == ((64, 48, 3) if orientation in (6, 8) else (48, 64, 3))
    np.testing.assert_array_equal(decoded, reference)


def test_jpeg_orientation_is_upright_without_readable_exif() -> None:
    plain = _jpeg(_photo())
    assert jpeg_orientation(plain) == 1
    # an APP1 segment that says Exif but holds no TIFF header
    broken = plain[:2] + b"\xff\xe1\x00\x0aExif\0\0XX" + plain[2:]
    assert jpeg_orientation(broken) == 1
    assert decode_image(broken).shape == (48, 64, 3)


def test_coco_mobilenet_resize_is_bilinear_like_mlperfs_cv2_inter_linear() -> None:
    # a horizontal ramp stays a ramp: bilinear interpolation keeps linear gradients linear
    ramp = np.tile(np.linspace(0, 240, 16, dtype=np.float32).astype(np.uint8)[None, :, None], (4, 1, 3))
    out = preprocess(ramp, "coco-mobilenet", (4, 8), "uint8")
    row = out[0, :, 0].astype(int)
    assert list(row) == sorted(row)
    assert abs(int(row[1] - row[0]) - int(row[5] - row[4])) <= 1


def test_decompression_bombs_are_refused_before_decoding() -> None:
    # a real 16x16 JPEG whose frame header claims 10000x7000 pixels (over MAX_PIXELS, under Pillow's own
    # bomb limit): OpenCV refuses it (its pixel limit is set from MAX_PIXELS), Pillow names the size
    data = bytearray(image_bytes(16, 16, "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = (7000).to_bytes(2, "big") + (10000).to_bytes(2, "big")
    with pytest.raises(InvalidInput, match="too large: 10000x7000 pixels"):
        decode_image(bytes(data))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello",
        image_bytes(20, 20, "PNG")[:40],
        image_bytes(64, 48, "JPEG")[:300],  # a JPEG header, then nothing: OpenCV's decoder refuses it
        b"GIF89a" + b"\0" * 20,
    ],
)
def test_decode_rejects_non_images_and_corrupt_images(data: bytes) -> None:
    with pytest.raises(InvalidInput):
        decode_image(data)


def test_detections_are_thresholded_sorted_and_labelled() -> None:
    spec = KNOWN_MODELS["ssd-mobilenet"]
    outputs = {
        "num_detections:0": np.array([3.0], dtype=np.float32),
        "detection_boxes:0": np.array([[[0, 0, 0.5, 0.5], [0.1, 0.1, 0.2, 0.2], [0, 0, 1, 1], [0, 0, 1, 1]]]),
        "detection_scores:0": np.array([[0.6, 0.9, 0.1, 0.99]]),
        "detection_classes:0": np.array([[1.0, 18.0, 3.0, 3.0]]),
    }
    found = detections(outputs, spec, 0, 0.5)
    assert [(d["label"], d["score"]) for d in found] == [("dog", 0.9), ("person", 0.6)]
    assert found[0] == {"box": [0.1, 0.1, 0.2, 0.2], "classId": 18, "label": "dog", "score": 0.9}
    # only the first num_detections count: the 0.99 in slot 4 is padding
    assert [d["score"] for d in detections(outputs, spec, 0, 0.0)] == [0.9, 0.6, 0.1]
    assert detections(outputs, spec, 0, 0.95) == []


def test_ssd_resnet34_names_contiguous_ids_and_ssd_mobilenet_coco_category_ids() -> None:
    def labelled(model: str, class_id: float) -> str:
        outputs = {
            "num_detections:0": np.array([1.0]),
            "detection_boxes:0": np.array([[[0.0, 0.0, 1.0, 1.0]]]),
            "detection_bboxes:0": np.array([[[0.0, 0.0, 1.0, 1.0]]]),
            "detection_scores:0": np.array([[0.9]]),
            "detection_classes:0": np.array([[class_id]]),
        }
        (found,) = detections(outputs, KNOWN_MODELS[model], 0, 0.5)
        return str(found["label"])

    # MLPerf's resnet34_tf.22.1.pb emits 1..80 (12 = stop sign); its SSD-MobileNet, COCO ids (13)
    assert labelled("ssd-resnet34", 12.0) == labelled("ssd-mobilenet", 13.0) == "stop sign"
    assert labelled("ssd-resnet34", 80.0) == labelled("ssd-mobilenet", 90.0) == "toothbrush"
    assert labelled("ssd-resnet34", 13.0) == "parking meter"
    assert labelled("ssd-mobilenet", 12.0) == "class_12"  # a gap in the COCO category ids
    assert COCO80_LABELS[1] == "person"
    assert sorted(COCO80_LABELS) == list(range(1, 81))
    assert [COCO_LABELS[COCO_CATEGORY_IDS[k]] for k in sorted(COCO80_LABELS)] == list(COCO80_LABELS.values())
    assert COCO_CATEGORY_IDS[0] == 0  # background, as MLPerf's [0] + cocoGt.getCatIds()


def test_top_classes_are_by_probability() -> None:
    spec = KNOWN_MODELS["resnet50"]
    probs = np.array([[0.1, 0.5, 0.2, 0.2]], dtype=np.float32)
    found = top_classes({"softmax_tensor:0": probs, "ArgMax:0": np.array([1])}, spec, 0, 2)
    assert [c["classId"] for c in found] == [1, 2]
