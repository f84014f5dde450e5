"""FastAPI + uvicorn peer: ``POST /predict`` with the JPEG as the body, as kinfer's ``/predict``.

    uvicorn fastapi_app:app --workers 2   (KINFER_PEER_MODEL=model dir; see bench_peer_servers.py)

The handler is ``async`` and calls the model inline: one request at a time per worker process, as
kinfer's sync gunicorn workers (a ``def`` handler would hop to a thread pool per request).
"""

from __future__ import annotations

from typing import Any

from detector import Detector
from fastapi import FastAPI, Request

app = FastAPI()
detector = Detector()


@app.post("/predict")
async def predict(request: Request) -> dict[str, Any]:
    return detector(await request.body())


@app.get("/ready")
async def ready() -> dict[str, str]:
    return {"status": "ready"}
