"""W&B dashboards as code (``python -m roloraexp.dashboard``), offline: the dry-run specification
holds one workspace per declared table with its run filter, grouping and panels; the keys the
panels read are the keys a run writes; which cells a run fills agrees with the report; the online
path saves a fixed view per table (the W&B API replaced by a recorder)."""
import json
import re

import pytest

from conftest import smoke
import roloraexp.tables
from roloraexp.reporting import dashboard
from roloraexp.reporting.aggregate import fill
from roloraexp.run import run
from roloraexp.tables import TABLES
from roloraexp.tables.columns import PARAMS_COL, glue_col
from roloraexp.tables.query import Run, cells_of, metric_key
from roloraexp.tables.spec import AVG, Row, Table
from roloraexp.tracking import HEATMAPS
from test_tracking import WEIGHTLORA, fake_wandb  # noqa: F401  (fixture)

SECTION_NAMES = ["Training curves", "Ranks and ω", "Trainable parameters", "Peak memory"]
# A table of the tiny model, so that a smoke run fills its cells.
TINY = Table("tiny-table", "Tiny table = smoke runs", "none.csv", "tiny_roberta", "demo",
             (Row("lora", "LoRA"), Row("wlora_k2", "WLoRA k=2", run="weightlora", k=2)),
             (PARAMS_COL, glue_col("rte")), figures=("omega",))


def dry_run(tmp_path, *args) -> dict:
    out = tmp_path / "dash.json"
    assert dashboard.main([*args, "--dry-run", str(out)]) == 0
    return json.loads(out.read_text())


def panels(ws: dict, section: str) -> list[dict]:
    return next(s["panels"] for s in ws["sections"] if s["name"] == section)


def keys(ws: dict, section: str, kind: str) -> list[str]:
    return [k for p in panels(ws, section) if p["type"] == kind for k in p.get("keys", [])]


def test_dry_run_holds_one_workspace_per_declared_table_with_its_filters_and_panels(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_ENTITY", raising=False)
    doc = dry_run(tmp_path, "--all", "--project", "proj")
    assert doc["project"] == "proj" and doc["entity"] is None
    assert [w["table"] for w in doc["workspaces"]] == list(TABLES)
    for w in doc["workspaces"]:
        table = TABLES[w["table"]]
        # Runs: tagged for the table (its own folder and the ones it reuses), of its model, grouped by cell.
        assert all(f"'{f}'" in w["runs"]["filters"] for f in table.folders) and w["runs"]["tables_read"] == list(table.folders)
        assert f"Config(\"model.name\") == '{table.model}'" in w["runs"]["filters"]
        assert w["runs"]["group_by"] == [f"dashboard.{table.id}.cell"]
        assert [s["name"] for s in w["sections"]] == [table.title, *SECTION_NAMES]
        # The table's shape: the report's table, then one bar chart per column, grouped by row.
        bars = [p for p in panels(w, table.title) if p["type"] == "BarPlot"]
        assert [p["keys"] for p in bars] == [[metric_key(table.id, c.key)] for c in table.cols if c.metric != AVG]
        assert {p["group_by"] for p in bars} == {f"dashboard.{table.id}.row"}
        assert [p["table"] for p in panels(w, table.title) if p["type"] == "WeavePanelSummaryTable"] == [table.id]
        assert keys(w, "Training curves", "LinePlot") == ["train/loss", "eval/main", "train/lr"]
        media = keys(w, "Ranks and ω", "MediaBrowser")
        assert media == [HEATMAPS["ranks"], *([HEATMAPS["omega"]] if "omega" in table.figures else [])]
        budget = any(r.method == "rolora" for r in table.rows)
        assert keys(w, "Trainable parameters", "LinePlot") == ["train/trainable_params",
                                                               *(["budget/spent", "budget/params"] if budget else [])]
        assert "peak_memory_gib" in keys(w, "Peak memory", "BarPlot")
        # The exact view spec: the same filter and the same panels, in W&B's own format.
        spec = w["spec"]["spec"]["section"]
        (table_filter,) = [f for f in spec["runSets"][0]["filters"]["filters"] if f["key"]["name"] == "table"]
        assert table_filter["op"] == "IN" and table_filter["value"] == list(table.folders)
        assert [len(s["panels"]) for s in spec["panelBankConfig"]["sections"]] == [len(s["panels"]) for s in w["sections"]]
        assert not re.search(r"[=+×±]", w["name"])  # W&B refuses symbols in a workspace's name


def test_dry_run_of_one_table_to_stdout(capsys):
    assert dashboard.main(["--table", "rolora-table4", "--entity", "team", "--dry-run", "-"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (w,) = doc["workspaces"]
    assert doc["entity"] == "team" and w["spec"]["entity"] == "team"
    assert w["runs"]["tables_read"] == ["rolora-table1"]  # Table 4 is about Table 1's runs


def test_a_run_writes_every_key_its_dashboard_reads(tmp_path, monkeypatch, fake_wandb):  # noqa: F811
    monkeypatch.setattr(roloraexp.tables, "TABLES", {TINY.id: TINY})
    res = run(smoke("logger=offline", "table=tiny-table", *WEIGHTLORA), tmp_path)
    assert res["status"] == "completed", res.get("error")
    fake = fake_wandb[0]
    assert fake.init_kwargs["config"]["dashboard"] == {"tiny-table": {"row": "WLoRA k=2", "cell": "WLoRA k=2 · RTE"}}
    # The cells' values are the report's: best evaluation ×100, and the trainable parameters.
    assert fake.summary[metric_key(TINY.id, "rte")] == pytest.approx(100 * res["best_metrics"]["accuracy"])
    assert fake.summary[metric_key(TINY.id, "params")] == res["trainable_params"]
    history = {k for _, m in fake.logged for k in m}
    w = dashboard.specification(TINY, dashboard.workspace(TINY, "e", "p"))
    for section in w["sections"]:
        for p in section["panels"]:
            written = fake.summary if p["type"] == "BarPlot" else history
            # Peak memory is measured on CUDA only; the rest must be there.
            wanted = [k for k in p.get("keys", []) if not k.startswith("peak_memory")]
            assert set(wanted) <= set(written), (section["name"], p)


def _config_from_overrides(overrides) -> dict:
    """The resolved config keys a cell filter can read, from a grid run's Hydra overrides."""
    config = {}
    for o in overrides:
        path, value = o.split("=", 1)
        value = {"true": True, "false": False}.get(value, value)
        *parents, leaf = (path + ".name" if "." not in path else path).split(".")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return config


@pytest.mark.parametrize("table_id", list(TABLES))
def test_cells_a_run_fills_are_the_cells_the_report_puts_it_in(table_id):
    """For every run of every declared grid: what the Tracker writes at the start of the run agrees
    with report.fill on the finished run, in this table and in the tables that reuse its runs."""
    for g in TABLES[table_id].grid():
        config = _config_from_overrides(g.overrides)
        config["method"].update({k: v for k, v in (("rank", g.rank), ("k", g.k)) if v is not None})
        identity = {"method": g.method, "task": g.task, "model": g.model, "table": g.folder, "config": config}
        ours = {tid: {(row.key, col.key) for row, col in found.cells} for tid, found in cells_of(identity).items()}
        finished = Run(None, 0.0, {**identity, "status": "completed", "seed": 1, "metrics": {}, "best_metrics": {}})
        reference = {tid: set(cells) for tid, t in TABLES.items() if (cells := fill(t, [finished]).cells)}
        assert ours == reference, g


def test_saving_online_writes_a_fixed_view_per_table_and_updates_it(monkeypatch):
    from wandb_workspaces.workspaces import Workspace, internal

    uploaded, existing = [], {}

    def upsert(view):
        uploaded.append(view)
        existing.setdefault(view.name, "VIEW-ID")
        return {"upsertView": {"view": {"name": view.name, "id": existing[view.name]}}}

    def from_name(entity, project, name):
        if name not in existing:
            raise ValueError(f"Workspace `{name}` not found in project `{project}`")
        return type("View", (), {"id": existing[name]})

    monkeypatch.setattr(internal, "upsert_view2", upsert)
    monkeypatch.setattr(internal.View, "from_name", from_name)
    monkeypatch.setattr(Workspace, "url", property(lambda self: f"https://w.test/{self.entity}/{self.project}"))
    for _ in range(2):
        assert dashboard.main(["--table", "weightlora-table1", "--entity", "team", "--project", "proj"]) == 0
    first, second = uploaded
    assert first.name == second.name == dashboard.view_name("proj", "weightlora-table1")
    assert (first.id, second.id) == ("", "VIEW-ID")  # created once, then updated in place
    assert (first.entity, first.project) == ("team", "proj")
    spec = dashboard.workspace(TABLES["weightlora-table1"], "team", "proj")._spec["spec"]
    assert without_ids(json.loads(first.spec.model_dump_json(by_alias=True, exclude_none=True))) == without_ids(spec)


def without_ids(node):
    """A view spec less its panels' ids (random per panel object)."""
    if isinstance(node, dict):
        return {k: without_ids(v) for k, v in node.items() if k != "__id__"}
    return [without_ids(v) for v in node] if isinstance(node, list) else node


def test_no_entity_online_is_one_clear_error(monkeypatch, capsys):
    monkeypatch.setattr(dashboard, "default_entity", lambda online: None)
    with pytest.raises(SystemExit) as e:
        dashboard.main(["--all"])
    assert e.value.code == 2 and "no W&B entity" in capsys.readouterr().err


def test_report_upload_lands_where_the_dashboard_looks(tmp_path, monkeypatch, fake_wandb):  # noqa: F811
    """One W&B run per table, in the runs' project, with the `table` and `model.name` config the
    dashboard filters on; a fixed id, so a second upload updates that run."""
    import pandas as pd

    from roloraexp.reporting.wandb_upload import upload_wandb

    fig = tmp_path / "rolora-table4_ranks_rolora_rte.png"
    fig.write_bytes(_png())
    frames = {"rolora-table4": pd.DataFrame({"row": ["rolora"], "mean": [1.5]}),
              "weightlora-table1": pd.DataFrame({"row": ["lora"], "mean": [None]})}
    upload_wandb(frames, [fig], project="proj", model="tiny_roberta")
    upload_wandb(frames, [fig])
    assert [r.init_kwargs["id"] for r in fake_wandb] == ["report-rolora-table4", "report-weightlora-table1"] * 2
    first = fake_wandb[0].init_kwargs
    assert (first["project"], first["group"], first["resume"]) == ("proj", "rolora-table4", "allow")
    assert first["config"] == {"table": "rolora-table4", "model": {"name": "tiny_roberta"}}
    assert fake_wandb[2].init_kwargs["project"] == "roloraexp"  # default: where the runs log (logger.project)
    assert fake_wandb[3].init_kwargs["config"]["model"] == {"name": "deberta_v3_base"}
    assert set(fake_wandb[0].logged[0][1]) == {"rolora-table4", "figures/rolora-table4_ranks_rolora_rte"}
    assert set(fake_wandb[1].logged[0][1]) == {"weightlora-table1"}  # only its own figures


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="PNG")
    return buf.getvalue()
