"""Entry point kept for ``python -m roloraexp.dashboard``: the W&B table dashboards live in
``roloraexp/reporting/dashboard.py``."""
import sys

from .reporting.dashboard import main

if __name__ == "__main__":
    sys.exit(main())
