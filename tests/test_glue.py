"""GLUE tasks: loading the real data (the shipped slices; the whole files under `full`), the metrics
against hand computations, errors, evaluate()."""
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from accelerate import Accelerator
from omegaconf import OmegaConf

from conftest import DATA
from roloraexp.errors import ConfigError, DataError
from roloraexp.models import TINY_CONFIGS
from roloraexp.tasks.glue import GlueTask
from roloraexp.tasks.metrics import glue_metrics

# (task, train rows, dev rows): the slices in data/ (scripts/make_data_slices.py) and the full files
# (shared/data/PROVENANCE.md, the official GLUE counts).
SLICES = [("cola", 1500, 1043), ("sst2", 2000, 872), ("mrpc", 1000, 408), ("stsb", 1000, 500), ("rte", 1000, 277)]
FULL = [("cola", 8551, 1043), ("sst2", 67349, 872), ("mrpc", 3668, 408), ("stsb", 5749, 1500), ("rte", 2490, 277)]
CONF = Path(__file__).resolve().parents[1] / "conf" / "task"
NUM_LABELS = {"cola": 2, "sst2": 2, "mrpc": 2, "qqp": 2, "mnli": 3, "qnli": 2, "rte": 2}


def make(name, data_dir, seed=0, **over):
    cfg = OmegaConf.load(CONF / f"{name}.yaml") if not over.pop("raw", False) else OmegaConf.create({"name": name})
    cfg = OmegaConf.merge(cfg, over)
    return GlueTask(cfg, data_dir=None if data_dir is None else str(data_dir), seed=seed)


def check_items(task, ds):
    ex = ds[0]
    assert {"input_ids", "attention_mask", "token_type_ids", "labels"} <= set(ex)
    assert max(len(ds[i]["input_ids"]) for i in range(len(ds))) <= 128
    labels = np.array([ds[i]["labels"] for i in range(len(ds))])
    if task.name == "stsb":
        assert isinstance(ex["labels"], float) and labels.min() >= 0 and labels.max() <= 5
    else:
        assert isinstance(ex["labels"], int) and set(labels) == set(range(NUM_LABELS[task.name]))


# ---------------------------------------------------------------- loading the real data
def check_counts(data_dir, tok, name, n_train, n_dev):
    task = make(name, data_dir)
    task.load(tok)
    assert len(task.train_dataset) == n_train
    assert {k: len(v) for k, v in task.eval_datasets.items()} == {"dev": n_dev}
    check_items(task, task.train_dataset)
    check_items(task, task.eval_datasets["dev"])
    assert task.model_kwargs()["num_labels"] == (1 if name == "stsb" else 2)


@pytest.mark.parametrize("name,n_train,n_dev", SLICES)
def test_slice_glue_counts(tok, name, n_train, n_dev):
    check_counts(DATA, tok, name, n_train, n_dev)


@pytest.mark.full
@pytest.mark.parametrize("name,n_train,n_dev", FULL)
def test_full_glue_counts(full_data, tok, name, n_train, n_dev):
    check_counts(full_data, tok, name, n_train, n_dev)


def test_data_dir_may_be_glue_data_itself(tok):
    task = make("rte", DATA / "glue_data", max_train_samples=10)
    task.load(tok)
    assert len(task.train_dataset) == 10 and len(task.eval_datasets["dev"]) == 277


def test_qnli_train_from_dev(tok):
    with pytest.raises(DataError, match=r"missing train file .*QNLI/train\.tsv"):
        make("qnli", DATA).load(tok)
    task = make("qnli", DATA, train_from_dev=True)
    task.load(tok)
    train, dev = task.train_dataset, task.eval_datasets["dev"]
    assert len(train) + len(dev) == 1000 and abs(len(train) - len(dev)) <= 1  # the slice: 1000 of the 5463 dev pairs
    check_items(task, dev)
    # disjoint halves: no identical (question, sentence) encoding in both
    key = lambda ds: {tuple(ds[i]["input_ids"]) for i in range(len(ds))}  # noqa: E731
    assert not key(train) & key(dev)


def mnli_with_mismatched(tmp_path):
    """The MNLI slice plus a stand-in mismatched dev set (a copy of matched: no mismatched file is shared)."""
    dst = tmp_path / "glue_data" / "MNLI"
    shutil.copytree(DATA / "glue_data" / "MNLI", dst)
    shutil.copy(dst / "dev_matched.tsv", dst / "dev_mismatched.tsv")
    return tmp_path


def test_mnli_matched_only(tok, caplog):
    task = make("mnli", DATA)
    with caplog.at_level(logging.WARNING):
        task.load(tok)
    assert "matched only" in caplog.text
    assert len(task.train_dataset) == 48 and list(task.eval_datasets) == ["matched"]
    assert len(task.eval_datasets["matched"]) == 600
    check_items(task, task.train_dataset)
    check_items(task, task.eval_datasets["matched"])
    assert task.model_kwargs() == {"num_labels": 3, "problem_type": "single_label_classification"}


def test_qqp_kshot(tok):
    task = make("qqp", DATA / "glue_data")  # data_dir = the glue_data folder itself
    task.load(tok)
    assert len(task.train_dataset) == 160 and len(task.eval_datasets["dev"]) == 160  # five 32-row k-shot splits
    check_items(task, task.train_dataset)


def test_seeded_subsets(tok):
    def ids(seed):
        t = make("sst2", DATA, seed=seed, max_train_samples=50, max_eval_samples=20)
        t.load(tok)
        assert len(t.train_dataset) == 50 and len(t.eval_datasets["dev"]) == 20
        return [tuple(t.train_dataset[i]["input_ids"]) for i in range(50)]
    assert ids(1) == ids(1) != ids(2)


def test_collate_pads_dynamically(tok):
    task = make("stsb", DATA, max_train_samples=4)
    task.load(tok)
    feats = [task.train_dataset[i] for i in range(4)]
    batch = task.collate(feats)
    assert batch["input_ids"].shape == (4, max(len(f["input_ids"]) for f in feats))
    assert batch["labels"].dtype == torch.float32


# ---------------------------------------------------------------- metrics by hand
def test_mcc_by_hand():
    refs = np.array([1, 1, 1, 0, 0, 1, 0, 1, 0, 0, 1])
    preds = np.array([1, 0, 1, 0, 1, 1, 0, 1, 1, 0, 0])
    tp = np.sum((preds == 1) & (refs == 1)); tn = np.sum((preds == 0) & (refs == 0))  # noqa: E702
    fp = np.sum((preds == 1) & (refs == 0)); fn = np.sum((preds == 0) & (refs == 1))  # noqa: E702
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert glue_metrics("cola", preds, refs) == pytest.approx({"mcc": mcc}, abs=1e-9)


def test_accuracy_f1_by_hand():
    refs = [1, 0, 1, 1, 0, 0, 1, 0]
    preds = [1, 1, 0, 1, 0, 0, 1, 1]
    tp, fp, fn = 3, 2, 1
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    f1 = 2 * precision * recall / (precision + recall)
    for name in ("mrpc", "qqp"):
        assert glue_metrics(name, preds, refs) == pytest.approx({"accuracy": 5 / 8, "f1": f1}, abs=1e-9)
    assert glue_metrics("rte", preds, refs) == pytest.approx({"accuracy": 5 / 8}, abs=1e-9)
    assert glue_metrics("mnli", [0, 1, 2, 2], [0, 2, 2, 1]) == pytest.approx({"accuracy": 0.5}, abs=1e-9)


def test_pearson_spearman_by_hand():
    x = np.array([0.5, 2.0, 1.0, 4.5, 3.0])
    y = np.array([1.0, 1.5, 0.5, 5.0, 2.5])
    xc, yc = x - x.mean(), y - y.mean()
    pearson = (xc * yc).sum() / math.sqrt((xc ** 2).sum() * (yc ** 2).sum())
    # no ties: Spearman = 1 - 6 Σd² / (n(n²-1)) on the ranks
    d = np.argsort(np.argsort(x)) - np.argsort(np.argsort(y))
    spearman = 1 - 6 * (d ** 2).sum() / (len(x) * (len(x) ** 2 - 1))
    assert glue_metrics("stsb", x, y) == pytest.approx({"pearson": pearson, "spearman": spearman}, abs=1e-9)
    assert glue_metrics("stsb", np.ones(5), y) == {"pearson": 0.0, "spearman": 0.0}  # constant: 0, not nan


# ---------------------------------------------------------------- errors
def test_unknown_task():
    with pytest.raises(ConfigError, match="unknown GLUE task 'wnli'; one of cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte"):
        make("wnli", None, raw=True)


def test_bad_sample_counts():
    with pytest.raises(ConfigError, match="max_train_samples"):
        make("rte", None, max_train_samples=0)


def test_missing_dirs(tmp_path, tok):
    with pytest.raises(DataError, match="does not exist"):
        make("rte", tmp_path / "nope").load(tok)
    with pytest.raises(DataError, match=r"looked for .*glue_data/RTE and .*/RTE"):
        make("rte", tmp_path).load(tok)
    (tmp_path / "RTE").mkdir()
    with pytest.raises(DataError, match=r"missing dev file .*RTE/dev\.tsv"):
        make("rte", tmp_path).load(tok)


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_malformed_tsv(tmp_path, tok, caplog):
    good = 'index\tsentence1\tsentence2\tlabel\n0\tA "quoted\tB.\tentailment\n1\tC\tD\tnot_entailment\n'
    write(tmp_path / "RTE" / "train.tsv", good)
    write(tmp_path / "RTE" / "dev.tsv", "index\tsentence1\tlabel\n0\tA\tentailment\n")
    with pytest.raises(DataError, match=r"RTE/dev\.tsv: missing columns \['sentence2'\]"):
        make("rte", tmp_path).load(tok)
    write(tmp_path / "RTE" / "dev.tsv", good + "2\tE\tF\tmaybe\n")
    with pytest.raises(DataError, match=r"dev\.tsv: line 4: label 'maybe' is not"):
        make("rte", tmp_path).load(tok)
    # rows with a wrong number of fields are skipped with a warning and counted, up to task.max_bad_rows
    # (1% by default: 1 of 3 stops the run, naming the file and line); quotes are plain text
    write(tmp_path / "RTE" / "dev.tsv", good + "2\tonly two\n")
    with pytest.raises(DataError, match=r"dev\.tsv: 1 of 3 rows are damaged \(a number of fields other than 4; "
                                        r"the first on line 4\), more than task.max_bad_rows=0.01"):
        make("rte", tmp_path).load(tok)
    task = make("rte", tmp_path, max_bad_rows=0.5)
    with caplog.at_level(logging.WARNING):
        task.load(tok)
    assert "skipped 1 of 3 rows" in caplog.text
    assert len(task.eval_datasets["dev"]) == 2
    assert task.data_report["dev"] == {"file": str(tmp_path / "RTE" / "dev.tsv"), "rows": 2, "skipped_rows": 1}
    assert '"' in tok.decode(task.train_dataset[0]["input_ids"])


def test_hub_failure_and_mapping(monkeypatch, tok):
    import datasets

    def offline(*a, **k):
        raise ConnectionError("no network")
    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"offline with no local copy\? pass data_dir="):
        make("rte", None).load(tok)

    def fake(name, task):
        assert (name, task) == ("nyu-mll/glue", "mnli")
        split = datasets.Dataset.from_dict({"premise": ["a b", "c"], "hypothesis": ["d", "e f"], "label": [0, 2]})
        return datasets.DatasetDict(train=split, validation_matched=split, validation_mismatched=split)
    monkeypatch.setattr(datasets, "load_dataset", fake)
    task = make("mnli", None)
    task.load(tok)
    assert sorted(task.eval_datasets) == ["matched", "mismatched"]
    assert [task.train_dataset[i]["labels"] for i in range(2)] == [0, 2]


# ---------------------------------------------------------------- evaluate() on a tiny random model
def tiny_model(task, tok):
    config = TINY_CONFIGS["bert"](len(tok))
    for k, v in task.model_kwargs().items():
        setattr(config, k, v)
    torch.manual_seed(0)
    return transformers.AutoModelForSequenceClassification.from_config(config)


@pytest.mark.parametrize("name,keys", [
    ("cola", {"mcc"}), ("mrpc", {"accuracy", "f1"}), ("rte", {"accuracy"}), ("stsb", {"pearson", "spearman"}),
])
def test_evaluate_tiny(tok, name, keys):
    task = make(name, DATA, max_train_samples=8, max_eval_samples=40)
    task.load(tok)
    model = tiny_model(task, tok)
    res = task.evaluate(model, Accelerator(cpu=True), batch_size=16)
    assert set(res) == keys | {"main"}
    assert res["main"] == res[task.main_metric]
    assert all(isinstance(v, float) and -1 <= v <= 1 for v in res.values())
    if name == "stsb":  # regression: one output, MSE loss on float labels
        assert model.config.problem_type == "regression" and model.config.num_labels == 1
        batch = task.collate([task.train_dataset[i] for i in range(4)])
        assert model(**batch).logits.shape == (4, 1)
        assert res["pearson"] != 0.0  # a random model's scores still vary


def test_evaluate_mnli(tmp_path, tok):
    task = make("mnli", mnli_with_mismatched(tmp_path))
    task.load(tok)
    res = task.evaluate(tiny_model(task, tok), Accelerator(cpu=True), batch_size=16)
    assert set(res) == {"matched_accuracy", "mismatched_accuracy", "main"}
    assert res["main"] == res["matched_accuracy"] == res["mismatched_accuracy"]
