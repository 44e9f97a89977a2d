"""LoRA* (ROLoRA paper's baseline): LoRA trained T times, each from the best checkpoint so far."""
from .iterated import Iterated
from .lora import LoRA


class LoRAIter(Iterated, LoRA):
    """LoRA's adapters with Iterated's phases: T runs, each from the best checkpoint so far."""
