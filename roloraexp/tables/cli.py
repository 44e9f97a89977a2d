"""What the table declarations hold, for the Makefile and for people.

    python -m roloraexp.tables --names            every table id (make/tables.mk builds its targets from it)
    python -m roloraexp.tables --folders TABLE    the run folders its report reads (its own, then reused ones)
    python -m roloraexp.tables [--describe] [TABLE ...]   grid, rows, columns and published file (make tables-help)
    python -m roloraexp.tables --cost [TABLE ...] [--gpu-json FILE] [--seeds ...] [-- EXTRA]   runs, optimizer
                                                  steps and estimated GPU-hours (roloraexp/tables/cost.py)
"""
from __future__ import annotations

import argparse
import sys

from . import TABLES
from .describe import describe


def main(argv=None) -> int:
    from . import cost   # here: cost imports the sweep, which imports describe from this module
    p = argparse.ArgumentParser(prog="python -m roloraexp.tables", description=__doc__.split("\n\n")[0])
    p.add_argument("tables", nargs="*", metavar="TABLE", help="table ids (default: all)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--names", action="store_true", help="print every table id, space-separated")
    mode.add_argument("--folders", action="store_true", help="print the run folders TABLE's report reads")
    mode.add_argument("--describe", action="store_true", help="print each table's declaration (the default)")
    mode.add_argument("--cost", action="store_true", help="print each table's runs, optimizer steps and GPU-hours")
    cost.add_arguments(p)
    argv = list(sys.argv[1:] if argv is None else argv)
    a = p.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    a.extra = argv[argv.index("--") + 1:] if "--" in argv else []   # Hydra overrides for every run (--cost)
    unknown = [t for t in a.tables if t not in TABLES]
    if unknown:
        p.error(f"unknown table {', '.join(unknown)}; known: {', '.join(TABLES)}")
    if a.cost:
        return cost.main(a)
    if a.names:
        print(" ".join(TABLES))
    elif a.folders:
        if len(a.tables) != 1:
            p.error("--folders takes one table id")
        print(" ".join(TABLES[a.tables[0]].folders))
    else:
        print("\n\n".join(describe(TABLES[t]) for t in a.tables or TABLES))
    return 0
