"""KServe peer: a ``kserve.Model`` served by KServe's Python ModelServer; the image arrives through the
Open Inference Protocol (``POST /v2/models/person/infer``, one BYTES input, base64 in JSON) and is
decoded and run by the same :class:`detector.Detector` as every other server.

    python kserve_app.py --http_port PORT --workers 2   (KINFER_PEER_MODEL=model dir)
"""

from __future__ import annotations

import argparse
import base64
import json
from typing import Any

import kserve
from detector import Detector
from kserve import InferRequest, InferResponse, Model, ModelServer
from kserve.protocol.infer_type import InferOutput


class PersonDetector(Model):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.detector: Detector | None = None
        self.load()

    def load(self) -> bool:
        self.detector = Detector()
        self.ready = True
        return True

    # KServe's --workers N spawns N processes and pickles the model into each: each loads its own session
    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "detector": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.load()

    def predict(self, payload: InferRequest, headers: dict[str, str] | None = None) -> Any:
        assert self.detector is not None
        data = payload.inputs[0].data[0]
        jpeg = base64.b64decode(data)
        result = json.dumps(self.detector(jpeg))
        out = InferOutput(name="persons", shape=[1], datatype="BYTES", data=[result])
        return InferResponse(model_name=self.name, infer_outputs=[out], response_id=payload.id or "1")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    args, _ = parser.parse_known_args()
    ModelServer(http_port=args.http_port, workers=args.workers).start([PersonDetector("person")])
