#!/usr/bin/env python
"""Run a paper table's grid: the entry point of ``roloraexp.tables.sweep`` (same arguments).

    python scripts/sweep.py TABLE [--runs runs] [--seeds 1 2 3] [--dry-run] ...   (--help for all)

The grids are the table declarations in ``roloraexp/tables/``; ``make <table>`` runs
``python -m roloraexp.tables.sweep`` directly.
"""
import sys
from pathlib import Path

# This checkout's package, not whichever one is installed (a script's sys.path starts at scripts/).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from roloraexp.sweeps.table_grid import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
