"""A small real image dataset from scikit-image's bundled pictures (offline, no downloads).

Images are resized to the model's input size and written as JPEG (quick to decode per request, as
MLPerf's pre-scaled COCO-300 set was); ``camera`` stays grayscale on purpose, so the server's RGB
conversion is exercised.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

#: scikit-image data files used, by output name (the cat is "chelsea").
IMAGES = {
    "astronaut": "astronaut.png",
    "camera": "camera.png",
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
    "motorcycle": "motorcycle_left.png",
    "rocket": "rocket.jpg",
    "hubble": "hubble_deep_field.jpg",
    "horse": "horse.png",
}


def skimage_dir() -> Path:
    """Where scikit-image keeps its bundled pictures."""
    import skimage.data

    return Path(skimage.data.__file__).parent


def write_dataset(out: Path, size: tuple[int, int]) -> list[Path]:
    """Write the pictures resized to ``size`` (H, W) under ``out``; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    src = skimage_dir()
    written = []
    for name, filename in IMAGES.items():
        path = src / filename
        if not path.exists():
            continue
        with Image.open(path) as img:
            mode = "L" if img.mode in ("L", "1") else "RGB"
            picture = img.convert(mode).resize((size[1], size[0]), Image.Resampling.BILINEAR)
        target = out / f"{name}.jpg"
        picture.save(target, format="JPEG", quality=90)
        written.append(target)
    return written


def load_original(name: str) -> NDArray[np.uint8]:
    """One original picture as an RGB uint8 array (tests and examples)."""
    with Image.open(skimage_dir() / IMAGES[name]) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)
