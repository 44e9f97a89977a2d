#!/usr/bin/env python
"""ROLoRA Fig. 3: the gradient norm of every pretrained weight matrix, per layer and matrix type.

    python scripts/grad_norms.py model=deberta_v3_base task=cola [data_dir=...] [--batches 4] [--out outputs/grad_norms]

Composes the run's Hydra config (any overrides), loads the model with its task head, makes every
weight trainable (no adapters), sums the loss of a few training batches into one backward pass
and writes ``<out>/<model>_<task>.json`` ({module name: ‖∇W‖_F} for the linear layers of the
blocks) and the figure ``<out>/<model>_<task>.png``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


def grad_norms(cfg, batches: int) -> dict[str, float]:
    import torch
    from accelerate.utils import set_seed
    from torch import nn
    from torch.utils.data import DataLoader

    from roloraexp.figures import parse_adapter_name
    from roloraexp.models import head_prefixes, load_model
    from roloraexp.tasks import build_task

    set_seed(cfg.seed)
    task = build_task(cfg)
    model, tokenizer = load_model(cfg.model, task)
    task.load(tokenizer)
    model.requires_grad_(True)
    model.train()
    heads = tuple(head_prefixes(model, cfg.model.arch))
    loader = DataLoader(task.train_dataset, batch_size=int(cfg.trainer.batch_size), shuffle=True,
                        generator=torch.Generator().manual_seed(int(cfg.seed)), collate_fn=task.collate)
    seen = 0
    for batch in loader:
        (model(**batch).loss / batches).backward()   # gradient of the mean loss over the batches
        seen += 1
        if seen == batches:
            break
    norms = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or module.weight.grad is None or name.startswith(heads):
            continue
        if parse_adapter_name(name)[1] >= 0:   # a matrix of a numbered block (not heads / embeddings)
            norms[name] = module.weight.grad.float().norm().item()
    return norms


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="scripts/grad_norms.py", description=__doc__.split("\n\n")[0])
    p.add_argument("overrides", nargs="*", help="Hydra overrides (model=..., task=..., data_dir=...)")
    p.add_argument("--batches", type=int, default=4, help="training batches in the backward pass (default 4)")
    p.add_argument("--out", type=Path, default=Path("outputs/grad_norms"), help="output folder")
    a = p.parse_args(argv)
    cfg = compose(a.overrides)
    norms = grad_norms(cfg, a.batches)
    if not norms:
        print(f"grad_norms: no linear layer of a numbered block in {cfg.model.name}", file=sys.stderr)
        return 1
    from roloraexp.figures import grad_norm_per_layer

    a.out.mkdir(parents=True, exist_ok=True)
    stem = a.out / f"{cfg.model.name}_{cfg.task.name}"
    stem.with_suffix(".json").write_text(json.dumps(norms, indent=1))
    png = grad_norm_per_layer(norms, stem.with_suffix(".png"),
                              f"Gradient norm per layer: {cfg.model.name} on {cfg.task.name} ({a.batches} batches)")
    print(f"{len(norms)} matrices -> {stem.with_suffix('.json')}, {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
