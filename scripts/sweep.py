#!/usr/bin/env python
"""Run a paper table: expand its grid into cells, skip the finished ones, launch the rest as Hydra multiruns.

    python scripts/sweep.py TABLE [--runs runs] [--seeds 1 2 3] [--model M] [--tasks rte mrpc] [--methods lora]
                            [--samples N] [--steps N] [--launcher submitit_slurm] [--data-dir D] [--layout FMT]
                            [--jobs N] [--list | --dry-run | --describe] [-- EXTRA_OVERRIDES ...]

A cell is one (task, method, R, K, seed) of the table's grid, with a fixed folder
RUNS/<folder>/<model>/<task>/<method>[_r<R>][_k<K>]/seed<S> (``--layout``). A cell is skipped when
its ``results.json`` says ``"completed"`` and its ``.hydra/overrides.yaml`` holds the same overrides;
failed, missing and changed cells run again (a changed cell's old file is kept as
``results.previous.json``). The cells left are grouped into as few multiruns as form a grid: one per
method, sweeping experiment (task) × method.rank × method.k × seed. Tables that read another table's
runs (ROLoRA 4 and 5 read Table 1; WeightLoRA 6 reads Table 1) run the missing cells of that table
into its folder, tagged with its name. ``make rolora-table1`` etc. call this (make/tables.mk).
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

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"


@dataclass(frozen=True)
class M:
    """A table row: a method key (its folder name), the overrides that make it, its K values."""
    key: str
    overrides: tuple = ()            # default: ("method=<key>",)
    k: tuple = ()                    # WeightLoRA's K (method.k) values; () = the method has none
    ranked: bool = True              # False: the method takes no method.rank (full fine-tuning)

    @property
    def fixed(self) -> tuple:
        return self.overrides or (f"method={self.key}",)

    @property
    def method(self) -> str:
        return next(o for o in self.fixed if o.startswith("method=")).split("=", 1)[1]


@dataclass(frozen=True)
class Part:
    """Cells written into RUNS/<folder>, tagged table=<folder>: experiments × methods × ranks."""
    folder: str
    experiment: str                  # experiment config per task, e.g. "rolora/roberta_base/{task}"
    model: str
    tasks: tuple
    methods: tuple
    ranks: tuple = (8,)


GLUE8 = ("mrpc", "rte", "cola", "qnli", "mnli", "qqp", "sst2", "stsb")
WL7 = ("mnli", "sst2", "cola", "qqp", "qnli", "rte", "mrpc")
ADA = ("sparsifier=adalora",)
LORA, LORA_ITER = M("lora"), M("lora_iter")
ADALORA, ADALORA_ITER = M("adalora", ("method=adalora", *ADA)), M("adalora_iter", ("method=adalora_iter", *ADA))
ROLORA = M("rolora", ("method=rolora", *ADA))
ROLORA5 = (LORA, LORA_ITER, ADALORA, ADALORA_ITER, ROLORA)   # AdaLoRA's init rank is 1.5 R (method default)
R_T1, R_T2 = "rolora/roberta_base/{task}", "rolora/deberta_v3_base/{task}"
W_T1 = "weightlora/deberta_v3_base/{task}"
WL_RANKS = (1, 2, 4, 8)


def wl_rows(k_wl: int, k_plus: int) -> tuple:
    return (LORA, M("weightlora", k=(k_wl,)), M("weightlora_plus", k=(k_plus,)))


TABLES: dict[str, list[Part]] = {
    "rolora-table1": [Part("rolora-table1", R_T1, "roberta_base", GLUE8, ROLORA5)],
    "rolora-table2": [Part("rolora-table2", R_T2, "deberta_v3_base", GLUE8, ROLORA5)],
    "rolora-table3": [Part("rolora-table3", R_T1, "roberta_base", ("mrpc", "rte", "cola"), ROLORA5, (16, 4))],
    # Table 4 = the output ranks of Table 1's runs: only Table 1's missing cells run.
    "rolora-table4": [Part("rolora-table1", R_T1, "roberta_base", GLUE8, (LORA, ADALORA, ROLORA))],
    # Table 5: ROLoRA with SoRA as SPARSIFY (fixed threshold over iterations), beside Table 1's rows.
    "rolora-table5": [
        Part("rolora-table1", R_T1, "roberta_base", ("mrpc", "rte", "cola", "sst2"), (LORA, LORA_ITER, ROLORA)),
        Part("rolora-table5", R_T1, "roberta_base", ("mrpc", "rte", "cola", "sst2"),
             (M("rolora_sora", ("method=rolora", "sparsifier=sora", "schedule=constant")),))],
    "rolora-table6": [Part("rolora-table6", R_T2, "deberta_v3_base", ("squad_v1", "squad_v2"), ROLORA5, (8, 4))],
    # WeightLoRA Table 1: n = 36; IncreLoRA, Dynamic LoRA, LoRA-drop, ALoRA, MELoRA, FlexLoRA are not implemented.
    "weightlora-table1": [Part("weightlora-table1", W_T1, "deberta_v3_base", WL7,
                               (M("full_ft", ranked=False), LORA, ADALORA, M("weightlora", k=(1, 5, 10))))],
    # K of WeightLoRA+ is not given for Tables 2 and 3: 15 as in Table 4 (same model and n = 72), n / 4 = 56 for Llama.
    "weightlora-table2": [Part("weightlora-table2", "weightlora/deberta_v3_base_n72/{task}", "deberta_v3_base", WL7,
                               wl_rows(20, 15), WL_RANKS)],
    "weightlora-table3": [Part("weightlora-table3", "weightlora/llama3_8b/{task}", "llama3_8b", (*WL7, "stsb"),
                               wl_rows(100, 56), WL_RANKS)],
    "weightlora-table4": [Part("weightlora-table4", W_T1, "deberta_v3_base", ("squad_v1", "squad_v2"),
                               wl_rows(20, 15), WL_RANKS)],
    "weightlora-table5": [Part("weightlora-table5", "weightlora/bart_large/{task}", "bart_large", ("xsum", "cnn_dm"),
                               wl_rows(20, 48), WL_RANKS)],
    # Table 6: RLoRA (random adapters) beside Table 1's WeightLoRA runs.
    "weightlora-table6": [Part("weightlora-table6", W_T1, "deberta_v3_base", WL7, (M("rlora", k=(1, 5, 10)),)),
                          Part("weightlora-table1", W_T1, "deberta_v3_base", WL7, (M("weightlora", k=(1, 5, 10)),))],
}

LAYOUT = "{model}/{task}/{method}{rank}{k}/seed{seed}"
SWEPT = ("experiment", "method.rank", "method.k", "seed")   # the keys one multirun sweeps
IGNORED = ("data_dir", "logger")                            # not part of a cell's identity


@dataclass
class Cell:
    folder: str
    model: str
    task: str
    row: M
    swept: dict                      # SWEPT key -> value (str), only the keys this cell has
    dir: Path = field(default=None)
    overrides: list = field(default_factory=list)   # what the run gets (+ hydra.sweep.*, the launcher)
    state: str = "todo"              # todo | done | failed | stale


def expand(table: str, a) -> list[Cell]:
    cells = []
    for part in TABLES[table]:
        tasks = [t for t in part.tasks if not a.tasks or t in a.tasks]
        for row in part.methods:
            if a.methods and row.key not in a.methods and row.method not in a.methods:
                continue
            if not (CONF / "method" / f"{row.method}.yaml").exists():
                print(f"sweep: skipping {row.key}: conf/method/{row.method}.yaml does not exist", file=sys.stderr)
                continue
            for task in tasks:
                for rank in (part.ranks if row.ranked else (None,)):
                    for k in row.k or (None,):
                        for seed in a.seeds:
                            swept = {"experiment": part.experiment.format(task=task), "method.rank": rank,
                                     "method.k": k, "seed": seed}
                            cells.append(Cell(part.folder, a.model or part.model, task, row,
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
    if (a.samples or a.steps) and "sparsifier=adalora" in cell.row.fixed:
        return ["sparsifier.t_init=0.2", "sparsifier.t_final=0.3", "sparsifier.delta_t=1"]
    return []


def layout(a, cell: Cell, template: bool) -> str:
    """The cell's folder below RUNS/<folder>; template=True gives the Hydra interpolation form."""
    s = cell.swept
    rank = ("_r${method.rank}" if template else f"_r{s['method.rank']}") if "method.rank" in s else ""
    k = ("_k${method.k}" if template else f"_k{s['method.k']}") if "method.k" in s else ""
    return a.layout.format(model=cell.model, task="${task.name}" if template else cell.task, method=cell.row.key,
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
    """done | failed | stale | todo, from the cell's results.json and .hydra/overrides.yaml."""
    res = cell.dir / "results.json"
    try:
        status = json.loads(res.read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return "todo"
    if status != "completed":
        return "failed"
    saved = cell.dir / ".hydra" / "overrides.yaml"
    if saved.exists():
        import yaml

        if identity(yaml.safe_load(saved.read_text()) or []) != identity(cell.overrides):
            return "stale"
    return "done"


def plan(table: str, a) -> list[Cell]:
    cells = expand(table, a)
    for c in cells:
        c.dir = Path(a.runs) / c.folder / layout(a, c, template=False)
        c.overrides = [*c.row.fixed, *(f"{k}={v}" for k, v in c.swept.items()), f"table={c.folder}",
                       *common_overrides(a), *scaled(c, a), *a.extra]
        c.state = check(c)
    return cells


def batches(cells: list[Cell]) -> list[tuple[Cell, dict]]:
    """Group cells into grids: same folder, row and constant overrides; merge over seed, K, R, task."""
    groups: dict[tuple, list[dict]] = {}
    first: dict[tuple, Cell] = {}
    for c in cells:
        key = (c.folder, c.row, tuple(o for o in c.overrides if o.split("=")[0] not in SWEPT))
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
    constant = [o for o in cell.overrides if o.split("=")[0] not in SWEPT and o not in cell.row.fixed]
    hydra = [f"hydra.sweep.dir={Path(a.runs) / cell.folder}", f"hydra.sweep.subdir={layout(a, cell, template=True)}"]
    if a.launcher:
        hydra.append(f"hydra/launcher={a.launcher}")
    return [a.python, "-m", "roloraexp.run", "-m", *cell.row.fixed, *swept, *constant, *hydra]


def describe() -> None:
    for table, parts in TABLES.items():
        print(table)
        for p in parts:
            rows = ", ".join(r.key + (f" K={'/'.join(map(str, r.k))}" if r.k else "") for r in p.methods)
            print(f"  -> {p.folder}: {p.model}, {p.experiment}, tasks {' '.join(p.tasks)}; R {'/'.join(map(str, p.ranks))}; "
                  f"{rows}")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/sweep.py", description=__doc__.split("\n\n")[0])
    p.add_argument("table", nargs="?", choices=list(TABLES))
    p.add_argument("--runs", default="runs", help="root of the run folders (default: runs)")
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    p.add_argument("--model", help="replace the table's model (e.g. tiny_roberta); part of the run folder")
    p.add_argument("--tasks", nargs="*", default=[], help="only these tasks of the grid")
    p.add_argument("--methods", nargs="*", default=[], help="only these rows (method keys, e.g. lora rolora_sora)")
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
    mode.add_argument("--describe", action="store_true", help="print every table's grid")
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []   # Hydra overrides for every run
    a = p.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    a.extra = extra
    if not a.describe and not a.table:
        p.error("give a table id")
    unknown = set(a.tasks) - {t for part in TABLES.get(a.table, []) for t in part.tasks}
    if unknown:
        p.error(f"{a.table} has no task {', '.join(sorted(unknown))}")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.describe:
        describe()
        return 0
    cells = plan(a.table, a)
    if a.list:
        for c in cells:
            print(json.dumps({"dir": str(c.dir), "state": c.state, "overrides": [o for o in c.overrides
                                                                                  if is_task_override(o)]}))
        return 0
    todo = [c for c in cells if c.state != "done"]
    jobs = batches(todo)
    counts = {s: sum(c.state == s for c in cells) for s in ("done", "failed", "stale", "todo")}
    print(f"# {a.table}: {len(cells)} cells: {counts['done']} completed (skipped), {counts['failed']} failed, "
          f"{counts['stale']} changed, {counts['todo']} new -> {len(todo)} runs in {len(jobs)} multirun(s)", flush=True)
    if a.dry_run:
        print("\n".join(shlex.join(command(a, c, combo)) for c, combo in jobs))
        return 0
    for part in TABLES[a.table]:
        (Path(a.runs) / part.folder).mkdir(parents=True, exist_ok=True)   # the report reads every folder
    for c in todo:
        if c.state == "stale":
            (c.dir / "results.json").replace(c.dir / "results.previous.json")
    def launch(cmd: list[str]) -> int:
        print(shlex.join(cmd), flush=True)
        return subprocess.run(cmd).returncode

    with ThreadPoolExecutor(max(1, a.jobs)) as pool:
        rc = max(pool.map(launch, [command(a, c, combo) for c, combo in jobs]), default=0)
    states = [check(c) for c in cells]
    print(f"# {a.table}: {states.count('done')}/{len(cells)} cells completed, {states.count('failed')} failed"
          + (" (their errors are in the report and in each results.json)" if "failed" in states else ""))
    return 1 if rc else 0


if __name__ == "__main__":
    sys.exit(main())
