"""trainer.amp_mode: bf16 without autocast (weights cast once per forward, roloraexp/precision.py)
trains every method with autocast's numbers within bf16 rounding, its gradients reach the fp32
masters, and the methods that need fp32 factors (DoRA, DVoRA) keep autocast."""
import pytest
import torch

from conftest import REPO, smoke
from roloraexp.errors import ConfigError
from roloraexp.run import run

METHODS = sorted(p.stem for p in (REPO / "conf" / "method").glob("*.yaml"))
EXTRA = {"rlora": ["method.k=2"], "weightlora": ["method.k=2"], "weightlora_plus": ["method.k=2", "method.select_steps=3"]}
AUTOCAST_ONLY = {"dora", "dvora"}
BF16 = ["trainer.precision=bf16", "trainer.max_steps=6", "trainer.log_every=1",
        "+model.config_overrides.hidden_dropout_prob=0.0", "+model.config_overrides.attention_probs_dropout_prob=0.0"]


@pytest.mark.parametrize("method", METHODS)
def test_cast_trains_as_autocast_within_bf16_rounding(tmp_path, method):
    over = (f"method={method}", *BF16, *EXTRA.get(method, []))
    autocast = run(smoke(*over, "trainer.amp_mode=autocast"), tmp_path / "autocast")
    default = run(smoke(*over), tmp_path / "default")
    assert autocast["status"] == default["status"] == "completed", default.get("error") or autocast.get("error")
    assert autocast["amp_mode"] == "autocast"
    assert default["amp_mode"] == ("autocast" if method in AUTOCAST_ONLY else "cast")
    # Cast keeps the residual stream and layer norms in bf16 where autocast keeps fp32: the losses
    # differ by about one bf16 ulp at 0.69 (2^-8), never by a training difference.
    losses = [c["loss"] for c in autocast["train_curve"]]
    assert [c["loss"] for c in default["train_curve"]] == pytest.approx(losses, rel=2e-2)
    assert default.get("ranks") == autocast.get("ranks")
    fp32 = run(smoke(*over[:1], *BF16[1:], *EXTRA.get(method, [])), tmp_path / "fp32")
    assert fp32["amp_mode"] == "none"


def tiny_lora(dtype_frozen=torch.bfloat16):
    import transformers

    from roloraexp.adapters.layer import LowRankLinear

    torch.manual_seed(0)
    cfg = transformers.RobertaConfig(vocab_size=200, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, pad_token_id=0, num_labels=2, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0, problem_type="single_label_classification")
    model = transformers.AutoModelForSequenceClassification.from_config(cfg)
    model.requires_grad_(False)
    for layer in model.roberta.encoder.layer:
        attn = layer.attention.self
        attn.query, attn.value = LowRankLinear(attn.query, 4, 8), LowRankLinear(attn.value, 4, 8)
        for a in (attn.query, attn.value):
            torch.nn.init.normal_(a.lora_B, std=0.05)
    model.classifier.requires_grad_(True)
    model.classifier.amp_fp32_output = True
    return model


def test_cast_gradients_land_on_fp32_masters_and_match_autocast():
    from roloraexp.precision import CastForward
    from roloraexp.precision import hold_frozen_in

    ids = torch.randint(3, 200, (4, 16))
    batch = dict(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.tensor([0, 1, 1, 0]))
    grads = {}
    for mode in ("autocast", "cast"):
        model = tiny_lora()
        hold_frozen_in(model, torch.bfloat16)
        cast = CastForward(model, torch.bfloat16)
        with torch.autocast("cpu", torch.bfloat16) if mode == "autocast" else cast():
            out = model(**batch)
        assert out.loss.dtype == torch.float32  # the head hands on fp32 logits: the loss is fp32
        out.loss.backward()
        trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in trainable.values())
        assert all(isinstance(p, torch.nn.Parameter) for p in model.parameters())  # the masters are back
        grads[mode] = {n: p.grad for n, p in trainable.items()}
    for n, g in grads["autocast"].items():
        assert grads["cast"][n].norm() > 0
        torch.testing.assert_close(grads["cast"][n], g, rtol=0.1, atol=1e-3 * g.abs().max().item())


def test_amp_mode_cast_refused_for_dora_in_one_line(tmp_path):
    result = run(smoke("method=dora", "trainer.precision=bf16", "trainer.amp_mode=cast"), tmp_path)
    assert result["status"] == "failed" and "amp_mode" in result["error"] and "\n" not in result["error"]


def test_a_bad_amp_mode_is_one_line_before_any_work(tmp_path):
    result = run(smoke("trainer.amp_mode=fast"), tmp_path)
    assert result["status"] == "failed" and result["error"].startswith("trainer.amp_mode must be")
    with pytest.raises(ConfigError):
        from roloraexp.precision import resolve_amp_mode

        resolve_amp_mode("fast", "bf16", torch.nn.Linear(2, 2))


@pytest.mark.parametrize("model", ["tiny_deberta", "tiny_llama", "tiny_bart"])
def test_bf16_default_trains_every_architecture(tmp_path, model):
    """DeBERTa's pooler feeds its classifier (only the logits leave in fp32), Llama's score head, BART's
    classification head: bf16's default (cast) trains each."""
    result = run(smoke(f"model={model}", "trainer.precision=bf16", "trainer.max_steps=2"), tmp_path)
    assert result["status"] == "completed", result.get("error")
    assert result["amp_mode"] == "cast"


def test_gradient_checkpointing_keeps_autocast(tmp_path):
    """The checkpointed forward is recomputed in the backward pass, after the cast copies are gone."""
    over = ("trainer.precision=bf16", "trainer.max_steps=2", "trainer.gradient_checkpointing=true")
    result = run(smoke(*over), tmp_path / "auto")
    assert result["status"] == "completed" and result["amp_mode"] == "autocast", result.get("error")
    refused = run(smoke(*over, "trainer.amp_mode=cast"), tmp_path / "cast")
    assert refused["status"] == "failed" and "gradient checkpointing" in refused["error"]
