"""The real ``kubectl`` run asynchronously (the emulator serves on the test's event loop: never block it)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import NamedTuple

import yaml

KUBECTL = shutil.which('kubectl') or 'kubectl'


class KubectlResult(NamedTuple):
    rc: int
    stdout: str
    stderr: str


class KubectlError(AssertionError):
    """kubectl exited non-zero where the test expected success."""


def write_kubeconfig(path: Path, server: str, *, namespace: str = 'default') -> Path:
    """A kubeconfig for an insecure local server with one context and a user without credentials."""
    config = {
        'apiVersion': 'v1', 'kind': 'Config', 'preferences': {},
        'clusters': [{'name': 'emulator', 'cluster': {'server': server}}],
        'users': [{'name': 'emulator', 'user': {}}],
        'contexts': [{'name': 'emulator', 'context': {
            'cluster': 'emulator', 'user': 'emulator', 'namespace': namespace}}],
        'current-context': 'emulator',
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class Kubectl:
    """Runs kubectl against one kubeconfig, with a private discovery cache and a request timeout."""

    def __init__(self, kubeconfig: Path, cache_dir: Path, *, request_timeout: str = '10s',
                 binary: str = KUBECTL, namespace: str | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.cache_dir = cache_dir
        self.request_timeout = request_timeout
        self.binary = binary
        self.namespace = namespace

    def command(self, *args: str) -> list[str]:
        scope = [f'--namespace={self.namespace}'] if self.namespace else []
        return [self.binary, f'--kubeconfig={self.kubeconfig}', f'--cache-dir={self.cache_dir}',
                f'--request-timeout={self.request_timeout}', *scope, *args]

    async def __call__(
        self, *args: str, input: str | bytes | None = None, check: bool = True, timeout_s: float = 60.0,
    ) -> KubectlResult:
        """Run ``kubectl ARGS``; with ``check``, a non-zero exit fails the test with kubectl's stderr."""
        proc = await asyncio.create_subprocess_exec(
            *self.command(*args),
            stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        data = input.encode() if isinstance(input, str) else input
        try:
            async with asyncio.timeout(timeout_s):
                stdout, stderr = await proc.communicate(data)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        result = KubectlResult(proc.returncode or 0, stdout.decode(), stderr.decode())
        if check and result.rc != 0:
            raise KubectlError(f'kubectl {" ".join(args)} exited with {result.rc}:\n{result.stderr}{result.stdout}')
        return result

    @contextlib.asynccontextmanager
    async def stream(self, *args: str) -> AsyncIterator[KubectlStream]:
        """A long-running kubectl (``get -w``, ``wait``) whose output lines the test can wait for."""
        proc = await asyncio.create_subprocess_exec(
            *self.command(*args), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        stream = KubectlStream(proc)
        try:
            yield stream
        finally:
            if proc.returncode is None:
                proc.terminate()
            with contextlib.suppress(ProcessLookupError):
                await proc.wait()


class KubectlStream:
    """The output of a running kubectl, line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    async def wait_for_line(self, pattern: str | re.Pattern[str], timeout_s: float = 10.0) -> str:
        """The first line (seen so far or coming) matching the regex ``pattern``; TimeoutError otherwise."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        for line in self.lines:
            if regex.search(line):
                return line
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout_s):
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    raise EOFError(f'kubectl exited ({self.proc.returncode}) without printing {regex.pattern!r}; '
                                   f'output: {self.lines!r}')
                line = raw.decode().rstrip('\n')
                self.lines.append(line)
                if regex.search(line):
                    return line

    async def wait(self, timeout_s: float = 30.0) -> int:
        """Wait for kubectl to exit; its exit code."""
        async with asyncio.timeout(timeout_s):
            assert self.proc.stdout is not None
            rest = await self.proc.stdout.read()
            self.lines.extend(rest.decode().splitlines())
            return await self.proc.wait()


def columns(output: str) -> list[dict[str, str]]:
    """Parse kubectl's table output into rows keyed by header (cells cut at the headers' offsets)."""
    lines = [line for line in output.splitlines() if line.strip()]
    if not lines:
        return []
    spans = [(m.start(), m.group()) for m in re.finditer(r'\S+(?: \S+)*', lines[0])]
    rows = []
    for line in lines[1:]:
        row = {}
        for i, (start, header) in enumerate(spans):
            end = spans[i + 1][0] if i + 1 < len(spans) else None
            row[header] = line[start:end].strip()
        rows.append(row)
    return rows
