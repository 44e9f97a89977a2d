"""The end of a multirun: one line per job (number, overrides, status, main metric, the error's line),
printed and written as ``sweep_summary.csv`` / ``sweep_summary.json`` in the sweep folder, and an
exit status that says whether every job completed (0), some did (1) or none (2).

Each job's outcome is its ``results.json``; jobs that ran in this process (Hydra's basic launcher)
are also recorded as they end (``record``), which keeps what no results.json says (a job refused
because another run held its folder). Jobs that ran elsewhere (submitit) are found again from the
sweep: its jobs are expanded as Hydra's basic sweeper expands them and each job's folder is composed
from ``hydra.sweep.dir`` / ``hydra.sweep.subdir`` (the sweep's time stamp is fixed for this, see
``run_sweep``). Light at import: the table sweep (roloraexp/sweeps/table_grid.py) prints its cells with it.
"""
from __future__ import annotations

import csv
import io
import os
import sys
from datetime import datetime
from pathlib import Path

from ..results import RESULTS_FILE, ResultError, RunResult, read_result, write_json_atomic

COLUMNS = ("job", "overrides", "status", "main", "error")
JOBS: list[dict] = []   # the jobs that ran in this process, as they ended


def row(job, overrides, folder, result: RunResult | None) -> dict:
    """A job's line; ``result`` its run's result (None: no results.json, it never got to write one)."""
    status = result.status if result else "missing"
    main = result.metrics.get("main") if result and result.completed else None
    error = result.error if result and not result.completed else None
    if status == "missing":
        error = "no results.json: the job was killed or never started"
    return {"job": job, "overrides": " ".join(overrides), "status": status, "main": main,
            "error": str(error).splitlines()[0] if error else None, "dir": str(folder) if folder else None}


def result_in(folder: Path | None) -> RunResult | None:
    """The run's result in ``folder``; None when there is none or it cannot be read."""
    try:
        return read_result(Path(folder) / RESULTS_FILE) if folder is not None else None
    except ResultError:
        return None


def record(hydra_cfg, folder: Path, result: RunResult) -> None:
    """Called by each job of an in-process multirun (run.py ``main``)."""
    JOBS.append({**row(hydra_cfg.job.num, list(hydra_cfg.overrides.task), folder, result),
                 "sweep_dir": str(Path(hydra_cfg.sweep.dir).resolve())})


def exit_code(statuses: list[str]) -> int:
    done = sum(s == "completed" for s in statuses)
    return 0 if done == len(statuses) else 2 if done == 0 else 1


def table(rows: list[dict]) -> str:
    cells = [[str(r["job"]), r["overrides"] or "-", r["status"], "" if r["main"] is None else f"{r['main']:.4f}",
              r["error"] or ""] for r in rows]
    widths = [max(len(c[i]) for c in [list(COLUMNS), *cells]) for i in range(len(COLUMNS) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)) + "  " + line[-1]
                     for line in [list(COLUMNS), *cells]).rstrip()


def headline(rows: list[dict]) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    done = counts.pop("completed", 0)
    rest = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    return f"{len(rows)} jobs: {done} completed" + (f", {rest}" if rest else "")


def write(folder: Path, rows: list[dict]) -> Path:
    """sweep_summary.json and .csv in ``folder`` (each written whole: temp file, then rename)."""
    folder = Path(folder)
    write_json_atomic(folder / "sweep_summary.json",
                      {"written": datetime.now().astimezone().isoformat(timespec="seconds"),
                       "exit_code": exit_code([r["status"] for r in rows]), "jobs": rows})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*COLUMNS, "dir"])
    writer.writeheader()
    writer.writerows(rows)
    tmp = folder / "sweep_summary.csv.tmp"
    tmp.write_text(buf.getvalue())
    os.replace(tmp, folder / "sweep_summary.csv")
    return folder / "sweep_summary.csv"


def report(rows: list[dict], folder: Path | None, what: str = "sweep") -> None:
    """The summary on screen, and in ``folder`` when there is one."""
    where = ""
    if folder is not None:
        try:
            where = f" ({write(folder, rows)}, .json)"
        except OSError as e:
            where = f" (cannot write sweep_summary.* in {folder}: {e.strerror})"
    print(f"\n# {what}: {headline(rows)}{where}\n{table(rows)}", flush=True)


# --------------------------------------------------------------------------- the jobs of a multirun
def _jobs(overrides: list[str]) -> tuple[list[str], list[list[str]], set[str]] | None:
    """(the hydra overrides, each job's task overrides in Hydra's job order, the swept keys); None
    for a sweeper other than the basic one, which orders its jobs its own way."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    if any(o.key_or_group in ("hydra/sweeper", "hydra.sweeper.params") for o in parsed):
        return None
    hydra = [o.input_line for o in parsed if o.is_hydra_override()]
    task = [o for o in parsed if not o.is_hydra_override()]
    jobs = [job for batch in BasicSweeper.split_arguments(task, None) for job in batch]
    return hydra, jobs, {o.key_or_group for o in task if o.is_sweep_override()}


def _folders(flags, hydra: list[str], jobs: list[list[str]]) -> tuple[Path | None, list[Path | None]]:
    """The sweep folder and each job's, composed as the launcher composes them."""
    from omegaconf import open_dict, read_write

    from ..cli import compose_hydra

    sweep_dir, folders = None, []
    for num, job in enumerate(jobs):
        cfg = compose_hydra(flags, [*hydra, *job])
        if cfg is None:
            folders.append(None)
            continue
        try:
            with read_write(cfg.hydra.job), open_dict(cfg.hydra.job):
                cfg.hydra.job.num = num
            sweep_dir = Path(cfg.hydra.sweep.dir).resolve()
            folders.append(sweep_dir / str(cfg.hydra.sweep.subdir))
        except Exception:   # a subdir naming something only the launcher knows (hydra.job.id)
            folders.append(None)
    return sweep_dir, folders


def collect(flags: list[str], overrides: list[str]) -> tuple[Path | None, list[dict]]:
    """Every job of the multirun these arguments launched, in order, and the sweep folder."""
    ran = {j["job"]: j for j in JOBS}
    sweep_dir = Path(JOBS[0]["sweep_dir"]) if JOBS else None
    expanded = _jobs(overrides)
    if expanded is None:
        return sweep_dir, [{k: v for k, v in j.items() if k != "sweep_dir"} for j in JOBS]
    hydra, jobs, swept = expanded
    shown = [[o for o in job if o.lstrip("+~").split("=")[0] in swept] or job for job in jobs]
    folders: list[Path | None] = [None] * len(jobs)
    if sweep_dir is None or any(num not in ran for num in range(len(jobs))):
        composed_dir, folders = _folders(flags, hydra, jobs)
        sweep_dir = sweep_dir or composed_dir
    rows = []
    for num, job in enumerate(shown):
        if num in ran:
            rows.append({**{k: v for k, v in ran[num].items() if k != "sweep_dir"}, "overrides": " ".join(job)})
            continue
        folder = folders[num]
        rows.append(row(num, job, folder, result_in(folder)))
        if folder is None:
            rows[-1]["error"] = "its folder could not be composed: see the sweep folder"
    return sweep_dir, rows


def unusable_sweep_dir(flags: list[str], overrides: list[str]) -> str | None:
    """Why the sweep folder cannot hold the sweep (Hydra would stop with a traceback), as one line."""
    from ..folder_guard import unusable

    expanded = _jobs(overrides)
    if expanded is None or not expanded[1]:
        return None
    hydra, jobs, _ = expanded
    sweep_dir, _ = _folders(flags, hydra, jobs[:1])
    return unusable(sweep_dir, "hydra.sweep.dir") if sweep_dir is not None else None


def run_sweep(main, flags: list[str], overrides: list[str]) -> int:
    """Run the multirun (``main``: the Hydra entry point), then its summary; the exit status."""
    from ..cli import fixed_run_stamp
    from ..folder_guard import is_main_process

    JOBS.clear()
    code = 0
    # A fixed time stamp for the sweep folder: composed again after the sweep, it must be the same.
    with fixed_run_stamp():
        problem = unusable_sweep_dir(flags, overrides)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 1
        try:
            main()
        except SystemExit as e:   # Hydra's own error (exit 1), or a job's preemption hand-over (128 + signal)
            code = e.code if isinstance(e.code, int) else 1
        try:
            sweep_dir, rows = collect(flags, overrides)
        except Exception as e:   # the summary must not hide how the sweep itself ended
            print(f"warning: no sweep summary ({type(e).__name__}: {e})".splitlines()[0])
            return code
    if code and not JOBS and all(r["status"] == "missing" for r in rows):
        return code   # Hydra stopped before any job (its error is on screen): nothing to list
    if rows and is_main_process():
        report(rows, sweep_dir)
    return code or exit_code([r["status"] for r in rows])
