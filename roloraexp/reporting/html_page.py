"""One self-contained HTML page per table (``python -m roloraexp.report ... --html``).

Built from what the Markdown and LaTeX tables are built from (``content.cell_parts``, ``legend``,
``sections``): the table with the paper's number and Δ under each cell, the legend, the lists of
problems and the provenance, and the table's figures embedded as base64 PNG. No script, no external
file, font or stylesheet: the page reads the same offline, mailed, or years later.
"""
from __future__ import annotations

import base64
import html
import math
import re
from pathlib import Path

import pandas as pd

from ..tables.spec import MEAN_RANK, PARAMS
from .content import MARK, cell_parts, legend, sections

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d1d1f; margin: 2em auto;
       max-width: 1400px; padding: 0 1.5em; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { font-size: 1.15em; margin-top: 2em; }
.sub { color: #666; margin-top: 0; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border-bottom: 1px solid #ddd; padding: .45em .7em; text-align: center; vertical-align: top; white-space: nowrap; }
th { background: #f4f4f6; position: sticky; top: 0; }
td.row { text-align: left; font-weight: 600; }
tr.not-run td { color: #999; }
td.marked { background: #fff6e0; }
.ours { display: block; font-variant-numeric: tabular-nums; }
.paper { display: block; color: #777; font-size: .85em; font-style: italic; }
.up { color: #1a7f37; } .down { color: #c4302b; }
code { background: #f4f4f6; padding: 0 .25em; border-radius: 3px; font-size: .9em; }
figure { display: inline-block; margin: 1em 1em 1em 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #666; font-size: .85em; }
"""


def inline(text: str) -> str:
    """The report's Markdown spans (`code`, **bold**, *italic*) as HTML, everything else escaped."""
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])", r"<em>\1</em>", out)


def data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(png).read_bytes()).decode("ascii")


def _cell(rec) -> str:
    ours, paper = cell_parts(rec)
    diff = rec.get("diff", math.nan)
    if paper and ", Δ " in paper and rec["metric"] not in (MEAN_RANK, PARAMS):  # a score: above the paper is good
        paper, delta = paper.split(", Δ ", 1)
        trend = "up" if diff >= 0 else "down"
        paper = f"{html.escape(paper)}, <span class=\"{trend}\">Δ {html.escape(delta)}</span>"
    else:
        paper = html.escape(paper)
    cls = ' class="marked"' if rec.get("mark") and not rec.get("note") else ""
    return f"<td{cls}><span class=\"ours\">{html.escape(ours)}</span><span class=\"paper\">{paper}</span></td>"


def render_html(table, df: pd.DataFrame, failed, filled, skipped, expected: int, final: bool, dirs,
                figure_paths) -> str:
    by_cell = {(r["row"], r["col"]): r for r in df.to_dict("records")}
    title = html.escape(table.title)
    page = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{title}</title>", f"<style>{STYLE}</style>", "</head>", "<body>",
            f"<h1>{title}</h1>",
            f'<p class="sub"><code>{html.escape(table.id)}</code> · results from: '
            f"{html.escape(', '.join(map(str, dirs)))}</p>",
            '<div class="scroll"><table>', "<thead><tr><th>Method</th>"
            + "".join(f"<th>{html.escape(c.label)}</th>" for c in table.cols) + "</tr></thead>", "<tbody>"]
    for row in table.rows:
        cls = ' class="not-run"' if row.note else ""
        cells = "".join(_cell(by_cell[(row.key, c.key)]) for c in table.cols)
        page.append(f'<tr{cls}><td class="row">{html.escape(row.label)}</td>{cells}</tr>')
    page += ["</tbody></table></div>", "<ul>", *(f"<li>{inline(line)}</li>" for line in legend(table, expected, final)),
             "</ul>"]
    for heading, lines in sections(table, failed, filled, skipped):
        if lines:
            page += [f"<h2>{html.escape(heading)}</h2>", "<ul>",
                     *(f"<li>{inline(line.removeprefix('- '))}</li>" for line in lines), "</ul>"]
    if figure_paths:
        page.append("<h2>Figures</h2>")
        page += [f'<figure><img src="{data_uri(p)}" alt="{html.escape(p.stem)}">'
                 f"<figcaption>{html.escape(p.stem)}</figcaption></figure>" for p in figure_paths]
    page += [f'<p class="sub">{MARK}: incomplete cell (see the legend). Written by <code>python -m roloraexp.report '
             f"--html</code>.</p>", "</body>", "</html>"]
    return "\n".join(page) + "\n"
