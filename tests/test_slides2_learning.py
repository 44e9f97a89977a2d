"""Real learning of the slides' methods (part 2) on the real pretrained MiniLM-L6 and the SST-2 slice,
each beside LoRA on one shared recipe (same steps, batch, sequence length, data, seed): the accuracy
and seconds of every run are printed (pytest -s) for the comparison in the README."""
import time

import pytest

from conftest import DATA, compose_config
from roloraexp.run import run

RECIPE = ("model=minilm", "task=sst2", f"data_dir={DATA}", "logger=disabled", "trainer.max_steps=60",
          "trainer.batch_size=32", "task.max_seq_length=48", "task.max_train_samples=1920",
          "task.max_eval_samples=400", "trainer.save_adapters=false", "trainer.warmup_ratio=0.06")

# The method's own knobs; the lr is each family's usual one (LoRA-style adapters 2e-3, GaLore
# trains every weight, so a full fine-tuning lr).
# LoRA on this recipe reaches 0.7375 (tests/test_run.py has its learning test; not run a third time).
METHODS = {
    "dylora": ("method=dylora", "trainer.lr=2e-3", "method.eval_ranks=[1,4]"),
    # Frozen trains one component per step: with r_max = 8 each gets ~7 updates in 60 steps and the model
    # stays at chance (0.5175 at every rank, measured); r_max = 4 and a larger lr learn.
    "dylora_frozen": ("method=dylora", "method.frozen=true", "method.r_max=4", "trainer.lr=5e-3",
                      "method.eval_ranks=[1,2]"),
    "hydra": ("method=hydra", "trainer.lr=2e-3"),
    "galore": ("method=galore", "trainer.lr=1e-4", "method.update_proj_gap=20"),
    # Length-grouped batches (half the tokens computed) where they learn as well as shuffled ones:
    # measured 0.73 and 0.7625 grouped (0.77 / 0.7525 shuffled). DyLoRA, Hydra and GaLore learn less
    # in 60 grouped steps (0.60, 0.65, 0.56), so they keep shuffled batches.
    "hadapter": ("method=hadapter", "trainer.lr=2e-3", "trainer.group_by_length=true"),
    "padapter": ("method=padapter", "trainer.lr=2e-3", "trainer.group_by_length=true"),
}


@pytest.mark.parametrize("name", list(METHODS))
def test_minilm_learns_sst2(tmp_path, name):
    start, cpu = time.time(), time.process_time()
    res = run(compose_config(*RECIPE, *METHODS[name]), tmp_path)
    seconds, cpu = time.time() - start, time.process_time() - cpu  # CPU seconds: less sensitive to a busy machine
    assert res["status"] == "completed", res.get("error")
    print(f"\n{name}: accuracy {res['metrics']['accuracy']:.4f}, {seconds:.1f} s wall, {cpu:.1f} s CPU, "
          f"{res['trainable_params']:,} trainable parameters")
    # Clearly above chance: 0.62 is 4.8 standard deviations of a coin over the 400 examples. (LoRA reaches
    # 0.74 on this recipe; Hydra, on 6 FFN layers only, 0.67.)
    assert res["metrics"]["accuracy"] > 0.62, res["metrics"]
