"""Per-request limits (images, decoded pixels), read deadlines and internal errors, through the Flask test client."""

from __future__ import annotations

import base64
import socket
import struct
import threading
import time
import zlib

import pytest
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st

from kinfer.server.preprocess import image_size
from kinfer.server.workers import DeadlineSocket
from tests.unit.server.conftest import MakeApp, image_bytes


def bomb_png(width: int, height: int) -> bytes:
    """A valid grayscale PNG of ``width`` x ``height`` zero pixels, a few hundred bytes long (streamed, never
    held whole in memory)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(9)
    row = b"\0" * (width + 1)  # filter byte + one byte per pixel
    parts = [z.compress(row) for _ in range(height)]
    idat = b"".join(parts) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _v2(images: list[bytes]) -> dict[str, object]:
    data = [base64.b64encode(i).decode() for i in images]
    return {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [len(data)], "data": data}]}


def test_image_size_reads_png_jpeg_and_other_headers_without_decoding() -> None:
    assert image_size(image_bytes(64, 48, "PNG")) == (64, 48)
    assert image_size(image_bytes(33, 17, "JPEG")) == (33, 17)
    assert image_size(image_bytes(20, 10, "BMP")) == (20, 10)
    assert image_size(image_bytes(21, 11, "GIF", mode="L")) == (21, 11)
    assert image_size(bomb_png(8000, 8000)) == (8000, 8000)
    assert image_size(b"not an image") is None
    assert image_size(b"") is None


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64) | st.binary(max_size=40).map(lambda b: b"\x89PNG\r\n\x1a\n" + b))
def test_image_size_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    size = image_size(data)
    assert size is None or (size[0] >= 0 and size[1] >= 0)


def test_six_small_pngs_decoding_to_8000x8000_are_413_before_decoding(make_app: MakeApp) -> None:
    bomb = bomb_png(8000, 8000)
    assert len(bomb) < 100_000
    client = make_app().test_client()
    resp = client.post("/v2/models/null/infer", json=_v2([bomb] * 6))
    assert resp.status_code == 413
    error = resp.get_json()["error"]
    assert "--max-pixels-per-request" in error and "384000000 pixels" in error
    # /predict checks the header the same way
    resp = make_app(max_pixels_per_request=10_000_000).test_client().post("/predict", data=bomb)
    assert resp.status_code == 413
    assert "--max-pixels-per-request" in resp.get_json()["error"]


def test_more_images_than_the_limit_is_413_naming_the_flag(make_app: MakeApp) -> None:
    client = make_app(max_images_per_request=3).test_client()
    small = image_bytes(8, 8)
    assert client.post("/v2/models/null/infer", json=_v2([small] * 3)).status_code == 200
    resp = client.post("/v2/models/null/infer", json=_v2([small] * 4))
    assert resp.status_code == 413
    assert "4 images" in resp.get_json()["error"] and "--max-images-per-request" in resp.get_json()["error"]


def test_the_image_limit_defaults_to_the_batch_limit_or_32(make_app: MakeApp) -> None:
    small = image_bytes(8, 8)
    client = make_app().test_client()
    assert client.post("/v2/models/null/infer", json=_v2([small] * 32)).status_code == 200
    assert client.post("/v2/models/null/infer", json=_v2([small] * 33)).status_code == 413
    client = make_app(max_batch_size=40).test_client()
    assert client.post("/v2/models/null/infer", json=_v2([small] * 40)).status_code == 200
    assert client.post("/v2/models/null/infer", json=_v2([small] * 41)).status_code == 413


def test_numeric_tensors_with_more_rows_than_the_limit_are_413(make_app: MakeApp) -> None:
    client = make_app(max_images_per_request=2, input_size=(2, 2)).test_client()
    rows = [[[[0, 0, 0]] * 2] * 2] * 3
    body = {"inputs": [{"name": "x", "datatype": "UINT8", "shape": [3, 2, 2, 3], "data": rows}]}
    resp = client.post("/v2/models/null/infer", json=body)
    assert resp.status_code == 413
    assert "--max-images-per-request" in resp.get_json()["error"]


def test_pixel_limit_counts_every_image_of_the_request(make_app: MakeApp) -> None:
    client = make_app(max_pixels_per_request=64 * 48 * 2).test_client()
    img = image_bytes(64, 48)
    assert client.post("/v2/models/null/infer", json=_v2([img] * 2)).status_code == 200
    assert client.post("/v2/models/null/infer", json=_v2([img] * 3)).status_code == 413
    assert client.post("/predict", data=img).status_code == 200


def test_unexpected_exception_is_500_internal_error_with_request_id_logged(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    @app.get("/boom")
    def boom() -> str:
        raise KeyError("/secret/path/model.pb")

    resp = app.test_client().get("/boom")
    assert resp.status_code == 500
    body = resp.get_json()
    assert body == {"error": "internal error", "requestId": body["requestId"]}
    assert len(body["requestId"]) == 16
    assert resp.headers["X-Request-Id"] == body["requestId"]
    assert "secret" not in resp.get_data(as_text=True)
    logged = [r for r in caplog.records if body["requestId"] in r.getMessage()]
    assert logged and "/secret/path/model.pb" in logged[0].getMessage() and logged[0].exc_info is not None


def test_mapped_errors_keep_their_status_and_message(make_app: MakeApp) -> None:
    c = make_app().test_client()
    assert c.post("/predict", data=b"junk").status_code == 400
    assert "not a decodable image" in c.post("/predict", data=b"junk").get_json()["error"]
    assert c.get("/v2/models/other").status_code == 404
    assert "requestId" not in c.get("/v2/models/other").get_json()
    assert c.get("/nowhere").status_code == 404


def _socket_pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.setblocking(True)
    return a, b


def test_deadline_socket_reads_as_closed_once_the_request_took_too_long() -> None:
    server, client = _socket_pair()
    with server, client:
        sock = DeadlineSocket(server, 0.3)
        client.sendall(b"GET")
        assert sock.recv(10) == b"GET"
        started = time.monotonic()
        trickle_done = threading.Event()

        def trickle() -> None:
            for _ in range(20):
                if trickle_done.is_set():
                    return
                client.sendall(b"x")
                trickle_done.wait(0.05)

        sender = threading.Thread(target=trickle)
        sender.start()
        received = b""
        while chunk := sock.recv(10):
            received += chunk
        trickle_done.set()
        sender.join()
        assert sock.timed_out
        assert time.monotonic() - started < 0.6
        assert received.count(b"x") <= 8
        sock.sendall(b"HTTP/1.1 408\r\n\r\n")  # writing after the deadline still works, blocking
        assert client.recv(100).startswith(b"HTTP/1.1 408")
        sock.restart()  # the next request of a kept-alive connection has its own deadline
        assert not sock.timed_out
        client.sendall(b"next")
        while b"next" not in (data := sock.recv(100)):
            assert data


def test_deadline_socket_passes_everything_else_to_the_socket() -> None:
    server, client = _socket_pair()
    with server, client:
        sock = DeadlineSocket(server, 5)
        assert sock.fileno() == server.fileno()
        client.sendall(b"abc")
        buf = bytearray(8)
        assert sock.recv_into(buf) == 3 and bytes(buf[:3]) == b"abc"


def _png_header(width: int, height: int) -> bytes:
    """Just a PNG signature and IHDR: enough for ``image_size``, nothing to decode."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


@settings(max_examples=300, deadline=None)
@given(
    sizes=st.lists(st.tuples(st.integers(1, 20_000), st.integers(1, 20_000)), max_size=12),
    max_images=st.integers(1, 10),
    max_pixels=st.integers(1, 10**9),
)
def test_a_request_is_refused_exactly_when_it_has_too_many_images_or_pixels(
    sizes: list[tuple[int, int]], max_images: int, max_pixels: int
) -> None:
    from kinfer.server.app import check_images
    from kinfer.server.config import ServerConfig
    from kinfer.server.errors import PayloadTooLarge

    config = ServerConfig(max_images_per_request=max_images, max_pixels_per_request=max_pixels)
    too_many = len(sizes) > max_images or sum(w * h for w, h in sizes) > max_pixels
    try:
        check_images([_png_header(w, h) for w, h in sizes], config)
    except PayloadTooLarge as exc:
        assert too_many, exc.message
        assert "--max-images-per-request" in exc.message or "--max-pixels-per-request" in exc.message
    else:
        assert not too_many
