"""``python -m roloraexp.tables.sweep TABLE ...``: the table grid launcher, which lives in
roloraexp/sweeps/table_grid.py (make/tables.mk calls it by this name; so may users' scripts)."""
import sys

from ..sweeps.table_grid import main

if __name__ == "__main__":
    sys.exit(main())
