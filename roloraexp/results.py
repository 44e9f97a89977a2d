"""results.json: the one file per run that the report, the sweeps, the exporter and outside checks
read. ``RunResult`` *is* its schema: run.py fills one and writes it (``write``), every reader gets
one back from ``read_result`` (checked: a file that is not a run's result is a ``ResultError``), or
the checked file as written from ``read_file``.

The trainer fills a ``RunRecord`` as it learns; the result takes the record's fields at the end
(``take_record``), also for a run that failed midway. The method's ``state()`` (ranks, ω, budgets,
per-adapter statistics) is written at the top level of the file, where the tables' dotted paths
read it (``ranks``, ``selection.peak_memory_bytes_before``, ...). Standard library only: the table
sweeps and the report read results without importing torch.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

# 1: the keys of the files written before the version was recorded (a file without one is read as 1).
# A change that renames or retypes a key raises it, and read_result learns to read the old one.
SCHEMA_VERSION = 1
RESULTS_FILE = "results.json"
STATUSES = ("running", "completed", "failed", "preempted", "refused")
# Set at a stage of the run (data read, accelerator made, model built): absent from the file when
# the run stopped before it, so "not there" is told apart from "there and empty".
STAGED = ("error", "data", "precision", "build_seconds", "adapter_shapes", "head_params")


class ResultError(ValueError):
    """A file that is not a readable roloraexp results.json: ``where`` it is and ``reason``, one line."""

    def __init__(self, where: str, reason: str):
        super().__init__(f"{where}: {reason}")
        self.where, self.reason = where, reason


@dataclass
class RunRecord:
    """What the run has learned so far, filled by the trainer as it happens."""

    history: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    best_metrics: dict = field(default_factory=dict)
    steps: int = 0
    trainable_params: int = 0
    trainable_params_peak: int = 0
    peak_memory_bytes: int | None = None
    skipped_steps: int = 0  # fp16: optimizer steps the loss scaler skipped (overflowing gradients)
    world_size: int = 1
    resumed_from: list = field(default_factory=list)  # {"step", "checkpoint"} per resume
    train_curve: list = field(default_factory=list)  # {"step", "loss", "lr"} at every log point
    # Throughput: seconds in training steps (evaluations, checkpoints and phase ends left out) and the
    # examples and input tokens (padding excluded) they trained on, summed over processes at the end.
    train_seconds: float = 0.0
    train_examples: int = 0
    train_tokens: int = 0
    amp_mode: str = "none"  # none (fp32) | autocast | cast (roloraexp/precision.py)
    compile: dict = field(default_factory=dict)  # {"enabled", "backend", "mode", "graphs", "graph_breaks"}


@dataclass
class RunResult(Mapping):
    """One run's results.json, key by key. Also readable as the file's mapping (``result["metrics"]``),
    the form the tables' dotted paths address."""

    status: str                                   # one of STATUSES
    task: str
    method: str
    model: str
    seed: int
    table: str | None = None                      # the paper table the run fills (conf/experiment)
    error: str | None = None                      # one line, for a run that did not complete
    data: dict | None = None                      # per split: {file, rows, skipped_rows}
    precision: str | None = None                  # fp32 | bf16 | fp16
    build_seconds: float | None = None            # model load (or creation) and adapters
    adapter_shapes: dict | None = None            # adapter -> {d_in, d_out}
    head_params: int | None = None                # trainable parameters outside the adapters
    metrics: dict = field(default_factory=dict)   # the last evaluation's
    best_metrics: dict = field(default_factory=dict)  # the best evaluation's, with its step and phase
    method_state: dict = field(default_factory=dict)  # method.state(): written at the top level
    best_ranks: dict | None = None                # the ranks at the best evaluation
    active_adapters: int = 0
    trainable_params: int = 0
    trainable_params_peak: int = 0
    peak_memory_bytes: int | None = None          # CUDA only
    steps: int = 0
    skipped_steps: int = 0
    world_size: int = 1
    resumed_from: list = field(default_factory=list)
    train_curve: list = field(default_factory=list)
    throughput: dict = field(default_factory=dict)
    amp_mode: str = "none"
    compile: dict = field(default_factory=dict)
    wall_time_s: float = 0.0
    config: dict = field(default_factory=dict)    # the resolved config
    history: list = field(default_factory=list)   # every evaluation and phase end
    method_history: list = field(default_factory=list)
    provenance: dict = field(default_factory=dict)  # versions, commit, host
    schema_version: int = SCHEMA_VERSION

    # ------------------------------------------------------------------ filled by the run
    def take_record(self, record: RunRecord, method_state: dict, method_history: list) -> None:
        """The training's share: what the record and the method hold now (after a failure: so far)."""
        clash = set(method_state) & FIELDS
        if clash:  # a method's state key would hide a result key in the file
            raise ValueError(f"method state keys {sorted(clash)} are results.json keys: rename them")
        for f in fields(RunRecord):
            if f.name in FIELDS:
                setattr(self, f.name, getattr(record, f.name))
        self.method_state, self.method_history = method_state, method_history
        self.best_ranks = best_ranks(record)
        self.active_adapters = sum(1 for r in method_state.get("ranks", {}).values() if r > 0)
        self.throughput = throughput(record)

    def end(self, status: str, error: str | None = None) -> None:
        self.status, self.error = status, error

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    # ------------------------------------------------------------------ the file's form
    def to_dict(self) -> dict:
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "method_state":
                out.update(value)
            elif not (f.name in STAGED and value is None):
                out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data, where: str = "results.json") -> RunResult:
        """The result a parsed file holds; ``where`` names it in the error."""
        problem = _problem(data)
        if problem:
            raise ResultError(where, problem)
        known = {k: v for k, v in data.items() if k in FIELDS and k != "method_state"}
        state = {k: v for k, v in data.items() if k not in FIELDS}
        return cls(**known, method_state=state)

    def write(self, path: Path) -> None:
        write_json_atomic(path, self.to_dict())

    def __getitem__(self, key):
        return self.to_dict()[key]

    def __iter__(self):
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


FIELDS = {f.name for f in fields(RunResult)}
REQUIRED = ("status", "task", "method", "model", "seed")


def _problem(data) -> str | None:
    """Why parsed JSON is not a run's result, or None."""
    if not isinstance(data, dict):
        return "not a JSON object"
    version = data.get("schema_version", 1)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        return f"schema_version {version!r}: written by a newer roloraexp (this one reads up to {SCHEMA_VERSION})"
    missing = [k for k in REQUIRED if k not in data]
    if data.get("status") == "completed":
        missing += [k for k in ("metrics", "best_metrics") if not isinstance(data.get(k), dict)]
    if missing:
        return "missing keys: " + ", ".join(missing)
    if data["status"] not in STATUSES:
        return f"status {data['status']!r} is not one of {', '.join(STATUSES)}"
    if isinstance(data["seed"], bool) or not isinstance(data["seed"], int):
        return f"seed {data['seed']!r} is not an integer"
    return None


def read_result(path: Path) -> RunResult:
    """The results.json at ``path``; unreadable, not JSON or not a run's result: a ResultError."""
    return RunResult.from_dict(read_file(path), where=str(path))


def read_file(path: Path) -> dict:
    """The results.json at ``path`` as written, checked against the schema as ``read_result`` checks
    it: for readers that address its keys by dotted path (the tables, the figures), to whom a key the
    file lacks is not the same as the schema's default."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ResultError(str(path), f"unreadable JSON ({e})") from e
    problem = _problem(data)
    if problem:
        raise ResultError(str(path), problem)
    return data


def best_ranks(record: RunRecord) -> dict | None:
    """The adapters' ranks at the best evaluation (the one the tables report), as ``method.state()``
    gave them there: from its ``history`` entry."""
    best = record.best_metrics
    for h in record.history:
        if "metrics" in h and (h["step"], h["phase"]) == (best.get("step"), best.get("phase")):
            return h.get("ranks")
    return None


def throughput(record: RunRecord) -> dict:
    """Training speed over the steps alone (evaluations, checkpoints and phase ends left out)."""
    seconds = record.train_seconds
    return {"train_seconds": round(seconds, 3), "train_examples": record.train_examples,
            "train_tokens": record.train_tokens,
            "examples_per_s": round(record.train_examples / seconds, 2) if seconds > 0 else None,
            "tokens_per_s": round(record.train_tokens / seconds, 1) if seconds > 0 else None}


def write_json_atomic(path: Path, data: dict) -> None:
    """Write to a temporary file, then rename: a reader never sees half a file, even if the run dies."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, default=_jsonable)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _jsonable(x):
    if hasattr(x, "item"):  # numpy / torch scalars
        return x.item()
    if isinstance(x, (set, tuple)):
        return list(x)
    return str(x)
