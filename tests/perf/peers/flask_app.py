"""The framework control of the model-server comparison: the least gunicorn + Flask app around the same
:class:`detector.Detector` (``POST /predict`` with the JPEG as the body), with kinfer's serving model:
gunicorn sync workers, one request at a time each, the connection closed after each response. What
separates it from kinfer is kinfer's own features; what separates it from FastAPI + uvicorn is the
framework and the worker model. Runs from kinfer's own virtualenv.

    gunicorn -w 2 -k sync flask_app:app   (KINFER_PEER_MODEL=model dir)
"""

from __future__ import annotations

import json

from detector import Detector
from flask import Flask, Response, request

app = Flask(__name__)
detector = Detector()


@app.post("/predict")
def predict() -> Response:
    return Response(json.dumps(detector(request.get_data())), mimetype="application/json")
