"""The trainer's schedule is transformers' linear warm-up/decay, step for step."""
import pytest
import torch
from transformers import get_linear_schedule_with_warmup

from roloraexp.lr_schedule import linear_warmup_decay


@pytest.mark.parametrize("warmup,total", [(0, 10), (3, 10), (10, 10), (15, 10), (1, 1), (6, 100)])
def test_same_learning_rates_as_transformers(warmup, total):
    def lrs(make):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
        sched = make(opt, warmup, total)
        out = []
        for _ in range(total + 3):
            out.append(sched.get_last_lr()[0])
            opt.step()
            sched.step()
        return out, sched.state_dict()

    ours, state = lrs(linear_warmup_decay)
    ref, _ = lrs(get_linear_schedule_with_warmup)
    assert ours == ref
    assert state["last_epoch"] == total + 3


def test_a_training_run_imports_neither_peft_nor_bitsandbytes():
    """Their import logs warnings on every run (bitsandbytes' kernels) and slows the start."""
    import subprocess
    import sys

    code = ("import sys, roloraexp.run, roloraexp.train, roloraexp.models, roloraexp.methods.base, "
            "roloraexp.tracking, roloraexp.distributed, roloraexp.tasks.glue; "
            "print(sorted(m for m in ('peft', 'bitsandbytes') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
