"""The config's one schema: every base setting of the run, the trainer, the task, the model and the
method, as a dataclass field with its type, its range and whether it changes what a run computes.

``check(cfg)`` checks a composed config against it before any data or model is read; every mistake
is one line naming the key (``trainer.lr must be a number > 0, got -1``), which the run prints and
records in results.json. Task and Method check their own section with ``check_section`` when they
are built, so a task or method made outside a run (tests, the cost estimate) is held to the same
rules. A new trainer setting is one field of ``TrainerConfig`` and one line of
``conf/trainer/default.yaml`` (tests/test_config_schema.py checks that both name the same keys with
the same defaults); ``identity=False`` marks settings a resumed run may change (``IGNORED``, ``config_identity``: what
makes two runs the same run).

The schema is checked here rather than registered in Hydra's ConfigStore: a type error caught while
Hydra composes would stop the command with Hydra's multi-line message and no results.json, where a
check in the run gives the same one line as a range error and a ``failed`` results.json. Method- and
task-specific options (AdaLoRA's budget, SQuAD's doc_stride, ...) stay beside the code that uses them.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from .errors import ConfigError, is_int, is_number


@dataclass(frozen=True)
class Rule:
    """What values a setting takes. ``kind``: int | number | flag | choice | any."""
    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False        # low itself excluded
    high_open: bool = False       # high itself excluded
    nullable: bool = False
    choices: tuple = ()
    auto: bool = False            # "auto" is also accepted (int settings)
    message: str = ""             # the whole "must be ..." text, where the generic one would mislead
    identity: bool = True         # changes what the run computes (a resume must keep it)

    def accepts(self, v) -> bool:
        if self.kind == "any":
            return True
        if v is None:
            return self.nullable
        if self.auto and v == "auto":
            return True
        if self.kind == "flag":
            return isinstance(v, bool)
        if self.kind == "choice":
            return any(v == c and type(v) is type(c) for c in self.choices)
        if self.kind in ("int", "number"):
            if not (is_int(v) if self.kind == "int" else is_number(v)):
                return False
            below = self.low is not None and (v <= self.low if self.low_open else v < self.low)
            above = self.high is not None and (v >= self.high if self.high_open else v > self.high)
            return not below and not above
        return True

    def must_be(self) -> str:
        if self.message:
            return self.message
        if self.kind == "flag":
            return "true or false"
        if self.kind == "choice":
            names = [str(c).lower() if isinstance(c, bool) else str(c) for c in self.choices]
            return f"one of {', '.join(names)}" if len(names) > 3 else f"{', '.join(names[:-1])} or {names[-1]}"
        noun = "an integer" if self.kind == "int" else "a number"
        if self.low is not None and self.high is not None:
            text = f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
            text = text if self.kind == "number" else f"{noun} {text}"
        else:
            text = f"{noun} {'>' if self.low_open else '>='} {self.low:g}" if self.low is not None else noun
        text = f"auto or {text}" if self.auto else text
        return f"{text} (or null)" if self.nullable else text


def setting(default: Any, rule: Rule):
    return field(default=default, metadata={"rule": rule})


INT_GE1, INT_GE0 = Rule("int", low=1), Rule("int", low=0)
FLAG = Rule("flag")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
AMP_MODES = ("auto", "autocast", "cast")


@dataclass
class TrainerConfig:
    """``trainer``: the loop (roloraexp/train.py); defaults as conf/trainer/default.yaml."""
    epochs: int = setting(3, Rule("int", low=0, nullable=True))
    max_steps: int = setting(0, Rule("int", low=0, nullable=True))
    batch_size: int = setting(32, INT_GE1)
    eval_batch_size: int = setting(64, INT_GE1)
    grad_accum: int = setting(1, INT_GE1)
    group_by_length: bool = setting(False, FLAG)
    lr: float = setting(5.0e-4, Rule("number", low=0, low_open=True))
    weight_decay: float = setting(0.0, Rule("number", low=0, nullable=True))
    warmup_ratio: float = setting(0.06, Rule("number", low=0, high=1, message="in [0, 1] "
                                             "(trainer.warmup_steps takes a number of steps)"))
    warmup_steps: int | None = setting(None, Rule("int", low=0, nullable=True,
                                                  message="an integer >= 0 (or null to use warmup_ratio)"))
    max_grad_norm: float = setting(1.0, Rule("number", low=0, nullable=True))
    precision: str = setting("fp32", Rule("choice", choices=("fp32", "fp16", "bf16")))
    amp_mode: str = setting("auto", Rule("choice", choices=AMP_MODES))
    gradient_checkpointing: bool = setting(False, FLAG)
    compile: Any = setting("auto", Rule("choice", choices=("auto", True, False)))
    compile_backend: str = setting("inductor", Rule("any"))
    compile_mode: str = setting("default", Rule("choice", choices=COMPILE_MODES))
    pad_buckets: Any = setting(None, Rule("any"))  # null | auto | [widths]: check_buckets below
    device: str = setting("auto", Rule("choice", choices=("auto", "cpu", "cuda")))
    eval_every: int = setting(0, Rule("int", low=0, nullable=True))
    log_every: int = setting(10, INT_GE1)
    num_workers: Any = setting("auto", Rule("int", low=0, auto=True, identity=False))
    save_adapters: bool = setting(True, Rule("flag", identity=False))
    resume: str = setting("auto", Rule("any", identity=False))  # auto | never | a path: checkpoint.resolve_checkpoint
    checkpoint_every: int | None = setting(None, Rule("int", low=0, nullable=True, identity=False, message=(
        "null (every evaluation), 0 (never) or a number of steps")))
    checkpoint_minutes: float = setting(10, Rule("number", low=0, nullable=True, identity=False))
    keep_checkpoint: bool = setting(False, FLAG)


@dataclass
class TaskConfig:
    """``task``: the settings every task reads when it has them (a task's own options beside its code)."""
    max_seq_length: int | None = setting(None, Rule("int", low=1, nullable=True))
    max_source_length: int | None = setting(None, Rule("int", low=1, nullable=True))
    max_target_length: int | None = setting(None, Rule("int", low=1, nullable=True))
    gen_max_length: int | None = setting(None, Rule("int", low=1, nullable=True))
    num_beams: int | None = setting(None, Rule("int", low=1, nullable=True))
    doc_stride: int | None = setting(None, Rule("int", low=1, nullable=True))
    n_best: int | None = setting(None, Rule("int", low=1, nullable=True))
    max_answer_length: int | None = setting(None, Rule("int", low=1, nullable=True))
    max_train_samples: int | None = setting(None, Rule("int", low=1, nullable=True))
    max_eval_samples: int | None = setting(None, Rule("int", low=1, nullable=True))
    train_from_dev: bool = setting(False, FLAG)
    # The fraction of a split's rows that may be skipped as damaged (tasks/data_files.py).
    max_bad_rows: float = setting(0.01, Rule("number", low=0, high=1, nullable=True, identity=False,
                                             message="a fraction of a split's rows in [0, 1]"))


@dataclass
class ModelConfig:
    dtype: str = setting("fp32", Rule("choice", choices=("fp32", "bf16", "fp16")))
    tiny: bool = setting(False, FLAG)


@dataclass
class MethodConfig:
    """``method``: the base settings (a method's own options are checked by its class)."""
    alpha: float | None = setting(None, Rule("number", low=0, low_open=True, nullable=True, message="a number > 0"))
    dropout: float = setting(0.0, Rule("number", low=0, high=1, high_open=True))
    rslora: bool = setting(False, FLAG)
    allocate: bool = setting(True, FLAG)
    frozen: bool = setting(False, FLAG)
    save_projection: bool = setting(True, FLAG)
    train_all: bool = setting(True, FLAG)
    omega_clip: bool = setting(False, FLAG)


@dataclass
class SparsifierConfig:
    threshold_times_lr: bool = setting(False, FLAG)


@dataclass
class RunConfig:
    """The top level."""
    seed: int = setting(1, Rule("int", low=0, high=2**32 - 1, message="an integer in [0, 2**32 - 1]"))


SECTIONS = {"": RunConfig, "trainer": TrainerConfig, "task": TaskConfig, "model": ModelConfig,
            "method": MethodConfig, "sparsifier": SparsifierConfig}


def rules(schema) -> dict[str, Rule]:
    return {f.name: f.metadata["rule"] for f in fields(schema)}


def check_section(cfg, section: str) -> None:
    """Every setting of ``cfg`` (one section) that the schema names, against its rule."""
    if cfg is None:
        return
    for key, rule in rules(SECTIONS[section]).items():
        if key not in cfg:
            continue
        v = cfg.get(key)
        if not rule.accepts(v):
            name = f"{section}.{key}" if section else key
            raise ConfigError(f"{name} must be {rule.must_be()}, got {v!r}")


def check(cfg) -> None:
    """The whole composed config: each section's settings, then the rules that join two of them."""
    for section in SECTIONS:
        check_section(cfg if not section else cfg.get(section), section)
    t = cfg.trainer
    if not (t.max_steps and t.max_steps > 0) and not (t.epochs and t.epochs > 0):
        raise ConfigError(f"the run has no steps: trainer.epochs={t.epochs} and trainer.max_steps={t.max_steps}; "
                          f"set one of them above 0")
    check_buckets(t.get("pad_buckets"))
    if cfg.model.get("dtype", "fp32") != "fp32" and t.precision == "fp32":
        raise ConfigError(f"model.dtype={cfg.model.dtype} loads the frozen weights in half precision, which "
                          f"needs autocast: set trainer.precision=bf16 (or fp16 on CUDA)")


def check_buckets(setting) -> None:
    """``trainer.pad_buckets`` is None, "auto" or a non-empty list of positive ints (``check`` and
    tasks/collate.resolve_buckets)."""
    if setting is None or setting == "auto":
        return
    if isinstance(setting, str) or not hasattr(setting, "__iter__"):
        raise ConfigError(f"trainer.pad_buckets must be null, auto or a list of positive integers, got {setting!r}")
    values = list(setting)
    if not values or any(not is_int(v) or v < 1 for v in values):
        raise ConfigError(f"trainer.pad_buckets must be null, auto or a list of positive integers, got {values!r}")


def not_identity() -> tuple[str, ...]:
    """Dotted keys of the settings a resumed run may change (they do not change what it computes)."""
    return tuple(f"{section}.{key}" for section, schema in SECTIONS.items() if section
                 for key, rule in rules(schema).items() if not rule.identity)


# ---------------------------------------------------------------------------- a config's identity
# Settings that do not change what a run computes: a resumed run may change them, and a completed
# run of the same identity is not run again (the schema's identity=False settings and these sections).
IGNORED = (*not_identity(), "logger.", "data_dir", "hydra.", "table")


def config_identity(cfg) -> dict[str, object]:
    """The resolved config as flat ``dotted.key -> value``, without the settings in IGNORED."""
    if not isinstance(cfg, dict):
        from omegaconf import OmegaConf

        cfg = OmegaConf.to_container(cfg, resolve=True)
    return {k: v for k, v in flatten(cfg).items() if not any(k == i or k.startswith(i) for i in IGNORED)}


def flatten(node, prefix: str = "") -> dict[str, object]:
    """A nested dict as ``dotted.key -> leaf value``."""
    if not isinstance(node, dict):
        return {prefix[:-1]: node}
    flat: dict[str, object] = {}
    for k, v in node.items():
        flat.update(flatten(v, f"{prefix}{k}."))
    return flat


def differences(mine: dict, theirs: dict) -> str:
    """The first settings in which two config identities differ, as one phrase ("" when none)."""
    differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k, "<unset>") != theirs.get(k, "<unset>"))
    shown = ", ".join(f"{k}: {theirs.get(k, '<unset>')!r} there, {mine.get(k, '<unset>')!r} here" for k in differ[:3])
    return shown + (f" (+{len(differ) - 3} more)" if len(differ) > 3 else "")
