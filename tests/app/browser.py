"""Debian's Chromium for the Playwright tests (never a downloaded browser) and what a page complains of.

Every browser test launches ``CHROMIUM`` with ``ARGS`` and fails on any console error or page error it
did not expect, collected by :func:`record_problems`."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.async_api import ConsoleMessage, Error, Page

#: The ``chromium`` on PATH (Debian's package, installed by ``make system-deps``).
CHROMIUM = shutil.which("chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium on PATH")


def record_problems(page: Page) -> list[str]:
    """A list that fills with the page's console errors (``console: TEXT at URL``) and uncaught page
    errors (``page error: ...``) from now on."""
    problems: list[str] = []

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            problems.append(f"console: {msg.text} at {msg.location.get('url')}")

    def on_page_error(err: Error) -> None:
        problems.append(f"page error: {err}")

    page.on("console", on_console)
    page.on("pageerror", on_page_error)
    return problems
