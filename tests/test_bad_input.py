"""A user's mistakes, each one line (no traceback) before any model loads, with results.json `failed`.

Every case runs through ``roloraexp.run.run`` as a user's command would; ``load_model`` is replaced by
a function that fails the test, so a check that only fires after the model load fails the test."""
import json
import re
import shutil

import pytest
import torch

from conftest import DATA, compose_config
from roloraexp import models
from roloraexp.run import run

BASE = ["model=tiny_roberta", "task=rte", "logger=disabled", "trainer.max_steps=4", "task.max_train_samples=16",
        "task.max_eval_samples=8"]


def glue_copy(tmp_path, edit=None):
    """A data folder with the RTE slice, ``edit(train_text) -> text`` applied to train.tsv."""
    root = tmp_path / "data"
    shutil.copytree(DATA / "glue_data" / "RTE", root / "glue_data" / "RTE")
    if edit is not None:
        train = root / "glue_data" / "RTE" / "train.tsv"
        train.write_text(edit(train.read_text(encoding="utf-8")), encoding="utf-8")
    return root


def squad_file(tmp_path, text):
    (tmp_path / "squad_v1.1").mkdir()
    (tmp_path / "squad_v1.1" / "dev-v1.1.json").write_text(text)
    return tmp_path


def foreign_checkpoint(tmp_path):
    """The run folder holds a checkpoint written by another config (method.rank=4)."""
    out = tmp_path / "run"
    res = run(compose_config(*BASE, f"data_dir={DATA}", "method.rank=4", "trainer.eval_every=2",
                             "trainer.keep_checkpoint=true"), out)
    assert res["status"] == "completed" and (out / "checkpoint.pt").exists()
    (out / "results.json").unlink()
    return out


def corrupt_checkpoint(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint")
    return out


# (id, overrides, setup(tmp_path) -> data_dir or output folder, expected message)
CASES = [
    ("lr", ["trainer.lr=-1"], None, "trainer.lr must be a number > 0, got -1"),
    ("seed", ["seed=abc"], None, "seed must be an integer in [0, 2**32 - 1], got 'abc'"),
    ("seed-negative", ["seed=-1"], None, "seed must be an integer in [0, 2**32 - 1], got -1"),
    ("seed-too-big", [f"seed={2**32}"], None, f"seed must be an integer in [0, 2**32 - 1], got {2**32}"),
    ("nan", ["trainer.max_grad_norm=nan"], None, "trainer.max_grad_norm must be a number >= 0 (or null), got nan"),
    ("flag", ["trainer.group_by_length=maybe"], None, "trainer.group_by_length must be true or false, got 'maybe'"),
    ("method-flag", ["method.rslora=1"], None, "method.rslora must be true or false, got 1"),
    ("task-flag", ["task.train_from_dev=yes"], None, "task.train_from_dev must be true or false, got 'yes'"),
    ("bad-rows", ["task.max_bad_rows=5"], None, "task.max_bad_rows must be a fraction of a split's rows in [0, 1], got 5"),
    ("model-path", ["model=roberta_base", "model.name_or_path=/nonexistent/roberta"], None,
     "model.name_or_path=/nonexistent/roberta: the local folder does not exist (a hub id looks like org/name)"),
    ("no-steps", ["trainer.epochs=0", "trainer.max_steps=0"], None, "the run has no steps"),
    ("batch", ["trainer.batch_size=0"], None, "trainer.batch_size must be an integer >= 1, got 0"),
    ("accum", ["trainer.grad_accum=0"], None, "trainer.grad_accum must be an integer >= 1, got 0"),
    ("samples", ["task.max_train_samples=0"], None, "task.max_train_samples must be an integer >= 1 (or null), got 0"),
    ("warmup", ["trainer.warmup_ratio=2"], None, "trainer.warmup_ratio must be in [0, 1]"),
    ("rank", ["method.rank=0"], None, "method.rank must be a positive integer"),
    ("rank-vs-matrix", ["method=rolora", "method.rank=40"], None, "rank 40 exceeds what the 32 x 32 matrix"),
    ("k-too-big", ["method=weightlora", "method.k=9"], None, "method.k=9 is more than the n=4 adapters"),
    ("k-zero", ["method=weightlora", "method.k=0"], None, "method.k (adapters to keep) must be an integer >= 1"),
    ("head-target", ["method.target_modules=[classifier]"], None, "name the task head"),
    ("no-such-module", ["method.target_modules=[nope]"], None, "match no linear layer"),
    ("no-task-files", [], lambda p: (p / "empty").mkdir() or p / "empty", "GLUE rte: no data folder"),
    ("no-columns", [], lambda p: glue_copy(p, lambda t: t.replace("sentence1", "first", 1)),
     "missing columns ['sentence1']"),
    ("empty-tsv", [], lambda p: glue_copy(p, lambda t: ""), "is empty (expected a header row)"),
    ("bad-label", [], lambda p: glue_copy(p, lambda t: t.replace("\tnot_entailment\n", "\tmaybe\n", 1)),
     "label 'maybe' is not ['entailment', 'not_entailment']"),
    ("bad-json", ["task=squad_v1", "task.train_from_dev=true"], lambda p: squad_file(p, "{oops"),
     "is not valid json (line 1, column 2: Expecting property name enclosed in double quotes): cut short?"),
    ("not-squad", ["task=squad_v1", "task.train_from_dev=true"], lambda p: squad_file(p, '{"version": 1}'),
     "is not SQuAD-format json"),
    ("precision", ["trainer.precision=fp8"], None, "trainer.precision must be fp32, fp16 or bf16"),
]
OUTPUT_CASES = [
    ("foreign-checkpoint", foreign_checkpoint, "was written by another config (method.rank: 4 there, 8 here"),
    ("corrupt-checkpoint", corrupt_checkpoint, "is unreadable"),
    ("unwritable-output", lambda p: (p / "file").write_text("") or p / "file" / "run",
     "cannot be written (Not a directory); set hydra.run.dir to another folder"),
]


@pytest.fixture
def no_model_loads(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the mistake was found")

    monkeypatch.setattr(models, "load_model", refuse)


def assert_one_line(res, message, out):
    assert res["status"] == "failed", res
    assert message in res["error"] and "\n" not in res["error"], res["error"]
    if out.is_dir():
        assert json.loads((out / "results.json").read_text())["status"] == "failed"


@pytest.mark.parametrize("overrides,setup,message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_mistake_is_one_line_before_any_model_loads(tmp_path, no_model_loads, overrides, setup, message):
    data = setup(tmp_path) if setup else DATA
    res = run(compose_config(*BASE, f"data_dir={data}", *overrides), tmp_path / "out")
    assert_one_line(res, message, tmp_path / "out")


@pytest.mark.parametrize("setup,message", [c[1:] for c in OUTPUT_CASES], ids=[c[0] for c in OUTPUT_CASES])
def test_run_folder_mistakes_are_one_line_before_any_model_loads(tmp_path, monkeypatch, setup, message):
    out = setup(tmp_path)  # may train a run first (foreign checkpoint): only then refuse model loads
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("model loaded before the mistake was found"))
    res = run(compose_config(*BASE, f"data_dir={DATA}"), out)
    assert_one_line(res, message, out)
    assert str(out) in res["error"]  # names the file or folder


def test_at_least_fifteen_mistakes_are_covered():
    assert len(CASES) + len(OUTPUT_CASES) >= 15


def test_a_diverging_run_fails_naming_the_step_and_the_quantity(tmp_path):
    res = run(compose_config(*BASE, f"data_dir={DATA}", "trainer.lr=1e30", "trainer.max_grad_norm=0",
                             "trainer.warmup_ratio=0", "trainer.max_steps=6", "trainer.log_every=1"), tmp_path)
    assert res["status"] == "failed" and "\n" not in res["error"]
    match = re.match(r"non-finite (training loss at step (\d+)|trainable weights in \S+ at step (\d+))", res["error"])
    assert match, res["error"]
    bad_step = int(match.group(2) or match.group(3))
    assert 1 <= bad_step <= 6
    # A checkpoint, if any, is one from before the fault: resuming never starts from broken weights.
    if (tmp_path / "checkpoint.pt").exists():
        ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
        assert ckpt["ctx"]["step"] < bad_step
        assert all(torch.isfinite(t).all() for t in ckpt["trainable"].values())
