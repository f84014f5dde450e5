"""Where the control API listens and with which token: loopback unless a token guards it."""

from __future__ import annotations

import pytest

from kinfer.loadgen.cli import main, parse
from kinfer.loadgen.config import ConfigError, build_config

URL = "http://127.0.0.1:9/gpu"
TOKEN = "0123456789abcdef-token"


def _config(*argv: str) -> object:
    return build_config(parse([URL, "--rps", "1", *argv]))


def test_without_a_token_the_control_api_binds_loopback_only() -> None:
    config = build_config(parse([URL, "--rps", "1"]))
    assert config.control_host == "127.0.0.1" and config.control_token is None


def test_with_a_token_it_binds_every_address_by_default() -> None:
    config = build_config(parse([URL, "--rps", "1", "--control-token", TOKEN]))
    assert (config.control_host, config.control_token) == ("0.0.0.0", TOKEN)
    assert TOKEN not in repr(config)


def test_the_token_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KINFER_LOADGEN_CONTROL_TOKEN", TOKEN)
    config = build_config(parse([URL, "--rps", "1", "--control-host", "10.0.0.7"]))
    assert (config.control_host, config.control_token) == ("10.0.0.7", TOKEN)
    monkeypatch.setenv("KINFER_LOADGEN_CONTROL_TOKEN", "")
    assert build_config(parse([URL, "--rps", "1"])).control_token is None


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_hosts_need_no_token(host: str) -> None:
    assert build_config(parse([URL, "--rps", "1", "--control-host", host])).control_host == host


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "example.com", "192.168.0.1"])
def test_binding_beyond_loopback_without_a_token_exits_2_naming_the_flag(
    host: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError, match="--control-token"):
        build_config(parse([URL, "--rps", "1", "--control-host", host]))
    assert main([URL, "--rps", "1", "--control-host", host]) == 2
    err = capsys.readouterr().err
    assert f"--control-host {host}" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "token", ["short", "x" * 15, "has space in it 0123", "new\nline-0123456789", "ünïcode-0123456789ab"]
)
def test_weak_or_header_unsafe_tokens_are_refused(token: str) -> None:
    with pytest.raises(ConfigError, match="--control-token must be at least 16"):
        build_config(parse([URL, "--rps", "1", "--control-token", token]))
