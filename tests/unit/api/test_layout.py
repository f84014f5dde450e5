"""The source root is not a package: ``import operator`` must stay the standard library."""

from __future__ import annotations

import operator
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_operator_dir_has_no_init_and_import_operator_is_stdlib() -> None:
    assert not (ROOT / "operator" / "__init__.py").exists()
    assert hasattr(operator, "itemgetter")
    code = "import operator, kinfer; print(operator.__file__); print(kinfer.__file__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    op_file, kinfer_file = out.stdout.split()
    assert "site-packages" not in op_file and not op_file.startswith(str(ROOT))
    assert kinfer_file.startswith(str(ROOT / "operator" / "kinfer"))


def test_kinfer_cli_help_and_unknown_command(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "kinfer"
    ok = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert ok.returncode == 0 and "loadgen" in ok.stdout and "serve" in ok.stdout
    bad = subprocess.run([exe, "frobnicate"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown command 'frobnicate'" in bad.stderr


def test_kinfer_crds_check_passes_in_the_repository() -> None:
    exe = Path(sys.executable).parent / "kinfer"
    result = subprocess.run([exe, "crds", "--check"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
