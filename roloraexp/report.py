"""Entry point kept for ``python -m roloraexp.report`` (the Makefile's table targets and the docs
call it): the report lives in ``roloraexp/reporting/`` (``reporting/report.py``)."""
import sys

from .reporting.report import main

if __name__ == "__main__":
    sys.exit(main())
