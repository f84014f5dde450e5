"""TorchServe peer: a module handler (``handle(data, context)``, TorchServe's custom-service contract)
in a model archive; the image arrives as the body of ``POST /predictions/person`` (TorchServe's natural
path: the request body reaches the handler as ``data[i]["body"]``) and is decoded and run by the same
:class:`detector.Detector` as every other server. TorchServe's Java frontend spreads requests over
``default_workers_per_model`` Python worker processes (batch size 1). Archived and configured by
bench_peer_servers.py.
"""

from __future__ import annotations

from typing import Any

from detector import Detector

_detector: Detector | None = None


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[dict[str, Any]] | None:
    global _detector
    if _detector is None:
        _detector = Detector()
    if data is None:  # the load-time call
        return None
    return [_detector(bytes(row.get("body") or row.get("data"))) for row in data]
