"""Large models: Llama-3-8B's shape built in code for measurements without a download, half-precision
frozen weights on every loading path, and such a model (scaled down to run on CPU) through the run
with gradient checkpointing and bf16."""
import pytest
import torch
import transformers
from omegaconf import OmegaConf

from conftest import DATA, REPO, compose_config
from roloraexp.models import load_model, load_tokenizer, model_config
from roloraexp.run import run
from roloraexp.tasks import build_task

# Llama-3-8B's parameter count (meta-llama/Meta-Llama-3-8B, LlamaForCausalLM).
LLAMA3_8B_PARAMS = 8_030_261_248
# The same architecture at a size that runs on CPU in a second.
SMALL = ["model.config_overrides.vocab_size=30522", "model.config_overrides.hidden_size=64",
         "model.config_overrides.intermediate_size=128", "model.config_overrides.num_hidden_layers=2",
         "model.config_overrides.num_attention_heads=4", "model.config_overrides.num_key_value_heads=2",
         "model.config_overrides.head_dim=16"]


def test_llama3_8b_shape_is_llama3_8b():
    cfg = OmegaConf.load(REPO / "conf" / "model" / "llama3_8b_shape.yaml")
    config = model_config(cfg, load_tokenizer(cfg))
    with torch.device("meta"):  # no memory: the count only
        model = transformers.AutoModelForCausalLM.from_config(config)
    assert sum(p.numel() for p in model.parameters()) == LLAMA3_8B_PARAMS
    assert config.rope_parameters["rope_theta"] == 500000.0 and config.num_key_value_heads == 8


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_roberta"])
def test_model_dtype_holds_frozen_weights_in_half_precision_and_heads_in_fp32(model):
    cfg = compose_config(f"model={model}", "task=rte", f"data_dir={DATA}", "model.dtype=bf16")
    tokenizer = load_tokenizer(cfg.model)
    built, _ = load_model(cfg.model, build_task(cfg), tokenizer)
    dtypes = {p.dtype for p in built.parameters() if not p.requires_grad}
    assert dtypes == {torch.bfloat16}
    assert {p.dtype for p in built.parameters() if p.requires_grad} == {torch.float32}  # the head


def test_llama3_8b_shape_scaled_down_runs_table3_with_checkpointing_in_bf16(tmp_path):
    """The README's measurement command (WeightLoRA Table 3's RTE settings on the 8B shape), scaled
    down: the experiment's bf16 weights, its seven adapter targets and gradient checkpointing."""
    res = run(compose_config("experiment=weightlora/llama3_8b/rte", "method=weightlora", "model=llama3_8b_shape", *SMALL,
                             f"data_dir={DATA}", "logger=disabled", "trainer.gradient_checkpointing=true",
                             "trainer.max_steps=4", "trainer.batch_size=2", "task.max_train_samples=32",
                             "task.max_eval_samples=8", "method.select_steps=2", "method.k=3"), tmp_path)
    assert res["status"] == "completed", res.get("error")
    assert res["config"]["model"]["dtype"] == res["config"]["trainer"]["precision"] == "bf16"
    assert len(res["ranks"]) == 2 * 7 and res["active_adapters"] == 3 and res["steps"] == 4
    speed = res["throughput"]  # 4 steps of 2 micro-batches of 2
    assert speed["train_examples"] == 16 and 16 < speed["train_tokens"] <= 16 * 128
    assert speed["tokens_per_s"] == pytest.approx(speed["train_tokens"] / speed["train_seconds"], rel=1e-2)


def test_bad_model_dtype_is_one_line(tmp_path):
    res = run(compose_config("model=tiny_roberta", "task=rte", f"data_dir={DATA}", "logger=disabled",
                             "model.dtype=bf17"), tmp_path)
    assert res["status"] == "failed" and res["error"] == "model.dtype must be fp32, bf16 or fp16, got 'bf17'"
