"""W&B logging: offline runs need no account and leave a run folder; ranks and ω are logged per
adapter at every evaluation and phase end, beside a layer × matrix-type heatmap of each."""
import pytest
from PIL import Image

from conftest import smoke
from roloraexp.heatmaps import DPI, figure_size, layer_grid
from roloraexp.run import run
from roloraexp.tracking import HEATMAPS, Tracker

WEIGHTLORA = ("method=weightlora", "method.k=2", "method.select_steps=3", "trainer.max_steps=6",
              "trainer.eval_every=3", "trainer.log_every=1")


class FakeRun:
    id = "fake"

    def __init__(self, init_kwargs=None):
        self.init_kwargs, self.logged, self.summary = init_kwargs or {}, [], {}

    def log(self, metrics, step=None):
        self.logged.append((step, metrics))

    def finish(self, exit_code=0):
        self.finished = exit_code


@pytest.fixture
def fake_wandb(monkeypatch):
    """wandb.init replaced by a recorder: the real Tracker, nothing written."""
    import wandb

    runs = []

    def init(**kwargs):
        runs.append(FakeRun(kwargs))
        return runs[-1]

    monkeypatch.setattr(wandb, "init", init)
    return runs


def test_every_evaluation_and_phase_end_logs_metrics_ranks_omega_and_heatmaps(tmp_path, fake_wandb):
    res = run(smoke("logger=offline", *WEIGHTLORA), tmp_path)
    assert res["status"] == "completed", res.get("error")
    logged = fake_wandb[0].logged
    evals = [step for step, m in logged if "eval/main" in m]
    assert evals == [3, 6]
    at_end = {k: v for step, m in logged if step == 6 for k, v in m.items()}
    assert {f"ranks/{n}" for n in res["ranks"]} <= set(at_end) and "ranks/mean" in at_end
    assert {f"omega/{n}" for n in res["omega"]} <= set(at_end)
    assert at_end["adapters/active"] == 2  # K = 2 of the 4 adapters stay connected
    assert sum(1 for step, m in logged if "train/loss" in m) == 6
    # Heatmaps at both evaluations; the phase end (the loop calls log_state there too) is at the last
    # evaluation's step with the same values: not drawn twice.
    heatmap_steps = [step for step, m in logged if HEATMAPS["ranks"] in m and HEATMAPS["omega"] in m]
    assert heatmap_steps == [3, 6]
    assert sum(1 for step, m in logged if step == 6 and "ranks/mean" in m) == 2
    summary = fake_wandb[0].summary
    assert summary["best/main"] == res["best_metrics"]["main"] and summary["final/main"] == res["metrics"]["main"]
    assert summary["trainable_params"] == res["trainable_params"]


def test_rolora_logs_its_ranks_at_every_phase_end_and_its_budget_line(tmp_path, fake_wandb):
    """ROLoRA's three iterations: the last picture at each phase end's step shows the ranks that
    iteration ended with (after EXTEND, not the evaluation's), and the budget is logged beside what
    the ranks spend, never below it."""
    res = run(smoke("logger=offline", "method=rolora", "trainer.max_steps=4", "method.rank=4",
                    "sparsifier.t_init=0.2", "sparsifier.t_final=0.3", "sparsifier.delta_t=1"), tmp_path)
    assert res["status"] == "completed", res.get("error")
    last_picture = {step: m for step, m in fake_wandb[0].logged if HEATMAPS["ranks"] in m}
    phase_ends = [h for h in res["history"] if "phase_end" in h]
    assert [h["step"] for h in phase_ends] == [4, 8, 12]
    for h in phase_ends:
        m = last_picture[h["step"]]
        assert {n: m[f"ranks/{n}"] for n in h["ranks"]} == h["ranks"]
        assert m["budget/params"] == res["budget"]["params"] and m["budget/spent"] <= m["budget/params"]
    assert len({tuple(h["ranks"].values()) for h in phase_ends}) > 1  # the pictures show the allocation moving


def test_offline_mode_needs_no_account_and_writes_the_heatmaps_in_the_tiny_models_shape(tmp_path, monkeypatch):
    """tiny_roberta with q, v adapters: every heatmap is a 2 layers × 2 matrix types picture, one per
    evaluation and phase end (W&B names a media file <key>_<step>_<hash>.png)."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "")
    res = run(smoke("logger=offline", *WEIGHTLORA), tmp_path)
    assert res["status"] == "completed", res.get("error")
    grid = layer_grid(res["ranks"])
    assert grid.shape == (2, 2) and grid.cols == ["q", "v"] and grid.rows == ["0", "1"]
    (media,) = (tmp_path / "wandb").glob("offline-run-*/files/media/images/heatmaps")
    expected = tuple(round(inches * DPI) for inches in figure_size(2, 2))
    for what in ("ranks", "omega"):
        files = sorted(media.glob(f"{what}_*.png"))
        assert {f.name.split("_")[1] for f in files} == {"3", "6"}, files
        for f in files:
            assert Image.open(f).size == expected


def test_layer_grid_places_each_adapter_at_its_layer_and_matrix_type():
    """BART: encoder and decoder layers apart, cross-attention its own matrix types, NaN where a
    layer has no such adapter."""
    names = {f"model.encoder.layers.{i}.self_attn.{m}_proj": 10 * i + j for i in range(2) for j, m in enumerate("qv")}
    names.update({f"model.decoder.layers.{i}.{a}.{m}_proj": 100 + 10 * i + j + 5 * ("encoder" in a)
                  for i in range(2) for a in ("self_attn", "encoder_attn") for j, m in enumerate("qv")})
    grid = layer_grid(names)
    assert grid.rows == ["e0", "e1", "d0", "d1"] and grid.cols == ["q", "v", "xq", "xv"]
    assert grid.values[1, 1] == 11 and grid.values[3, 0] == 110 and grid.values[2, 3] == 106
    assert (grid.values[:2, 2:] != grid.values[:2, 2:]).all()  # NaN: the encoder has no cross-attention


def test_per_adapter_stats_and_the_budget_become_scalars():
    class Recorder(Tracker):
        def __init__(self):
            self.logged, self.run = [], None

        def log(self, metrics, step):
            self.logged.append((step, metrics))

    t = Recorder()
    t.log_state({"ranks": {"a": 2, "b": 0}, "adapter_stats": {"a": {"vera/mean_abs_d": 0.5}, "b": {"vera/mean_abs_d": 1.5}},
                 "budget": {"params": 100, "spent": 96}}, 7)
    assert t.logged == [(7, {"ranks/a": 2, "ranks/b": 0, "ranks/mean": 1.0, "adapters/active": 1,
                             "vera/mean_abs_d/a": 0.5, "vera/mean_abs_d/b": 1.5, "budget/params": 100, "budget/spent": 96})]
