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

#: Largest image side ``--sizes`` accepts, pixels.
MAX_SIZE = 8192
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


def size_dir(out: Path, size: int) -> Path:
    """Where ``--sizes`` writes the dataset of ``size`` x ``size`` pixels: ``OUT/dataset-<size>px``."""
    return out / f"dataset-{size}px"


def write_sizes(out: Path, sizes: tuple[int, ...]) -> dict[int, list[Path]]:
    """The same pictures at each square size (seed 004's resolution study sent 16 ... 2000 px images):
    ``OUT/dataset-<size>px/*.jpg`` per size; returns the files written by size."""
    return {size: write_dataset(size_dir(out, size), (size, size)) for size in sizes}


def parse_sizes(text: str) -> tuple[int, ...]:
    """``"16,64,224"`` -> (16, 64, 224); ``ValueError`` naming the bad entry (sizes 1..MAX_SIZE px)."""
    sizes: list[int] = []
    for part in text.split(","):
        try:
            size = int(part.strip())
        except ValueError:
            raise ValueError(f"--sizes: {part.strip()!r} is not a whole number of pixels") from None
        if not 1 <= size <= MAX_SIZE:
            raise ValueError(f"--sizes: {size} is outside 1..{MAX_SIZE} px")
        if size not in sizes:
            sizes.append(size)
    return tuple(sizes)


def load_original(name: str) -> NDArray[np.uint8]:
    """One original picture as an RGB uint8 array (tests and examples)."""
    with Image.open(skimage_dir() / IMAGES[name]) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)
