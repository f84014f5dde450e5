"""The control API (aiohttp, on the generator's event loop) and the live dashboard.

JSON endpoints (DESIGN.md §6): ``GET /api/status``, ``GET /api/records?since=N``,
``POST /api/intensity {"rps": N|null}``, ``POST /api/stop``, ``POST /api/server-metrics {"urls": [...]}``
(the target's pods' /metrics, scraped per record); the 2019 seed's URLs as aliases;
``GET /metrics`` (Prometheus), ``GET /api/results.zip`` (the results directory as written so far) and
``GET /`` (dashboard; its charting library is the ``plotly`` package's bundled plotly.js, served at
``/static/plotly.min.js``).
Bad requests answer 400 ``{"error": "..."}``.

Every state-changing call (``POST /api/intensity``, ``POST /api/stop`` and the seed's ``.do`` URLs
that set, start or stop) is guarded:

- a POST must say ``Content-Type: application/json`` (415 otherwise): a cross-site page can send a
  ``text/plain`` or form POST without asking, never a JSON one;
- with a control token (``--control-token``), the JSON API needs ``Authorization: Bearer <token>``
  and the seed's ``.do`` URLs, which stay GET as the seed's browser used them, ``token=<token>`` (or
  the same header); 401 otherwise, compared in constant time. Without a token the API listens on
  loopback only (``kinfer.loadgen.config.control_args``).

Reads (status, records, metrics, the results zip, the dashboard page) stay open: they change nothing
and show the numbers the status already shows. The dashboard takes the token from its own URL
(``/#token=...``, kept out of server logs and Referer headers, or ``/?token=...``) and sends it with its
controls.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import io
import json
import math
import zipfile
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kinfer.histograms import encode
from kinfer.loadgen.metrics import registry_for
from kinfer.loadgen.runner import Run, validate_rps
from kinfer.loadgen.server_resources import validate_urls


class BadRequest(Exception):
    """A client error: answered 400 with ``{"error": message}``."""


#: The calls that change the run: the JSON API's POSTs and the seed's ``.do`` URLs that act.
STATE_CHANGING = frozenset(
    ("/api/intensity", "/api/stop", "/api/server-metrics", "/startOnlineQuery.do", "/setIntensity.do",
     "/stopOnlineQuery.do", "/goOnlineQuery.do")
)  # fmt: skip


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except BadRequest as exc:
        return web.json_response({"error": str(exc)}, status=400)


def _bearer(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def guard(token: str | None) -> Any:
    """Middleware: JSON-only POSTs, and the token on every state-changing call (when one is set)."""
    expected = token.encode() if token else None

    @web.middleware
    async def check(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path in STATE_CHANGING:
            if expected is not None:
                given = _bearer(request)
                if given is None and request.path.endswith(".do"):
                    given = request.query.get("token")
                if given is None or not hmac.compare_digest(given.encode(), expected):
                    how = "token=<token>" if request.path.endswith(".do") else "Authorization: Bearer <token>"
                    return web.json_response(
                        {"error": f"{'wrong' if given else 'missing'} control token: send {how}"},
                        status=401,
                        headers={"WWW-Authenticate": 'Bearer realm="kinfer loadgen"'},
                    )
            if request.method == "POST" and request.content_type != "application/json":
                return web.json_response(
                    {"error": f"POST needs Content-Type: application/json, got {request.content_type!r}"},
                    status=415,
                )
        response: web.StreamResponse = await handler(request)
        return response

    return check


@functools.cache
def plotly_js() -> bytes:
    """plotly.js as shipped inside the ``plotly`` Python package (read once)."""
    from plotly.offline import get_plotlyjs  # type: ignore[import-untyped]

    return str(get_plotlyjs()).encode()


@functools.cache
def dashboard_html() -> bytes:
    """The dashboard page (a package resource)."""
    return resources.files("kinfer.loadgen").joinpath("dashboard.html").read_bytes()


def _int_param(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer, got {raw!r}") from None
    if value < 0:
        raise BadRequest(f"{name} must be >= 0, got {value}")
    return value


def _intensity_param(request: web.Request) -> float | None:
    raw = request.query.get("intensity")
    if raw is None:
        return None
    try:
        return validate_rps(float(raw))
    except ValueError as exc:
        raise BadRequest(f"invalid intensity {raw!r}: {exc}") from None


class ControlServer:
    """Serves one :class:`Run`'s control API on ``host:port`` (port 0: any free port)."""

    def __init__(self, run: Run, host: str, port: int, token: str | None = None) -> None:
        self.run = run
        self.host = host
        self.port = port
        self.token = token
        self.registry = registry_for(run)
        self.app = web.Application(middlewares=[guard(token), _errors])
        r = self.app.router
        r.add_get("/", self.dashboard)
        r.add_get("/static/plotly.min.js", self.plotly)
        r.add_get("/api/status", self.status)
        r.add_get("/api/records", self.records)
        r.add_get("/api/results.zip", self.results_zip)
        r.add_post("/api/intensity", self.intensity)
        r.add_post("/api/stop", self.stop)
        r.add_post("/api/server-metrics", self.server_metrics)
        r.add_get("/metrics", self.metrics)
        # the 2019 seed's URLs
        r.add_get("/startOnlineQuery.do", self.seed_set_intensity)
        r.add_get("/setIntensity.do", self.seed_set_intensity)
        r.add_get("/stopOnlineQuery.do", self.stop)
        r.add_get("/goOnlineQuery.do", self.seed_dashboard)
        r.add_get("/getOnlineQueryTime.do", self.seed_query_time)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        """Bind and serve; ``url`` then holds the actual address."""
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.port = port
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        self.url = f"http://{shown}:{port}/"

    async def close(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()

    # -- handlers ---------------------------------------------------------------------------------

    async def dashboard(self, request: web.Request) -> web.Response:
        return web.Response(body=dashboard_html(), content_type="text/html")

    async def plotly(self, request: web.Request) -> web.Response:
        return web.Response(
            body=plotly_js(),
            content_type="application/javascript",
            headers={"Cache-Control": "max-age=86400"},
        )

    async def status(self, request: web.Request) -> web.Response:
        data = self.run.status()
        if request.query.get("histograms") in ("1", "true"):
            # Exact merging across generator pods: the whole run's and each stage's latency histogram.
            recorder = self.run.recorder
            data["histograms"] = {
                "latency": encode(recorder.total.latency),
                "stages": {str(i): encode(b.latency) for i, b in sorted(recorder.stages.items())},
                "service": encode(recorder.total.service),
                "lag": encode(recorder.total.lag),
            }
        if request.query.get("summary") in ("1", "true"):
            # The full summary.json (DESIGN §9) as it stands: the operator stores it beside the records.
            data["summary"] = self.run.summary()
        return web.json_response(_finite(data))

    async def records(self, request: web.Request) -> web.Response:
        since = _int_param(request, "since", 0)
        records = self.run.recorder.records[since:]
        return web.json_response(
            {
                "records": [r.to_json() for r in records],
                "next": since + len(records),
                "phase": self.run.phase.value,
            }
        )

    async def results_zip(self, request: web.Request) -> web.Response:
        """The results directory as a zip: what is written so far (records.csv grows by one flushed row
        per record, so a running run's zip holds every record up to now)."""
        directory = self.run.config.output
        if directory is None or not directory.is_dir():
            return web.json_response({"error": "this run writes no results directory (no --output)"}, status=404)
        body = await asyncio.to_thread(zip_directory, directory)
        return web.Response(
            body=body,
            content_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="{directory.name or "results"}.zip"'},
        )

    async def intensity(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.text())
        except ValueError:
            raise BadRequest("body must be JSON: {\"rps\": N} or {\"rps\": null}") from None
        if not isinstance(body, dict) or "rps" not in body:
            raise BadRequest("body must be a JSON object with 'rps'")
        try:
            rps = validate_rps(body["rps"])
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        self.run.set_intensity(rps)
        return web.json_response({"intensity": rps, "targetRPS": self._target()})

    async def server_metrics(self, request: web.Request) -> web.Response:
        """``{"urls": [...]}``: the target's pods' /metrics to scrape from the next record on (the
        operator sends it when the target's pods change)."""
        try:
            body = json.loads(await request.text())
        except ValueError:
            raise BadRequest('body must be JSON: {"urls": ["http://pod:5000/metrics", ...]}') from None
        if not isinstance(body, dict) or not isinstance(body.get("urls"), list):
            raise BadRequest("body must be a JSON object with 'urls', a list of http(s) URLs")
        try:
            urls = validate_urls(body["urls"])
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        self.run.scraper.set_urls(urls)
        return web.json_response({"urls": urls})

    async def stop(self, request: web.Request) -> web.Response:
        self.run.stop()
        return web.json_response({"phase": self.run.phase.value, "stopping": True})

    async def metrics(self, request: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest(self.registry))
        resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return resp

    async def seed_set_intensity(self, request: web.Request) -> web.Response:
        rps = _intensity_param(request)
        if rps is None:
            raise BadRequest("intensity query parameter required, e.g. ?intensity=20")
        self.run.set_intensity(rps)
        return web.json_response({"intensity": rps, "targetRPS": self._target()})

    async def seed_dashboard(self, request: web.Request) -> web.Response:
        token = request.query.get("token")
        raise web.HTTPFound("/" if self.token is None or token is None else "/?" + urlencode({"token": token}))

    async def seed_query_time(self, request: web.Request) -> web.Response:
        """The seed's field names: SR in percent, queryTime = last record's p99, avg99th its window mean."""
        s = self.run.status()
        sr = s.get("serviceRate")
        return web.json_response(
            {
                "realRPS": s.get("realRPS", 0.0),
                "realQPS": s.get("realQPS", 0.0),
                "avgRPS": s.get("avgRPS", 0.0),
                "avgQPS": s.get("avgQPS", 0.0),
                "SR": None if sr is None else round(sr * 100, 2),
                "queryTime": s.get("p99Ms"),
                "avg99th": s.get("avg99thMs"),
            }
        )

    def _target(self) -> float:
        return round(self.run.plan.target(self.run.elapsed()), 3)


def zip_directory(directory: Path) -> bytes:
    """Every file under ``directory`` (the results: summary.json, records.csv, stages.csv, plots,
    report.html), stored under the directory's name; the writer's half-written temporary files are left
    out (their finished versions are already there)."""
    buf = io.BytesIO()
    root = directory.name or "results"
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(directory.rglob("*")):
            if path.is_file() and not path.name.endswith(".tmp"):
                archive.write(path, f"{root}/{path.relative_to(directory).as_posix()}")
    return buf.getvalue()


def _finite(value: Any) -> Any:
    """JSON has no Infinity/NaN: replace them by null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
