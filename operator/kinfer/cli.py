"""The ``kinfer`` command and the ``kubectl-kinfer`` plugin entry point.

Each subcommand lives in its part and is imported only when called, so that an image installed with
one extra (``pip install '.[loadgen]'``) runs its command without the others' dependencies.
Every part exposes ``main(argv: list[str]) -> int`` with its own argument parser.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

#: subcommand -> (module, extra that provides its dependencies, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "run": ("kinfer.local.cli", "local", "run manifests on this machine, no cluster"),
    "serve": ("kinfer.server.cli", "server", "start the model server (gunicorn + Flask)"),
    "loadgen": ("kinfer.loadgen.cli", "loadgen", "run the open-loop load generator"),
    "model": ("kinfer.modelzoo.cli", "models", "build a model and its image dataset offline"),
    "crds": ("kinfer.api.crdgen", "", "print or verify the generated CRDs"),
    "operator": ("kinfer.controller.cli", "operator", "run the operator (kopf)"),
}

USAGE = (
    "usage: kinfer {"
    + ",".join(COMMANDS)
    + "} ...\n\n"
    + "\n".join(f"  {name:<10} {help_}" for name, (_, _, help_) in COMMANDS.items())
)

EXIT_BAD_INPUT = 2


def _load(module: str, extra: str) -> Callable[[list[str]], int]:
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("kinfer"):
            raise
        hint = f" (pip install 'kinfer[{extra}]')" if extra else ""
        print(f"kinfer: missing dependency {exc.name!r}{hint}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from exc
    entry: Callable[[list[str]], int] = mod.main
    return entry


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``kinfer <command> ...`` to the part that implements it."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if args else EXIT_BAD_INPUT
    if args[0] in ("-V", "--version"):
        from kinfer import __version__

        print(f"kinfer {__version__}")
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"kinfer: unknown command {name!r}\n\n{USAGE}", file=sys.stderr)
        return EXIT_BAD_INPUT
    module, extra, _ = COMMANDS[name]
    return _load(module, extra)(rest)


def kubectl_main(argv: Sequence[str] | None = None) -> int:
    """``kubectl kinfer intensity|top|report ...`` (kubectl finds ``kubectl-kinfer`` on PATH)."""
    args = list(sys.argv[1:] if argv is None else argv)
    return _load("kinfer.plugin", "operator")(args)


if __name__ == "__main__":
    raise SystemExit(main())
