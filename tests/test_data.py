"""The data shipped in data/: every file has its provenance row with its exact size, the whole stays a
few MB, and (with the full data) the cutting script reproduces every byte."""
import importlib.util
import re

import pytest

from conftest import DATA, REPO

ROW = re.compile(r"^\| `(?P<path>[^`]+)` \| [^|]+ \| (?P<bytes>\d+) \|", re.M)


def shipped() -> dict[str, int]:
    return {p.relative_to(DATA).as_posix(): p.stat().st_size for p in sorted(DATA.rglob("*"))
            if p.is_file() and p.name != "PROVENANCE.md"}


def test_every_shipped_file_has_its_provenance_row():
    note = (DATA / "PROVENANCE.md").read_text(encoding="utf-8")
    listed = {m["path"]: int(m["bytes"]) for m in ROW.finditer(note)}
    assert listed == shipped()  # no file without a row, no row without a file, sizes as shipped
    total = sum(listed.values())
    assert f"{len(listed)} files, {total:,} bytes" in note
    assert total < 5_000_000  # a clone stays small: "a few MB at most"


@pytest.mark.full
def test_the_script_cuts_the_shipped_bytes(full_data, tmp_path):
    spec = importlib.util.spec_from_file_location("make_data_slices", REPO / "scripts" / "make_data_slices.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main([str(full_data), "--out", str(tmp_path)])
    cut = {p.relative_to(tmp_path).as_posix(): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert set(cut) == set(shipped())
    for name, content in cut.items():
        assert content == (DATA / name).read_bytes(), name
