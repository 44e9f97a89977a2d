"""No host synchronisation in the methods' every-step hooks (issue 13's lean step).

A run goes through ``roloraexp.run.run`` with every way a tensor reaches the host patched to record
itself (``.item()``, ``.tolist()``, ``bool(t)``, ``float(t)``, ``int(t)``, indexing with a tensor,
``.cpu()``, ``.numpy()``) while a method's step hooks run (``on_step_start``, ``extra_loss``,
``before_optimizer_step``, ``after_optimizer_step``). On a GPU each of these waits for the device;
on this CPU machine they are the same Python calls, so a test here sees them. Allowed: the steps at
which the method resizes its tensors (AdaLoRA's slice, WeightLoRA's disconnect and growth, SoRA's
scheduled prune: rare events that read indices on the host). Everything else, AdaLoRA's mask
updates at every step of its budget's decay included, must stay on the device.
(Host-to-device copies of Python data are not Python calls and are not seen here; on CUDA
``torch.cuda.set_sync_debug_mode("error")`` finds those.)
"""
import traceback

import pytest
import torch
from hydra.utils import get_class

from conftest import smoke
from roloraexp.methods.base import Method
from roloraexp.run import run

HOOKS = ("on_step_start", "extra_loss", "before_optimizer_step", "after_optimizer_step")
TO_HOST = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "cpu", "numpy")
# 96 examples in batches of 8: one epoch of 12 optimizer steps per phase.
RUN = ["task.max_train_samples=96", "trainer.max_steps=12", "trainer.eval_every=0"]
CASES = {
    # Δ_T = 1: a mask update at every step from t_i to T − t_f (phase steps 4-9), the slice at 10.
    "adalora": ["method=adalora", "sparsifier.t_init=2", "sparsifier.t_final=3", "sparsifier.delta_t=1"],
    "rolora": ["method=rolora", "method.iterations=2"],
    "rolora_sora": ["method=rolora", "sparsifier=sora", "method.iterations=2"],
    "sora": ["method=sora", "sparsifier.prune_every=5", "sparsifier.threshold=0.05"],
    "sora_proximal": ["method=sora", "sparsifier=sora_proximal"],
    "weightlora": ["method=weightlora", "method.k=2", "method.select_steps=6", "method.omega_log_every=0"],
    "weightlora_clip": ["method=weightlora", "method.k=2", "method.select_steps=6", "method.omega_log_every=0",
                        "method.omega_clip=true"],
    "weightlora_plus": ["method=weightlora_plus", "method.k=2", "method.select_steps=6", "method.omega_log_every=0"],
}


class HostReads:
    """Records every tensor-to-host call made while ``active``, with the step and where it came from."""

    def __init__(self, monkeypatch):
        self.active, self.step, self.calls = False, 0, []
        for name in TO_HOST:
            monkeypatch.setattr(torch.Tensor, name, self._recording(getattr(torch.Tensor, name), name))

    def _recording(self, original, name):
        reads = self

        def read(tensor, *args, **kwargs):
            if reads.active:
                reads.active = False  # the bookkeeping below must not record itself
                try:
                    where = traceback.extract_stack(limit=4)[-2]
                    reads.calls.append((reads.step, f"Tensor.{name}", f"{where.filename}:{where.lineno} {where.line}"))
                finally:
                    reads.active = True
            return original(tensor, *args, **kwargs)
        return read

    def watch(self, cls, monkeypatch, allowed_steps: set[int]) -> None:
        """Wrap ``cls``'s step hooks; a step whose ``after_optimizer_step`` resizes (returns remaps)
        joins ``allowed_steps``."""
        for hook in HOOKS:
            original = getattr(cls, hook)

            def watched(method, *args, _original=original, _hook=hook):
                ctx = args[0] if args else None
                if _hook == "on_step_start":
                    self.step = ctx.step + 1
                self.active = True
                try:
                    out = _original(method, *args)
                finally:
                    self.active = False
                if _hook == "after_optimizer_step" and out:
                    allowed_steps.add(ctx.step)
                return out
            monkeypatch.setattr(cls, hook, watched)


def run_watched(tmp_path, monkeypatch, overrides, allowed=None):
    cfg = smoke(*RUN, *overrides)
    reads, allowed = HostReads(monkeypatch), set(allowed or ())
    reads.watch(get_class(cfg.method._target_), monkeypatch, allowed)
    res = run(cfg, tmp_path)
    assert res["status"] == "completed", res.get("error")
    return res, [c for c in reads.calls if c[0] not in allowed], allowed


@pytest.mark.parametrize("case", sorted(CASES))
def test_step_hooks_never_wait_for_the_device(tmp_path, monkeypatch, case):
    overrides = CASES[case]
    # SoRA's prune is scheduled: every prune_every steps it reads which gates are zero (a resize event).
    prune_every = next((int(o.split("=")[1]) for o in overrides if o.startswith("sparsifier.prune_every=")), 0)
    scheduled = set(range(prune_every, 13, prune_every)) if prune_every else set()
    res, reads, allowed = run_watched(tmp_path, monkeypatch, overrides, scheduled)
    assert res["steps"] == 12 * (2 if "method.iterations=2" in overrides else 1)
    assert not reads, "host reads in the step path:\n" + "\n".join(map(str, reads))
    # The resize events are few: most steps were checked.
    assert len(allowed) <= 3, allowed


def test_a_host_read_in_a_hook_is_caught(tmp_path, monkeypatch):
    """The guard itself: a hook that reads a tensor on the host at every step is reported."""
    def after_optimizer_step(self, ctx):
        return [] if float(next(iter(self.adapters.values())).lora_A.sum()) else []

    monkeypatch.setattr(Method, "after_optimizer_step", after_optimizer_step)
    _, reads, _ = run_watched(tmp_path, monkeypatch, ["method=lora"])
    assert [step for step, *_ in reads] == list(range(1, 13))
    assert all(call == "Tensor.__float__" and "test_step_sync.py" in where for _, call, where in reads)
