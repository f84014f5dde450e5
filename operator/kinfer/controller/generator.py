"""Client of the load generator's control API (``GET /api/status``, ``POST /api/intensity``, ``/api/stop``).

The operator reaches each generator pod at ``http://<status.podIP>:<spec.controlPort>``, as a
controller in the cluster would; tests that play the kubelet set ``podIP`` to the loopback address the
real generator listens on.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import aiohttp

from kinfer.controller.isvc_build import is_ready

TIMEOUT = aiohttp.ClientTimeout(total=2.0)


class Unreachable(Exception):
    """A generator did not answer (or answered an error: ``status`` is its HTTP status)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def control_urls(pods: Sequence[Mapping[str, Any]], port: int) -> list[str]:
    """Base URLs of the generator pods that run and have an IP, in a stable order."""
    out = []
    for pod in sorted(pods, key=lambda p: (p.get("metadata") or {}).get("name", "")):
        status = pod.get("status") or {}
        if status.get("phase") == "Running" and status.get("podIP"):
            out.append(f"http://{status['podIP']}:{port}")
    return out


#: Where the Job controller writes a pod's completion index (label since Kubernetes 1.28, annotation before).
INDEX_KEY = "batch.kubernetes.io/job-completion-index"


def completion_index(pod: Mapping[str, Any]) -> int | None:
    """The pod's index in its indexed Job, if it has one."""
    meta = pod.get("metadata") or {}
    value = (meta.get("labels") or {}).get(INDEX_KEY) or (meta.get("annotations") or {}).get(INDEX_KEY)
    return int(value) if value is not None and str(value).isdigit() else None


def _running(pods: Sequence[Mapping[str, Any]]) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """(completion index, pod) of the generator pods that run and have an IP; pods without an index
    (not an indexed Job) are numbered in name order."""
    for ordinal, pod in enumerate(sorted(pods, key=lambda p: (p.get("metadata") or {}).get("name", ""))):
        status = pod.get("status") or {}
        if status.get("phase") == "Running" and status.get("podIP"):
            index = completion_index(pod)
            yield (ordinal if index is None else index), pod


def control_targets(pods: Sequence[Mapping[str, Any]], port: int) -> dict[int, str]:
    """Completion index → control URL of the generator pods that run and have an IP."""
    return {index: f"http://{pod['status']['podIP']}:{port}" for index, pod in _running(pods)}


def not_ready(pods: Sequence[Mapping[str, Any]]) -> set[int]:
    """Completion indices of the running generator pods whose readiness probe has not passed (yet).

    A container is Running as soon as its process is started, seconds before the generator listens
    (interpreter start, imports). Until its probe on ``/api/status`` passes, a refused call to it says
    nothing is wrong."""
    return {index for index, pod in _running(pods) if not is_ready(pod)}


class Generators:
    """One aiohttp session for talking to one experiment's generator pods (with its control token)."""

    def __init__(self, token: str | None = None) -> None:
        self._session: aiohttp.ClientSession | None = None
        self.token = token
        """The experiment's control token (DESIGN §6): sent as a bearer header on every call."""

    async def __aenter__(self) -> Generators:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=TIMEOUT)
        return self._session

    async def close(self) -> None:
        """Close the session."""
        if self._session is not None:
            await self._session.close()

    async def _call(self, method: str, url: str, body: Any = None) -> dict[str, Any]:
        try:
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
            async with self._client().request(method, url, json=body, headers=headers) as response:
                if response.status >= 400:
                    text = await response.text()
                    raise Unreachable(f"{method} {url}: HTTP {response.status}: {text}", response.status)
                data: dict[str, Any] = await response.json()
                return data
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise Unreachable(f"{method} {url}: {type(exc).__name__}: {exc}") from exc

    async def status(self, base: str, histograms: bool = False) -> dict[str, Any]:
        """``GET /api/status`` (with the encoded latency histograms, for merging several pods exactly)."""
        return await self._call("GET", f"{base}/api/status" + ("?histograms=1" if histograms else ""))

    async def records(self, base: str, since: int) -> dict[str, Any]:
        """``GET /api/records?since=N``: the records from index N on (``next``: where the next call starts)."""
        return await self._call("GET", f"{base}/api/records?since={max(0, int(since))}")

    async def final(self, base: str, histograms: bool = False) -> dict[str, Any]:
        """``GET /api/status?summary=1``: the status with the full ``summary`` (DESIGN §9) as it stands."""
        return await self._call("GET", f"{base}/api/status?summary=1" + ("&histograms=1" if histograms else ""))

    async def server_metrics(self, base: str, urls: Sequence[str]) -> bool:
        """``POST /api/server-metrics {"urls": [...]}``: where the target's ``/metrics`` are, so each
        record carries the server's resources. ``False`` when the generator is older and has no such
        endpoint (HTTP 404)."""
        try:
            await self._call("POST", f"{base}/api/server-metrics", {"urls": list(urls)})
        except Unreachable as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def set_intensity(self, base: str, rps: float | None) -> dict[str, Any]:
        """``POST /api/intensity {"rps": rps}`` (``None``: back to the schedule)."""
        return await self._call("POST", f"{base}/api/intensity", {"rps": rps})

    async def stop(self, base: str) -> dict[str, Any]:
        """``POST /api/stop`` (a second call after the run also ends the generator's linger)."""
        return await self._call("POST", f"{base}/api/stop", {})
