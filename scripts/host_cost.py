"""What a training step costs the host, on CPU: operations dispatched per step, and the loop's
milliseconds over a hand-written loop doing the same arithmetic (GitHub issue 21, item 7).

On a GPU a base-size step is bound by the host: every aten op is a kernel launch and some
Python, so the number of ops a step dispatches is what a launch-bound step costs, and a CPU can
count it exactly (``TorchDispatchMode`` sees every op below autograd and autocast: forward,
backward, optimizer and the method's hooks).

1. Ops per step: the floor (the frozen model, activations back-propagated, no adapters, as
   scripts/bench.py builds it), LoRA, AdaLoRA and ROLoRA, each in fp32, bf16-autocast and
   bf16-cast (``trainer.amp_mode``, roloraexp/precision.py). The methods run through the real
   ``roloraexp.run.run`` on a composed config; ``Trainer._step`` is wrapped so that the ops of one
   step after ``WARMUP_STEPS`` are counted, and the run is stopped there. AdaLoRA and ROLoRA update
   their masks at that step (t_i = 0, Δ_T = 1), their costliest kind of step. The floor trains
   nothing, so no Trainer runs it: a plain forward, backward and zero_grad, counted alike.
2. Host ms per step, LoRA: the real loop against a hand-written one (``model(**batch).loss
   .backward()``, clipping as the loop clips, torch's AdamW over the same trainable
   parameters, ``zero_grad``; the same precision handling) on a copy of the same model, taken
   before the Trainer is built, and the very batches the loop draws: after each real step the
   hand loop takes one step on that batch (the order alternates), so the machine's drift hits both
   alike. Reported: the median CPU ms of the main thread per step (with one thread it is the step's
   work, and other processes on a shared machine do not inflate it as they inflate wall time, also
   given), the median of the per-step differences, the loop's time between two steps (data
   loading, collation, logging), the time outside aten ops of a profiled step (``torch.profiler``:
   wall minus the union of the top-level ``aten::`` intervals: the Python and framework time a GPU
   step spends launching kernels), and the ops each loop dispatches per step.

    python scripts/host_cost.py                      # MiniLM (pretrained, offline), batch 32, seq 128
    python scripts/host_cost.py --model tiny_roberta --quick --json /tmp/host_cost.json
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager, nullcontext
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's roloraexp, whatever is installed
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

VARIANTS = ("floor", "lora", "adalora", "rolora")
MODES = ("fp32", "bf16-autocast", "bf16-cast")
TRAINER = {"fp32": ["trainer.precision=fp32"], "bf16-autocast": ["trainer.precision=bf16", "trainer.amp_mode=autocast"],
           "bf16-cast": ["trainer.precision=bf16", "trainer.amp_mode=cast"]}
# The phase is never finished (the probe stops the run): long enough that no epoch end, phase end
# or final rank slice falls inside the steps measured.
PHASE_STEPS = 1000
# Steps before the one counted: the first builds lazy state (optimizer moments), the second is
# AdaLoRA's first mask update, which fills process-wide caches (on_device._segment_ends) once.
WARMUP_STEPS = 2


class Stop(BaseException):
    """Raised by the probe once it has what it needs: a BaseException, so that ``run`` does not
    record it as a failed run but lets it through (its ``finally`` still writes results.json)."""


class OpCounter(TorchDispatchMode):
    """Counts every aten op dispatched, by op name (``addmm``, ``_to_copy``, ...)."""

    def __init__(self):
        super().__init__()
        self.counts = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def compose(args, method: str, mode: str, steps: int, extra=()):
    from hydra import compose as hydra_compose, initialize_config_dir

    over = [f"model={args.model}", "task=rte", f"data_dir={REPO / 'data'}", "logger=disabled", "trainer.device=cpu",
            f"trainer.batch_size={args.batch}", f"task.max_seq_length={args.seq}", f"trainer.max_steps={PHASE_STEPS}",
            # Only the examples the measured steps draw (the rest would be tokenised for nothing), and a
            # token dev set: the probe stops the run before any evaluation.
            f"task.max_train_samples={steps * args.batch}", "task.max_eval_samples=8", "trainer.save_adapters=false",
            "trainer.checkpoint_every=0", "trainer.compile=false", f"method={method}", *TRAINER[mode], *extra]
    if method in ("adalora", "rolora"):  # a mask update at every step after the first (the costliest steps)
        over += ["sparsifier.t_init=0", "sparsifier.t_final=0.5", "sparsifier.delta_t=1"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=over)


@contextmanager
def probe(on_init, on_step):
    """``Trainer`` with ``on_init(model, task)`` called before its constructor and every ``_step``
    handed to ``on_step(trainer, run_step, micro_batches)``."""
    from roloraexp.train import Trainer

    init, step = Trainer.__init__, Trainer._step

    def patched_init(self, model, task, *a, **k):
        on_init(model, task)
        init(self, model, task, *a, **k)

    def patched_step(self, micro_batches, *a, **k):
        on_step(self, lambda: step(self, micro_batches, *a, **k), micro_batches)

    Trainer.__init__, Trainer._step = patched_init, patched_step
    try:
        yield
    finally:
        Trainer.__init__, Trainer._step = init, step


def run_until_stopped(cfg, on_init, on_step) -> None:
    from roloraexp.run import run

    with tempfile.TemporaryDirectory() as out, probe(on_init, on_step):
        try:
            res = run(cfg, out)
        except Stop:
            return
    raise SystemExit(f"the {cfg.method.name} run ended before it was measured: {res['status']} {res.get('error', '')}")


# ------------------------------------------------------------------------------------ hand loop
class PlainAdamW(torch.optim.AdamW):
    """torch's AdamW, under a class of its own: the first AdamW made wraps its class's ``step`` in a
    profiler ``record_function`` (``Optimizer._patch_step_function``), and were that AdamW itself,
    the loop's ComponentAdamW (whose step calls it) would dispatch one more pair of ops per step
    than it does in a training process."""


class HandLoop:
    """The least a training step must do: forward under the same precision handling, backward,
    clip (as the loop does, so the arithmetic is the same), AdamW, zero_grad. With no trainable
    parameter (the floor) it stops after the backward."""

    def __init__(self, model, mode: str, trainer_cfg):
        from roloraexp.precision import CastForward
        from roloraexp.precision import hold_frozen_in

        self.model = model.train()
        if mode != "fp32":
            hold_frozen_in(model, torch.bfloat16)
        if mode == "bf16-cast":
            self.context = CastForward(model, torch.bfloat16)
        elif mode == "bf16-autocast":
            self.context = lambda: torch.autocast("cpu", dtype=torch.bfloat16)
        else:
            self.context = nullcontext
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.clip = trainer_cfg.max_grad_norm
        self.optimizer = (PlainAdamW(self.params, lr=trainer_cfg.lr, weight_decay=trainer_cfg.weight_decay)
                          if self.params else None)

    def step(self, batch) -> None:
        with self.context():
            loss = self.model(**batch).loss
        loss.backward()
        if self.optimizer is not None:
            if self.clip:
                torch.nn.utils.clip_grad_norm_(self.params, self.clip)
            self.optimizer.step()
        self.model.zero_grad(set_to_none=True)


def floor_loop(model, mode: str, trainer_cfg) -> HandLoop:
    """The frozen model with activations back-propagated (scripts/bench.py's floor)."""
    model.requires_grad_(False)
    model.get_input_embeddings().register_forward_hook(lambda m, i, out: out.requires_grad_(True))
    return HandLoop(model, mode, trainer_cfg)


# ------------------------------------------------------------------------------------ 1. op counts
def summarize(counts: Counter, cast_tensors: int | None, trainable_tensors: int, layers: int) -> dict:
    return {"total": sum(counts.values()), "to_copy": counts["_to_copy"], "cast_tensors": cast_tensors,
            "trainable_tensors": trainable_tensors, "layers": layers, "by_op": dict(counts.most_common())}


def count_method(args, method: str, mode: str, extra=()) -> tuple[dict, dict, object]:
    """Ops of the real loop's step after the warm-up; also its batch and the run's task (for the floor)."""
    got = {}

    def on_init(model, task):
        got["task"], got["layers"] = task, getattr(model.config, "num_hidden_layers", None)

    def on_step(trainer, step, micro_batches):
        got["done"] = got.get("done", 0) + 1
        if got["done"] <= WARMUP_STEPS:
            step()
            return
        with OpCounter() as counter:
            step()
        cast = trainer.cast.masters if trainer.cast is not None else None
        trainable = sum(1 for p in trainer.model.parameters() if p.requires_grad)
        got["row"] = summarize(counter.counts, len(cast) if cast is not None else None, trainable, got["layers"])
        got["batch"] = micro_batches[0]
        raise Stop

    cfg = compose(args, method, mode, steps=WARMUP_STEPS + 1, extra=extra)
    run_until_stopped(cfg, on_init, on_step)
    return got["row"], got["batch"], (cfg, got["task"])


def count_floor(mode: str, batch, cfg, task) -> dict:
    from roloraexp.models import load_model

    torch.manual_seed(cfg.seed)
    model, _ = load_model(cfg.model, task)
    loop = floor_loop(model, mode, cfg.trainer)
    for _ in range(WARMUP_STEPS):
        loop.step(batch)
    with OpCounter() as counter:
        loop.step(batch)
    cast = len(loop.context.masters) if mode == "bf16-cast" else None
    return summarize(counter.counts, cast, 0, getattr(model.config, "num_hidden_layers", None))


def op_counts(args, variants=VARIANTS, modes=MODES, extra=()) -> dict:
    out = {v: {} for v in variants}
    batch = floor_from = None
    for v in variants:
        if v == "floor":
            continue
        for mode in modes:
            out[v][mode], batch, floor_from = count_method(args, v, mode, extra)
    if "floor" in variants:
        if batch is None:  # the floor alone: a LoRA run draws its batch and task
            _, batch, floor_from = count_method(args, "lora", modes[0], extra)
        for mode in modes:
            out["floor"][mode] = count_floor(mode, batch, *floor_from)
    return out


# ------------------------------------------------------------------------------------ 2. host ms
def outside_ops_ms(fn) -> tuple[float, float]:
    """(wall ms, ms outside any aten op) of one call, under torch.profiler (whose own cost per op
    lands mostly outside the ops: an upper bound, the same per op for both loops)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        fn()
        wall = (time.perf_counter() - start) * 1e3
    spans = sorted((e.time_range.start, e.time_range.end) for e in prof.events() if e.name.startswith("aten::"))
    inside, end = 0.0, float("-inf")
    for s, e in spans:  # the union of the intervals: nested ops counted once
        if e > end:
            inside += e - max(s, end)
            end = e
    return wall, wall - inside / 1e3


def time_loops(args, mode: str) -> dict:
    """LoRA's real steps and hand-written steps, alternating on the same batches: timed (the main
    thread's CPU time, which a shared machine's other processes do not inflate, and wall time),
    then profiled, then one step of each with its ops counted."""
    warm, timed, profiled = args.warmup, args.steps, args.profile_steps
    got = {"width": [], "gap": []}
    got.update({f"{k}_{loop}": [] for k in ("cpu", "wall", "outside") for loop in ("real", "hand")})

    def on_init(model, task):
        got["copy"] = copy.deepcopy(model)  # before the Trainer holds the frozen weights in bf16

    def on_step(trainer, step, micro_batches):
        i = len(got["width"])
        got["width"].append(micro_batches[0]["input_ids"].shape[1])
        if i == 0:
            got["hand"] = HandLoop(got.pop("copy"), mode, trainer.cfg)
        fns = {"real": step, "hand": lambda: [got["hand"].step(b) for b in micro_batches]}
        order = ("real", "hand") if i % 2 == 0 else ("hand", "real")
        if warm < i <= warm + timed:  # the loop's own time between two steps (data, logging; ours excluded)
            got["gap"].append(time.thread_time() - got["last"])
        for loop in order:
            if i < warm + timed:
                cpu, wall = time.thread_time(), time.perf_counter()
                fns[loop]()
                if i >= warm:
                    got[f"cpu_{loop}"].append(time.thread_time() - cpu)
                    got[f"wall_{loop}"].append(time.perf_counter() - wall)
            elif i < warm + timed + profiled:
                got[f"outside_{loop}"].append(outside_ops_ms(fns[loop])[1])
            else:
                with OpCounter() as counter:
                    fns[loop]()
                got[f"ops_{loop}"] = sum(counter.counts.values())
        got["last"] = time.thread_time()
        if i == warm + timed + profiled:
            raise Stop

    cfg = compose(args, "lora", mode, steps=warm + timed + profiled + 1)
    run_until_stopped(cfg, on_init, on_step)
    ms = lambda xs: round(statistics.median(xs) * 1e3, 2)  # noqa: E731
    diffs = [r - h for r, h in zip(got["cpu_real"], got["cpu_hand"])]
    return {"real_ms": ms(got["cpu_real"]), "hand_ms": ms(got["cpu_hand"]), "diff_ms": ms(diffs),
            "diff_ms_spread": [round(min(diffs) * 1e3, 2), round(max(diffs) * 1e3, 2)],
            "real_wall_ms": ms(got["wall_real"]), "hand_wall_ms": ms(got["wall_hand"]),
            "gap_ms": ms(got["gap"]) if got["gap"] else None,
            # The least of the profiled steps: preemption by other processes only adds to it.
            "real_outside_ops_ms": round(min(got["outside_real"]), 2),
            "hand_outside_ops_ms": round(min(got["outside_hand"]), 2),
            "real_ops": got["ops_real"], "hand_ops": got["ops_hand"], "steps": timed,
            "widths": got["width"][warm:warm + timed],
            **{f"{loop}_all_ms": [round(t * 1e3, 2) for t in got[f"cpu_{loop}"]] for loop in ("real", "hand")}}


# ------------------------------------------------------------------------------------ output
def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):  # no /proc/cpuinfo (macOS) or no model line: platform's name stays
        cpu = cpu or "unknown"
    return {"cpu": cpu, "nproc": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "date": datetime.date.today().isoformat(), "load_average": [round(x, 2) for x in os.getloadavg()]}


def print_counts(res: dict, top: int) -> None:
    counts = res["counts"]
    modes = [m for m in MODES if any(m in rows for rows in counts.values())]
    print("\nOps dispatched per training step (forward + backward + optimizer + hooks; _to_copy in brackets; "
          "cast tensors = fp32 masters cast per forward)")
    print(f"{'variant':9}" + "".join(f"{m:>22}" for m in modes) + f"{'cast tensors':>14}{'cast - fp32':>13}")
    for v, rows in counts.items():
        cells = "".join(f"{rows[m]['total']:>14,} [{rows[m]['to_copy']:>4}]" for m in modes)
        cast = rows.get("bf16-cast", {}).get("cast_tensors")
        delta = rows["bf16-cast"]["total"] - rows["fp32"]["total"] if {"bf16-cast", "fp32"} <= set(rows) else None
        print(f"{v:9}{cells}{cast if cast is not None else '-':>14}{delta if delta is not None else '-':>13}")
    for v, rows in counts.items():  # where the modes differ: the ops behind autocast's extra count
        ops = set().union(*(rows[m]["by_op"] for m in modes))
        get = lambda op, m: rows[m]["by_op"].get(op, 0)  # noqa: E731
        differ = sorted((op for op in ops if len({get(op, m) for m in modes}) > 1),
                        key=lambda op: -max(abs(get(op, m) - get(op, modes[0])) for m in modes))
        busiest = sorted(ops, key=lambda op: -get(op, modes[0]))[:top]
        shown = list(dict.fromkeys(differ[:top] + busiest))
        print(f"\n{v}: ops whose count differs between modes, then the busiest (of {len(ops)} kinds)")
        print(f"{'op':34}" + "".join(f"{m:>15}" for m in modes))
        for op in shown:
            print(f"{op:34}" + "".join(f"{get(op, m):>15,}" for m in modes))


def print_times(res: dict) -> None:
    widths = sorted({w for r in res["times"].values() for w in r["widths"]})
    print(f"\nLoRA: ms per step, the real loop (roloraexp.run) against a hand-written loop, same batches (padded to "
          f"{'/'.join(map(str, widths))} tokens; {res['threads']} thread(s); CPU ms of the main thread, median of "
          f"{res['steps']} alternating steps after {res['warmup']} warm-up)")
    print(f"{'precision':14}{'real ms':>10}{'hand ms':>10}{'real-hand':>11}{'(min..max)':>18}{'wall real/hand':>17}"
          f"{'between':>9}{'outside ops real/hand':>23}{'ops real/hand':>15}")
    for mode, r in res["times"].items():
        gap = f"{r['gap_ms']:.1f}" if r["gap_ms"] is not None else "-"
        spread = f"{r['diff_ms_spread'][0]:.1f}..{r['diff_ms_spread'][1]:.1f}"
        wall = f"{r['real_wall_ms']:.0f}/{r['hand_wall_ms']:.0f}"
        outside = f"{r['real_outside_ops_ms']:.1f}/{r['hand_outside_ops_ms']:.1f}"
        print(f"{mode:14}{r['real_ms']:10.1f}{r['hand_ms']:10.1f}{r['diff_ms']:11.1f}{spread:>18}{wall:>17}{gap:>9}"
              f"{outside:>23}{r['real_ops']:>8,}/{r['hand_ops']:,}")
    print("between: the loop's CPU ms from the end of one step to the start of the next (data, logging); outside ops: "
          "a profiled step's wall ms outside any aten op (Python, hooks, autograd; the profiler's own cost included), "
          "the least of the profiled steps")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm", help="a conf/model: minilm (pretrained, offline), tiny_roberta, ...")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128, help="task.max_seq_length: batches are padded to their longest")
    ap.add_argument("--steps", type=int, default=10, help="timed steps of each loop")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--profile-steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads while timing (counts do not depend on it)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--time-modes", nargs="+", default=["fp32", "bf16-cast"], choices=MODES)
    ap.add_argument("--top", type=int, default=8, help="op kinds shown per variant")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 1 warm-up, 2 timed and 1 profiled step")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args(argv)
    if args.quick:
        args.warmup, args.steps, args.profile_steps = 1, 2, 1
    import transformers

    transformers.logging.set_verbosity_error()
    res = {"machine": machine(), "model": args.model, "task": "rte", "batch": args.batch, "seq": args.seq,
           "threads": args.threads, "steps": args.steps, "warmup": args.warmup, "command": " ".join(sys.argv)}
    m = res["machine"]
    print(f"{m['date']} | {m['cpu']}, nproc {m['nproc']} | torch {m['torch']} | model {args.model} | RTE, "
          f"batch {args.batch}, seq up to {args.seq} | load average {m['load_average']}")
    res["counts"] = op_counts(args, args.variants)
    print_counts(res, args.top)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        res["times"] = {mode: time_loops(args, mode) for mode in args.time_modes}
    finally:
        torch.set_num_threads(threads)
    print_times(res)
    res["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
