"""Reading a user's data files: every problem is one DataError that names the file (and the line or
byte where known), and rows that cannot be read are counted per split and bounded.

``task.max_bad_rows`` (default 0.01) is the fraction of a split's rows that may be skipped as damaged
(a wrong number of fields, a line that is not json); above it the run stops, naming the file and the
first bad line. What was skipped is recorded in results.json (``data``: per split, the file, the rows
kept and ``skipped_rows``), so a damaged file never trains silently.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..config import TaskConfig
from ..errors import DataError

log = logging.getLogger(__name__)
DEFAULT_MAX_BAD_ROWS: float = TaskConfig.max_bad_rows  # the schema's default (roloraexp/config.py)


def read_text(path: str | Path) -> str:
    """A data file's text (UTF-8, a BOM dropped). A missing, unreadable or binary file (a NUL byte,
    bytes that are not UTF-8) is a DataError naming it, with the byte and line."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read the data file {path}: {e.strerror or e}") from e
    line = lambda at: raw.count(b"\n", 0, at) + 1  # noqa: E731
    nul = raw.find(b"\0")
    if nul >= 0:
        raise DataError(f"{path} is not a text file (a NUL byte at byte {nul}, line {line(nul)}): is it the right file?")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text (byte {e.start}, line {line(e.start)}): is it the right file?") from None


@dataclass
class BadRows:
    """The rows of one file that were skipped while reading it, by line number."""
    path: Path
    rows: int = 0                       # rows seen (kept and skipped)
    lines: list[int] = field(default_factory=list)
    truncated: bool = False             # the file does not end with a line break: cut short?

    def skip(self, line: int) -> None:
        self.lines.append(line)

    def check(self, limit: float, why: str) -> dict:
        """Stop the run when more than ``limit`` of the rows were skipped; else warn about any, once,
        and return what results.json records for this split."""
        n = len(self.lines)
        cut = " (the file does not end with a line break: was it cut short?)" if self.truncated else ""
        if n > limit * self.rows:
            raise DataError(f"{self.path}: {n} of {self.rows} rows are damaged ({why}; the first on line {self.lines[0]})"
                            f"{cut}, more than task.max_bad_rows={limit:g} of the split allows")
        if n:
            log.warning("%s: skipped %d of %d rows (%s; the first on line %d)%s", self.path, n, self.rows, why,
                        self.lines[0], cut)
        return {"file": str(self.path), "rows": self.rows - n, "skipped_rows": n}
