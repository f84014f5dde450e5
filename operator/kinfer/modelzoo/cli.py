"""``kinfer model build NAME --output DIR [--tiny] [--no-onnx] [--no-savedmodel] [--sizes 16,64,...]``.

argv starts after ``model``. Exit codes: 0 built, 2 bad input (one stderr line naming the problem).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn

from kinfer.modelzoo.build import BUILDABLE

ENV_PREFIX = "KINFER_MODEL_"
EXIT_OK, EXIT_BAD_INPUT = 0, 2


class UsageError(Exception):
    """A flag cannot be used; the message names it."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kinfer model", description="Build models and image datasets offline.")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build a model directory")
    b.add_argument(
        "name",
        choices=BUILDABLE,
        help="ssdlite-person (real weights, one class) or a random-weight model of the real shape: "
        "ssd-mobilenet (300x300), ssd-resnet34 (1200x1200), resnet50 (224x224)",
    )
    b.add_argument("--output", default=os.environ.get(ENV_PREFIX + "OUTPUT"), help="directory to write")
    b.add_argument("--tiny", action="store_true", help="tiny random-weight version, same interface (tests; 20-60 KB)")
    b.add_argument("--no-onnx", action="store_true", help="skip the tf2onnx conversion")
    b.add_argument("--no-savedmodel", action="store_true", help="skip the SavedModel export")
    b.add_argument(
        "--sizes",
        default=os.environ.get(ENV_PREFIX + "SIZES"),
        help="also write the dataset at these square sizes in pixels, e.g. 16,32,64,96,128,224,2000 "
        "(DIR/dataset-<size>px/; seed 004's image-resolution study)",
    )
    sub.add_parser("list", help="list the models that can be built")
    return parser


def main(argv: list[str]) -> int:
    """Entry point of ``kinfer model``; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
        if args.command == "build" and not args.output:
            raise UsageError("--output DIR is required")
        if args.command == "build" and args.tiny and args.name == "ssdlite-person":
            raise UsageError("--tiny applies to the random-weight models, not ssdlite-person")
        sizes: tuple[int, ...] = ()
        if args.command == "build" and args.sizes:
            from kinfer.modelzoo.dataset import parse_sizes

            try:
                sizes = parse_sizes(args.sizes)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
    except UsageError as exc:
        print(f"kinfer model: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.command == "list":
        from kinfer.server.modelspec import KNOWN_MODELS

        for name in BUILDABLE:
            print(f"{name:<16} {KNOWN_MODELS[name].note}")
        return EXIT_OK
    from kinfer.modelzoo.build import build

    out = Path(args.output)
    if out.exists() and not out.is_dir():
        print(f"kinfer model: --output {out}: not a directory", file=sys.stderr)
        return EXIT_BAD_INPUT
    result = build(
        args.name, out, tiny=args.tiny, onnx=not args.no_onnx, savedmodel=not args.no_savedmodel, sizes=sizes
    )
    spec = result.spec
    print(f"built {spec.name} in {result.seconds:.1f}s -> {result.root}")
    for fmt, rel in result.files.items():
        print(f"  {fmt:<14} {result.root / rel}")
    print(f"  dataset        {result.dataset} ({result.images} images, {spec.input_size[0]}x{spec.input_size[1]})")
    for size, where in result.sized.items():
        print(f"  dataset {size}px  {where}")
    print(f"  weights        {spec.weights}: {spec.note}")
    print(f"serve it: kinfer serve --model {result.root}")
    return EXIT_OK
