"""Each image's extra alone runs its command: the CLI imports parts lazily, and no part imports a library
that only another extra installs.

Installing each extra into its own virtualenv would take minutes; instead every library that the other
extras bring (and this one does not) is made unimportable in the child processes through a
``sitecustomize`` import hook, and the real command runs.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXTRAS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
CORE = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


def _dists(extra: str) -> set[str]:
    """Distribution names an extra installs directly (following ``kinfer[...]`` references)."""
    out: set[str] = set()
    for req in EXTRAS[extra]:
        name = re.split(r"[<>=!;\[ ]", req, maxsplit=1)[0].lower()
        if name == "kinfer":
            for inner in re.findall(r"\[(.*)\]", req)[0].split(","):
                out |= _dists(inner.strip())
        else:
            out.add(name)
    return out


def _modules(dists: set[str]) -> set[str]:
    by_dist: dict[str, set[str]] = {}
    for module, owners in importlib.metadata.packages_distributions().items():
        for owner in owners:
            by_dist.setdefault(owner.lower(), set()).add(module)
    return {m for d in dists for m in by_dist.get(d, {d.replace("-", "_")}) if not m.startswith("_")}


def blocked_modules(extra: str) -> set[str]:
    """Top-level modules of every other extra's libraries that ``extra`` does not bring."""
    others = set().union(*(_dists(e) for e in EXTRAS if e not in ("all", "dev", extra)))
    core = {re.split(r"[<>=!;\[ ]", r, maxsplit=1)[0].lower() for r in CORE}
    return _modules(others - _dists(extra) - core) - _modules(_dists(extra) | core)


HOOK = """
import sys
BLOCKED = {blocked!r}
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{{name}} is not installed by this extra", name=name)
        return None
sys.meta_path.insert(0, _Block())
"""


def _env(tmp_path: Path, extra: str) -> dict[str, str]:
    hook_dir = tmp_path / "hook"
    hook_dir.mkdir()
    (hook_dir / "sitecustomize.py").write_text(HOOK.format(blocked=sorted(blocked_modules(extra))))
    return {**os.environ, "PYTHONPATH": str(hook_dir)}


def _kinfer(*args: str) -> list[str]:
    return [sys.executable, "-m", "kinfer.cli", *args]


def test_the_hook_really_blocks_what_the_extra_lacks(tmp_path: Path) -> None:
    assert {"kopf", "flask", "gunicorn"} <= blocked_modules("loadgen")
    assert {"aiohttp", "hdrh", "kopf"} <= blocked_modules("server")
    assert "aiohttp" not in blocked_modules("operator") and "flask" in blocked_modules("operator")
    probe = subprocess.run([sys.executable, "-c", "import flask"], env=_env(tmp_path, "loadgen"),
                           capture_output=True, text=True)  # fmt: skip
    assert probe.returncode == 1 and "not installed by this extra" in probe.stderr


def test_loadgen_extra_runs_kinfer_loadgen(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        _kinfer("loadgen", "http://127.0.0.1:9/gpu", "--rps", "20", "--duration", "1", "--quiet",
                "--control-port", "-1", "--output", str(out)),
        env=_env(tmp_path, "loadgen"), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert '"errorsByClass"' in (out / "summary.json").read_text()  # port 9 refuses: connection errors


def test_server_extra_runs_kinfer_serve(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "serve.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            _kinfer("serve", "--format", "null", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
            env=_env(tmp_path, "server"), stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/gpu1", timeout=2) as resp:
                    assert resp.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "server never answered"
                time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.mark.parametrize(("extra", "argv"), [("operator", ["operator", "--help"]), ("server", ["serve", "--help"])])
def test_commands_answer_help_with_their_extra_alone(tmp_path: Path, extra: str, argv: list[str]) -> None:
    done = subprocess.run(_kinfer(*argv), env=_env(tmp_path, extra), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_plugin_runs_with_the_operator_extra(tmp_path: Path) -> None:
    code = "from kinfer.cli import kubectl_main; raise SystemExit(kubectl_main(['--help']))"
    done = subprocess.run([sys.executable, "-c", code], env=_env(tmp_path, "operator"), capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
