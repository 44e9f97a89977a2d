"""The report's tables and figures to W&B (``python -m roloraexp.report ... --wandb``), where the
table dashboards (``dashboard.py``) show them beside the runs."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..tables import TABLES
from ..tracking import default_entity, default_project


def upload_wandb(frames: dict[str, pd.DataFrame], images: list[Path], project: str | None = None,
                 entity: str | None = None, model: str | None = None) -> None:
    """Each table (as a ``wandb.Table`` under its id) and its figures to one W&B run per table,
    where its dashboard (``python -m roloraexp.dashboard``) shows them beside the runs: the same
    project (default: the runs' ``logger.project``), ``table`` and ``model.name`` config (the
    dashboard's run filter), group = the table. The run id is fixed per table (``report-<table>``,
    resumed), so uploading again updates the table the dashboard shows instead of adding a copy.
    ``WANDB_MODE=offline`` writes it locally for ``wandb sync``."""
    import wandb  # lazily: the report itself needs no W&B

    project, entity = project or default_project(), entity or default_entity(online=False)
    # Text columns as str (NaN in an object column would break W&B's type inference).
    text = lambda df: df.astype({c: str for c in df.columns if df[c].dtype == object})  # noqa: E731
    for tid, df in frames.items():
        run = wandb.init(project=project, entity=entity, id=f"report-{tid}", resume="allow", name=f"report {tid}",
                         group=tid, job_type="report", reinit="finish_previous",
                         config={"table": tid, "model": {"name": model or TABLES[tid].model}})
        try:
            run.log({tid: wandb.Table(dataframe=text(df)),
                     **{f"figures/{p.stem}": wandb.Image(str(p)) for p in images if p.stem.startswith(f"{tid}_")}})
        finally:
            run.finish()
