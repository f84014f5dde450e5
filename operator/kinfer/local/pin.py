"""``python -m kinfer.local.pin CORES -- ARGV...``: pin this process to CORES ("0,1") and exec ARGV.

Local mode's CPU limit (:mod:`kinfer.local.limits`): the affinity is set before ``kinfer serve``
starts, so the gunicorn master and every worker it forks inherit it.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    """Pin and exec; exit code 2 on a malformed command line."""
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m kinfer.local.pin CORES -- PROGRAM [ARGS...]", file=sys.stderr)
        return 2
    try:
        cores = {int(c) for c in argv[0].split(",")}
        os.sched_setaffinity(0, cores)
    except (ValueError, OSError) as exc:
        print(f"kinfer.local.pin: cannot pin to cores {argv[0]!r}: {exc}", file=sys.stderr)
        return 2
    os.execv(argv[2], argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
