"""Headless Chromium (Debian's) for checks of what a person sees. Installed by scripts/setup_browser.sh."""
from __future__ import annotations

import shutil
import subprocess
import tempfile

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise RuntimeError("chromium is not installed: run scripts/setup_browser.sh")
    return exe


def run_chromium(url: str, *extra: str, timeout: float = 60) -> str:
    with tempfile.TemporaryDirectory() as profile:
        out = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=3000",
                              *extra, url], capture_output=True, text=True, timeout=timeout)
    return out.stdout


def dump_dom(path) -> str:
    """The DOM after the page's scripts ran."""
    return run_chromium(f"file://{path}", "--dump-dom")


def screenshot(path, png, size="1000,700") -> None:
    run_chromium(f"file://{path}", f"--screenshot={png}", f"--window-size={size}", "--hide-scrollbars")
