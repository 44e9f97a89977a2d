"""The GPU targets of issue 21 in one command: runs the parts below, each job in a subprocess with its
own timeout, then prints one table of every target (target, holds, measured) and writes it as JSON.

    python scripts/gpu_check.py                 # a CUDA machine: under 6 minutes on an H100/H200
    python scripts/gpu_check.py --dry-run       # any machine: every command, its timeout, the targets
    python scripts/gpu_check.py --parts a c     # a subset (also to finish what a first call left out)
    python scripts/gpu_check.py --allow-cpu     # CPU: the same pipeline on tiny models, scaled down

Parts (bench = scripts/bench.py: six variants, batch 32 x 128 tokens, rank 8 on query/value):
  a  bench, RoBERTa-base shape, bf16 and fp32, compiled (trainer.compile's default on CUDA), and bf16
     eager as a note. Targets: ours LoRA <= 1.15x the floor and faster than PEFT's LoRA, ours AdaLoRA
     and ROLoRA <= 1.25x the floor; the floor's MFU in bf16 >= 35%.
  b  the same on the DeBERTa-v3-base shape (query_proj, value_proj): the same ratio targets.
  c  the mission command (ROLoRA, RTE, MiniLM, -m seed=1,2) in bf16 and fp32: bf16 / fp32 tokens/s
     (results.json throughput.tokens_per_s) >= 1.5; every seed's tokens/s and accuracy reported.
  d  the demo (`make demo`'s command, -m seed=1,2) in fp16, bf16, fp32: fp16 and bf16 >= 1.5x fp32.
  e  WeightLoRA Table 3's row on the Llama-3-8B shape (README "Scaling up"), 20 steps:
     build_seconds < 60; peak memory and tokens/s reported.
The speed ratios of c and d compare seed 2, the second job of each process: the first also pays the
process's one-time start (CUDA libraries, kernels loaded on first use) inside its first steps.

Sizing, for 6 minutes on an H200 (estimates: no GPU was lent when this was written; the JSON's
`jobs` holds each job's seconds, to size the next call). A process start (torch, transformers,
Hydra, CUDA) is taken as ~8 s. c: 64 optimizer steps per ROLoRA phase (2 epochs of the shipped
1000-pair RTE slice at batch 32; 3 phases; ~5 s of eager steps a seed): ~30 s a precision. d: the
demo as it is (3 x 40 steps of 16), two seeds: ~25 s a precision. e: 20 steps of 2 x 16 sequences
on 8 B parameters with checkpointing (~2.6e14 FLOPs a step) and the model built on the GPU: ~45 s.
c, d and e run with trainer.compile=false: results.json's tokens/s counts a compile (the first step
after each wrap, one per ROLoRA phase) as training time, which runs of seconds cannot amortise
(--compile-runs runs them as the loop's default instead). a and b: 20 timed rounds (~2 s) after the
compiling warm-up, where the time goes (~20-30 s per compiled model: the floor and ours' three):
~100 s per precision for RoBERTa, ~130 s for DeBERTa. All of it is more than 6 minutes, so the jobs
run cheapest-first (c, d, e, the compiled benches in bf16, then in fp32, then the eager note)
against a deadline (--budget, 345 s): a job starts only if its estimate fits in what is left, and
is stopped at the deadline; what did not fit shows as "failed: not run ..." and runs in a second
call (--parts b). --extra PART:ARG appends an override or bench option to a part's commands.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PARTS = "abcde"
BUDGET_S = 345  # under 6 minutes with the probe and the table


@dataclass
class Job:
    key: str                 # "a-bf16": part letter, then what varies
    cmd: list[str]
    out: Path                # the bench's JSON, or the run (sweep) folder holding results.json
    est: int                 # expected seconds on an H200 (the sizing above): the job starts if this fits
    timeout: int
    runs: int = 0            # results.json files expected (0: a bench job)

    @property
    def part(self) -> str:
        return self.key[0]


@dataclass
class Outcome:
    error: str | None = None  # one line; None: the job succeeded
    seconds: float = 0.0
    data: object = None       # the bench's JSON, or the runs' results.json (sorted by folder)


# ------------------------------------------------------------------------------------------ the plan
def bench_job(key: str, model: str, precision: str, out: Path, cpu: bool, est: int, compiled: bool = True,
              targets: tuple[str, ...] = ()) -> Job:
    size = ["--batch", "2", "--seq", "8", "--steps", "2", "--threads", "1", "--no-memory"] if cpu else \
        ["--batch", "32", "--seq", "128", "--steps", "20"]
    # On CPU, aot_eager traces and compiles as dynamo does without Inductor's C++ build (tests/test_compile.py).
    comp = (["--compile"] + (["--compile-backend", "aot_eager"] if cpu else [])) if compiled else []
    cmd = [sys.executable, "scripts/bench.py", "--model", model, *(["--targets", *targets] if targets else []),
           "--precision", precision, *size, *comp, "--json", str(out / f"{key}.json")]
    return Job(key, cmd, out / f"{key}.json", est, 60 if cpu else max(90, 2 * est))


def run_job(key: str, overrides: dict, out: Path, cpu: bool, est: int, seeds: str | None = None) -> Job:
    folder = out / key
    over = {**overrides, ("hydra.sweep.dir" if seeds else "hydra.run.dir"): str(folder)}
    cmd = [sys.executable, "-m", "roloraexp.run", *(f"{k}={v}" for k, v in over.items())]
    if seeds:
        cmd += ["-m", f"seed={seeds}"]
    return Job(key, cmd, folder, est, 60 if cpu else max(90, 3 * est), runs=len(seeds.split(",")) if seeds else 1)


def plan(cpu: bool, out: Path, compile_runs: bool) -> tuple[list[Job], dict[str, str]]:
    """The jobs in the order they run, and the jobs left out of this plan with the reason."""
    tiny_run = {"model": "tiny_roberta", "trainer.max_steps": 2, "task.max_train_samples": 32,
                "task.max_eval_samples": 16, "trainer.batch_size": 4, "trainer.eval_batch_size": 16} if cpu else {}
    # The demo's sparsifier fractions (0.1 of a phase) need 10 steps a phase; 2 steps need coarser ones.
    tiny_demo = {**tiny_run, "sparsifier.t_init": 0, "sparsifier.t_final": 0.5, "sparsifier.delta_t": 0.5} if cpu else {}
    loop = {"logger": "disabled", **({} if compile_runs else {"trainer.compile": "false"})}
    jobs, left_out = [], {}
    for p in ("bf16", "fp32"):
        mission = {"method": "rolora", "task": "rte", "data_dir": "data", "model": "minilm", **loop,
                   "trainer.precision": p, "trainer.max_steps": 64, **tiny_run}
        jobs.append(run_job(f"c-{p}", mission, out, cpu, 30, seeds="1,2"))
    for p in ("fp16", "bf16", "fp32"):
        if cpu and p == "fp16":
            left_out["d-fp16"] = "fp16 needs CUDA"
            continue
        jobs.append(run_job(f"d-{p}", {"experiment": "demo", "data_dir": "data", **loop, "trainer.precision": p,
                                       **tiny_demo}, out, cpu, 25, seeds="1,2"))
    llama = {"experiment": "weightlora/llama3_8b/rte", "method": "weightlora", "method.rank": 8, "method.k": 100,
             "model": "llama3_8b_shape", "data_dir": "data", "trainer.gradient_checkpointing": "true",
             "trainer.max_steps": 20, "method.select_steps": 10, "task.max_eval_samples": 64, **loop}
    if cpu:  # the architecture at a size that runs on CPU in seconds (tests/test_large_models.py)
        llama.update({f"model.config_overrides.{k}": v for k, v in dict(
            vocab_size=30522, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16).items()})
        llama.update({"trainer.max_steps": 2, "trainer.batch_size": 2, "task.max_train_samples": 32,
                      "task.max_eval_samples": 8, "method.select_steps": 1, "method.k": 3})
    jobs.append(run_job("e", llama, out, cpu, 45))
    roberta, deberta = ("tiny-roberta-random", "tiny-deberta-random") if cpu else \
        ("roberta-base-random", "deberta-base-random")
    qv = ("query_proj", "value_proj")
    benches = [bench_job("a-bf16", roberta, "bf16", out, cpu, 100),
               bench_job("b-bf16", deberta, "bf16", out, cpu, 130, targets=qv),
               bench_job("a-fp32", roberta, "fp32", out, cpu, 100),
               bench_job("b-fp32", deberta, "fp32", out, cpu, 130, targets=qv),
               bench_job("a-bf16-eager", roberta, "bf16", out, cpu, 25, compiled=False)]
    # CPU: one precision per shape (the pipeline is the same for both) and no eager note, to stay short.
    for j in benches:
        if cpu and j.key not in ("a-bf16", "b-fp32"):
            left_out[j.key] = "a GPU job (the CPU plan runs one precision per shape)"
        else:
            jobs.append(j)
    return jobs, left_out


# ------------------------------------------------------------------------------------------ targets
@dataclass
class Check:
    """A target (``op`` and ``limit`` set) or a reported figure (neither): its value from the jobs' data."""
    part: str
    name: str
    needs: tuple[str, ...]
    value: object            # callable: {job key: data} -> number (or text, for a report)
    unit: str = ""
    op: str | None = None
    limit: float | None = None

    def target_text(self) -> str | None:
        return None if self.op is None else f"{SIGNS[self.op]} {fmt(self.limit, self.unit)}"


SIGNS = {"<=": "≤", "<": "<", ">=": "≥"}


def row(d, key, variant):
    return d[key]["rows"][variant]


def x_floor(key, variant):
    return lambda d: row(d, key, variant)["x_floor"]


def step_ratio(key, variant, other_key, other):
    return lambda d: row(d, key, variant)["step_ms"] / row(d, other_key, other)["step_ms"]


def mfu(key):
    def value(d):
        if row(d, key, "floor")["mfu"] is None:
            raise ValueError("no MFU: not a GPU of the bench's peak table (scripts/bench.py --peak-tflops)")
        return row(d, key, "floor")["mfu"]
    return value


def tokens_per_s(d, key) -> list[float]:
    speeds = [(r.get("throughput") or {}).get("tokens_per_s") for r in d[key]]
    if not all(speeds):
        raise ValueError(f"{key}: a results.json without throughput.tokens_per_s")
    return speeds


def warm_ratio(key, other):
    """Tokens/s of the last job of each process: its first job also pays the process's one-time start
    (CUDA libraries, kernels loaded on first use) inside its first steps, which seconds do not amortise."""
    return lambda d: tokens_per_s(d, key)[-1] / tokens_per_s(d, other)[-1]


def speeds(key):
    return lambda d: tokens_per_s(d, key)


def accuracies(key):
    return lambda d: [r["metrics"]["accuracy"] for r in d[key]]


def checks() -> list[Check]:
    out = []
    for part, label in (("a", "RoBERTa-base"), ("b", "DeBERTa-v3-base")):
        for p in ("bf16", "fp32"):
            k = f"{part}-{p}"
            out += [Check(part, f"{label} {p}: ours LoRA / floor", (k,), x_floor(k, "lora"), "x", "<=", 1.15),
                    Check(part, f"{label} {p}: ours LoRA / PEFT LoRA (step time)", (k,),
                          step_ratio(k, "lora", k, "peft_lora"), "x", "<", 1.0),
                    Check(part, f"{label} {p}: ours AdaLoRA / floor", (k,), x_floor(k, "adalora"), "x", "<=", 1.25),
                    Check(part, f"{label} {p}: ours ROLoRA / floor", (k,), x_floor(k, "rolora"), "x", "<=", 1.25)]
    eager = "a-bf16-eager"
    out += [Check("a", "RoBERTa-base bf16: floor MFU", ("a-bf16",), mfu("a-bf16"), "%", ">=", 0.35),
            Check("b", "DeBERTa-v3-base bf16: floor MFU", ("b-bf16",), mfu("b-bf16"), "%"),
            Check("a", "RoBERTa-base bf16 eager: ours LoRA / floor", (eager,), x_floor(eager, "lora"), "x"),
            Check("a", "RoBERTa-base bf16 eager: floor MFU", (eager,), mfu(eager), "%"),
            Check("a", "RoBERTa-base bf16: ours LoRA step, compiled / eager", ("a-bf16", eager),
                  step_ratio("a-bf16", "lora", eager, "lora"), "x"),
            Check("c", "mission bf16 / fp32 tokens/s (seed 2)", ("c-bf16", "c-fp32"), warm_ratio("c-bf16", "c-fp32"),
                  "x", ">=", 1.5)]
    for p in ("bf16", "fp32"):
        out += [Check("c", f"mission {p} tokens/s (seeds 1, 2)", (f"c-{p}",), speeds(f"c-{p}"), "tok/s"),
                Check("c", f"mission {p} accuracy (seeds 1, 2)", (f"c-{p}",), accuracies(f"c-{p}"), "acc")]
    for p in ("fp16", "bf16"):
        out.append(Check("d", f"demo {p} / fp32 tokens/s (seed 2)", (f"d-{p}", "d-fp32"), warm_ratio(f"d-{p}", "d-fp32"),
                         "x", ">=", 1.5))
    for p in ("fp16", "bf16", "fp32"):
        out += [Check("d", f"demo {p} tokens/s (seeds 1, 2)", (f"d-{p}",), speeds(f"d-{p}"), "tok/s"),
                Check("d", f"demo {p} accuracy (seeds 1, 2)", (f"d-{p}",), accuracies(f"d-{p}"), "acc")]
    out += [Check("e", "Llama-3-8B shape: build_seconds", ("e",), lambda d: d["e"][0]["build_seconds"], "s", "<", 60),
            Check("e", "Llama-3-8B shape: peak memory", ("e",), lambda d: d["e"][0]["peak_memory_bytes"], "GiB"),
            Check("e", "Llama-3-8B shape: tokens/s", ("e",), lambda d: tokens_per_s(d, "e")[0], "tok/s")]
    return out


def fmt(v, unit: str) -> str:
    if isinstance(v, list):
        return ", ".join("-" if x is None else fmt(x, unit) for x in v)
    if v is None:
        return "-"
    return {"x": f"{v:.2f}x", "%": f"{100 * v:.1f}%", "s": f"{v:.1f} s", "tok/s": f"{v:,.0f}", "acc": f"{v:.4f}",
            "GiB": f"{v / 2**30:.1f} GiB"}.get(unit, str(v))


def evaluate(check: Check, outcomes: dict[str, Outcome], left_out: dict[str, str]) -> dict:
    entry = {"part": check.part, "name": check.name, "measured": None, "unit": check.unit,
             "target": check.target_text(), "holds": None}
    ran = {k: outcomes[k].data for k in check.needs if k in outcomes and outcomes[k].error is None}
    missing = [k for k in check.needs if k not in ran]
    if missing:
        k = missing[0]
        entry["error"] = f"{k}: {outcomes[k].error if k in outcomes else 'not run: ' + left_out.get(k, 'not in --parts')}"
        return entry
    try:
        entry["measured"] = check.value(ran)
    except (KeyError, ValueError, TypeError, ZeroDivisionError, IndexError) as e:
        entry["error"] = f"{type(e).__name__}: {e}"
        return entry
    if check.op is not None:
        v, lim = entry["measured"], check.limit
        entry["holds"] = bool(v <= lim if check.op == "<=" else v < lim if check.op == "<" else v >= lim)
    return entry


# ------------------------------------------------------------------------------------------ running
def child_env() -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false",
               PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


NOISE = re.compile(r"^(Set the environment variable HYDRA_FULL_ERROR|\s*warnings\.warn|.*Warning:|\[rank)")


def last_line(text: str) -> str:
    """The line that says why a process failed: its last one, Hydra's hint and warnings left out."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not NOISE.match(ln)]
    line = lines[-1] if lines else "no output"
    return line if len(line) <= 200 else line[:197] + "..."


def run_process(cmd: list[str], timeout: float, log: Path) -> tuple[int | None, str]:
    """(exit code or None on timeout, the output). Its own process group: a timeout ends the job's
    children too (data-loader workers), and nothing else."""
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=REPO, env=child_env(), stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        finally:  # what the job left (data-loader workers), or all of it on a timeout or Ctrl-C (its own
            # session does not get the terminal's signal)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return code, log.read_text(errors="replace")


def run(job: Job, timeout: float, logs: Path) -> Outcome:
    started = time.perf_counter()
    code, output = run_process(job.cmd, timeout, logs / f"{job.key}.log")
    out = Outcome(seconds=round(time.perf_counter() - started, 1))
    try:
        read(job, code, output, timeout, out)
    except (OSError, ValueError) as e:  # a file cut short: this job fails, the others still report
        out.error, out.data = f"cannot read its output: {type(e).__name__}: {e}", None
    return out


def read(job: Job, code: int | None, output: str, timeout: float, out: Outcome) -> None:
    if code is None:
        out.error = f"timed out after {timeout:.0f} s"
    elif job.runs == 0:
        if code != 0 or not job.out.is_file():
            out.error = f"exit {code}: {last_line(output)}"
        else:
            out.data = json.loads(job.out.read_text())
    else:
        results = [json.loads(p.read_text()) for p in sorted(job.out.rglob("results.json"))]
        bad = [r for r in results if r.get("status") != "completed"]
        if bad:
            out.error = f"run {bad[0].get('status')}: {str(bad[0].get('error')).splitlines()[0]}"
        elif len(results) < job.runs:
            out.error = f"{len(results)} of {job.runs} results.json (exit {code}: {last_line(output)})"
        else:
            out.data = results


def probe() -> dict:
    """CUDA and the device, asked in a process of its own (this one never initialises CUDA: a
    context held here would take GPU memory from every job)."""
    code = ("import json, torch; c = torch.cuda.is_available(); print(json.dumps({'cuda': c, "
            "'device': torch.cuda.get_device_name(0) if c else 'CPU', 'cuda_version': torch.version.cuda}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=child_env())
    if done.returncode != 0:
        raise SystemExit(f"gpu_check: cannot import torch with {sys.executable}: {last_line(done.stderr)}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for name in ("torch", "transformers", "peft", "accelerate", "hydra-core"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


# ------------------------------------------------------------------------------------------ output
def table(entries: list[dict], header: str) -> str:
    """part, check, target, holds (yes / NO / failed; - for a reported figure), then what was measured
    (last: a failure's line widens no other column)."""
    head = ("part", "check", "target", "holds", "measured")
    rows = [head]
    for e in entries:
        holds = "failed" if "error" in e else "-" if e["target"] is None else "yes" if e["holds"] else "NO"
        measured = f"failed: {e['error']}" if "error" in e else fmt(e["measured"], e["unit"])
        rows.append((e["part"], e["name"], e["target"] or "(reported)", holds, measured))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join([header] + ["  ".join([*(c.ljust(w) for c, w in zip(r, widths)), r[4]]) for r in rows])


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"


def extras(args) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in args.extra:
        key, sep, arg = item.partition(":")
        if not sep or not arg:
            raise SystemExit(f"gpu_check: --extra takes PART:ARG or JOB:ARG (c:trainer.max_steps=10), got {item!r}")
        out.setdefault(key, []).append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    ap.add_argument("--dry-run", action="store_true", help="print the commands, their timeouts and the targets")
    ap.add_argument("--allow-cpu", action="store_true", help="without CUDA: run the parts scaled down to tiny models")
    ap.add_argument("--budget", type=float, default=None, help=f"seconds for all jobs (default {BUDGET_S} on CUDA)")
    ap.add_argument("--compile-runs", action="store_true",
                    help="c, d, e with the loop's trainer.compile=auto (on CUDA: compiled, compile time in tokens/s)")
    ap.add_argument("--extra", action="append", default=[], metavar="PART:ARG",
                    help="append ARG to the commands of a part or job (c:trainer.max_steps=10, a-fp32:--steps=5)")
    ap.add_argument("--out", help="the JSON (default results/gpu_check/DATE-DEVICE.json)")
    ap.add_argument("--work", help="logs, bench JSONs and run folders (default outputs/gpu_check/TIME-DEVICE)")
    args = ap.parse_args(argv)
    started, now = time.perf_counter(), datetime.datetime.now()
    info = {"cuda": False, "device": "DEVICE"} if args.dry_run else probe()
    cpu = not info["cuda"]
    if cpu and not args.allow_cpu and not args.dry_run:
        print("gpu_check: needs CUDA (torch sees no GPU here); --dry-run prints the plan, --allow-cpu runs it "
              "scaled down on CPU")
        return 2
    cpu = cpu and (args.allow_cpu or not args.dry_run)  # a dry run shows the GPU plan unless --allow-cpu
    work = Path(args.work or REPO / "outputs" / "gpu_check" / f"{now:%Y-%m-%d_%H-%M-%S}-{slug(info['device'])}").resolve()
    jobs, left_out = plan(cpu, work, args.compile_runs)
    more = extras(args)
    jobs = [j for j in jobs if j.part in args.parts]
    for j in jobs:
        j.cmd += more.get(j.part, []) + (more.get(j.key, []) if j.key != j.part else [])
    # By part, each part's targets before its reported figures.
    wanted = sorted((c for c in checks() if c.part in args.parts), key=lambda c: (c.part, c.op is None))
    budget = args.budget or (BUDGET_S if not cpu else 600)
    if args.dry_run:
        scale = "CPU, scaled down" if cpu else "CUDA"
        print(f"gpu_check plan ({scale}): jobs in the order they run; budget {budget:.0f} s, estimates "
              f"{sum(j.est for j in jobs)} s in all (unmeasured, H200)")
        for j in jobs:
            print(f"[{j.key}] timeout {j.timeout} s, est. {j.est} s: {shlex.join(j.cmd)}")
        for key, why in left_out.items():
            if key[0] in args.parts:
                print(f"[{key}] not run: {why}")
        print("\ntargets (and reported figures):")
        width = max(len(c.name) for c in wanted)
        for c in wanted:
            print(f"  {c.part}  {c.name:{width}}  {c.target_text() or '(reported)'}")
        return 0

    if work.is_dir() and any(work.iterdir()):  # an old results.json there would pass for this run's
        print(f"gpu_check: {work} already holds files; give --work an empty or new folder")
        return 2
    (work / "logs").mkdir(parents=True, exist_ok=True)
    outcomes: dict[str, Outcome] = {}
    deadline = started + budget
    for j in jobs:
        left, need = deadline - time.perf_counter(), 5 if cpu else j.est  # the estimates are the GPU's
        if left < need:
            outcomes[j.key] = Outcome(error=f"not run: ~{need} s needed, {max(left, 0):.0f} s of the "
                                            f"{budget:.0f} s budget left (--parts {j.part}, --budget)")
            print(f"[{j.key}] {outcomes[j.key].error}", flush=True)
            continue
        timeout = min(j.timeout, left)
        print(f"[{j.key}] running (timeout {timeout:.0f} s): {shlex.join(j.cmd)}", flush=True)
        outcomes[j.key] = run(j, timeout, work / "logs")
        if outcomes[j.key].error and timeout < j.timeout and outcomes[j.key].error.startswith("timed out"):
            outcomes[j.key].error += " (the --budget deadline)"
        print(f"[{j.key}] {'failed: ' + outcomes[j.key].error if outcomes[j.key].error else 'done'} "
              f"in {outcomes[j.key].seconds} s", flush=True)
    entries = [evaluate(c, outcomes, left_out) for c in wanted]
    vers = versions()
    bench = [r for k, o in outcomes.items() if o.error is None and k in {j.key for j in jobs if j.runs == 0}
             for r in o.data["rows"].values()]
    # Compiled rows first: the table-cost estimator reads the first row that fits (the loop compiles on CUDA).
    bench.sort(key=lambda r: not r["compile"]["enabled"])
    result = {"device": info["device"], "date": f"{now:%Y-%m-%d}", "cuda": info.get("cuda_version"),
              "scaled_down_on_cpu": cpu, "versions": vers, "seconds": round(time.perf_counter() - started, 1),
              "budget_s": budget, "bench": bench,
              "targets": [e for e in entries if e["target"] is not None],
              "reported": [e for e in entries if e["target"] is None],
              "jobs": [{"key": j.key, "cmd": shlex.join(j.cmd), "timeout": j.timeout, "est": j.est,
                        "seconds": outcomes[j.key].seconds, "error": outcomes[j.key].error} for j in jobs],
              "work": str(work)}
    out = Path(args.out or REPO / "results" / "gpu_check" / f"{now:%Y-%m-%d}-{slug(info['device'])}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    header = (f"GPU check: {info['device']}{' (CPU, scaled down: not GPU figures)' if cpu else ''} | {now:%Y-%m-%d} | "
              f"torch {vers['torch']}, transformers {vers['transformers']}, peft {vers['peft']} | "
              f"{result['seconds']:.0f} s")
    print()
    print(table(entries, header))
    print(f"\nJSON: {out}\nlogs: {work / 'logs'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
