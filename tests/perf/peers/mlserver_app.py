"""MLServer peer: a custom runtime; the image arrives through MLServer's natural path, the Open
Inference Protocol (``POST /v2/models/person/infer``, one BYTES input, base64 in JSON), and is decoded
and run by the same :class:`detector.Detector` as every other server. Configured by
bench_peer_servers.py (settings.json: ``parallel_workers``, ports; model-settings.json: this class).
"""

from __future__ import annotations

import base64
import json

from detector import Detector
from mlserver import MLModel
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput


class PersonDetector(MLModel):
    async def load(self) -> bool:
        self.detector = Detector()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        data = payload.inputs[0].data.root[0]
        jpeg = base64.b64decode(data if isinstance(data, str | bytes) else str(data))
        result = json.dumps(self.detector(jpeg))
        return InferenceResponse(
            model_name=self.name,
            outputs=[ResponseOutput(name="persons", shape=[1], datatype="BYTES", data=[result])],
        )
