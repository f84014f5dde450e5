"""The control API's guard: a token on every state change, JSON-only POSTs, reads open (DESIGN.md §6)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.app.browser import ARGS, CHROMIUM, needs_chromium
from tests.app.loadgen.conftest import RunHandle, StartRun
from tests.app.loadgen.support import TargetServer, eventually

TOKEN = "s3cret-Token-0123456789abcdef"
BEARER = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _guarded_run(target: TargetServer, start_run: StartRun) -> RunHandle:
    handle = await start_run(target.url(), "--rps", "20", "--duration", "60", "--control-token", TOKEN)
    await eventually(lambda: handle.run.phase.value == "Running")
    return handle


#: (method, path, headers, body): state-changing calls that must be refused and change nothing.
REFUSED: list[tuple[str, str, dict[str, str], str | None, int]] = [
    ("POST", "/api/intensity", {"Content-Type": "application/json"}, '{"rps": 99}', 401),
    (
        "POST",
        "/api/intensity",
        {"Content-Type": "application/json", "Authorization": "Bearer wrong"},
        '{"rps": 99}',
        401,
    ),
    ("POST", "/api/intensity", {"Content-Type": "application/json", "Authorization": TOKEN}, '{"rps": 99}', 401),
    (
        "POST",
        "/api/intensity",
        {"Content-Type": "application/json", "Authorization": f"Basic {TOKEN}"},
        '{"rps": 99}',
        401,
    ),
    (
        "POST",
        "/api/intensity",
        {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}x"},
        '{"rps": 99}',
        401,
    ),
    (
        "POST",
        "/api/intensity",
        {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN[:-1]}"},
        '{"rps": 99}',
        401,
    ),
    ("POST", "/api/intensity?token=" + TOKEN, {"Content-Type": "application/json"}, '{"rps": 99}', 401),
    ("POST", "/api/intensity", {"Content-Type": "text/plain", "Authorization": f"Bearer {TOKEN}"}, '{"rps": 99}', 415),
    (
        "POST",
        "/api/intensity",
        {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/x-www-form-urlencoded"},
        "rps=99",
        415,
    ),
    (
        "POST",
        "/api/intensity",
        {"Authorization": f"Bearer {TOKEN}", "Content-Type": "multipart/form-data; boundary=x"},
        '{"rps": 99}',
        415,
    ),
    ("POST", "/api/intensity", {"Authorization": f"Bearer {TOKEN}"}, '{"rps": 99}', 415),
    ("POST", "/api/intensity", {"Content-Type": "text/plain"}, '{"rps": 99}', 401),
    ("POST", "/api/stop", {"Content-Type": "application/json"}, "{}", 401),
    ("POST", "/api/stop", {"Content-Type": "text/plain", "Authorization": f"Bearer {TOKEN}"}, "{}", 415),
    ("POST", "/api/stop", {"Content-Type": "application/json", "Authorization": "Bearer "}, "{}", 401),
    ("GET", "/setIntensity.do?intensity=99", {}, None, 401),
    ("GET", "/setIntensity.do?intensity=99&token=wrong", {}, None, 401),
    ("GET", "/setIntensity.do?intensity=99&token=", {}, None, 401),
    ("GET", f"/setIntensity.do?intensity=99&token={TOKEN.upper()}", {}, None, 401),
    ("GET", "/startOnlineQuery.do?intensity=99", {}, None, 401),
    ("GET", "/stopOnlineQuery.do", {}, None, 401),
    ("GET", "/stopOnlineQuery.do?token=nope", {}, None, 401),
    ("GET", "/goOnlineQuery.do", {}, None, 401),
]


async def test_state_changes_without_the_right_token_or_a_json_post_are_refused_and_change_nothing(
    target: TargetServer, start_run: StartRun, http: aiohttp.ClientSession
) -> None:
    handle = await _guarded_run(target, start_run)
    for method, path, headers, body, status in REFUSED:
        async with http.request(method, handle.api(path), headers=headers, data=body, allow_redirects=False) as resp:
            assert resp.status == status, (method, path, headers, resp.status, await resp.text())
            error = (await resp.json())["error"]
            assert TOKEN not in error
        assert handle.run.plan.override is None, (method, path, headers)
        assert handle.run.phase.value == "Running", (method, path, headers)
    print(f"{len(REFUSED)} refused control calls")


async def test_the_right_token_controls_the_run_on_both_apis(
    target: TargetServer, start_run: StartRun, http: aiohttp.ClientSession
) -> None:
    handle = await _guarded_run(target, start_run)
    async with http.post(handle.api("/api/intensity"), json={"rps": 30}, headers=BEARER) as resp:
        assert resp.status == 200
    assert handle.run.plan.override == 30
    async with http.get(handle.api(f"/setIntensity.do?intensity=40&token={TOKEN}")) as resp:
        assert resp.status == 200
    assert handle.run.plan.override == 40
    async with http.get(handle.api("/startOnlineQuery.do?intensity=45"), headers=BEARER) as resp:
        assert resp.status == 200  # the bearer header works on the seed's URLs too
    assert handle.run.plan.override == 45
    async with http.get(handle.api(f"/goOnlineQuery.do?token={TOKEN}"), allow_redirects=False) as resp:
        assert resp.status == 302 and resp.headers["Location"] == f"/?token={TOKEN}"
    for read in ("/api/status", "/api/records?since=0", "/metrics", "/", "/getOnlineQueryTime.do"):
        async with http.get(handle.api(read)) as resp:
            assert resp.status == 200, read  # reads stay open
    async with http.post(handle.api("/api/stop"), json={}, headers=BEARER) as resp:
        assert resp.status == 200
    assert (await handle.finished(within=10)).phase.value == "Stopped"


async def test_without_a_token_a_cross_site_text_plain_post_changes_nothing(
    target: TargetServer, start_run: StartRun, http: aiohttp.ClientSession
) -> None:
    handle = await start_run(target.url(), "--rps", "20", "--duration", "60")
    await eventually(lambda: handle.run.phase.value == "Running")
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=b"):
        headers = {"Content-Type": content_type, "Origin": "http://evil.example"}
        async with http.post(handle.api("/api/intensity"), data='{"rps": 99}', headers=headers) as resp:
            assert resp.status == 415
        async with http.post(handle.api("/api/stop"), data="{}", headers=headers) as resp:
            assert resp.status == 415
    assert handle.run.plan.override is None and handle.run.phase.value == "Running"
    async with http.post(handle.api("/api/intensity"), json={"rps": 30}) as resp:
        assert resp.status == 200  # loopback, no token: a JSON POST is enough


_header_values = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60)


async def test_fuzzed_credentials_never_change_the_run(
    target: TargetServer, start_run: StartRun, http: aiohttp.ClientSession
) -> None:
    handle = await _guarded_run(target, start_run)
    tried = 0

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(
        auth=_header_values | _header_values.map(lambda v: "Bearer " + v),
        query=_header_values,
        path=st.sampled_from(["/api/intensity", "/api/stop", "/setIntensity.do", "/stopOnlineQuery.do"]),
        content_type=st.sampled_from(["application/json", "text/plain", ""]),
    )
    def attempt(auth: str, query: str, path: str, content_type: str) -> None:
        nonlocal tried
        if TOKEN in auth or TOKEN in query:
            return
        tried += 1
        pending.append((auth, query, path, content_type))

    pending: list[tuple[str, str, str, str]] = []
    attempt()
    for auth, query, path, content_type in pending:
        headers = {"Authorization": auth}
        if content_type:
            headers["Content-Type"] = content_type
        params = {"token": query, "intensity": "99"}
        method = "POST" if path.startswith("/api/") else "GET"
        async with http.request(method, handle.api(path), headers=headers, params=params, data='{"rps": 99}') as resp:
            assert resp.status in (401, 415), (auth, query, path, resp.status)
    assert handle.run.plan.override is None and handle.run.phase.value == "Running"
    print(f"{tried} fuzzed credentials refused")
    assert tried > 100


def test_the_dashboard_sends_the_token_of_its_own_url() -> None:
    from kinfer.loadgen.control import dashboard_html

    page = dashboard_html().decode()
    assert 'new URLSearchParams(location.search).get("token")' in page
    assert 'headers["Authorization"] = "Bearer " + token' in page
    assert '"Content-Type": "application/json"' in page


@needs_chromium
async def test_the_dashboard_opened_with_its_token_stops_the_run(
    target: TargetServer, start_run: StartRun, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    handle = await _guarded_run(target, start_run)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = await browser.new_page()
            await page.goto(handle.api(f"/?token={TOKEN}"))
            await page.click("#stop")
            assert (await handle.finished(within=10)).phase.value == "Stopped"
        finally:
            await browser.close()
