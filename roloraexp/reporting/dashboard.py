"""W&B dashboards for the paper tables, as code: one saved workspace per declared table
(``roloraexp/tables/``), built with the ``wandb-workspaces`` package.

    python -m roloraexp.dashboard (--table TABLE [--table ...] | --all) [--entity E] [--project P]
                                  [--model M] [--dry-run [FILE]]

A table's workspace shows the runs tagged for it (config ``table`` in the table's folders: its own
and the tables it reuses, as the report reads them) of the table's model, grouped by the cell
each run fills (config ``dashboard.<table>.cell``, written by the Tracker: ``tables/query.py``),
so a curve is one cell's mean over its seeds. Its sections:

1. the table: the report's table as uploaded by ``python -m roloraexp.report ... --wandb`` (paper
   numbers beside ours), and one bar chart per column (summary ``table/<table>/<column>``, one bar
   per row: mean ± std over seeds), the table's shape;
2. training curves: training loss, the main evaluation metric, the learning rate;
3. ranks and ω: the layer × matrix-type heatmaps at every evaluation and phase end (step slider),
   the mean rank and the number of adapters still connected;
4. trainable parameters over steps: the count (WeightLoRA's disconnect is its drop) and the
   adapter parameters ROLoRA's ranks spend against its budget (the budget line);
5. peak GPU memory: per cell (and WeightLoRA's peak before the disconnect), and the allocated
   memory over the run from W&B's system metrics.

``--dry-run`` writes each workspace's specification (a readable summary and the exact view spec
``Workspace.save()`` would upload) to a JSON file and touches nothing online. Without it the
workspaces are saved under fixed view names (one per project and table), so running the command
again updates them in place rather than adding copies.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import re
import sys
import unicodedata
from pathlib import Path

from ..tables import TABLES
from ..tables.query import config_path, metric_key
from ..tables.spec import AVG, PARAMS, Table
from ..tracking import HEATMAPS, default_entity, default_project

DEFAULT_DRY_RUN = Path("results/dashboards.json")
SYSTEM_GPU_MEMORY = r"^system/gpu\.\d+\.memoryAllocatedBytes$"   # W&B system metrics, every 15 s
_REFUSED = ("So", "Sk", "Sm", "Sc", "Cs")    # Unicode categories W&B refuses in a workspace's name
_SPELLED = {"=": ":", "+": " plus", "×": "x", "±": " plus/minus "}
BUDGET_METHODS = ("rolora",)   # methods whose state() reports {"budget": {"params", "spent"}}
SECTIONS = ("table", "curves", "heatmaps", "params", "memory")


def _import_workspaces():
    try:
        import wandb_workspaces.reports.v2 as wr
        import wandb_workspaces.workspaces as ws
    except ImportError as e:
        raise SystemExit("dashboard: needs the wandb-workspaces package: pip install -e \".[dashboards]\" "
                         f"(or pip install wandb-workspaces) ({e})") from e
    return ws, wr


def view_name(project: str, table_id: str) -> str:
    """The workspace's fixed internal name (``nw-<id>-v``, the form W&B's views use): the same
    table in the same project is saved over, never duplicated."""
    slug = re.sub(r"[^a-z0-9]", "", table_id.lower())[:24]
    return f"nw-{slug}{hashlib.sha1(f'{project}/{table_id}'.encode()).hexdigest()[:8]}-v"


def display_name(table: Table) -> str:
    """The workspace's name: the table's title less the characters W&B refuses in view names
    (``wandb_workspaces.utils.validators.validate_no_emoji`` rejects every Unicode symbol, "=" and
    "+" included)."""
    text = "".join(_SPELLED.get(ch, ch) for ch in table.title.replace(" = ", ": "))
    return "".join(ch for ch in text if not unicodedata.category(ch).startswith(_REFUSED))


def _metric_label(col) -> str:
    scale = " (×100)" if col.scale != 1 else ""
    return {PARAMS: "trainable parameters"}.get(col.metric, col.metric) + scale


def sections(table: Table, wr, ws) -> list:
    """The workspace's sections for one table (see the module docstring)."""
    tid = table.id
    row_group = wr.Config(config_path(tid, "row"))
    rows = ", ".join(r.label for r in table.rows if not r.note)
    table_panels = [
        wr.MarkdownPanel(markdown=(
            f"**{table.title}**\n\nRows: {rows}.\n\nEach bar chart is one column (`table/{tid}/<column>`, "
            f"the value the report shows: best evaluation, GLUE ×100), one bar per row: mean ± std over "
            f"seeds. The table panel is the report's (`python -m roloraexp.report {tid} DIR --wandb`), "
            f"with the paper's numbers.")),
        wr.WeavePanelSummaryTable(table_name=tid),
        *(wr.BarPlot(title=f"{col.label}: {_metric_label(col)}", metrics=[metric_key(tid, col.key)],
                     groupby=row_group, groupby_aggfunc="mean", groupby_rangefunc="stddev")
          for col in table.cols if col.metric != AVG),
    ]
    curves = [wr.LinePlot(title="training loss", y=["train/loss"]),
              wr.LinePlot(title="main evaluation metric", y=["eval/main"]),
              wr.LinePlot(title="learning rate", y=["train/lr"])]
    heatmaps = [wr.MediaBrowser(title="ranks: layer × matrix type", media_keys=[HEATMAPS["ranks"]], gallery_axis="step")]
    if "omega" in table.figures:
        heatmaps.append(wr.MediaBrowser(title="ω: layer × matrix type", media_keys=[HEATMAPS["omega"]],
                                        gallery_axis="step"))
    heatmaps += [wr.LinePlot(title="mean rank", y=["ranks/mean"]),
                 wr.LinePlot(title="connected adapters", y=["adapters/active"])]
    params = [wr.LinePlot(title="trainable parameters (WeightLoRA: the drop is the disconnect)",
                          y=["train/trainable_params"])]
    if any(r.method in BUDGET_METHODS for r in table.rows if not r.note):
        params.append(wr.LinePlot(title="adapter parameters vs the parameter budget", y=["budget/spent", "budget/params"]))
    memory = [wr.BarPlot(title="peak GPU memory (GiB)", metrics=["peak_memory_gib", "peak_memory_gib_before_disconnect"],
                         groupby=wr.Config(config_path(tid, "cell")), groupby_aggfunc="mean",
                         groupby_rangefunc="stddev"),
              wr.LinePlot(title="GPU memory allocated (bytes)", x="RelativeTime(Process)", metric_regex=SYSTEM_GPU_MEMORY)]
    named = {"table": (table.title, table_panels, 4), "curves": ("Training curves", curves, 3),
             "heatmaps": ("Ranks and ω", heatmaps, 2), "params": ("Trainable parameters", params, 2),
             "memory": ("Peak memory", memory, 2)}
    return [ws.Section(name=name, panels=panels, is_open=True, layout_settings=ws.SectionLayoutSettings(columns=cols))
            for name, panels, cols in (named[key] for key in SECTIONS)]


def workspace(table: Table, entity: str | None, project: str, model: str | None = None):
    """The saved W&B workspace of one table (not yet saved)."""
    ws, wr = _import_workspaces()
    filters = [ws.Config("table").isin(list(table.folders)), ws.Config("model.name") == (model or table.model)]
    return ws.Workspace(
        entity=entity or "", project=project, name=display_name(table), sections=sections(table, wr, ws),
        runset_settings=ws.RunsetSettings(
            filters=filters, groupby=[ws.Config(config_path(table.id, "cell"))],
            pinned_columns=[f"summary:{metric_key(table.id, c.key)}" for c in table.cols if c.metric != AVG]),
        settings=ws.WorkspaceSettings(max_runs=100, smoothing_type="none"),
    )


def _describe_panel(panel) -> dict:
    """A panel as people read it: its type, title, the keys it plots, how it groups runs."""
    keys = [*(getattr(panel, "y", None) or []), *(getattr(panel, "metrics", None) or []),
            *(getattr(panel, "media_keys", None) or [])]
    groupby = getattr(panel, "groupby", None)
    out = {"type": type(panel).__name__, "title": getattr(panel, "title", None), "keys": [str(k) for k in keys],
           "key_regex": getattr(panel, "metric_regex", None), "table": getattr(panel, "table_name", None),
           "group_by": getattr(groupby, "name", groupby)}
    return {k: v for k, v in out.items() if v}


def specification(table: Table, w) -> dict:
    """What ``--dry-run`` writes for one table: a summary people read, and the exact view spec."""
    return {
        "table": table.id, "name": w.name, "view_name": view_name(w.project, table.id),
        "runs": {"filters": w.runset_settings.filters, "tables_read": list(table.folders),
                 "group_by": [g.name for g in w.runset_settings.groupby]},
        "sections": [{"name": s.name, "panels": [_describe_panel(p) for p in s.panels]} for s in w.sections],
        "spec": w._spec,
    }


def save(w, table_id: str) -> str:
    """Create or update the table's workspace online; returns its URL."""
    from wandb_workspaces.workspaces import internal

    name = view_name(w.project, table_id)
    # Saved before: update that view (save() updates when the id is set); not there yet
    # (ValueError): created under the fixed name.
    with contextlib.suppress(ValueError):
        w._internal_id = internal.View.from_name(w.entity, w.project, name).id
    w._internal_name = name
    w.save()
    return w.url


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m roloraexp.dashboard", description=__doc__.split("\n\n")[0])
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--table", action="append", choices=list(TABLES), metavar="TABLE",
                       help=f"a declared table (repeatable): {', '.join(TABLES)}")
    which.add_argument("--all", action="store_true", help="every declared table")
    p.add_argument("--entity", help="W&B entity (default: logger.entity, else WANDB_ENTITY, else your default entity)")
    p.add_argument("--project", help="W&B project (default: logger.project, where the runs log: roloraexp)")
    p.add_argument("--model", help="show runs of this model instead of the table's (e.g. tiny_roberta smoke runs)")
    p.add_argument("--dry-run", nargs="?", const=DEFAULT_DRY_RUN, type=Path, metavar="FILE",
                   help=f"write the specifications to FILE (default {DEFAULT_DRY_RUN}; - for stdout); nothing online")
    a = p.parse_args(argv)

    table_ids = list(TABLES) if a.all else list(dict.fromkeys(a.table))
    project = a.project or default_project()
    entity = a.entity or default_entity(online=a.dry_run is None)
    if a.dry_run is None and not entity:
        p.error("no W&B entity: give --entity, set WANDB_ENTITY, or log in (wandb login)")
    workspaces = {tid: workspace(TABLES[tid], entity, project, a.model) for tid in table_ids}
    if a.dry_run is not None:
        doc = {"entity": entity, "project": project, "generated_by": "python -m roloraexp.dashboard --dry-run",
               "workspaces": [specification(TABLES[tid], w) for tid, w in workspaces.items()]}
        text = json.dumps(doc, indent=1, ensure_ascii=False) + "\n"
        if str(a.dry_run) == "-":
            sys.stdout.write(text)
        else:
            a.dry_run.parent.mkdir(parents=True, exist_ok=True)
            a.dry_run.write_text(text)
            print(f"dashboard: {len(workspaces)} workspace specifications → {a.dry_run} (nothing saved online)")
        return 0
    for tid, w in workspaces.items():
        print(f"{tid}: {save(w, tid)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
