"""Shared by the tests of the slides' methods (VeRA, DoRA, DVoRA, BitFit, full fine-tuning): tiny
models with fixed inputs, this project's method prepared on one copy and PEFT on another."""
import copy

import torch
import transformers
from omegaconf import OmegaConf

from conftest import compose_config
from roloraexp.adapters import find_target_modules
from roloraexp.methods import build_method
from roloraexp.models import TINY_CONFIGS

TARGETS = {"roberta": ["query", "value"], "bert": ["query", "value"], "deberta": ["query_proj", "key_proj", "value_proj"],
           "bart": ["q_proj", "v_proj"], "llama": ["q_proj", "v_proj"]}
HEADS = {"roberta": ["classifier"], "deberta": ["classifier", "pooler"]}


def tiny_model(arch, vocab=1000, num_labels=2, seed=0):
    torch.manual_seed(seed)
    cfg = TINY_CONFIGS[arch](vocab)
    cfg.num_labels = num_labels
    return transformers.AutoModelForSequenceClassification.from_config(cfg).eval()


def batch(vocab=1000, n=3, length=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (n, length), generator=g)
    ids[:, -1] = 102  # the tiny configs' eos: BART's classification head pools at it
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.arange(n) % 2}


def method_cfg(method: str, **overrides):
    """The method's real YAML (conf/method/<method>.yaml) with overrides."""
    cfg = compose_config(f"method={method}")
    m = OmegaConf.to_container(cfg.method)
    m.update(overrides)
    return OmegaConf.create({"method": m, "seed": 0})


def prepared(method: str, model, targets, **overrides):
    """``model`` frozen (as load_model leaves a backbone) and prepared by this project's method."""
    model.requires_grad_(False)
    m = build_method(method_cfg(method, **overrides))
    m.prepare(model, find_target_modules(model, targets))
    return m


def twin(model):
    return copy.deepcopy(model)


def randomize_(params, seed, scale=0.3, positive=False):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            v = torch.randn(p.shape, generator=g) * scale
            p.copy_(v.abs() + 0.5 if positive else v)


def adamw_steps(model, params, steps=3, lr=1e-2, seed=2):
    """A few AdamW steps on the classification loss of fixed batches: the same on both models."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    for s in range(steps):
        loss = model(**batch(seed=seed + s)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
