"""The benchmark's floor control: a bare socket server that does only what ``/predict`` cannot avoid.

It accepts one connection at a time, reads an HTTP request, decodes its JPEG with the model server's
own ``decode_image``, waits ``--delay-ms`` as a model call would, and answers a small JSON body with a
``Server-Timing`` header, in one write, closing the connection (as gunicorn's sync worker does). No
framework, no metrics, no routing. What a request costs here beside its wait is what this machine
charges for the socket round trip, the decoding and the wake-up after the wait; ``bench_server.py``
compares kinfer's ``/predict`` with it in the same run. Not a product component.

    python tests/perf/floor_server.py --delay-ms 30
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time

from kinfer.server.preprocess import decode_image

BODY = json.dumps({"detections": [{"box": [0.25, 0.25, 0.75, 0.75], "classId": 1, "label": "person"}]}).encode()


def _read_request(conn: socket.socket) -> bytes:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(1 << 16)
        if not chunk:
            return b""
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lengths = [line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
    length = int(lengths[0])
    while len(body) < length:
        body += conn.recv(1 << 16)
    return body


def serve(port: int, delay_s: float) -> None:
    listener = socket.create_server(("127.0.0.1", port))
    print(f"listening on http://127.0.0.1:{listener.getsockname()[1]}", file=sys.stderr, flush=True)
    while True:
        conn, _ = listener.accept()
        with conn:
            data = _read_request(conn)
            if not data:
                continue
            t0 = time.perf_counter()
            decode_image(data)
            t1 = time.perf_counter()
            time.sleep(delay_s)
            t2 = time.perf_counter()
            timing = f"preprocess;dur={(t1 - t0) * 1e3:.2f}, infer;dur={(t2 - t1) * 1e3:.2f}"
            head = (
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                f"Server-Timing: {timing}\r\nContent-Length: {len(BODY)}\r\n\r\n"
            )
            conn.sendall(head.encode() + BODY)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, default=30.0)
    args = parser.parse_args()
    serve(args.port, args.delay_ms / 1000)


if __name__ == "__main__":
    main()
