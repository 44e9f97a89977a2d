"""Golden files of what every paper table runs: the resolved config of every declared table cell and
`make -n` of every table target. A refactor of the configs, the table declarations or the sweep
must leave both unchanged (tests/test_golden_tables.py compares).

    python scripts/golden_tables.py            # compare with tests/golden/, print what differs (exit 1)
    python scripts/golden_tables.py --write    # write tests/golden/ anew (after a deliberate change)
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden"
CELLS, MAKE_N = GOLDEN / "table_cells.json", GOLDEN / "make_n.txt"
# Not part of what a cell computes, or set by the machine: left out of the golden configs.
DROPPED = ("hydra", "data_dir")
RUNS = "golden-runs-never-written"  # a folder that does not exist: every cell is new


def cell_configs() -> dict:
    """{"cells": {table: {cell folder: config id}}, "configs": {config id: flat resolved config}}."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    sys.path.insert(0, str(REPO))
    from roloraexp.config import flatten
    from roloraexp.tables import TABLES
    from roloraexp.sweeps.table_grid import is_task_override, parse_args, plan

    os.environ.pop("ROLORAEXP_DATA", None)
    cells, configs = {}, {}
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        for table in TABLES:
            cells[table] = {}
            for cell in plan(table, parse_args([table, "--runs", RUNS, "--seeds", "1"])):
                overrides = [o for o in cell.overrides if is_task_override(o)]
                cfg = OmegaConf.to_container(compose("config", overrides=overrides), resolve=True)
                config = flatten({k: v for k, v in cfg.items() if k not in DROPPED})
                key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
                configs[key] = config
                cells[table][str(cell.dir.relative_to(RUNS))] = key
    return {"cells": cells, **factor(configs)}


ABSENT = "<absent>"


def factor(configs: dict) -> dict:
    """Each config as its differences from a base (every key's most common value): the golden file
    stays small and a reader sees what sets one cell apart."""
    from collections import Counter

    keys = sorted({k for c in configs.values() for k in c})
    base = {}
    for k in keys:
        value, _ = Counter(json.dumps(c.get(k, ABSENT)) for c in configs.values()).most_common(1)[0]
        base[k] = json.loads(value)
    diffs = {key: {k: c.get(k, ABSENT) for k in keys if c.get(k, ABSENT) != base[k]} for key, c in configs.items()}
    return {"base": base, "configs": dict(sorted(diffs.items()))}


def dump(golden: dict) -> str:
    """JSON with one line per cell and per config: small, and a change is a readable line in a diff."""
    def block(d: dict) -> str:
        return "{\n" + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in sorted(d.items())) + "\n }"

    cells = "{\n" + ",\n".join(f' {json.dumps(t)}: {block(c)}' for t, c in golden["cells"].items()) + "\n}"
    return (f'{{"base": {block(golden["base"])},\n"cells": {cells},\n"configs": {block(golden["configs"])}\n}}\n')


def config_of(golden: dict, key: str) -> dict:
    """A cell's whole config back from the base and its differences."""
    merged = {**golden["base"], **golden["configs"][key]}
    return {k: v for k, v in merged.items() if v != ABSENT}


def make_dry_runs() -> str:
    """`make -n TABLE` for every table (the install stamp taken as done, fixed folders and python)."""
    sys.path.insert(0, str(REPO))
    from roloraexp.tables import TABLES

    out = []
    for table in TABLES:
        proc = subprocess.run(["make", "-s", "-n", "-o", ".make/installed", table, f"RUNS={RUNS}", "OUT=results",
                               "PYTHON=python"], cwd=REPO, capture_output=True, text=True, check=True)
        out.append(f"## make -n {table}\n{proc.stdout}")
    return "\n".join(out)


def differences(want: dict, got: dict, want_make: str, got_make: str, limit: int = 20) -> list[str]:
    lines = []
    for table in sorted(set(want["cells"]) | set(got["cells"])):
        a, b = want["cells"].get(table, {}), got["cells"].get(table, {})
        for cell in sorted(set(a) | set(b)):
            if cell not in a or cell not in b:
                lines.append(f"{table} {cell}: {'new' if cell not in a else 'gone'}")
                continue
            ca, cb = config_of(want, a[cell]), config_of(got, b[cell])
            keys = sorted(k for k in set(ca) | set(cb) if ca.get(k, ABSENT) != cb.get(k, ABSENT))
            if keys:
                lines.append(f"{table} {cell}: " + ", ".join(f"{k}: {ca.get(k, ABSENT)!r} -> {cb.get(k, ABSENT)!r}"
                                                              for k in keys[:6]))
    if want_make != got_make:
        import difflib

        lines += list(difflib.unified_diff(want_make.splitlines(), got_make.splitlines(), "golden", "now",
                                           lineterm="", n=0))[:limit]
    return lines[:limit] + ([f"... {len(lines) - limit} more"] if len(lines) > limit else [])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--write", action="store_true", help="write tests/golden/ anew")
    a = p.parse_args(argv)
    got, got_make = cell_configs(), make_dry_runs()
    if a.write:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        CELLS.write_text(dump(got))
        MAKE_N.write_text(got_make)
        n = sum(len(c) for c in got["cells"].values())
        print(f"wrote {CELLS} ({n} cells, {len(got['configs'])} distinct configs) and {MAKE_N}")
        return 0
    diff = differences(json.loads(CELLS.read_text()), got, MAKE_N.read_text(), got_make)
    print("\n".join(diff) if diff else "golden files match")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
