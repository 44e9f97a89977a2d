"""Every paper table runs what it ran before a refactor: the resolved config of each of its cells and
`make -n` of its target equal the golden files (tests/golden/, written by scripts/golden_tables.py).

After a deliberate change to what a table runs, `python scripts/golden_tables.py --write` and commit
the new golden files with it: the diff shows every cell the change touches."""
import subprocess
import sys

from conftest import REPO


def test_every_table_cell_and_make_dry_run_is_unchanged():
    proc = subprocess.run([sys.executable, "scripts/golden_tables.py"], cwd=REPO, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    assert proc.stdout.strip() == "golden files match"


def test_a_changed_cell_is_named_with_the_setting_that_changed():
    """The comparison itself can fail: one cell's config and one make line edited in a copy."""
    sys.path.insert(0, str(REPO / "scripts"))
    import json

    import golden_tables

    golden = json.loads(golden_tables.CELLS.read_text())
    make_n = golden_tables.MAKE_N.read_text()
    changed = json.loads(json.dumps(golden))
    table, cells = next(iter(changed["cells"].items()))
    cell, key = next(iter(cells.items()))
    changed["configs"][key] = {**changed["configs"][key], "trainer.lr": 1.0}
    lines = golden_tables.differences(golden, changed, make_n, make_n.replace("--seeds 1 2 3 4 5", "--seeds 1", 1))
    assert any(line.startswith(f"{table} {cell}: ") and "trainer.lr" in line and "-> 1.0" in line for line in lines)
    assert any(line.startswith("+") and "--seeds 1 " in line for line in lines)
    assert golden_tables.differences(golden, golden, make_n, make_n) == []
