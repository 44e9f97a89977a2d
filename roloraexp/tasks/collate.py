"""Batches from tokenised examples with torch alone: no tokenizer call per batch.

``tokenizer.pad`` (transformers' DataCollatorWithPadding) converts every example's lists per batch
(0.4-1.1 ms for 32 GLUE examples on one CPU core, 10-15 ms in a busy training process); here each
example's token lists become 1-D int64 tensors once, at tokenisation (:func:`as_rows`), and a batch
is one ``pad_sequence`` per key (0.14 ms). Optional length buckets
(:func:`bucket_width`) pad to a few fixed widths so that compiled graphs (torch.compile, CUDA
graphs) see a few shapes instead of one per batch length.
"""
from __future__ import annotations

import bisect
from typing import Callable, Sequence

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from ..config import check_buckets

# What a padded position holds, per key, when the task gives no value of its own (tokenizer.pad's
# choices; ``input_ids`` and ``token_type_ids`` come from the tokenizer: see pad_values()).
DEFAULT_PAD = {"attention_mask": 0, "special_tokens_mask": 1, "labels": -100}


def as_rows(rows: Sequence) -> list[torch.Tensor]:
    """Token lists as independent 1-D int64 tensors. Via numpy: twice as fast as torch.tensor per
    row. Not views of one flat tensor: pickling a view (DataLoader workers under spawn, a deepcopy)
    copies its whole storage, once per row."""
    return [torch.from_numpy(np.asarray(r, dtype=np.int64)) for r in rows]


def pad_values(tokenizer, **over: int) -> dict[str, int]:
    """Per-key pad values as ``tokenizer.pad`` uses them (``over`` replaces any of them)."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return {**DEFAULT_PAD, "input_ids": pad_id, "token_type_ids": getattr(tokenizer, "pad_token_type_id", 0), **over}


def length_buckets(max_len: int, smallest: int = 16) -> list[int]:
    """The default buckets (``auto``): powers of two from ``smallest`` below ``max_len``, then
    ``max_len`` itself, so no batch pads past what tokenisation allows."""
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    out, b = [], smallest
    while b < max_len:
        out.append(b)
        b *= 2
    return out + [max_len]


def resolve_buckets(setting, max_len: int) -> list[int] | None:
    """A ``pad_buckets`` setting (None | "auto" | a list of positive ints) as ``Task.pad_buckets``
    takes it: None, or a sorted list without repeats."""
    check_buckets(setting)
    if setting is None:
        return None
    return length_buckets(max_len) if setting == "auto" else sorted(set(setting))


def bucket_width(longest: int, buckets: Sequence[int] | None) -> int:
    """The width a batch whose longest row has ``longest`` tokens is padded to: the smallest bucket
    >= longest; the longest itself with no buckets or when it exceeds every bucket."""
    if not buckets:
        return longest
    i = bisect.bisect_left(buckets, longest)
    return buckets[i] if i < len(buckets) else longest


def pad_rows(rows: list, value: int, width: Callable[[int], int] | None = None, side: str = "right") -> torch.Tensor:
    """Rows (1-D tensors or lists) as one (n, width) int64 tensor padded with ``value`` on ``side``."""
    rows = [r if torch.is_tensor(r) else torch.as_tensor(r, dtype=torch.int64) for r in rows]
    out = pad_sequence(rows, batch_first=True, padding_value=value, padding_side=side)
    extra = (width(out.shape[1]) if width else out.shape[1]) - out.shape[1]
    if extra > 0:
        out = torch.nn.functional.pad(out, (extra, 0) if side == "left" else (0, extra), value=value)
    return out


def pad_batch(features: list[dict], pads: dict[str, int], width: Callable[[int], int] | None = None,
               side: str = "right", keys: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """One batch of ``keys`` (default: all the first example has; absent ones skipped): every sequence
    key padded (each to its own longest row, through ``width``), every scalar key (labels,
    start_positions) stacked as torch.tensor would make it."""
    batch = {}
    for key in features[0] if keys is None else [k for k in keys if k in features[0]]:
        values = [f[key] for f in features]
        first = values[0]
        if torch.is_tensor(first) and first.ndim == 1 or isinstance(first, (list, tuple)):
            batch[key] = pad_rows(values, pads.get(key, 0), width, side)
        else:
            batch[key] = torch.stack(values) if torch.is_tensor(first) else torch.tensor(values)
    return batch
