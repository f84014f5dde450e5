"""BentoML peer: a ``@bentoml.service`` with two worker processes; the image arrives through BentoML's JSON
path, typed by pydantic: the Open Inference Protocol's body (``POST /v2/models/person/infer``, one BYTES
input, base64), mapped by BentoML onto the API's ``inputs`` parameter. (BentoML's file path is
multipart/form-data, which kinfer's generator does not send; its JSON path is the one a typed API gets.)
Decoded and run by the same :class:`detector.Detector` as every other server.

    bentoml serve bentoml_app:PersonService --port PORT   (KINFER_PEER_MODEL=model dir, BENTO_WORKERS=2)
"""

from __future__ import annotations

import base64
import os
from typing import Any

import bentoml
from detector import Detector
from pydantic import BaseModel


class V2Input(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[str]


@bentoml.service(workers=int(os.environ.get("BENTO_WORKERS", "2")), traffic={"timeout": 30})
class PersonService:
    def __init__(self) -> None:
        self.detector = Detector()

    @bentoml.api(route="/v2/models/person/infer")
    def infer(self, inputs: list[V2Input]) -> dict[str, Any]:
        return self.detector(base64.b64decode(inputs[0].data[0]))
