"""Entry point kept for ``python -m roloraexp.figures`` (``make demo`` calls it): the figures live in
``roloraexp/reporting/figures.py``. ``scripts/grad_norms.py`` imports the names re-exported here."""
import sys

from .reporting.figures import grad_norm_per_layer, main, parse_adapter_name

__all__ = ["grad_norm_per_layer", "main", "parse_adapter_name"]

if __name__ == "__main__":
    sys.exit(main())
