"""The reporting wing: what is made of finished runs, apart from the training core.

- ``report.py``: the report command (``python -m roloraexp.report``) and one table's files;
- ``aggregate.py``: reading results.json files, filling a table's cells, ours beside the paper's;
- ``content.py``: a table's text in any format (cells, legend, lists of problems, provenance);
- ``markdown_latex.py``, ``html_page.py``: the table as Markdown and LaTeX, and as one HTML page;
- ``figures.py``: the papers' figures and a run's summary figures (``python -m roloraexp.figures``);
- ``wandb_upload.py``: the report's tables and figures to W&B (``--wandb``);
- ``dashboard.py``: the W&B workspace of each table (``python -m roloraexp.dashboard``).

Reporting imports the core (``tables``, ``tracking``, ``heatmaps``); the core never imports
reporting (tests/test_architecture.py checks). Which cell a run fills is ``tables/query.py``, read
by both. This package imports nothing itself: importing one module of it costs only that module.
"""
