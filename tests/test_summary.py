"""Run summaries (``python -m roloraexp.figures summary RUN_DIR``): the training curve and ROLoRA's
rank configuration per iteration show what results.json holds, and a real run gets its PNGs."""
import matplotlib.pyplot as plt
import numpy as np

from conftest import DATA, compose_config
from roloraexp.reporting import figures
from roloraexp.run import run

Q0, V0 = "roberta.encoder.layer.0.attention.self.query", "roberta.encoder.layer.0.attention.self.value"
Q1 = "roberta.encoder.layer.1.attention.self.query"


def rolora_result() -> dict:
    """Two ROLoRA iterations as results.json writes them (adapters listed out of model order)."""
    return {
        "method": "rolora", "task": "rte", "model": "tiny_roberta", "steps": 8,
        "train_curve": [{"step": 2, "loss": 0.9, "lr": 1e-3}, {"step": 4, "loss": 0.7, "lr": 1e-3},
                        {"step": 6, "loss": 0.6, "lr": 1e-3}, {"step": 8, "loss": 0.5, "lr": 1e-3}],
        "history": [{"step": 4, "phase": 0, "metrics": {"accuracy": 0.6, "main": 0.6}, "trainable_params": 300},
                    {"phase_end": 0, "step": 4, "trainable_params": 320},
                    {"step": 8, "phase": 1, "metrics": {"accuracy": 0.55, "main": 0.55}, "trainable_params": 320},
                    {"phase_end": 1, "step": 8, "trainable_params": 250}],
        "method_history": [
            {"iteration": 0, "ranks": {Q1: 4, V0: 4, Q0: 4}},
            {"iteration": 1, "step": 4, "sparsified": {Q1: 1, V0: 3, Q0: 2}, "ranks": {Q1: 3, V0: 5, Q0: 4}},
            {"iteration": 2, "step": 8, "sparsified": {Q1: 0, V0: 4, Q0: 2}, "ranks": {Q1: 0, V0: 4, Q0: 2}},
        ],
    }


def test_rank_iteration_table_follows_algorithm_1():
    labels, names, grid = figures.rank_iteration_table(rolora_result())
    assert labels == ["start", "1: sparsified", "1: next", "2: sparsified"]
    assert names == [Q0, V0, Q1]  # model order: layer, then q before v
    np.testing.assert_array_equal(grid, [[4, 2, 4, 2], [4, 3, 5, 4], [4, 1, 3, 0]])


def test_training_figure_plots_results_json():
    fig = figures.training_figure(rolora_result())
    loss_ax, metric_ax, params_ax = fig.axes
    loss, = [line for line in loss_ax.lines if len(line.get_xdata()) > 2]
    assert list(loss.get_xdata()) == [2, 4, 6, 8] and list(loss.get_ydata()) == [0.9, 0.7, 0.6, 0.5]
    metric = metric_ax.lines[0]
    assert list(metric.get_xdata()) == [4, 8] and list(metric.get_ydata()) == [0.6, 0.55]
    assert metric_ax.get_ylabel() == "eval accuracy"
    assert metric_ax.collections[0].get_offsets().tolist() == [[4, 0.6]]  # the best evaluation, starred
    assert list(params_ax.lines[0].get_ydata()) == [300, 320, 320, 250]
    # one dashed line per phase boundary inside the run (not at its end)
    assert [line.get_xdata()[0] for line in loss_ax.lines if line.get_linestyle() == "--"] == [4]
    plt.close(fig)


def test_summary_of_a_real_rolora_run(tmp_path, capsys):
    cfg = compose_config("model=tiny_roberta", "task=rte", f"data_dir={DATA}", "logger=disabled", "method=rolora",
                         "method.rank=4", "trainer.max_steps=2", "trainer.batch_size=8", "trainer.log_every=1",
                         "task.max_train_samples=16", "task.max_eval_samples=16", "task.max_seq_length=32",
                         "trainer.save_adapters=false", "sparsifier.t_init=0", "sparsifier.t_final=0.5")
    assert run(cfg, tmp_path)["status"] == "completed"
    assert figures.main(["summary", str(tmp_path)]) == 0
    written = {name: tmp_path / f"{name}.png" for name in ("training_curve", "ranks", "rank_iterations")}
    assert capsys.readouterr().out.split() == [str(p) for p in written.values()]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written.values())
    assert not (tmp_path / "omega.png").exists()  # ROLoRA has no ω
    assert figures.main(["summary", str(tmp_path / "nothing")]) == 1
