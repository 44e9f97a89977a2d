"""One run on several processes (``torchrun --nproc_per_node=N -m roloraexp.run ...`` or
``accelerate launch -m roloraexp.run ...``), through accelerate: it owns the process group, DDP and
the sharding of data loaders. What is particular to this project:

* methods resize, mask and disconnect parameters mid-run, and DDP's buckets do not follow a
  replaced parameter: the loop wraps the model again after every such change (``wrap``);
* every process must reach the same decision at the same step (the importance scores read the
  all-reduced gradients, seeded choices use the same seed): ``check_same`` confirms that the rank
  configuration is identical on all processes after every change, and stops the run if not;
* only the main process writes files and W&B; a stop signal, or a checkpoint due by the clock, on
  one process acts on all at the same step (``any_process``, polled at the loop's log points).
"""
from __future__ import annotations

import logging
import os

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType

from .config import check_section
from .errors import ConfigError

log = logging.getLogger(__name__)


def make_accelerator(trainer_cfg) -> Accelerator:
    check_section(trainer_cfg, "trainer")  # precision and device among them (roloraexp/config.py)
    precision, device = trainer_cfg.precision, trainer_cfg.get("device", "auto")
    cuda = torch.cuda.is_available() and device != "cpu"
    if device == "cuda" and not cuda:
        raise ConfigError("trainer.device=cuda but no CUDA device is available")
    if precision == "fp16" and not cuda:  # bf16 autocast runs on CPU too; fp16's loss scaler does not
        log.warning("trainer.precision=fp16 needs CUDA; training in fp32 on CPU (bf16 works on CPU)")
        precision = "fp32"
    mixed = {"fp32": "no", "fp16": "fp16", "bf16": "bf16"}[precision]
    # accelerate keeps one process-wide state and refuses a second precision in the same process
    # (in-process sweeps, tests): each run starts from a clean one (the process group, if any, stays).
    AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(mixed_precision=mixed, cpu=not cuda, kwargs_handlers=[DistributedDataParallelKwargs()])


def is_distributed(acc: Accelerator) -> bool:
    return acc.num_processes > 1


def wrap(acc: Accelerator, model: torch.nn.Module, find_unused: bool, autocast: bool = True) -> torch.nn.Module:
    """The module the training forward goes through: the model itself on one process, a fresh DDP
    wrapper of it (over the parameters that train *now*) on several. ``autocast=False``
    (trainer.amp_mode=cast): accelerate's autocast around the forward is taken off again."""
    if not is_distributed(acc):
        return model
    acc._models = [m for m in acc._models if acc.unwrap_model(m) is not model]  # drop the stale wrapper
    if hasattr(model, "_original_forward"):  # accelerate patched forward for AMP when it last wrapped
        model.forward = model._original_forward
        del model._original_forward
    acc.ddp_handler = DistributedDataParallelKwargs(find_unused_parameters=find_unused)
    wrapped = acc.prepare_model(model, device_placement=False)
    if not autocast and hasattr(model, "_original_forward"):
        model.forward = model._original_forward
        del model._original_forward
    return wrapped


def check_same(acc: Accelerator, what: str, value) -> None:
    """Stop the run if ``value`` (a rank configuration, ...) differs between processes."""
    if not is_distributed(acc) or acc.distributed_type == DistributedType.NO:
        return
    values = [None] * acc.num_processes
    torch.distributed.all_gather_object(values, value)
    if any(v != values[0] for v in values[1:]):
        differ = [i for i, v in enumerate(values) if v != values[0]]
        raise RuntimeError(f"the processes disagree on {what} (processes {differ} differ from process 0): "
                           f"a method decision was not made from synchronised state")


def any_process(acc: Accelerator, *flags: bool) -> tuple[bool, ...]:
    """Each of ``flags``, true on every process when it is true on any (one small all-reduce, and a
    host wait: call it where the loop already waits, not at every step)."""
    return tuple(n > 0 for n in total(acc, *(int(f) for f in flags)))


def total(acc: Accelerator, *values: int) -> tuple[int, ...]:
    """Each of ``values`` summed over the processes (one all-reduce)."""
    if not is_distributed(acc):
        return values
    t = torch.tensor(values, dtype=torch.long, device=acc.device)
    torch.distributed.all_reduce(t)
    return tuple(int(v) for v in t.tolist())


def export_slurm_env() -> None:
    """One table cell = one multi-GPU SLURM job (``hydra.launcher.tasks_per_node=N``): submitit starts
    N copies of the job, one per GPU; torch.distributed finds its peers through environment variables,
    which submitit derives from SLURM's. Nothing to do outside such a job."""
    if int(os.environ.get("SLURM_NTASKS", "1")) <= 1 or "RANK" in os.environ:
        return
    try:
        import submitit

        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    except (ImportError, RuntimeError) as e:  # not a submitit job (a plain srun): the user sets them
        log.warning("SLURM_NTASKS > 1 but the torch.distributed variables are unset (%s)", e)
