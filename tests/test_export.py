"""Export round trips: a run trained through ``roloraexp.run.run`` (tiny RoBERTa, the shipped STS-B
slice) exported as a PEFT adapter (LoRA, DoRA or VeRA) and as a merged model; both, loaded by
transformers/peft in a process where roloraexp cannot be imported, give the logits of the run's own
model object (1e-5, fp32) on real dev sentences, and score on the run's dev set what its
results.json says.

STS-B because its score (Pearson) moves with every prediction: a random tiny model on a
classification task predicts one class, and a wrong export would score the same."""
import csv
import json
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from conftest import DATA, compose_config
from roloraexp import models
from roloraexp.adapters import adapters_of
from roloraexp.checkpoint import load_trainable_state
from roloraexp.export import INFO, export_run, load_export, score
from roloraexp.export.__main__ import main
from roloraexp.export.run_folder import read_run, rebuild_base
from roloraexp.run import run

FAST_ADALORA = ["sparsifier.t_init=0.2", "sparsifier.t_final=0.3", "sparsifier.delta_t=1"]
# Query/value (32 x 32) and the FFN input (32 -> 64): adapters of two shapes in one model.
TARGETS = "method.target_modules=[query,value,intermediate.dense]"
METHODS = {
    "lora": ["method=lora"],
    "adalora": ["method=adalora", "method.rank=4", *FAST_ADALORA],  # mixed ranks, sliced at T - t_f
    "rolora": ["method=rolora", "method.rank=4", *FAST_ADALORA],    # mixed ranks, some pruned to 0
    "weightlora": ["method=weightlora", "method.k=2", "method.select_steps=2"],  # K = 2 of n = 6
    "weightlora_plus": ["method=weightlora_plus", "method.k=2", "method.select_steps=2"],
    "dylora": ["method=dylora", "method.eval_ranks=[2]"],  # exported at r_max, the rank its metrics score
    "hydra": ["method=hydra"],                              # both branches as one LoRA + lora_bias
    "galore": ["method=galore", "method.update_proj_gap=2", "method.target_modules=[query,value]"],  # weights in place
    "dora": ["method=dora"],                                # PEFT's LoRA with use_dora: m as lora_magnitude_vector
    "vera": ["method=vera", "method.rank=16", "method.projection_seed=7"],  # one pair sliced for both shapes
    "dvora": ["method=dvora", "method.rank=16"],            # no PEFT form: merged by its own merge()
    "bitfit": ["method=bitfit"],                            # biases in place
    "full": ["method=full", "method.group_lr.backbone=5e-3"],  # every weight; 5e-3 so that 4 steps move them
}
EXPORTS = [("best", False), ("best", True), ("final", False), ("final", True)]
# No PEFT adapter: the model's own weights train (GaLore, BitFit, full), or PEFT has no form (DVoRA).
MERGED_ONLY = {"galore", "bitfit", "full", "dvora"}
NO_TARGETS = {"bitfit", "full"}  # no adapters, no method.target_modules

# Loads every export as a user without roloraexp would: transformers + peft, and export_info.json.
CLEAN_LOAD = """
import json, sys, torch
sys.modules["roloraexp"] = None  # any import of roloraexp now fails
import transformers
from peft import PeftModel
jobs, inputs = json.loads(open(sys.argv[1]).read()), torch.load(sys.argv[2])
for folder, out in jobs:
    info = json.load(open(folder + "/export_info.json"))
    auto = getattr(transformers, info["auto_class"])
    if info["format"] == "merged":
        model = auto.from_pretrained(folder)
    else:
        model = PeftModel.from_pretrained(auto.from_pretrained(info["base_model"], **info["base_model_kwargs"]), folder)
    with torch.no_grad():
        torch.save(model.eval()(**inputs).logits, out)
assert not [m for m, v in sys.modules.items() if m.split(".")[0] == "roloraexp" and v is not None]
"""


def config(method: str):
    return compose_config("model=tiny_roberta", "task=stsb", f"data_dir={DATA}", "logger=disabled", "trainer.max_steps=4",
                          "trainer.batch_size=8", "trainer.eval_every=2", "trainer.eval_batch_size=64", "trainer.lr=5e-3",
                          "task.max_train_samples=32", "task.max_eval_samples=64", "task.max_seq_length=48",
                          *([] if method in NO_TARGETS else [TARGETS]), *METHODS[method])


def exports_of(method: str):
    return [(which, merged) for which, merged in EXPORTS if merged or method not in MERGED_ONLY]


def dev_inputs(tokenizer) -> dict:
    """16 real STS-B dev pairs, padded as one batch."""
    with open(DATA / "glue_data" / "STS-B" / "dev.tsv") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[:16]
    return dict(tokenizer([r["sentence1"] for r in rows], [r["sentence2"] for r in rows], padding=True, truncation=True,
                          max_length=48, return_tensors="pt"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Per method: the run folder, its own model's logits (best and final weights), the base model as
    the run built it, and the four exports; then one clean process loads every export."""
    root = tmp_path_factory.mktemp("export")
    built, load_model = {}, models.load_model

    def spy(*args, **kwargs):  # the run's own model object, and its base weights before any adapter
        model, tok = load_model(*args, **kwargs)
        built.update(model=model, tokenizer=tok, base={k: v.clone() for k, v in model.state_dict().items()})
        return model, tok

    out, jobs = {}, []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(models, "load_model", spy)
        for method in METHODS:
            res = run(config(method), root / method)
            assert res["status"] == "completed", res.get("error")
            model, inputs = built["model"].eval(), dev_inputs(built["tokenizer"])
            for a in adapters_of(model).values():  # DyLoRA: the rank its metrics score (r_max), as in its evaluate()
                if hasattr(a, "set_active_rank"):
                    a.set_active_rank(a.rank)
            with torch.no_grad():
                logits = {"final": model(**inputs).logits}
                load_trainable_state(model, torch.load(root / method / "best_trainable.pt"))
                logits["best"] = model(**inputs).logits
            folders = {}
            for which, merged in exports_of(method):
                folder = root / f"{method}_{which}{'_merged' if merged else ''}"
                export_run(root / method, folder, which, merged)
                folders[which, merged] = folder
                jobs.append((str(folder), str(folder / "logits.pt")))
            out[method] = dict(run_dir=root / method, result=res, logits=logits, base=built["base"], folders=folders)
    torch.save(inputs, root / "inputs.pt")
    (root / "jobs.json").write_text(json.dumps(jobs))
    proc = subprocess.run([sys.executable, "-I", "-c", CLEAN_LOAD, str(root / "jobs.json"), str(root / "inputs.pt")],
                          cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.parametrize("method", METHODS)
def test_exports_give_the_run_models_logits_and_scores(exported, method):
    e = exported[method]
    for (which, merged), folder in e["folders"].items():
        got = torch.load(folder / "logits.pt")
        torch.testing.assert_close(got, e["logits"][which], atol=1e-5, rtol=0, msg=f"{which} merged={merged}")
        expected = e["result"]["best_metrics" if which == "best" else "metrics"]
        metrics = score(load_export(folder), read_run(e["run_dir"], which).cfg)
        # 1e-4: the tiny model's predictions spread by ~1e-4, so float rounding (merged weights) moves
        # Pearson by ~1e-5; a wrong base model or adapter moves it by 1e-2 and more.
        assert metrics["main"] == pytest.approx(expected["main"], abs=1e-4), (which, merged)


@pytest.mark.parametrize("method", [m for m in METHODS if m not in MERGED_ONLY | {"vera"}])
def test_peft_config_carries_the_runs_ranks_and_nothing_of_roloraexp(exported, method):
    e = exported[method]
    folder = e["folders"]["final", False]
    text = (folder / "adapter_config.json").read_text()
    assert "roloraexp" not in text
    cfg = json.loads(text)
    ranks = {n: cfg["rank_pattern"].get(n, cfg["r"]) for n in cfg["target_modules"]}
    live = {n: r for n, r in e["result"]["ranks"].items() if r > 0}  # the final ranks the run reports
    assert ranks == live
    assert cfg["modules_to_save"] == ["classifier", "score"] and cfg["task_type"] == "SEQ_CLS"
    info = json.loads((folder / INFO).read_text())
    assert set(info["left_out"]) == set(e["result"]["ranks"]) - set(live)
    if method == "weightlora":
        assert len(ranks) == 2 and len(info["left_out"]) == 4
    if method in ("adalora", "rolora", "weightlora_plus"):
        assert len(set(ranks.values())) > 1 and cfg["rank_pattern"]
    assert cfg["lora_bias"] == (method == "hydra")  # Hydra's sequential branch changes the bias
    assert cfg["use_dora"] == (method == "dora")
    if method in ("lora", "dora"):  # one rank, one scaling: LoRA's own config, no patterns
        assert (cfg["r"], cfg["lora_alpha"], cfg["rank_pattern"], cfg["alpha_pattern"]) == (8, 16, {}, {})
    omega, run_cfg = e["result"].get("omega"), e["result"]["config"]["method"]
    for name in ranks if omega else ():  # ω folded into the scaling: alpha / r = (alpha / r0) · ω
        alpha = cfg["alpha_pattern"].get(name, cfg["lora_alpha"])
        assert alpha / ranks[name] == pytest.approx(run_cfg["alpha"] / run_cfg["rank"] * omega[name], rel=1e-9)


def test_dora_exports_its_magnitudes_and_vera_the_runs_projection(exported):
    """DoRA's m is PEFT's lora_magnitude_vector, one per adapter, as trained; VeRA's config draws the
    run's pair (its seed and rank, every adapter a target) and the folder stores it."""
    from safetensors.torch import load_file

    from roloraexp.adapters.vera import SharedProjection

    dora = exported["dora"]
    saved = load_file(dora["folders"]["final", False] / "adapter_model.safetensors")
    state = torch.load(dora["run_dir"] / "final_trainable.pt")
    magnitudes = {k.removeprefix("base_model.model.").removesuffix(".lora_magnitude_vector"): v
                  for k, v in saved.items() if k.endswith(".lora_magnitude_vector")}
    assert set(magnitudes) == set(dora["result"]["ranks"])
    for name, m in magnitudes.items():
        torch.testing.assert_close(m, state[f"{name}.magnitude"], rtol=0, atol=0)

    vera = exported["vera"]
    folder = vera["folders"]["final", False]
    cfg = json.loads((folder / "adapter_config.json").read_text())
    assert (cfg["peft_type"], cfg["r"], cfg["projection_prng_key"], cfg["save_projection"]) == ("VERA", 16, 7, True)
    assert sorted(cfg["target_modules"]) == sorted(vera["result"]["ranks"])  # none left out: the pair's shape
    assert cfg["modules_to_save"] == ["classifier", "score"] and cfg["task_type"] == "SEQ_CLS"
    saved = load_file(folder / "adapter_model.safetensors")
    ours = SharedProjection(16, 32, 64, seed=7)  # tiny RoBERTa: largest d_in 32, d_out 64 (intermediate.dense)
    assert torch.equal(saved["base_model.vera_A"], ours.A) and torch.equal(saved["base_model.vera_B"], ours.B)


def test_vera_without_save_projection_is_redrawn_by_peft(exported, tmp_path):
    """With method.save_projection=false the folder holds d and b only, and PEFT draws the pair again
    from projection_prng_key on load: the run's logits all the same."""
    e = exported["vera"]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    results = json.loads((e["run_dir"] / "results.json").read_text())
    results["config"]["method"]["save_projection"] = False  # the run's weights do not depend on it
    (run_dir / "results.json").write_text(json.dumps(results))
    (run_dir / "final_trainable.pt").write_bytes((e["run_dir"] / "final_trainable.pt").read_bytes())
    with pytest.warns(UserWarning, match="PRNG"):  # PEFT's own warning, on save and on load
        export_run(run_dir, tmp_path / "out", "final")
        model = load_export(tmp_path / "out")
    from safetensors.torch import load_file

    assert not [k for k in load_file(tmp_path / "out" / "adapter_model.safetensors") if "vera_A" in k or "vera_B" in k]
    with torch.no_grad():
        got = model(**torch.load(e["folders"]["final", False].parent / "inputs.pt")).logits
    torch.testing.assert_close(got, e["logits"]["final"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", METHODS)
def test_tiny_base_model_is_rebuilt_exactly(exported, method):
    """The export rebuilds a tiny (random) model by replaying the run's seed: bit for bit the model
    run() built. A change to run() that draws a random number before load_model breaks this."""
    rebuilt = rebuild_base(read_run(exported[method]["run_dir"])).model.state_dict()
    base = exported[method]["base"]
    assert rebuilt.keys() == base.keys()
    assert all(torch.equal(rebuilt[k], base[k]) for k in base)


def test_cli_check_and_one_line_errors(exported, tmp_path, capsys):
    run_dir = exported["rolora"]["run_dir"]
    assert main([str(run_dir), str(tmp_path / "m"), "--merged", "--check"]) == 0
    out = capsys.readouterr().out
    assert "merged" in out and "check: pearson" in out
    # an earlier export is replaced only with --force; a folder that is not one never
    assert main([str(run_dir), str(tmp_path / "m")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert main([str(run_dir), str(tmp_path / "m"), "--force"]) == 0
    # data missing at the check: the export is written, and the error says how to check it again
    assert main([str(run_dir), str(tmp_path / "x"), "--check", "--data-dir", str(tmp_path / "nodata")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "--check --data-dir PATH --force" in err and err.count("\n") == 1
    assert (tmp_path / "x" / "adapter_config.json").is_file()
    assert (tmp_path / "m" / "adapter_config.json").is_file() and not (tmp_path / "m" / "model.safetensors").exists()
    assert main([str(run_dir), str(run_dir), "--force"]) == 2 and "not an earlier export" in capsys.readouterr().err
    for method in ("galore", "bitfit", "full"):
        assert main([str(exported[method]["run_dir"]), str(tmp_path / "g")]) == 2
        assert "trains the model's own weights" in capsys.readouterr().err
    assert main([str(exported["dvora"]["run_dir"]), str(tmp_path / "d")]) == 2  # DoRA's m over VeRA's pair
    err = capsys.readouterr().err
    assert "PEFT has no form for adapters of class DVoRALinear" in err and "--merged" in err and err.count("\n") == 1

    def fails_with(folder, message):
        assert main([str(folder), str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err

    bad = tmp_path / "bad"
    fails_with(bad, "is not a folder")
    bad.mkdir()
    fails_with(bad, "holds no results.json")
    results = json.loads((run_dir / "results.json").read_text())
    (bad / "results.json").write_text(json.dumps(results))
    fails_with(bad, "holds no best_trainable.pt (the run was made with trainer.save_adapters=false)")
    (bad / "best_trainable.pt").write_bytes(b"not a checkpoint")
    fails_with(bad, "cannot read")
    (bad / "best_trainable.pt").write_bytes((run_dir / "best_trainable.pt").read_bytes())
    results["config"]["method"]["_target_"] = "roloraexp.methods.nosuch.Method"
    (bad / "results.json").write_text(json.dumps(results))
    fails_with(bad, "cannot import roloraexp.methods.nosuch.Method")
    # bottleneck adapters are not linear in x: no LoRA holds them
    hadapter = OmegaConf.to_container(compose_config("method=hadapter"), resolve=True)
    results["config"].update(method=hadapter["method"], sparsifier=hadapter["sparsifier"])
    (bad / "results.json").write_text(json.dumps(results))
    fails_with(bad, "no PEFT export for adapters of class BottleneckAdapter")
    assert not (tmp_path / "out").exists()  # nothing written by a failed export


@pytest.mark.parametrize("rslora", [False, True])
def test_lora_factors_fold_gates_omega_and_its_sign(rslora):
    """PEFT's (alpha / r)·B'A' (alpha / √r with rsLoRA) is the adapter's s·ω·B diag(g) A, at the rank of
    its non-zero gates; a negative ω's sign goes into B."""
    from roloraexp.adapters import LowRankLinear
    from roloraexp.export.forms import lora_factors

    torch.manual_seed(0)
    adapter = LowRankLinear(torch.nn.Linear(12, 10), rank=6, alpha=8, gate=True, omega=True, rslora=rslora)
    with torch.no_grad():
        adapter.lora_B.normal_()
        adapter.gate.copy_(torch.tensor([0.5, 0.0, -1.5, 2.0, 0.0, 1.0]))
        adapter.omega.fill_(-0.7)
    state = {f"a.{k}": getattr(adapter, k).detach().clone() for k in ("lora_A", "lora_B", "gate", "omega")}
    f = lora_factors("a", adapter, state, OmegaConf.create({"rslora": rslora}), adapter.base)
    assert f.rank == 4 and f.alpha > 0
    scaling = f.alpha / (f.rank ** 0.5 if rslora else f.rank)
    torch.testing.assert_close(scaling * f.B @ f.A, adapter.delta_weight().detach(), atol=1e-6, rtol=1e-6)
    assert lora_factors("a", adapter, {**state, "a.omega": torch.tensor(0.0)}, OmegaConf.create({}), adapter.base) == "ω = 0"
    empty = {**state, "a.lora_A": state["a.lora_A"][:0], "a.lora_B": state["a.lora_B"][:, :0], "a.gate": state["a.gate"][:0]}
    assert lora_factors("a", adapter, empty, OmegaConf.create({}), adapter.base) == "rank 0"
