"""Ray Serve peer: one deployment with ``num_replicas`` replica processes (Ray actors), fed by Ray Serve's
HTTP proxy; the image arrives as the body of ``POST /predict`` (the deployment is called with the
Starlette request, Ray Serve's natural HTTP path) and is decoded and run by the same
:class:`detector.Detector` as every other server. The handler is ``async`` and calls the model inline:
one request at a time per replica, as the FastAPI peer.

    python rayserve_app.py --port PORT --replicas 2   (KINFER_PEER_MODEL=model dir)
"""

from __future__ import annotations

import argparse
import signal
import time
from typing import Any

import ray
from ray import serve
from starlette.requests import Request


@serve.deployment
class PersonDetector:
    def __init__(self) -> None:
        from detector import Detector

        self.detector = Detector()

    async def __call__(self, request: Request) -> dict[str, Any]:
        return self.detector(await request.body())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--replicas", type=int, default=2)
    args = parser.parse_args()
    # the cluster gets the machine's own cores; no dashboard (a server users would not count as serving)
    ray.init(include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    serve.run(PersonDetector.options(num_replicas=args.replicas).bind(), name="person", route_prefix="/predict")
    stop = False

    def _stop(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    while not stop:
        time.sleep(0.5)
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
