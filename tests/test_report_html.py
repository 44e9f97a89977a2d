"""The report's HTML page (``--html``): it parses, every figure is embedded (the very PNG bytes the
report drew), nothing is fetched from outside, and it holds the table's own cells, the paper's
numbers, the problems and the provenance. (scripts/check_html.py renders it in a real browser.)"""
import base64
import json
from html.parser import HTMLParser

from roloraexp.reporting import report
from roloraexp.tables import TABLES

NAMES = [f"deberta.encoder.layer.{i}.attention.self.{m}_proj" for i in range(2) for m in ("query", "key", "value")]
TASKS = {"mnli": {"matched_accuracy": 0.80}, "sst2": {"accuracy": 0.90}, "rte": {"accuracy": 0.70},
         "mrpc": {"accuracy": 0.80, "f1": 0.90}}


class Page(HTMLParser):
    """Tags, attributes, text, and the table as rows of cell texts."""

    def __init__(self):
        super().__init__()
        self.tags, self.attrs, self.text, self.rows, self._cell = [], [], [], [], None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [(tag, k, v) for k, v in attrs]
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def write_runs(root):
    """WeightLoRA Table 1 cells: 2 seeds of 4 tasks (ω and memory: figures), a failed seed, a corrupt file."""
    for task, m in TASKS.items():
        for seed in (1, 2):
            path = root / task / str(seed) / "results.json"
            path.parent.mkdir(parents=True)
            path.write_text(json.dumps({
                "status": "completed", "task": task, "method": "weightlora", "model": "deberta_v3_base", "seed": seed,
                "table": "weightlora-table1", "metrics": m, "best_metrics": {k: v + seed / 100 for k, v in m.items()},
                "trainable_params": 12_300, "config": {"method": {"rank": 8, "k": 1}},
                "omega": {n: float(i == 2) for i, n in enumerate(NAMES)}, "ranks": {n: 8 * (i == 2) for i, n in enumerate(NAMES)},
                "active_adapters": 1, "peak_memory_bytes": 3 * 2**30,
                "provenance": {"versions": {"torch": "2.13.0"}, "git_commit": "0123456789abcdef"}}))
    failed = root / "rte" / "3" / "results.json"
    failed.parent.mkdir()
    failed.write_text(json.dumps({"status": "failed", "task": "rte", "method": "weightlora", "model": "deberta_v3_base",
                                  "seed": 3, "table": "weightlora-table1", "error": "CUDA out of memory <GPU 0>"}))
    (root / "corrupt").mkdir()
    (root / "corrupt" / "results.json").write_text("{")


def test_html_page_is_self_contained_and_holds_the_table(tmp_path):
    write_runs(tmp_path / "runs")
    out = tmp_path / "out"
    assert report.main(["weightlora-table1", str(tmp_path / "runs"), "--out", str(out), "--seeds", "2", "--html"]) == 0
    page = Page()
    page.feed((out / "weightlora-table1.html").read_text())
    page.close()
    assert page.tags[:2] == ["html", "head"] and "table" in page.tags

    # Every figure the report drew is in the page, byte for byte; nothing else is referenced.
    drawn = {p.read_bytes() for p in out.glob("*.png")}
    images = [v for tag, k, v in page.attrs if tag == "img" and k == "src"]
    assert len(drawn) == 5 and len(images) == len(drawn)  # ω per task + memory
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert {base64.b64decode(src.split(",", 1)[1]) for src in images} == drawn
    assert not {"script", "link", "iframe", "object"} & set(page.tags)
    assert not [v for _, k, v in page.attrs if k in ("src", "href") and not v.startswith("data:")]

    # The table: the declaration's columns and rows, every cell as the Markdown table prints it.
    table = TABLES["weightlora-table1"]
    header, *body = page.rows
    assert header == ["Method"] + [c.label for c in table.cols]
    md_rows = [line.strip("| ").split(" | ") for line in (out / "weightlora-table1.md").read_text().splitlines()
               if line.startswith("| ") and not line.startswith("| Method")]
    assert len(md_rows) == len(body) == len(table.rows)
    for html_row, md_row in zip(body, md_rows):
        assert html_row == [cell.replace("<br>*", "").rstrip("*") for cell in md_row]
    wlora_sst2 = body[[row.key for row in table.rows].index("wlora_k1")][1 + [c.key for c in table.cols].index("sst2")]
    assert wlora_sst2.startswith("91.50 ± 0.71 (2)paper ")  # seeds' best 0.91, 0.92 → ×100

    text = "".join(page.text)
    assert "rte, seed 3: CUDA out of memory <GPU 0>" in text  # escaped in the source, the same text shown
    assert "corrupt/results.json" in text and "Provenance" in text
    assert "torch: 2.13.0 (8 runs)" in text and "commit: 0123456789 (8 runs)" in text
