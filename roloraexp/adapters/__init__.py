from .adamw import ComponentAdamW
from .inject import find_target_modules, inject_adapters, adapters_of
from .layer import LowRankLinear, Remap
from .optim_state import apply_remaps

__all__ = ["ComponentAdamW", "LowRankLinear", "Remap", "apply_remaps", "inject_adapters", "find_target_modules",
           "adapters_of"]
