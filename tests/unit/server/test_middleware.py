"""MetricsMiddleware around plain WSGI apps: what it adds to a response and when it counts a request."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from kinfer.server.metrics import ServerMetrics
from kinfer.server.middleware import UNMATCHED, MetricsMiddleware, StartResponse, add_stage


class _Rule:
    rule = "/things/<name>"


class _Request:
    url_rule = _Rule()


class _Body:
    """A body iterable that records whether the server closed it."""

    def __init__(self) -> None:
        self.closed = 0

    def __iter__(self) -> Iterator[bytes]:
        return iter([b"hello"])

    def close(self) -> None:
        self.closed += 1


def _value(metrics: ServerMetrics, name: str, labels: dict[str, str] | None = None) -> float | None:
    return metrics.registry.get_sample_value(name, labels or {})


class _Server:
    """Plays the WSGI server: calls the app, keeps what ``start_response`` got, iterates, closes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[tuple[str, str]], Any]] = []

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        self.calls.append((status, list(headers), exc_info))
        return lambda data: None

    def run(self, app: MetricsMiddleware, environ: dict[str, Any], close: bool = True) -> tuple[bytes, Any]:
        body = app(environ, self.start_response)
        data = b"".join(body)
        if close:
            body.close()  # type: ignore[attr-defined]
        return data, body


@pytest.fixture
def metrics() -> ServerMetrics:
    return ServerMetrics("m", registry=CollectorRegistry())


def test_the_response_gets_the_stages_the_app_recorded_and_is_counted_once_closed(metrics: ServerMetrics) -> None:
    inner_body = _Body()
    in_flight_seen: list[float | None] = []

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        in_flight_seen.append(_value(metrics, "kinfer_server_requests_in_flight"))
        environ["werkzeug.request"] = _Request()  # as werkzeug's Request does while Flask handles it
        add_stage(environ, "preprocess", 0.002)
        add_stage(environ, "infer", 0.010)
        add_stage(environ, "infer", 0.005)  # a second model call adds up
        start_response("201 Created", [("Content-Type", "text/plain")])
        environ["werkzeug.request"] = None  # as Flask does when the request ends
        return inner_body

    server = _Server()
    data, _ = server.run(MetricsMiddleware(app, metrics), {}, close=False)
    status, headers, _ = server.calls[0]
    assert (data, status) == (b"hello", "201 Created")
    timing = "queue;dur=0.00, preprocess;dur=2.00, infer;dur=15.00, postprocess;dur=0.00"
    assert dict(headers)["Server-Timing"] == timing
    # written but not closed: still in flight, not yet counted
    assert _value(metrics, "kinfer_server_requests_in_flight") == 1.0
    labels = {"route": "/things/<name>", "code": "201"}
    assert _value(metrics, "kinfer_server_requests_total", labels) is None

    server2 = _Server()
    _, body = server2.run(MetricsMiddleware(app, metrics), {})
    body.close()  # a second close settles nothing twice
    assert inner_body.closed == 2  # the inner body's close is passed on each time
    assert in_flight_seen == [1.0, 2.0]  # raised before the app ran
    assert _value(metrics, "kinfer_server_requests_total", labels) == 1.0
    assert _value(metrics, "kinfer_server_requests_in_flight") == 1.0  # the first one, never closed
    stage = {"model": "m", "stage": "infer"}
    assert _value(metrics, "kinfer_server_stage_duration_seconds_sum", stage) == pytest.approx(0.015)
    assert _value(metrics, "kinfer_server_stage_duration_seconds_count", {"model": "m", "stage": "queue"}) is None


def test_a_request_no_route_matched_is_counted_as_unmatched(metrics: ServerMetrics) -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        start_response("404 NOT FOUND", [])
        return [b"no"]

    _Server().run(MetricsMiddleware(app, metrics), {})
    assert _value(metrics, "kinfer_server_requests_total", {"route": UNMATCHED, "code": "404"}) == 1.0
    assert _value(metrics, "kinfer_server_requests_in_flight") == 0.0


def test_an_app_that_raises_is_counted_as_500_and_the_error_goes_on_to_the_server(metrics: ServerMetrics) -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        MetricsMiddleware(app, metrics)({}, _Server().start_response)
    assert _value(metrics, "kinfer_server_requests_in_flight") == 0.0
    assert _value(metrics, "kinfer_server_requests_total", {"route": UNMATCHED, "code": "500"}) == 1.0


def test_a_second_start_response_with_exc_info_reaches_the_server_with_its_own_timing(metrics: ServerMetrics) -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [])
        try:
            raise ValueError("late")
        except ValueError:
            start_response("500 INTERNAL SERVER ERROR", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"error"]

    server = _Server()
    server.run(MetricsMiddleware(app, metrics), {})
    (_, first, none), (status, second, exc_info) = server.calls
    assert none is None and exc_info is not None and exc_info[0] is ValueError
    assert status.startswith("500") and [k for k, _ in second].count("Server-Timing") == 1
    assert [k for k, _ in first].count("Server-Timing") == 1
    assert _value(metrics, "kinfer_server_requests_total", {"route": UNMATCHED, "code": "500"}) == 1.0
