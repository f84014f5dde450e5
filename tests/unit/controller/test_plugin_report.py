"""``kubectl kinfer report NAME --output DIR`` without a cluster: what it asks kubectl, and exit 2 when
nothing is stored yet (kubectl itself replaced at the plugin's one call site)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from kinfer import plugin


def test_report_output_with_nothing_stored_is_exit_2_naming_the_experiment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asked: list[list[str]] = []

    def kubectl(args: Sequence[str], namespace: str | None) -> str:
        asked.append([*args, f"ns={namespace}"])
        if args[1] == "configmap":
            return json.dumps({"items": []})
        return json.dumps({"metadata": {"name": "x", "uid": "u"}, "status": {"phase": "Pending"}})

    monkeypatch.setattr(plugin, "kubectl", kubectl)
    assert plugin.main(["report", "x", "-n", "lab", "--output", str(tmp_path / "out")]) == 2
    assert "loadexperiment/x has no results yet (Pending" in capsys.readouterr().err
    assert asked[1] == ["get", "configmap", "-l", "kinfer.dev/experiment=x", "-o", "json", "ns=lab"]
    assert not (tmp_path / "out").exists()
