"""Image decoding and MLPerf's pre-processing (inference v0.5, ``python/dataset.py``).

Every function takes an RGB uint8 array (H, W, 3) and returns the model input for one image, HWC
without the batch axis; for an NCHW model ``ModelRuntime.prepare`` transposes it afterwards, as
MLPerf's functions do last when ``need_transpose``. Grayscale and RGBA images are converted to RGB
when decoded.

JPEGs are decoded by libjpeg-turbo through ``simplejpeg``, with the settings ``cv2.imread`` uses in
MLPerf's reference (accurate integer DCT, smooth chroma upsampling: the same pixels) and without
OpenCV's wrapper costs (a 300x300 JPEG in about 0.63 ms against 0.79 ms). A JPEG whose EXIF turns it, or
that libjpeg-turbo does not decode cleanly, goes to OpenCV, which applies the orientation as
``cv2.imread`` does. OpenCV also decodes PNG, BMP and WebP and does every resize (``cv2.resize`` with
``INTER_LINEAR`` or ``INTER_AREA``, as the reference). Pillow decodes every other format, and any file
OpenCV refuses, so that errors name what is wrong.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable
from typing import Literal

import numpy as np
import simplejpeg
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from kinfer.server.errors import InvalidInput

Array = NDArray[np.generic]

#: Images with more pixels than this are refused before decoding (a decompression bomb guard).
MAX_PIXELS = 64_000_000
# OpenCV reads its own pixel limit once, from the environment, at its first decode.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_PIXELS))
import cv2  # noqa: E402  (after its pixel limit is set)

# One thread per resize: requests already run in parallel (workers, threads, the model's own pool),
# and a 300x300 resize takes tens of microseconds, less than a thread hand-off.
cv2.setNumThreads(1)

VGG_MEANS = np.array([123.68, 116.78, 103.94], dtype=np.float32)
RESNET34_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
RESNET34_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def _opencv_decodes(data: bytes) -> bool:
    """Whether the bytes start like a JPEG, PNG, BMP or WebP file (the formats OpenCV decodes here)."""
    return data.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM")) or (
        data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    )


def image_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from the image's header, without decoding its pixels; None when unreadable.

    PNG's IHDR and JPEG's SOF are read directly (libjpeg-turbo's header parser); any other format
    through Pillow's lazy ``Image.open``, which reads the header only. An image whose size cannot be
    read here is left to ``decode_image`` to refuse.
    """
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data.startswith(b"\xff\xd8\xff"):
        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
            return int(width), int(height)
        except ValueError:
            pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                return int(img.width), int(img.height)
    except (OSError, ValueError, SyntaxError, EOFError, TypeError, IndexError, KeyError, Image.DecompressionBombError):
        return None


def decode_image(data: bytes) -> NDArray[np.uint8]:
    """Decode JPEG/PNG/... bytes to an RGB uint8 array; anything undecodable is ``InvalidInput``.

    EXIF orientation is applied to JPEGs, as ``cv2.imread`` does in MLPerf's reference.
    """
    if not data:
        raise InvalidInput("empty body: expected image bytes (JPEG or PNG)")
    if data.startswith(b"\xff\xd8\xff") and jpeg_orientation(data) == 1:
        upright = _decode_jpeg_turbo(data)
        if upright is not None:
            return upright
    if _opencv_decodes(data):
        try:
            arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR_RGB)
        except cv2.error:  # over the pixel limit, or a decoder assertion: Pillow says which
            arr = None
        if arr is not None:
            return np.asarray(arr, dtype=np.uint8)  # no copy: already uint8
    return _decode_with_pillow(data)


def _decode_jpeg_turbo(data: bytes) -> NDArray[np.uint8] | None:
    """The JPEG's RGB pixels from libjpeg-turbo; None when it warns or fails (OpenCV/Pillow then say why)."""
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        if height * width > MAX_PIXELS:
            raise InvalidInput(f"image too large: {width}x{height} pixels")
        # strict (the default): a truncated or corrupt stream raises instead of decoding gray
        arr: NDArray[np.uint8] = simplejpeg.decode_jpeg(data, colorspace="RGB")
    except ValueError:
        return None
    return arr


def jpeg_orientation(data: bytes) -> int:
    """The EXIF orientation (1-8) of a JPEG's APP1 segment; 1 (upright) when it has none or it is unreadable."""
    pos = 2  # after SOI
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker, length = data[pos + 1], int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:  # start of scan: no more metadata segments
            break
        if marker == 0xE1 and data[pos + 4 : pos + 10] == b"Exif\0\0":
            return _tiff_orientation(data[pos + 10 : pos + 2 + length])
        pos += 2 + length
    return 1


def _tiff_orientation(tiff: bytes) -> int:
    """Tag 0x0112 of the first image directory of an EXIF TIFF block, or 1."""
    order: Literal["little", "big"]
    if tiff[:2] == b"II":
        order = "little"
    elif tiff[:2] == b"MM":
        order = "big"
    else:
        return 1

    def num(at: int, size: int) -> int:
        return int.from_bytes(tiff[at : at + size], order)

    ifd = num(4, 4)
    if len(tiff) < 8 or ifd + 2 > len(tiff):
        return 1
    for entry in range(ifd + 2, min(ifd + 2 + 12 * num(ifd, 2), len(tiff) - 11), 12):
        if num(entry, 2) == 0x0112:
            value = num(entry + 8, 2)
            return value if 1 <= value <= 8 else 1
    return 1


def _decode_with_pillow(data: bytes) -> NDArray[np.uint8]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise InvalidInput(f"image too large: {img.width}x{img.height} pixels")
                img.load()
                # a decoded RGB image needs no conversion copy
                arr = np.asarray(img if img.mode == "RGB" else img.convert("RGB"), dtype=np.uint8)
    except InvalidInput:
        raise
    except UnidentifiedImageError as exc:
        # Pillow's own message names its in-memory file object, which tells the client nothing
        raise InvalidInput(f"not a decodable image: {len(data)} bytes in no format Pillow reads") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidInput(f"not a decodable image: {exc}") from exc
    except (OSError, ValueError, SyntaxError, EOFError, TypeError, IndexError, KeyError) as exc:
        # Pillow reports truncated or corrupt files through many exception types.
        raise InvalidInput(f"corrupt image: {exc}") from exc
    if arr.ndim != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InvalidInput("image has no pixels")
    return arr


def _resize(img: NDArray[np.uint8], height: int, width: int, interpolation: int) -> NDArray[np.uint8]:
    if img.shape[0] == height and img.shape[1] == width:
        return img
    return np.asarray(cv2.resize(img, (width, height), interpolation=interpolation), dtype=np.uint8)


def coco_mobilenet(img: NDArray[np.uint8], size: tuple[int, int]) -> Array:
    """``pre_process_coco_mobilenet``: bilinear resize to the input size, uint8 (the graph normalises)."""
    return _resize(img, size[0], size[1], cv2.INTER_LINEAR)


def coco_resnet34(img: NDArray[np.uint8], size: tuple[int, int]) -> Array:
    """``pre_process_coco_resnet34``: bilinear resize, float32, ``/255``, ImageNet mean/std."""
    out = _resize(img, size[0], size[1], cv2.INTER_LINEAR).astype(np.float32) / 255.0
    return ((out - RESNET34_MEAN) / RESNET34_STD).astype(np.float32)


def coco_resnet34_tf(img: NDArray[np.uint8], size: tuple[int, int]) -> Array:
    """``pre_process_coco_resnet34_tf``: bilinear resize, float32, minus the VGG channel means."""
    return _resize(img, size[0], size[1], cv2.INTER_LINEAR).astype(np.float32) - VGG_MEANS


def _resize_and_center_crop(img: NDArray[np.uint8], size: tuple[int, int], interpolation: int) -> NDArray[np.uint8]:
    """MLPerf's ``resize_with_aspectratio`` (shorter side to size/0.875) then ``center_crop``."""
    out_h, out_w = size
    height, width = img.shape[:2]
    new_h, new_w = int(100.0 * out_h / 87.5), int(100.0 * out_w / 87.5)
    if height > width:
        w, h = new_w, int(new_h * height / width)
    else:
        h, w = new_h, int(new_w * width / height)
    resized = _resize(img, max(h, out_h), max(w, out_w), interpolation)
    top = (resized.shape[0] - out_h) // 2
    left = (resized.shape[1] - out_w) // 2
    return resized[top : top + out_h, left : left + out_w]


def imagenet_vgg(img: NDArray[np.uint8], size: tuple[int, int]) -> Array:
    """``pre_process_vgg``: aspect-preserving resize to size/0.875 (``INTER_AREA``), center crop, minus means."""
    return _resize_and_center_crop(img, size, cv2.INTER_AREA).astype(np.float32) - VGG_MEANS


def imagenet_mobilenet(img: NDArray[np.uint8], size: tuple[int, int]) -> Array:
    """``pre_process_mobilenet``: the same resize (``INTER_LINEAR``) and crop, scaled to [-1, 1]."""
    out = _resize_and_center_crop(img, size, cv2.INTER_LINEAR).astype(np.float32) / 255.0
    return ((out - 0.5) * 2.0).astype(np.float32)


def resize_only(img: NDArray[np.uint8], size: tuple[int, int]) -> Array:
    """No normalisation: bilinear resize, uint8 (for models that normalise inside the graph)."""
    return coco_mobilenet(img, size)


PREPROCESSORS: dict[str, Callable[[NDArray[np.uint8], tuple[int, int]], Array]] = {
    "coco-mobilenet": coco_mobilenet,
    "coco-resnet34": coco_resnet34,
    "coco-resnet34-tf": coco_resnet34_tf,
    "imagenet-vgg": imagenet_vgg,
    "imagenet-mobilenet": imagenet_mobilenet,
    "resize": resize_only,
}


def preprocess(img: NDArray[np.uint8], kind: str, size: tuple[int, int], dtype: str | None) -> Array:
    """Apply pre-processing ``kind`` and cast to the model's input dtype (when it is known)."""
    out = PREPROCESSORS[kind](img, size)
    if dtype is not None and out.dtype != np.dtype(dtype):
        if np.dtype(dtype) == np.uint8:
            out = np.clip(out, 0, 255)
        out = out.astype(dtype)
    return out
