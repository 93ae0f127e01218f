"""Save and load a model directory: safetensors for arrays, JSON for the rest; never pickle.

A model directory holds:
  config.json        format tag, model config, training metadata
  model.safetensors  the model's weights
  train.safetensors  the training ratings (user index, item index, rating), sorted by user,
                     so recommending can leave out what a user has rated
  ids.json           raw user and item ids, in index order, and item titles where known

`save` writes into a temporary directory beside the target and renames it into place, so an
interrupted save leaves the previous model as it was.

Training checkpoints live in `checkpoint/` inside the model directory, as pairs
`step-NNNNNNNNN.safetensors` + `step-NNNNNNNNN.json`. Each file is written under a temporary
name and renamed; the JSON file, renamed last, marks the pair complete, and older pairs go only
after that, so a run killed while writing still has its previous checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from latentrec.data import IdMap, Ratings
from latentrec.errors import ConfigError, ModelFileError
from latentrec.models import LatentModel, ModelConfig, build_model

FORMAT = "latentrec-model"
FORMAT_VERSION = 1
FILES = ("config.json", "model.safetensors", "train.safetensors", "ids.json")
CHECKPOINT_FORMAT = "latentrec-checkpoint"
CHECKPOINT_DIR = "checkpoint"


class SavedModel(NamedTuple):
    """What `load` returns: the model, its training ratings and the saved metadata."""

    model: LatentModel
    ratings: Ratings
    info: dict[str, Any]


def save(
    model: LatentModel,
    directory: str | Path,
    ratings: Ratings,
    info: dict[str, Any] | None = None,
) -> Path:
    """Write `model` and what recommending needs to `directory`, atomically.

    Args:
        ratings: the training ratings, in the model's id maps.
        info: extra JSON-able metadata (training config, metrics, ...).
    """
    target = Path(directory).expanduser()
    if ratings.n_users != model.n_users or ratings.n_items != model.n_items:
        raise ModelFileError(
            f"the ratings have {ratings.n_users} users and {ratings.n_items} items but the model "
            f"was built for {model.n_users} and {model.n_items}; save it with its training ratings"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        _write(model, staging, ratings, info or {})
        _replace_directory(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _write(model: LatentModel, folder: Path, ratings: Ratings, info: dict[str, Any]) -> None:
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": FORMAT})
    order = np.argsort(ratings.user_index, kind="stable")
    train = {
        "user_index": torch.from_numpy(ratings.user_index[order].astype(np.int32)),
        "item_index": torch.from_numpy(ratings.item_index[order].astype(np.int32)),
        "rating": torch.from_numpy(ratings.rating[order].astype(np.float32)),
    }
    save_file(train, str(folder / "train.safetensors"), metadata={"format": FORMAT})
    titles = None
    if ratings.titles:
        titles = [ratings.titles.get(item_id) for item_id in ratings.items.ids.tolist()]
    _write_json(
        folder / "ids.json",
        {"users": ratings.users.to_json(), "items": ratings.items.to_json(), "titles": titles},
    )
    config = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "model": model.config.to_json(),
        "source": ratings.source,
        "info": info,
    }
    _write_json(folder / "config.json", config)


def _write_json(path: Path, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, ensure_ascii=False)
        handle.flush()
        os.fsync(handle.fileno())


def _replace_directory(staging: Path, target: Path) -> None:
    """Swap `staging` in for `target`; the old directory goes only once the new one is there."""
    if target.exists() and not target.is_dir():
        raise ModelFileError(f"{target} exists and is not a directory; choose another --out")
    if target.exists():
        # a directory that holds only a run's checkpoints is the run's own output
        ours = {"config.json", CHECKPOINT_DIR}
        if not (target / "config.json").exists() and any(
            entry.name not in ours for entry in target.iterdir()
        ):
            raise ModelFileError(
                f"{target} exists and is not a latentrec model directory; refusing to replace it"
            )
        retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        retired.rmdir()
        target.rename(retired)
        staging.rename(target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        staging.rename(target)


def load(directory: str | Path, device: str | torch.device = "cpu") -> SavedModel:
    """Read a model directory written by `save`; `ModelFileError` says what is wrong."""
    folder = Path(directory).expanduser()
    if not folder.is_dir():
        raise ModelFileError(
            f"no model directory at {folder}; train one with `latentrec train --out`"
        )
    missing = [name for name in FILES if not (folder / name).exists()]
    if missing:
        raise ModelFileError(
            f"{folder} is not a complete latentrec model directory: missing {', '.join(missing)}"
        )
    config = _read_json(folder / "config.json")
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ModelFileError(f"{folder / 'config.json'} was not written by latentrec")
    if config.get("version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{folder} has model format version {config.get('version')!r}; this latentrec reads "
            f"version {FORMAT_VERSION}"
        )
    try:
        model_config = ModelConfig.from_json(config["model"])
    except (ConfigError, KeyError, TypeError) as err:
        raise ModelFileError(f"{folder / 'config.json'} has a bad model config: {err}") from err
    model = build_model(model_config)
    weights = _read_tensors(folder / "model.safetensors")
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ModelFileError(
            f"{folder / 'model.safetensors'} does not fit its config: {first}"
        ) from err
    model.to(device).eval()
    ratings = _read_ratings(folder, model_config, config.get("source", ""))
    return SavedModel(model, ratings, config.get("info", {}))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFileError(f"{path} is damaged: {err}") from err


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelFileError(f"{path} is damaged or not a safetensors file: {err}") from err


def _read_ratings(folder: Path, config: ModelConfig, source: str) -> Ratings:
    ids = _read_json(folder / "ids.json")
    try:
        users, items = IdMap.from_json(ids["users"]), IdMap.from_json(ids["items"])
        titles_list = ids.get("titles")
    except (KeyError, TypeError) as err:
        raise ModelFileError(f"{folder / 'ids.json'} is damaged: missing {err}") from err
    if len(users) != config.n_users or len(items) != config.n_items:
        raise ModelFileError(
            f"{folder / 'ids.json'} lists {len(users)} users and {len(items)} items, but the "
            f"model has {config.n_users} and {config.n_items}"
        )
    titles = None
    if titles_list is not None:
        titles = {
            item_id: title
            for item_id, title in zip(items.ids.tolist(), titles_list, strict=True)
            if title is not None
        }
    train = _read_tensors(folder / "train.safetensors")
    try:
        user_index = train["user_index"].numpy().astype(np.int64)
        item_index = train["item_index"].numpy().astype(np.int64)
        rating = train["rating"].numpy()
    except KeyError as err:
        raise ModelFileError(f"{folder / 'train.safetensors'} lacks {err}") from err
    if len(user_index) and (user_index.max() >= len(users) or item_index.max() >= len(items)):
        raise ModelFileError(f"{folder / 'train.safetensors'} refers to ids beyond ids.json")
    return Ratings(user_index, item_index, rating, users, items, None, titles, source)


class Checkpoint(NamedTuple):
    """A training checkpoint: its tensors and its JSON metadata."""

    step: int
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]


def save_checkpoint(
    directory: str | Path, step: int, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> Path:
    """Write checkpoint `step` into `directory`, then remove the ones before it.

    Returns:
        The path of the checkpoint's JSON file.
    """
    folder = Path(directory).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"step-{step:09d}"
    weights = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    tensors_path = folder / f"{stem}.safetensors"
    _atomic(tensors_path, lambda path: _save_tensors(weights, path))
    meta_path = folder / f"{stem}.json"
    record = {"format": CHECKPOINT_FORMAT, "version": FORMAT_VERSION, "step": step, **meta}
    _atomic(meta_path, lambda path: _write_json(path, record))  # the pair is complete now
    _fsync_directory(folder)
    for old in folder.glob("step-*.json"):
        if old != meta_path:
            old.unlink(missing_ok=True)  # the marker first: a pair is never half there
            old.with_suffix(".safetensors").unlink(missing_ok=True)
    for stale in folder.glob(".*.tmp"):
        stale.unlink(missing_ok=True)
    for orphan in folder.glob("step-*.safetensors"):
        if not orphan.with_suffix(".json").exists():
            orphan.unlink(missing_ok=True)
    return meta_path


def clear_checkpoints(directory: str | Path) -> None:
    """Remove the checkpoints (and any debris of one being written) in `directory`."""
    folder = Path(directory).expanduser()
    if folder.is_dir():
        for pattern in ("step-*.json", "step-*.safetensors", ".step-*.tmp"):
            for path in folder.glob(pattern):
                path.unlink(missing_ok=True)


def load_checkpoint(directory: str | Path) -> Checkpoint | None:
    """The newest complete checkpoint in `directory`, or None when there is none.

    A damaged newest checkpoint is skipped for an older complete one, if any.
    """
    folder = Path(directory).expanduser()
    if not folder.is_dir():
        return None
    for meta_path in sorted(folder.glob("step-*.json"), reverse=True):
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            tensors = load_file(str(meta_path.with_suffix(".safetensors")))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError, SafetensorError, ValueError):
            continue
        if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
            continue
        if meta.get("version") != FORMAT_VERSION:
            raise ModelFileError(
                f"{meta_path} has checkpoint format version {meta.get('version')!r}; this "
                f"latentrec reads version {FORMAT_VERSION}"
            )
        return Checkpoint(int(meta["step"]), tensors, meta)
    return None


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file(tensors, str(path), metadata={"format": CHECKPOINT_FORMAT})
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _atomic(path: Path, write) -> None:
    """Call write(temporary path) beside `path`, then rename it to `path`."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _fsync_directory(folder: Path) -> None:
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
