"""Run a paper table: expand its grid into cells, skip the finished ones, launch the rest as Hydra multiruns.

    python -m roloraexp.tables.sweep TABLE [--runs runs] [--seeds 1 2 3] [--model M] [--tasks rte mrpc]
                [--methods lora] [--samples N] [--steps N] [--launcher submitit_slurm] [--data-dir D]
                [--layout FMT] [--jobs N] [--list | --dry-run | --describe] [-- EXTRA_OVERRIDES ...]

The grid is the table's declaration (``roloraexp/tables/``): one run per distinct cell setting
(``Table.grid()``) and seed. A cell is one (task, row run, R, K, seed), with a fixed folder
RUNS/<folder>/<model>/<task>/<run>[_r<R>][_k<K>]/seed<S> (``--layout``). A cell is skipped when
its ``results.json`` says ``"completed"`` and its ``.hydra/overrides.yaml`` holds the same overrides;
failed, missing and changed cells run again (a changed cell's old files are set aside with their
time, ``results.<YYYYmmdd-HHMMSS>.json``, ``checkpoint.<...>.pt``, by roloraexp/folder_guard.py; a cell
with a checkpoint but no completed results.json resumes from it). The cells left are grouped into as few multiruns as form a grid: one per
row run, sweeping experiment (task) × method.rank × method.k × seed. Rows that reuse another table's
runs (ROLoRA 4 and 5 read Table 1; WeightLoRA 6 reads Table 1) run that table's missing cells into
its folder, tagged with its name. A row whose method has no ``conf/method/*.yaml`` is skipped with a
warning. At the end, every cell's status (the multiruns print their own jobs' too), written as
RUNS/<table>/sweep_summary.csv and .json; the exit status is 0 when every cell completed, 1 when some
did not, 2 when none did. ``make rolora-table1`` etc. call this (make/tables.mk); ``scripts/sweep.py``
is the same.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .. import folder_guard
from ..tables import TABLES
from ..tables.describe import describe
from ..tables.spec import Row
from . import summary as sweep_summary

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"

LAYOUT = "{model}/{task}/{method}{rank}{k}/seed{seed}"
SWEPT = ("experiment", "method.rank", "method.k", "seed")   # the keys one multirun sweeps
IGNORED = ("data_dir", "logger")                            # not part of a cell's identity


@dataclass
class Cell:
    folder: str
    model: str
    task: str
    row: Row                         # the (first) declared row this run is for
    fixed: tuple                     # the row's overrides (method=..., sparsifier=..., ...)
    swept: dict                      # SWEPT key -> value (str), only the keys this cell has
    dir: Path = field(default=None)
    overrides: list = field(default_factory=list)   # what the run gets (+ hydra.sweep.*, the launcher)
    state: str = "todo"              # todo | done | partial | failed | stale (see check)


def expand(table: str, a) -> list[Cell]:
    cells, skipped = [], set()
    for run in TABLES[table].grid():
        if a.tasks and run.task not in a.tasks:
            continue
        if a.methods and not {run.row.key, run.key, run.method} & set(a.methods):
            continue
        if not (CONF / "method" / f"{run.method}.yaml").exists():
            if run.key not in skipped:
                print(f"sweep: skipping {run.key}: conf/method/{run.method}.yaml does not exist", file=sys.stderr)
            skipped.add(run.key)
            continue
        for seed in a.seeds:
            swept = {"experiment": run.experiment, "method.rank": run.rank, "method.k": run.k, "seed": seed}
            cells.append(Cell(run.folder, a.model or run.model, run.task, run.row, run.overrides,
                              {key: str(v) for key, v in swept.items() if v is not None}))
    return cells


def common_overrides(a) -> list[str]:
    """Overrides every cell gets: model, data and the scale-down (EXTRA comes last, in plan())."""
    out = [f"model={a.model}"] if a.model else []
    out += [f"data_dir={a.data_dir}"] if a.data_dir else []
    if a.samples:
        out += [f"task.max_train_samples={a.samples}", f"task.max_eval_samples={a.samples}"]
    if a.steps:
        out += [f"trainer.max_steps={a.steps}"]
    return out


def scaled(cell: Cell, a) -> list[str]:
    """A scaled-down run has too few steps for the papers' sparsifier steps: use fractions of the phase."""
    if (a.samples or a.steps) and "sparsifier=adalora" in cell.fixed:
        return ["sparsifier.t_init=0.2", "sparsifier.t_final=0.3", "sparsifier.delta_t=1"]
    return []


def layout(a, cell: Cell, template: bool) -> str:
    """The cell's folder below RUNS/<folder>; template=True gives the Hydra interpolation form."""
    s = cell.swept
    rank = ("_r${method.rank}" if template else f"_r{s['method.rank']}") if "method.rank" in s else ""
    k = ("_k${method.k}" if template else f"_k{s['method.k']}") if "method.k" in s else ""
    return a.layout.format(model=cell.model, task="${task.name}" if template else cell.task, method=cell.row.run_key,
                           rank=rank, k=k, seed="${seed}" if template else s["seed"])


def is_task_override(o: str) -> bool:
    return not o.lstrip("+~").startswith(("hydra.", "hydra/"))


def identity(overrides) -> list[str]:
    """A cell's overrides as Hydra parses them (a multirun job stores `x=false` as `x=False`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser  # late: --describe stays instant

    keep = [o for o in overrides if is_task_override(o) and o.split("=")[0] not in IGNORED
            and not o.startswith("logger.")]
    return sorted(f"{o.type.name} {o.key_or_group}={o.value()!r}" for o in OverridesParser.create().parse_overrides(keep))


def check(cell: Cell) -> str:
    """done | stale | partial | failed | todo, from the cell's results.json, .hydra/overrides.yaml and
    checkpoint: ``partial`` cells (killed, preempted, failed with a checkpoint) resume from it when
    they run again; ``stale`` ones (their overrides changed) start over."""
    result = sweep_summary.result_in(cell.dir)
    status = result.status if result else None
    saved = cell.dir / ".hydra" / "overrides.yaml"
    changed = False
    if saved.exists():
        import yaml

        changed = identity(yaml.safe_load(saved.read_text()) or []) != identity(cell.overrides)
    if changed:
        return "stale"
    if status == "completed":
        return "done"
    if (cell.dir / folder_guard.CHECKPOINT).exists():
        return "partial"
    return "failed" if status else "todo"


def set_aside(cell: Cell) -> None:
    """A changed cell starts over: its old results, checkpoints and adapters are kept, renamed with their time."""
    folder_guard.set_aside(cell.dir)


def summary_row(i: int, cell: Cell) -> dict:
    """A cell's line in the table's sweep summary (roloraexp/sweeps/summary.py), from its results.json."""
    return sweep_summary.row(i, [*cell.fixed, *(f"{k}={v}" for k, v in cell.swept.items())], cell.dir,
                             sweep_summary.result_in(cell.dir))


def plan(table: str, a) -> list[Cell]:
    cells = expand(table, a)
    for c in cells:
        c.dir = Path(a.runs) / c.folder / layout(a, c, template=False)
        c.overrides = [*c.fixed, *(f"{k}={v}" for k, v in c.swept.items()), f"table={c.folder}",
                       *common_overrides(a), *scaled(c, a), *a.extra]
        c.state = check(c)
    return cells


def batches(cells: list[Cell]) -> list[tuple[Cell, dict]]:
    """Group cells into grids: same folder, run and constant overrides; merge over seed, K, R, task."""
    groups: dict[tuple, list[dict]] = {}
    first: dict[tuple, Cell] = {}
    for c in cells:
        key = (c.folder, c.row.run_key, tuple(o for o in c.overrides if o.split("=")[0] not in SWEPT))
        groups.setdefault(key, []).append({k: [v] for k, v in c.swept.items()})
        first.setdefault(key, c)
    out = []
    for key, combos in groups.items():
        for k in reversed(SWEPT):    # seed first, then K, R, experiment
            merged: dict[tuple, dict] = {}
            for combo in combos:
                sig = tuple((kk, tuple(vv)) for kk, vv in combo.items() if kk != k)
                if sig in merged and k in combo:
                    merged[sig][k] += [v for v in combo[k] if v not in merged[sig][k]]
                else:
                    merged.setdefault(sig, combo)
            combos = list(merged.values())
        out += [(first[key], combo) for combo in combos]
    return out


def command(a, cell: Cell, combo: dict) -> list[str]:
    swept = [f"{k}={','.join(v)}" for k, v in combo.items()]
    constant = [o for o in cell.overrides if o.split("=")[0] not in SWEPT and o not in cell.fixed]
    hydra = [f"hydra.sweep.dir={Path(a.runs) / cell.folder}", f"hydra.sweep.subdir={layout(a, cell, template=True)}"]
    if a.launcher:
        hydra.append(f"hydra/launcher={a.launcher}")
    return [a.python, "-m", "roloraexp.run", "-m", *cell.fixed, *swept, *constant, *hydra]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m roloraexp.tables.sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("table", nargs="?", choices=list(TABLES))
    p.add_argument("--runs", default="runs", help="root of the run folders (default: runs)")
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    p.add_argument("--model", help="replace the table's model (e.g. tiny_roberta); part of the run folder")
    p.add_argument("--tasks", nargs="*", default=[], help="only these tasks of the grid")
    p.add_argument("--methods", nargs="*", default=[],
                   help="only these rows: run keys, methods or row keys (e.g. lora rolora_sora weightlora)")
    p.add_argument("--samples", type=int, help="task.max_train_samples = task.max_eval_samples = N")
    p.add_argument("--steps", type=int, help="trainer.max_steps = N (per phase)")
    p.add_argument("--launcher", help="Hydra launcher, e.g. submitit_slurm (pip install hydra-submitit-launcher)")
    p.add_argument("--data-dir", help="data_dir for every run (default: the config's)")
    p.add_argument("--layout", default=LAYOUT, help=f"run folder below RUNS/<table> (default: {LAYOUT})")
    p.add_argument("--python", default=sys.executable, help="interpreter for the runs")
    p.add_argument("--jobs", type=int, default=1, help="multiruns launched at once (e.g. one per method on SLURM)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="print the multiruns that would be launched")
    mode.add_argument("--list", action="store_true", help="print one JSON line per cell: dir, state, overrides")
    mode.add_argument("--describe", action="store_true", help="print every table's declaration")
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []   # Hydra overrides for every run
    a = p.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    a.extra = extra
    if not a.describe and not a.table:
        p.error("give a table id")
    unknown = set(a.tasks) - set(TABLES[a.table].tasks if a.table else ())
    if unknown:
        p.error(f"{a.table} has no task {', '.join(sorted(unknown))}")
    if a.table and a.methods:  # a typo would otherwise run nothing and report an empty table
        names = {n for run in TABLES[a.table].grid() for n in (run.row.key, run.key, run.method)}
        names |= {row.key for row in TABLES[a.table].rows}
        unknown = set(a.methods) - names
        if unknown:
            p.error(f"{a.table} has no row, run or method {', '.join(sorted(unknown))} (it has: "
                    f"{', '.join(sorted(names))})")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.describe:
        print("\n\n".join(describe(t) for t in TABLES.values()))
        return 0
    cells = plan(a.table, a)
    if a.list:
        for c in cells:
            print(json.dumps({"dir": str(c.dir), "state": c.state, "overrides": [o for o in c.overrides
                                                                                  if is_task_override(o)]}))
        return 0
    todo = [c for c in cells if c.state != "done"]
    jobs = batches(todo)
    counts = {s: sum(c.state == s for c in cells) for s in ("done", "partial", "failed", "stale", "todo")}
    print(f"# {a.table}: {len(cells)} cells: {counts['done']} completed (skipped), {counts['partial']} to resume, "
          f"{counts['failed']} failed, {counts['stale']} changed, {counts['todo']} new -> {len(todo)} runs in "
          f"{len(jobs)} multirun(s)", flush=True)
    if a.dry_run:
        print("\n".join(shlex.join(command(a, c, combo)) for c, combo in jobs))
        return 0
    for folder in TABLES[a.table].folders:
        (Path(a.runs) / folder).mkdir(parents=True, exist_ok=True)   # the report reads every folder
    for c in todo:
        if c.state == "stale":
            set_aside(c)
    def launch(cmd: list[str]) -> int:
        print(shlex.join(cmd), flush=True)
        return subprocess.run(cmd).returncode

    with ThreadPoolExecutor(max(1, a.jobs)) as pool:
        rc = max(pool.map(launch, [command(a, c, combo) for c, combo in jobs]), default=0)
    states = [check(c) for c in cells]
    rows = [summary_row(i, c) for i, c in enumerate(cells)]
    failed = [r for r in rows if r["status"] != "completed"]
    print(f"# {a.table}: {states.count('done')}/{len(cells)} cells completed, {states.count('failed')} failed"
          + (":" if failed else ""))
    if failed:  # which cells, with their errors: what to fix before running the target again
        print(sweep_summary.table(failed), flush=True)
    try:
        sweep_summary.write(Path(a.runs) / a.table, rows)
    except OSError as e:
        print(f"# cannot write {Path(a.runs) / a.table}/sweep_summary.*: {e.strerror}", file=sys.stderr)
    code = sweep_summary.exit_code([r["status"] for r in rows])
    return code or (1 if rc else 0)


if __name__ == "__main__":
    sys.exit(main())
