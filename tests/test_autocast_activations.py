"""Under AMP no adapter copies the activations back to fp32: with the frozen weights held in bf16
(trainer.precision=bf16) and autocast on, every adapter's low-rank path runs in the compute dtype on
its fp32 masters (autocast casts the small factors down), as `adapters.layer.adapter_input` does it.
A `.to(fp32)` of the input in an adapter's forward would show up as an activation-sized bf16 → fp32
copy made from roloraexp's adapter code; this test records every such copy of a forward and backward."""
import traceback

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import smoke
from roloraexp.adapters import find_target_modules
from roloraexp.methods import build_method
from roloraexp.models import head_prefixes, load_model
from roloraexp.tasks import build_task
from roloraexp.precision import hold_frozen_in

BATCH, SEQ = 4, 12


class ActivationUpcasts(TorchDispatchMode):
    """bf16 → fp32 copies of at least ``numel`` elements made from roloraexp's code (file:line)."""

    def __init__(self, numel: int):
        super().__init__()
        self.numel, self.seen = numel, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if (func is torch.ops.aten._to_copy.default and kwargs.get("dtype") == torch.float32
                and args[0].dtype == torch.bfloat16 and args[0].numel() >= self.numel):
            ours = [f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in traceback.extract_stack()
                    if "/roloraexp/" in f.filename]
            if ours:
                self.seen.append(ours[-1])
        return func(*args, **kwargs)


@pytest.mark.parametrize("method", ["lora", "adalora", "sora", "weightlora", "dylora", "hydra", "hadapter",
                                    "padapter", "vera", "dora", "dvora"])
def test_no_adapter_copies_activations_to_fp32_under_autocast(method):
    cfg = smoke(f"method={method}", *(["method.k=2"] if method == "weightlora" else []))
    torch.manual_seed(0)
    net, _ = load_model(cfg.model, build_task(cfg))
    m = build_method(cfg)
    targets = cfg.method.get("target_modules") or cfg.model.target_modules
    m.prepare(net, find_target_modules(net, targets, exclude=head_prefixes(net, cfg.model.arch)))
    hold_frozen_in(net, torch.bfloat16)
    ids = torch.randint(5, 500, (BATCH, SEQ))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([0, 1, 1, 0])}
    copies = ActivationUpcasts(BATCH * SEQ * net.config.hidden_size)
    net.train()
    with torch.autocast("cpu", dtype=torch.bfloat16), copies:
        loss = net(**batch).loss
        loss.backward()
    assert torch.isfinite(loss) and any(p.grad is not None for a in m.adapters.values() for p in a.parameters())
    assert copies.seen == [], f"activation-sized fp32 copies made at {sorted(set(copies.seen))}"
