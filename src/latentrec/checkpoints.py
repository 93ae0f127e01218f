"""A training run's checkpoints: when one is due, what goes in it beside the tensors, and
whether a checkpoint belongs to the run that asks to resume it. The files themselves are
`storage`'s (`save_checkpoint`, `load_checkpoint`)."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from latentrec.data import Ratings
from latentrec.errors import ConfigError
from latentrec.models import config_from_json
from latentrec.storage import Checkpoint, clear_checkpoints, load_checkpoint, save_checkpoint

# options that may change between a run and its resumption: they change no result
NOT_RESUMED = frozenset(
    {"progress", "device", "checkpoint_every", "evaluate_every_epoch", "engine"}
)

# training options added after checkpoints were first written, with what a run checkpointed
# before them trained with: no choice of optimiser (AdamW), no per-rating L2 penalty, epochs
# in a shuffled order
EARLIER_TRAINING = {"optimizer": "adamw", "l2": 0.0, "order": "shuffled"}


class Checkpoints:
    """Writes a run's checkpoints into `directory` every `every` optimiser steps.

    Args:
        notes: what each checkpoint keeps beside the state: the model and training configs,
            the data's fingerprint, the world size and the caller's `run` notes.
        so_far: the History so far, as JSON ({"epochs": [...], "train_seconds": ...}).
        fresh: a new run, not a resumed one: older checkpoints are removed now, so it can never
            resume them.
    """

    def __init__(
        self,
        directory: str | Path,
        every: int,
        notes: dict[str, Any],
        so_far: Callable[[], dict[str, Any]],
        fresh: bool,
    ) -> None:
        self.directory, self.every, self.notes, self.so_far = Path(directory), every, notes, so_far
        if fresh:
            clear_checkpoints(self.directory)

    def due(self, steps_done: int) -> bool:
        return steps_done % self.every == 0

    def next_due(self, steps_done: int) -> int:
        return (steps_done // self.every + 1) * self.every

    def write(self, step: int, tensors: dict[str, Tensor], state: dict[str, Any]) -> None:
        save_checkpoint(self.directory, step, tensors, {**self.notes, **state, **self.so_far()})


def latest(directory: str | Path) -> Checkpoint:
    """The newest checkpoint in `directory`; ConfigError when there is none."""
    checkpoint = load_checkpoint(directory)
    if checkpoint is None:
        raise ConfigError(
            f"no checkpoint in {directory} to resume from; start the run without resume"
        )
    return checkpoint


def notes_of(directory: str | Path) -> dict[str, Any] | None:
    """The metadata of the newest checkpoint in `directory` (None when there is none): its
    `step`, `epoch`, `step_in_epoch`, `steps_per_epoch` and the `run` notes fit kept."""
    checkpoint = load_checkpoint(directory)
    return None if checkpoint is None else checkpoint.meta


_PIECE = 1 << 20  # indexes a fingerprint widens at a time


def fingerprint(train: Ratings) -> dict[str, Any]:
    """Enough of the training data to tell that a resumed run sees the same ratings."""
    crc = 0
    for index in (train.user_index, train.item_index):
        # over int64 values, whatever the indexes are held as (int32 now): a checkpoint
        # written when they were int64 resumes; in pieces, so no int64 copy of them all
        for start in range(0, len(index), _PIECE):
            piece = index[start : start + _PIECE].astype(np.int64)
            crc = zlib.crc32(piece.view(np.uint8), crc)
    crc = zlib.crc32(np.ascontiguousarray(train.rating).view(np.uint8), crc)
    return {"n": len(train), "users": train.n_users, "items": train.n_items, "crc32": crc}


def check_data(checkpoint: Checkpoint, train: Ratings) -> None:
    """ConfigError unless `checkpoint` was trained on these ratings (their fingerprint)."""
    _check_fingerprint(checkpoint, fingerprint(train))


def _check_fingerprint(checkpoint: Checkpoint, now: dict[str, Any]) -> None:
    saved = checkpoint.meta["data"]
    if saved == now:
        return
    count = (
        f"{saved['n']:,} of them, not {now['n']:,}"
        if saved.get("n") != now.get("n")
        else f"as many, {now['n']:,}, but other ones"
    )
    raise ConfigError(
        f"the checkpoint at step {checkpoint.step} was trained on other ratings ({count}): the "
        "data changed since; resume with the data it was trained on"
    )


def check_resumable(checkpoint: Checkpoint, notes: dict[str, Any]) -> None:
    """ConfigError unless `checkpoint` was written by a run with these `notes` (data, model
    config, training options that change results, world size)."""
    meta = checkpoint.meta
    _check_fingerprint(checkpoint, notes["data"])
    saved_model = dict(meta["model"])
    current = dict(notes["model"])
    if saved_model.get("rating_range") is None:  # checkpointed before models kept their scale
        current.pop("rating_range", None)
        saved_model.pop("rating_range", None)
    if config_from_json(saved_model).to_json() != config_from_json(current).to_json():
        raise ConfigError("the checkpoint holds another model configuration; resume with its own")
    saved, now = {**EARLIER_TRAINING, **meta["train"]}, notes["train"]
    changed = sorted(k for k in now if k not in NOT_RESUMED and saved.get(k) != now[k])
    if changed:
        details = ", ".join(f"{k} {saved.get(k)!r} -> {now[k]!r}" for k in changed)
        raise ConfigError(f"the checkpoint was trained with other options ({details})")
    if meta.get("cells") != notes.get("cells"):
        raise ConfigError(
            f"the checkpoint's blocked order took cells of {meta.get('cells')} users x items, "
            f"this run's {notes.get('cells')}: its epochs would take another order; resume with "
            "the release that wrote it"
        )
    if meta["world_size"] != notes["world_size"]:
        raise ConfigError(
            f"the checkpoint was written by {meta['world_size']} processes and this run has "
            f"{notes['world_size']}; each step's ratings depend on it, so resume with "
            f"{meta['world_size']}"
        )
