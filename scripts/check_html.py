#!/usr/bin/env python
"""Render the report's HTML pages in a real browser (headless Chromium) and check what it painted.

    python scripts/check_html.py results/rolora-table4.html [more.html ...] [--out DIR] [--browser chromium]

Each page is opened offline (``file://``; no network, no GPU, no sandbox, a fresh empty profile, no
background services), and Chromium writes a screenshot to ``DIR/<page>.png`` (default: next to the
page). The page passes when the browser exits cleanly within the time limit and the screenshot

* is not blank (the table and its text were laid out and painted), and
* holds matplotlib's figure colours in the amounts the page's figures hold them: the embedded
  base64 PNGs were decoded and drawn (a broken image would paint an icon, not bars and lines).

Debian/Ubuntu: ``apt-get install -y chromium``. Exit status 0 when every page passes. Look at the
screenshots too: this checks that the page renders, not that it reads well.
"""
from __future__ import annotations

import argparse
import base64
import io
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

# matplotlib's first colours (C0 blue, C1 orange, C2 green): the figures' bars and lines. The page's
# own CSS uses none of them.
FIGURE_COLOURS = np.array([(31, 119, 180), (255, 127, 14), (44, 160, 44)])
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--force-device-scale-factor=1"]


def colour_pixels(img: Image.Image) -> int:
    """Pixels within a small distance of one of the figure colours."""
    rgb = np.asarray(img.convert("RGB"), dtype=np.int32)
    dist = np.abs(rgb[:, :, None, :] - FIGURE_COLOURS[None, None]).sum(-1).min(-1)
    return int((dist <= 24).sum())


def embedded_colour_pixels(page: str) -> int:
    """The figure-coloured pixels of the page's embedded PNGs (at their own size)."""
    total = 0
    for b64 in re.findall(r'src="data:image/png;base64,([^"]+)"', page):
        total += colour_pixels(Image.open(io.BytesIO(base64.b64decode(b64))))
    return total


def render(browser: str, page: Path, shot: Path, width: int, height: int, timeout: int) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                               f"--screenshot={shot}", page.resolve().as_uri()],
                              capture_output=True, text=True, timeout=timeout)


def check(browser: str, page: Path, out: Path, width: int, height: int, timeout: int) -> list[str]:
    shot = out / f"{page.stem}.png"
    shot.unlink(missing_ok=True)
    proc = render(browser, page, shot, width, height, timeout)
    if proc.returncode != 0 or not shot.is_file():
        return [f"the browser failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}"]
    img = Image.open(shot)
    problems = []
    grey = np.asarray(img.convert("L"))
    inked = float((grey < 200).mean())
    if inked < 0.002:
        problems.append(f"the screenshot is blank ({inked:.4%} of its pixels inked)")
    expected = embedded_colour_pixels(page.read_text())
    painted = colour_pixels(img)
    # Figures wider than the page are scaled down (max-width: 100%) and the window may cut the last
    # ones off: ask for a tenth of their coloured pixels, which no broken-image icon reaches.
    if expected and painted < 0.1 * expected:
        problems.append(f"the figures were not painted: {painted} figure-coloured pixels on screen, the embedded "
                        f"PNGs hold {expected}")
    print(f"{page}: {img.size[0]}x{img.size[1]} screenshot {shot}; {inked:.1%} inked; figure colours {painted} "
          f"painted / {expected} embedded")
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("pages", nargs="+", type=Path, help="HTML pages written by python -m roloraexp.report --html")
    p.add_argument("--out", type=Path, help="folder for the screenshots (default: next to each page)")
    p.add_argument("--browser", default=shutil.which("chromium") or shutil.which("chromium-browser") or "chromium")
    p.add_argument("--width", type=int, default=1400)
    p.add_argument("--height", type=int, default=3000)
    p.add_argument("--timeout", type=int, default=120, help="seconds per page")
    a = p.parse_args(argv)
    if not shutil.which(a.browser):
        print(f"check_html: no browser {a.browser!r}; install one (Debian: apt-get install -y chromium)", file=sys.stderr)
        return 2
    failed = 0
    for page in a.pages:
        out = a.out or page.parent
        out.mkdir(parents=True, exist_ok=True)
        try:
            problems = check(a.browser, page, out, a.width, a.height, a.timeout)
        except subprocess.TimeoutExpired:
            problems = [f"the browser did not finish within {a.timeout}s"]
        for problem in problems:
            print(f"check_html: {page}: {problem}", file=sys.stderr)
        failed += bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
