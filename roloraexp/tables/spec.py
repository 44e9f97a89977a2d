"""What a paper table is, as data: rows × columns, the runs that fill its cells, the published CSV.

A ``Table`` is declared once and read three ways: the sweep runs its grid (``grid()``: one run
per distinct cell setting and seed), the report fills its cells (``filters(row, col)``: which
results.json files belong to a cell, ``reads``: which value of a run it shows), and the Makefile
lists its id. Both views come from the same per-cell ``setting``, so what the sweep runs is what
the report reads.

A cell's runs are made by ``Row.overrides`` (default ``method=<run key>``) + the table's
``experiment`` for the column's task + ``method.rank`` / ``method.k`` + ``table=<tag>``. The rank
is the most specific one declared: a row's setting for the column (``Row.at``), else the row's
``rank``, else the column's, else the table's. A column may name a ``setting`` (a parameter
budget, say) that each row realises its own way through ``Row.at``; where columns name none,
``Row.at`` may key a task instead (a value the reference script sets for that task alone).

Filters map a dotted path into results.json to a value: ``{"method": "lora", RANK: 8}``; a list
value means "any of" (``ABSENT`` in it also accepts a run without that key); a path ``"a|b"``
reads the first of ``a``, ``b`` that exists. A cell's filters are the row's method and ``where``,
the column's task and ``where``, the rank and K it was run at, and the table's ``where``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# Which rank a run was given. AdaLoRA-style methods start above the target: prefer their
# target rank (the R a paper's table means) when the method names one.
RANK = "config.method.target_rank|config.method.target_r|config.method.rank"
K = "config.method.k"
SPARSIFIER = "config.sparsifier.name"
ABSENT = "<absent>"                # in a filter's list of values: a run without the key also matches

# Derived "metrics" the report computes from other keys of results.json.
MEAN_RANK = "mean_rank"            # mean of `best_ranks` (else `ranks`) over adapters (0 = disconnected)
PARAMS = "trainable_params"        # shown beside the paper's "# Params" text, never compared
AVG = "avg"                        # the paper's "ALL Avg": mean over tasks of the row's cells


@dataclass(frozen=True)
class Setting:
    """How one row is run (and read) for one column setting (``Row.at``); unset fields inherit."""
    rank: int | None = None
    k: int | None = None
    overrides: tuple[str, ...] = ()          # added to the row's overrides
    where: dict = field(default_factory=dict)
    reads: str | None = None


@dataclass(frozen=True)
class Row:
    key: str                                  # row key in the report and the published CSV
    label: str                                # the row's name as the paper prints it
    overrides: tuple[str, ...] = ()           # Hydra overrides that make its runs; () = ("method=<run>",)
    run: str | None = None                    # run folder name (rows sharing it share runs); default key
    source: str | None = None                 # table whose folder holds (and `table=` tags) the runs; default this one
    where: dict = field(default_factory=dict)  # report filters beyond {"method": <method>}
    rank: int | None = None                   # R of its runs (else the column's, else the table's)
    k: int | None = None                      # WeightLoRA's K (method.k)
    ranked: bool = True                       # False: the method takes no method.rank (full fine-tuning)
    reads: str | None = None                  # metrics dict it shows, e.g. "metrics_by_rank.3"; default
    #                                           best_metrics (metrics with --final)
    at: dict = field(default_factory=dict)    # column setting -> Setting; a setting it lacks stays empty.
    #                                           In a table without settings: task -> Setting, for the tasks
    #                                           it names (the others take the row's own)
    experiment: str | None = None             # experiment config per task, when not the table's
    published: str | None = None              # row key in the published CSV when it differs from `key`
    extra: bool = False                       # not in the paper (this project's addition): no published values
    note: str | None = None                   # set: this project does not run the row; the report says why

    @property
    def run_key(self) -> str:
        return self.run or self.key

    @property
    def fixed(self) -> tuple[str, ...]:
        """The overrides every run of the row gets."""
        return self.overrides or (f"method={self.run_key}",)

    @property
    def method(self) -> str:
        return next(o for o in self.fixed if o.startswith("method=")).split("=", 1)[1]


@dataclass(frozen=True)
class Col:
    key: str                                  # column key in the report and the published CSV
    label: str
    metric: str                               # key of best_metrics / metrics, or MEAN_RANK / PARAMS / AVG
    task: str | None = None                   # the task whose runs fill it (None for PARAMS / AVG)
    rank: int | None = None                   # R of its runs, for rows that do not fix their own
    setting: str | None = None                # a setting each row realises through Row.at (a budget, ...)
    where: dict = field(default_factory=dict)
    scale: float = 100.0                      # GLUE metrics are fractions in results.json; papers print %
    group: str | None = None                  # AVG averages a group's columns first (QQP Acc/F1 → one task)

    @property
    def derived(self) -> bool:
        """Computed from other runs' keys or cells: runs nothing of its own."""
        return self.metric in (PARAMS, AVG)


@dataclass(frozen=True)
class GridRun:
    """One run of a table's grid, less its seed: the sweep makes a cell of it per seed."""
    folder: str                               # RUNS/<folder>; also the run's `table=` tag
    key: str                                  # run folder name
    model: str
    task: str
    experiment: str
    overrides: tuple[str, ...]                # the row's (+ its setting's) overrides
    rank: int | None
    k: int | None
    row: Row = field(compare=False, hash=False, repr=False)   # the first row that asked for it

    @property
    def method(self) -> str:
        return next(o for o in self.overrides if o.startswith("method=")).split("=", 1)[1]


@dataclass(frozen=True)
class Table:
    id: str                                   # the make target and the default `table=` tag
    title: str
    published: str                            # CSV file name in results/published/
    model: str                                # the paper's model (the experiment configs set it)
    experiment: str                           # experiment config per task, e.g. "rolora/roberta_base/{task}"
    rows: tuple[Row, ...]
    cols: tuple[Col, ...]
    rank: int = 8                             # R of runs whose row and column name none
    where: dict = field(default_factory=dict)  # more report filters for every cell
    published_scale: float = 1.0              # ×100 where the paper prints fractions (WeightLoRA GLUE)
    seeds: int = 5                            # seeds per cell in the paper (the report's --seeds default)
    figures: tuple[str, ...] = ()             # "ranks", "omega": per-cell figures the report draws

    def __post_init__(self):
        for what, keys in (("row", [r.key for r in self.rows]), ("column", [c.key for c in self.cols])):
            dup = {k for k in keys if keys.count(k) > 1}
            if dup:
                raise ValueError(f"{self.id}: {what} keys {sorted(dup)} appear twice")
        self.grid()   # two rows that would write one run folder differently are a declaration error

    # ------------------------------------------------------------ what the declaration implies

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.task for c in self.cols if c.task))

    @property
    def folders(self) -> tuple[str, ...]:
        """Run folders (= `table` tags) the table reads: its own first, then the tables it reuses."""
        used = [r.source or self.id for r in self.rows if not r.note]
        return tuple(dict.fromkeys(sorted(used, key=lambda f: f != self.id)))

    @property
    def accept(self) -> tuple[str, ...]:
        """Other tables' tags whose runs count here."""
        return tuple(f for f in self.folders if f != self.id)

    def setting(self, row: Row, col: Col) -> Setting | None:
        """The cell's run setting with everything inherited filled in; None for a cell that has no runs."""
        if row.note or col.metric == AVG:
            return None
        at = Setting()
        if col.setting is not None:
            if col.setting not in row.at:
                return None
            at = row.at[col.setting]
        elif col.task in row.at:      # a row may also set a task apart (a reference script's per-task value)
            at = row.at[col.task]
        rank = None
        if row.ranked:
            rank = next(r for r in (at.rank, row.rank, col.rank, self.rank) if r is not None)
        return Setting(rank, at.k if at.k is not None else row.k, (*row.fixed, *at.overrides),
                       {**row.where, **col.where, **at.where}, at.reads or row.reads)

    def filters(self, row: Row, col: Col) -> dict | None:
        """The report's filters of a cell (beyond the table's model and `table` tag), or None."""
        s = self.setting(row, col)
        if s is None:
            return None
        where = {"method": row.method, **self.where, **({"task": col.task} if col.task else {})}
        where.update({RANK: s.rank} if s.rank is not None else {})
        where.update({K: s.k} if s.k is not None else {})
        return {**where, **s.where}

    def grid(self) -> list[GridRun]:
        """The distinct runs the table needs (less seeds): its own folder's first, by row run, then by task."""
        runs: dict[tuple, GridRun] = {}
        for row in self.rows:
            for col in self.cols:
                s = self.setting(row, col)
                if s is None or col.derived:
                    continue
                run = GridRun(row.source or self.id, row.run_key, self.model, col.task,
                              (row.experiment or self.experiment).format(task=col.task), s.overrides, s.rank, s.k, row)
                where = (run.folder, run.key, run.task, run.rank, run.k)
                if runs.setdefault(where, run) != run:
                    raise ValueError(f"{self.id}: rows {runs[where].row.key!r} and {row.key!r} write the same run "
                                     f"folder {where} with different settings")
        groups = sorted(dict.fromkeys((r.folder, r.key) for r in runs.values()), key=lambda g: g[0] != self.id)
        return sorted(runs.values(), key=lambda r: (groups.index((r.folder, r.key)), self.tasks.index(r.task)))
