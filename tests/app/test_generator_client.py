"""The operator's generator client against HTTP servers on loopback: the server-metrics push is refused
quietly by an older generator (404: ``False``, nothing raised), and any other refusal is an error."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from kinfer.controller.generator import Generators, Unreachable


@pytest.fixture
async def server() -> AsyncIterator[tuple[TestServer, list[dict[str, object]]]]:
    seen: list[dict[str, object]] = []

    async def push(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer t":
            return web.json_response({"error": "token"}, status=401)
        seen.append(await request.json())
        return web.json_response({"urls": seen[-1]["urls"]})

    app = web.Application()
    app.router.add_post("/new/api/server-metrics", push)
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    yield srv, seen
    await srv.close()


async def test_the_push_reaches_a_generator_that_has_it_and_an_older_one_is_no_error(
    server: tuple[TestServer, list[dict[str, object]]],
) -> None:
    srv, seen = server
    base = f"http://127.0.0.1:{srv.port}"
    async with Generators("t") as gens:
        assert await gens.server_metrics(f"{base}/new", ["http://10.0.0.7:5000/metrics"]) is True
        assert seen == [{"urls": ["http://10.0.0.7:5000/metrics"]}]
        assert await gens.server_metrics(f"{base}/old", ["http://10.0.0.7:5000/metrics"]) is False  # 404
    async with Generators("wrong") as gens:
        with pytest.raises(Unreachable) as refused:
            await gens.server_metrics(f"{base}/new", [])
        assert refused.value.status == 401
