"""LoRA (Hu et al. 2022): rank r on every target module, trained in one phase."""
from .base import Method


class LoRA(Method):
    """Method's defaults are plain LoRA: rank r everywhere, one phase, no resizing."""
