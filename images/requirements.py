"""Print the requirements of kinfer's extras, one a line, from pyproject.toml (the images' dependency layer).

    python3 requirements.py [--gpu] EXTRA...

The core dependencies come first, then each extra's, following ``kinfer[...]`` references. The images
install these before the package itself, so a source change rebuilds one small layer, not the runtimes.
``--gpu`` swaps the CPU-only runtimes for their CUDA builds, at the same version bounds:
``tensorflow-cpu``/``tensorflow`` -> ``tensorflow[and-cuda]`` (TensorFlow's documented pip install with
the NVIDIA CUDA/cuDNN wheels), ``onnxruntime`` -> ``onnxruntime-gpu<1.27`` (its CUDA 12 builds).
Standard library only: runs on the base image's python3.11 before anything is installed.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

#: name -> (its CUDA build, an upper bound added to the extra's bounds). onnxruntime-gpu 1.27 and later are
#: built for CUDA 13 (their `cuda` extra names nvidia-*-cu13); TensorFlow's [and-cuda] brings CUDA 12, so
#: 1.26, the last CUDA 12 build on PyPI, shares TensorFlow's CUDA and cuDNN wheels instead of a second set.
GPU = {"tensorflow-cpu": ("tensorflow[and-cuda]", ""), "tensorflow": ("tensorflow[and-cuda]", ""),
       "onnxruntime": ("onnxruntime-gpu", "<1.27")}


def requirements(project: dict[str, object], extras: list[str], gpu: bool = False) -> list[str]:
    table = project["optional-dependencies"]
    assert isinstance(table, dict)
    core = project["dependencies"]
    assert isinstance(core, list)
    out: list[str] = []
    seen: set[str] = set()

    def add(req: str) -> None:
        name, rest = re.match(r"([A-Za-z0-9_.\-]+)(.*)", req).groups()  # type: ignore[union-attr]
        if gpu and name.lower() in GPU:
            cuda_name, bound = GPU[name.lower()]
            req = cuda_name + rest + ("," if rest and bound else "") + bound
        if req not in out:
            out.append(req)

    def expand(extra: str) -> None:
        if extra in seen:
            return
        if extra not in table:
            raise SystemExit(f"requirements.py: no extra {extra!r} in pyproject.toml")
        seen.add(extra)
        for req in table[extra]:
            inner = re.fullmatch(r"kinfer\[([^\]]+)\]", req.strip())
            if inner:
                for name in inner.group(1).split(","):
                    expand(name.strip())
            else:
                add(req)

    for req in core:
        add(req)
    for extra in extras:
        expand(extra)
    return out


def main(argv: list[str]) -> None:
    gpu = "--gpu" in argv
    extras = [a for a in argv if a != "--gpu"]
    if not extras:
        raise SystemExit(__doc__)
    pyproject = Path(__file__).with_name("pyproject.toml")
    if not pyproject.exists():  # run from the repository, not from the image's /src
        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    project = tomllib.loads(pyproject.read_text())["project"]
    print("\n".join(requirements(project, extras, gpu)))


if __name__ == "__main__":
    main(sys.argv[1:])
