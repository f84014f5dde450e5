"""The WSGI middleware that measures every request: ``Server-Timing``, request metrics, in-flight gauge.

It wraps the Flask app (``app.wsgi_app = MetricsMiddleware(app.wsgi_app, metrics)``, Flask's documented
way to add middleware) rather than spreading the work over Flask's before/after/teardown hooks and
``flask.g``: one object follows one request from the moment it reaches the app until the server
closes its body, and settles it exactly once, also when the app raised.

Per request: the in-flight gauge goes up when the request reaches the app; views add stage times to
the dict at ``environ[STAGES_KEY]`` (``add_stage``); when the app starts its response, the
``Server-Timing`` header is appended from that dict and the handler time is taken; once the server
has written the response and closes the body iterable, the gauge goes down and the request is
counted. That last part runs after the client has its answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Protocol

from kinfer.server.metrics import ServerMetrics, server_timing

#: The ``environ`` key of the request's stage times (stage name -> seconds).
STAGES_KEY = "kinfer.stages"
#: The ``environ`` key of the number of images (rows) in the model call that served the request.
BATCH_KEY = "kinfer.batch"
#: The route label of requests that matched no route (404, 405 before routing).
UNMATCHED = "<unmatched>"

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]
Write = Callable[[bytes], object]
StartResponse = Callable[..., Write]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class _Rule(Protocol):
    rule: str


def add_stage(environ: dict[str, Any], name: str, seconds: float) -> None:
    """Add ``seconds`` to stage ``name`` of the request whose WSGI environ this is."""
    stages: dict[str, float] = environ.setdefault(STAGES_KEY, {})
    stages[name] = stages.get(name, 0.0) + seconds


def route_of(environ: dict[str, Any]) -> str:
    """The URL rule the request matched (``/v2/models/<model>/infer``, not the path), for metric labels.

    Read while the app handles the request: werkzeug's ``Request`` puts itself at
    ``environ["werkzeug.request"]`` and Flask sets it to None when the request ends."""
    request = environ.get("werkzeug.request")
    rule: _Rule | None = getattr(request, "url_rule", None)
    return rule.rule if rule is not None else UNMATCHED


class _Exchange:
    """One request in flight: its start, its stages, and what its response said."""

    __slots__ = ("code", "environ", "metrics", "route", "seconds", "server_start", "settled", "stages", "started")

    def __init__(self, metrics: ServerMetrics, environ: dict[str, Any], server_start: StartResponse) -> None:
        self.metrics = metrics
        self.environ = environ
        self.server_start = server_start
        self.started = time.perf_counter()
        self.stages: dict[str, float] = {}
        environ[STAGES_KEY] = self.stages
        self.code = 500  # until the app starts a response
        self.route = UNMATCHED
        self.seconds: float | None = None
        self.settled = False

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None) -> Write:
        """The ``start_response`` the app gets: adds ``Server-Timing``, notes the status, route and time.

        Flask calls it while the request is still current (its context is popped, and the request's
        ``environ`` entry cleared, only afterwards), so this is where the matched route is read."""
        timing = server_timing(self.stages)
        batch = self.environ.get(BATCH_KEY, 1)
        if batch > 1:  # a client batch or a dynamic batch: the model call's images (no duration: a count)
            timing += f', batch;desc="{batch}"'
        headers.append(("Server-Timing", timing))
        self.code = int(status[:3])
        self.route = route_of(self.environ)
        self.seconds = time.perf_counter() - self.started
        if exc_info:
            return self.server_start(status, headers, exc_info)
        return self.server_start(status, headers)

    def settle(self) -> None:
        """Lower the gauge and record the request, once (the body is closed, or the app raised)."""
        if self.settled:
            return
        self.settled = True
        seconds = self.seconds if self.seconds is not None else time.perf_counter() - self.started
        self.metrics.in_flight.dec()
        self.metrics.observe_request(self.route, self.code, seconds, self.stages)


class _ClosingBody:
    """The app's body iterable; ``close`` (which WSGI servers call after writing it) settles the request."""

    __slots__ = ("body", "exchange")

    def __init__(self, body: Iterable[bytes], exchange: _Exchange) -> None:
        self.body = body
        self.exchange = exchange

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.body)

    def close(self) -> None:
        try:
            close: Callable[[], object] | None = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            self.exchange.settle()


class MetricsMiddleware:
    """Wraps a WSGI app: every request gets a ``Server-Timing`` header and is counted in ``metrics``."""

    def __init__(self, app: WSGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        exchange = _Exchange(self.metrics, environ, start_response)
        self.metrics.in_flight.inc()
        try:
            body = self.app(environ, exchange.start_response)
        except BaseException:
            exchange.settle()
            raise
        return _ClosingBody(body, exchange)
