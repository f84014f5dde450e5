"""Kubernetes-style durations (``500ms``, ``30s``, ``2m``, ``1h30m``) and plain seconds.

Manifests carry durations as strings; the command line also accepts bare seconds (``10``, ``2.5``).
"""

from __future__ import annotations

import re

#: The pattern the CRD schema declares for duration fields.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_FULL = re.compile(DURATION_PATTERN)


def parse_duration(value: str | float | int) -> float:
    """Return the duration in seconds; raise ``ValueError`` naming the bad value.

    Accepts a number of seconds (``10``, ``"2.5"``) or a Kubernetes duration string (``"1h30m"``).
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            if not _FULL.fullmatch(text):
                raise ValueError(
                    f"invalid duration {value!r}: use seconds (10) or units ms/s/m/h (500ms, 30s, 1h30m)"
                ) from None
            seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(text))
    if seconds != seconds or seconds < 0:  # NaN or negative
        raise ValueError(f"invalid duration {value!r}: must be >= 0")
    return seconds


def format_duration(seconds: float) -> str:
    """Render seconds as the shortest Kubernetes-style string (``90`` -> ``1m30s``)."""
    if seconds < 1 and seconds != 0:
        return f"{round(seconds * 1000)}ms"
    whole = int(seconds)
    frac = seconds - whole
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = []
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if secs or frac or not parts:
        parts.append(f"{secs + frac:g}s")
    return "".join(parts)
