"""AdaLoRA* (ROLoRA paper's baseline): AdaLoRA trained T times, each run from the best checkpoint so far.

Run 1 is plain AdaLoRA (init_rank → rank, sliced at T − t_f). Runs 2+ reload the best evaluation's
trainable tensors, whatever their shapes: a checkpoint taken while masking still has init_rank
components per adapter (masked gates included, which may have drifted off zero between mask
updates), one taken after the slice has the final ranks. The sparsifier restarts from the loaded
ranks (b_0 = their total) towards the same target R × adapters (``AdaLoRA.on_phase_start``); from
an already-pruned checkpoint nothing is masked and the slice only reorders the components by
importance. The scaling stays alpha / init_rank throughout (fixed at creation).
"""
from .adalora import AdaLoRA
from .iterated import Iterated


class AdaLoRAIter(Iterated, AdaLoRA):
    """AdaLoRA's hooks with Iterated's phases (see the module docstring)."""
