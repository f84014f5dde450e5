"""``KINFER_OPERATOR_*`` → Settings: defaults, parsing, and errors that name the variable and value."""

from __future__ import annotations

import pytest

from kinfer.controller.settings import Settings, SettingsError, from_env


def test_defaults_allow_no_host_path_and_watch_all_namespaces() -> None:
    settings = from_env({})
    assert settings == Settings()
    assert settings.namespace is None and settings.hostpath_allow == ()
    assert not settings.hostpath_allowed("/home/tank/model")


def test_every_variable_is_parsed() -> None:
    settings = from_env({
        "KINFER_OPERATOR_HOSTPATH_ALLOW": "/home/tank/, /data:rw, /srv:ro",
        "KINFER_OPERATOR_NAMESPACE": "bench",
        "KINFER_OPERATOR_METRICS_PORT": "9100",
        "KINFER_OPERATOR_SERVER_IMAGE": "registry.local/kinfer/model-server:dev",
        "KINFER_OPERATOR_LOADGEN_IMAGE": "registry.local/kinfer/loadgen:dev",
        "KINFER_OPERATOR_CLUSTER_DOMAIN": "cluster.example.",
        "KINFER_OPERATOR_RESULTS_LINGER_S": "5",
        "KINFER_OPERATOR_RESYNC_S": "7.5",
        "KINFER_OPERATOR_LEASE_NAMESPACE": "kinfer-system",
        "KINFER_OPERATOR_LEASE_NAME": "kinfer",
        "KINFER_OPERATOR_LEASE_S": "6",
        "KINFER_OPERATOR_SOMETHING": "x",
        "HOME": "/root",
    })
    assert settings.hostpath_allow == ("/home/tank", "/data", "/srv")
    assert settings.hostpath_writable == ("/data",)
    paths = ("/home/tank/x", "/data/y", "/srv", "/etc")
    assert [settings.hostpath_access(p) for p in paths] == ["ro", "rw", "ro", None]
    assert settings.namespace == "bench"
    assert settings.metrics_port == 9100
    assert settings.server_image == "registry.local/kinfer/model-server:dev"
    assert settings.loadgen_image == "registry.local/kinfer/loadgen:dev"
    assert settings.cluster_domain == "cluster.example"
    assert settings.results_linger_s == 5.0
    assert settings.resync_s == 7.5
    assert (settings.lease_namespace, settings.lease_name, settings.lease_s) == ("kinfer-system", "kinfer", 6.0)
    assert settings.extra == {"KINFER_OPERATOR_SOMETHING": "x"}


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/home/tank", True),
        ("/home/tank/yanan/model", True),
        ("/home/tankard", False),
        ("/home/tank/../../etc", False),
        ("/data", True),
        ("/", False),
    ],
)
def test_host_paths_are_checked_by_prefix_after_normalizing(path: str, allowed: bool) -> None:
    settings = from_env({"KINFER_OPERATOR_HOSTPATH_ALLOW": "/home/tank,/data"})
    assert settings.hostpath_allowed(path) is allowed


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("METRICS_PORT", "http", "KINFER_OPERATOR_METRICS_PORT='http': not an integer"),
        ("METRICS_PORT", "70000", "KINFER_OPERATOR_METRICS_PORT='70000': must be between 0 and 65535"),
        ("HOSTPATH_ALLOW", "/ok,relative/path", "KINFER_OPERATOR_HOSTPATH_ALLOW='/ok,relative/path': "
                                                "'relative/path' is not an absolute path prefix"),
        ("NAMESPACE", "Bad_NS", "KINFER_OPERATOR_NAMESPACE='Bad_NS': not a valid namespace name"),
        ("HOSTPATH_ALLOW", "/a:rwx",
         "KINFER_OPERATOR_HOSTPATH_ALLOW='/a:rwx': '/a:rwx': the mode after ':' is ro or rw"),
        ("LEASE_NAMESPACE", "Bad_NS", "KINFER_OPERATOR_LEASE_NAMESPACE='Bad_NS': not a valid namespace name"),
        ("LEASE_S", "0", "KINFER_OPERATOR_LEASE_S='0': must be > 0"),
        ("RESYNC_S", "-1", "KINFER_OPERATOR_RESYNC_S='-1': must be > 0"),
        ("SERVER_IMAGE", "a b", "KINFER_OPERATOR_SERVER_IMAGE='a b': must not contain whitespace"),
    ],
)
def test_bad_values_name_the_variable_and_value(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError) as info:
        from_env({f"KINFER_OPERATOR_{name}": value})
    assert str(info.value) == message


def test_cli_exits_2_on_a_bad_setting(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from kinfer.controller.cli import main

    monkeypatch.setenv("KINFER_OPERATOR_METRICS_PORT", "nope")
    assert main([]) == 2
    assert "KINFER_OPERATOR_METRICS_PORT='nope'" in capsys.readouterr().err


def test_backoff_grows_with_jitter_honours_retry_after_and_resets() -> None:
    import random

    from kinfer.controller.kube import KubeError
    from kinfer.controller.runtime import Backoff

    backoff = Backoff(base_s=1.0, cap_s=8.0, rng=random.Random(7))
    key = ("ns", "x")
    delays = [backoff.next_delay(key) for _ in range(6)]
    for n, delay in enumerate(delays):
        ceiling = min(8.0, 2.0**n)
        assert ceiling / 2 <= delay <= ceiling, (n, delay)
    assert len(set(delays)) == len(delays)  # jittered
    assert backoff.next_delay(key, KubeError(429, "slow down", retry_after_s=20.0)) == 20.0
    backoff.reset(key)
    assert backoff.next_delay(key) <= 1.0
