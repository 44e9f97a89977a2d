"""The seam between a method and the training loop.

The loop never knows which method runs; a method never owns the loop. The loop calls, in order:

    method.prepare(model, target_names)              inject adapters
    for phase in range(method.num_phases):
        method.on_phase_start(ctx)                   may resize / reload; the loop then builds a fresh optimizer
        optimizer = method.build_optimizer(model, trainer_cfg)   (Component)AdamW over param_groups() by default
        each optimizer step:
            method.on_step_start(ctx)                before the step's first forward (e.g. sample a rank)
            loss += method.extra_loss()              e.g. AdaLoRA's orthogonal regulariser
            ... backward, unscale, clip (optimizer params + method.clip_parameters()) ...
            method.before_optimizer_step(ctx)        grads final; parameters not yet updated
            ... optimizer.step() ...
            remaps = method.after_optimizer_step(ctx)  grads are still there (unscaled); masking,
                                                       proximal steps, resizes: the loop makes the
                                                       optimizer follow the returned remaps
            at evaluations: method.evaluate(run_eval)  run_eval() scores the model; a method may score
                                                       several variants of it (DyLoRA: every rank)
        method.on_phase_end(ctx)                     may resize (the next phase gets a fresh optimizer)
    method.state()                                   ranks / ω / gates, logged and written to results.json
    method.state_dict() / load_state_dict(sd)        everything else the rest of the run depends on
                                                     (checkpoints: see ``checkpoint_attrs``)

Adding a method = one module subclassing :class:`Method` + one YAML in ``conf/method`` whose
``_target_`` names the class + tests.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ..adapters import ComponentAdamW, LowRankLinear, Remap, inject_adapters
from ..config import check_section
from ..errors import ConfigError, is_int


@dataclass
class TrainContext:
    """What the loop tells a method at each hook."""

    model: nn.Module
    optimizer: Any = None
    step: int = 0  # optimizer steps done in the whole run
    phase: int = 0  # 0-based
    phase_step: int = 0  # optimizer steps done in this phase
    phase_steps: int = 0  # optimizer steps this phase will take
    total_steps: int = 0  # optimizer steps of the whole run
    epoch_steps: int = 0  # optimizer steps of one epoch (0: unknown)
    best_state: dict | None = None  # trainable tensors at the best evaluation so far (CPU)
    # Under fp16 the loop unscales the grads of the optimizer's parameters; parameters outside it
    # (ω) still carry this loss scale in their .grad.
    # fp16: both device tensors, so that no hook has to wait for the device to know them.
    grad_scale: float | torch.Tensor = 1.0
    step_skipped: bool | torch.Tensor = False  # fp16: the optimizer skips this step (inf/nan grads)
    log: Callable[[dict], None] = field(default=lambda metrics: None)  # scalars to the tracker, at `step`


def resolve_steps(value: float, total: int, what: str) -> int:
    """A step option is an absolute number of optimizer steps, or a fraction of ``total`` when below 1."""
    if value < 0:
        raise ConfigError(f"{what} must be >= 0, got {value}")
    return int(round(value * total)) if 0 < value < 1 else int(value)


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class Method:
    """Plain LoRA behaviour; subclasses override what differs."""

    uses_gate = False  # trainable diagonal g in B diag(g) A
    uses_omega = False  # trainable scalar ω per adapter
    # True when the forward uses other parameters from step to step (DyLoRA's sampled rank): a
    # data-parallel run must then let DDP look for the parameters a step did not reach.
    varying_graph = False
    sparsifiers: tuple[str, ...] = ()  # the sparsifier configs a method needs one of (none: takes none)
    adapter_init = "lora"
    # The learning-rate roles ``param_role`` hands out. ``method.group_lr`` may name one that a model
    # lacks (no ``head`` on a seq2seq LM) without error; a name outside these is a typo and fails.
    roles: tuple[str, ...] = ("adapter", "head")
    uses_rank = True  # False: no rank at all (full fine-tuning, BitFit); method.rank may be null

    def __init__(self, cfg, sparsifier=None, schedule=None, seed: int = 0):
        self.cfg, self.sparsifier_cfg, self.schedule_cfg, self.seed = cfg, sparsifier, schedule, seed
        self.adapters: dict[str, LowRankLinear] = {}
        self.history: list[dict] = []  # rank configurations and other per-phase records
        rank = cfg.get("rank", 1)
        if self.uses_rank and (not is_int(rank) or rank <= 0):
            raise ConfigError(f"method.rank must be a positive integer, got {rank!r}")
        check_section(cfg, "method")  # the base settings' types and ranges (roloraexp/config.py)
        check_section(sparsifier, "sparsifier")
        got = (sparsifier.get("name") if sparsifier is not None else None) or "none"
        if self.sparsifiers and got not in self.sparsifiers:
            raise ConfigError(f"method={cfg.name} needs " + " or ".join(f"sparsifier={s}" for s in self.sparsifiers)
                              + f" (got sparsifier={got})")
        if not self.sparsifiers and got != "none":
            raise ConfigError(f"method={cfg.name} takes no sparsifier (got sparsifier={got}); use sparsifier=none")

    # ---------------------------------------------------------------- setup
    @property
    def num_phases(self) -> int:
        return 1

    def initial_rank(self, name: str, linear: nn.Linear) -> int:
        return int(self.cfg.rank)

    def make_adapter(self, name: str, linear: nn.Linear) -> LowRankLinear:
        rank, full = self.initial_rank(name, linear), min(linear.in_features, linear.out_features)
        if rank > full:  # components past full rank are linearly dependent: they add parameters, not capacity
            raise ConfigError(f"rank {rank} exceeds what the {linear.out_features} x {linear.in_features} matrix "
                              f"{name} allows (at most {full}): lower method.rank (or method.init_rank)")
        return LowRankLinear(linear, rank, alpha=self.cfg.alpha,
                             dropout=self.cfg.get("dropout", 0.0), gate=self.uses_gate, omega=self.uses_omega,
                             init=self.adapter_init, rslora=self.cfg.get("rslora", False))

    def prepare(self, model: nn.Module, target_names: list[str]) -> None:
        self.adapters = inject_adapters(model, target_names, self.make_adapter)

    def param_role(self, name: str, param: nn.Parameter) -> str:
        """Which learning-rate role a trainable parameter plays: ``adapter`` (inside the method's
        adapter modules) or ``head`` (what trains in full beside them: classifier, pooler, newly
        initialised modules). ``method.group_lr: {role: lr}`` gives a role its own peak lr (the
        VeRA paper tunes the head's apart from the adapters'); a method may add roles."""
        return "adapter" if id(param) in self._adapter_param_ids() else "head"

    def _adapter_param_ids(self) -> set[int]:
        return {id(p) for a in self.adapters.values() for p in a.parameters()}

    def stepped_by_method(self) -> set[int]:
        """Parameters the method steps itself, kept out of the optimizer: ω (WeightLoRA)."""
        return {id(a.omega) for a in self.adapters.values() if getattr(a, "omega", None) is not None}

    def param_groups(self, model: nn.Module, weight_decay: float) -> list[dict]:
        """AdamW groups: one per (role, decay); no decay on biases, norms and gates (SoRA's proximal
        step owns the gate); what the method steps itself (ω) is left out. A group whose role has an
        entry in ``method.group_lr`` carries that ``lr``; the others take ``trainer.lr``."""
        own = self.stepped_by_method()
        gates = {id(a.gate) for a in self.adapters.values() if getattr(a, "gate", None) is not None}
        lrs = dict(self.cfg.get("group_lr") or {})
        groups: dict[tuple[str, bool], list] = {}
        for name, p in model.named_parameters():
            if not p.requires_grad or id(p) in own:
                continue
            decay = not (id(p) in gates or p.ndim < 2)
            groups.setdefault((self.param_role(name, p), decay), []).append(p)
        unknown = set(lrs) - {role for role, _ in groups} - set(self.roles)
        if unknown:
            raise ConfigError(f"method.group_lr names roles {sorted(unknown)} that no trainable parameter has "
                              f"(roles of method={self.cfg.name}: {sorted(set(self.roles) | {r for r, _ in groups})})")
        out = []
        for (role, decay), params in groups.items():
            group = {"params": params, "weight_decay": weight_decay if decay else 0.0, "role": role}
            if lrs.get(role) is not None:
                group["lr"] = float(lrs[role])
            out.append(group)
        return out

    def check_steps(self, phase_steps: int, total_steps: int) -> None:
        """The run's length, before any model is loaded: a setting the run is too short for (a
        selection step beyond its end, a schedule longer than a phase) is one line now, not an error
        after the model load. Plain LoRA fits any length."""

    def build_optimizer(self, model: nn.Module, trainer_cfg) -> torch.optim.Optimizer:
        """The optimizer of one phase: AdamW over :meth:`param_groups` (a group may carry its own
        ``lr``; the loop's warm-up/decay schedule then scales it like the others). ComponentAdamW is
        torch's AdamW until a resize appends components mid-phase; then each new component gets
        its own bias correction (see adapters/adamw.py)."""
        return ComponentAdamW(self.param_groups(model, trainer_cfg.weight_decay), lr=trainer_cfg.lr)

    # ---------------------------------------------------------------- hooks
    def extra_loss(self) -> torch.Tensor | None:
        return None

    def on_step_start(self, ctx: TrainContext) -> None:
        """Before the first forward of each optimizer step; plain LoRA has nothing to choose."""

    def before_optimizer_step(self, ctx: TrainContext) -> None:
        """Gradients are final (unscaled, clipped), parameters not yet updated; LoRA lets Adam step."""

    def clip_parameters(self) -> list[nn.Parameter]:
        """Parameters outside the optimizer whose gradients the loop clips together with the
        optimizer's (one global norm); none for plain LoRA."""
        return []

    def evaluate(self, run_eval: Callable[[], dict]) -> dict:
        """Score the model: ``run_eval()`` returns the task's metrics (with ``main``). A method that
        can be scored in several configurations (DyLoRA: every rank) calls it once per variant."""
        return run_eval()

    def on_phase_start(self, ctx: TrainContext) -> None:
        """Before each phase's optimizer is built; plain LoRA has nothing to set up."""

    def after_optimizer_step(self, ctx: TrainContext) -> list[Remap]:
        return []

    def on_phase_end(self, ctx: TrainContext) -> None:
        """After each phase; plain LoRA keeps its ranks."""

    # ---------------------------------------------------------------- state
    # Attributes that change during a run and that the rest of the run depends on; a checkpoint
    # saves them (deep copies: tensors, dicts, lists) and a resume puts them back. A subclass adds
    # its own: ``checkpoint_attrs = Method.checkpoint_attrs + ("kept", ...)``. Attributes holding an
    # object with its own ``state_dict`` (a sparsifier) are saved through it. The adapters' tensors
    # are not here: the loop saves every trainable tensor at its current shape.
    checkpoint_attrs: tuple[str, ...] = ("history",)

    def state_dict(self) -> dict:
        return _attrs_state(self, self.checkpoint_attrs)

    def load_state_dict(self, state: dict) -> None:
        _load_attrs_state(self, self.checkpoint_attrs, state)
        for a in self.checkpoint_attrs:  # a sparsifier's view of the adapters is a link, not saved state
            part = getattr(self, a)
            if isinstance(getattr(part, "adapters", None), dict):
                part.adapters = self.adapters

    def ranks(self) -> dict[str, int]:
        return {n: a.rank for n, a in self.adapters.items()}

    def state(self) -> dict:
        """What gets logged at each evaluation and written to results.json."""
        out: dict = {"ranks": self.ranks()}
        omega = {n: a.omega.item() for n, a in self.adapters.items() if a.omega is not None}
        if omega:
            out["omega"] = omega
        return out


def _attrs_state(obj, attrs: tuple[str, ...]) -> dict:
    """A checkpoint of ``obj``'s listed attributes: an object with its own ``state_dict`` (a sparsifier)
    through it, a random generator through its state, anything else as a deep copy."""
    out = {}
    for a in attrs:
        v = getattr(obj, a)
        if isinstance(v, torch.Generator):
            out[a] = {"generator_state": v.get_state(), "generator_device": str(v.device)}
        elif hasattr(v, "state_dict") and not isinstance(v, (nn.Module, torch.Tensor)):
            out[a] = v.state_dict()
        else:
            out[a] = copy.deepcopy(v)
    return out


def _load_attrs_state(obj, attrs: tuple[str, ...], state: dict) -> None:
    missing = [a for a in attrs if a not in state]
    if missing:
        raise ConfigError(f"the checkpoint lacks the state {missing} of {type(obj).__name__}: it was written by "
                          f"another method or version")
    for a in attrs:
        v, saved = getattr(obj, a), state[a]
        if isinstance(saved, dict) and set(saved) == {"generator_state", "generator_device"}:
            if not isinstance(v, torch.Generator):  # created lazily in the saved run: make it now
                v = torch.Generator(device=saved["generator_device"])
                setattr(obj, a, v)
            v.set_state(saved["generator_state"])
        elif hasattr(v, "load_state_dict") and not isinstance(v, (nn.Module, torch.Tensor)):
            v.load_state_dict(saved)
        else:
            setattr(obj, a, copy.deepcopy(saved))
