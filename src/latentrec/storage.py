"""Save and load a model directory: safetensors for arrays, JSON for the rest; never pickle.

A model directory holds:
  config.json        format tag, model config, training metadata
  model.safetensors  the model's weights
  train.safetensors  the training ratings (user index, item index, rating), sorted by user,
                     so recommending can leave out what a user has rated
  ids.json           raw user and item ids, in index order, and item titles where known

`save` writes a staging directory `.NAME.tmp-<16 hex digits>` beside the target and switches it in
with one atomic step: Linux's renameat2(RENAME_EXCHANGE) swaps the two directory entries, so
a reader finds the old model or the new one and never nothing. Where the system cannot
exchange, the old directory is renamed aside to `.NAME.old-<16 hex digits>` and the new one into
place; a save killed between those two renames leaves no target, and `load` then reads the
model set aside. The next save removes what killed saves left (staging directories, models set
aside). `save` replaces only what `check_target` finds to be latentrec's own: nothing a user
wrote is ever deleted.

`publish` adds a model to a folder of versions: each version a directory saved as above, and
`current` a relative symbolic link to the newest, renamed over the old link in one step, so a
service that follows `current` finds a complete model, old or new. Versions are never removed.

Training checkpoints live in `checkpoint/` inside the model directory, as pairs
`step-NNNNNNNNN.safetensors` + `step-NNNNNNNNN.json`. Each file is written under a temporary
name and renamed; the JSON file, renamed last, marks the pair complete, and older pairs go only
after that, so a run killed while writing still has its previous checkpoint.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import json
import os
import re
import secrets
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from latentrec.data import IdMap, Ratings
from latentrec.errors import ConfigError, ModelFileError
from latentrec.models import LatentModel, ModelConfig, build_model, config_from_json
from latentrec.models.base import is_finite

try:
    import fcntl
except ImportError:  # not on Windows: staging directories go unlocked there
    fcntl = None  # type: ignore[assignment]

FORMAT = "latentrec-model"
FORMAT_VERSION = 1
FILES = ("config.json", "model.safetensors", "train.safetensors", "ids.json")
CHECKPOINT_FORMAT = "latentrec-checkpoint"
CHECKPOINT_DIR = "checkpoint"
STAGING, SET_ASIDE = "tmp", "old"  # `.NAME.tmp-<token>`, `.NAME.old-<token>` beside NAME
# the token: 16 random hex digits, a name no backup made by hand (".model.old-20240101") has
TOKEN_DIGITS = 16
_TOKEN = f"[0-9a-f]{{{TOKEN_DIGITS}}}"
# safetensors writes a file through a temporary `.tmpXXXXXX` beside it: a kill can leave one
_SAFETENSORS_TEMPORARY = re.compile(r"\.tmp[A-Za-z0-9]{6}")
_CHECKPOINT_FILE = re.compile(
    r"step-\d{9,}\.(json|safetensors)|\.step-\d{9,}\.(json|safetensors)\..+\.tmp|"
    + _SAFETENSORS_TEMPORARY.pattern
)
_LARGEST_CONFIG = 16 * 2**20  # a config.json holds a few kB; a larger one is not ours
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2  # from Linux's <fcntl.h> and <linux/fs.h>
CURRENT = "current"  # in a folder of published versions: the link to the newest
_VERSION = re.compile(r"v-\d{8}-\d{6}-[0-9a-f]{6}")  # a published version's name


class SavedModel(NamedTuple):
    """What `load` returns: the model, its training ratings and the saved metadata; with
    `also_rated`, the users' ratings it did not train on (left out of their lists)."""

    model: LatentModel
    ratings: Ratings
    info: dict[str, Any]
    also_rated: Ratings | None = None


def save(
    model: LatentModel,
    directory: str | Path,
    ratings: Ratings,
    info: dict[str, Any] | None = None,
    also_rated: Ratings | None = None,
) -> Path:
    """Write `model` and what recommending needs to `directory`, atomically.

    `directory` must be new, empty, a latentrec model directory or a run's checkpoints (see
    `check_target`); a directory of anything else is refused, never replaced.

    Args:
        ratings: the training ratings, in the model's id maps.
        info: extra JSON-able metadata (training config, metrics, ...).
        also_rated: ratings of these users the model did not train on (the ones
            `positives()` left out), kept so that lists leave their items out too.

    Returns:
        `directory`, as given (with `~` expanded).
    """
    if ratings.n_users != model.n_users or ratings.n_items != model.n_items:
        raise ModelFileError(
            f"the ratings have {ratings.n_users} users and {ratings.n_items} items but the model "
            f"was built for {model.n_users} and {model.n_items}; save it with its training ratings"
        )
    info = _plain_info(info)
    if also_rated is not None:
        also_rated = expressed_in(also_rated, ratings, "also_rated")
    if not isinstance(directory, str | os.PathLike):
        raise ConfigError(f"directory must be a path, got {directory!r}")
    target = check_target(directory)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = _made_beside(target, STAGING)
        os.chmod(staging, 0o777 & ~umask())  # a new directory's mode, not mkdir's 0700
    except OSError as err:
        raise _save_failed(directory, err) from err
    lock = _try_lock(staging)  # tells a concurrent save's clean-up that this one is in use
    try:
        try:
            _write(model, staging, ratings, info or {}, also_rated)
            _fsync_directory(staging)
            previous = _switch(staging, target)
        except BaseException as err:
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(err, (OSError, SafetensorError)):  # a full disk, a busy mount
                raise _save_failed(directory, err) from err
            raise
        _fsync_directory(target.parent)
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)
        _remove_debris(target)
    finally:
        if lock is not None:
            os.close(lock)
    return Path(directory).expanduser()


def expressed_in(other: Ratings, ratings: Ratings, name: str) -> Ratings:
    """The rows of `other` in the id maps of `ratings` (rows of ids they lack left out)."""
    if not isinstance(other, Ratings):
        raise ConfigError(
            f"{name} is Ratings of the same users and items, got {type(other).__name__}"
        )
    if not (other.users.same_as(ratings.users) and other.items.same_as(ratings.items)):
        other = other.reindexed(ratings.users, ratings.items)
    known = (other.user_index >= 0) & (other.item_index >= 0)  # a test set's -1s too
    return other if known.all() else other.take(np.flatnonzero(known))


def _save_failed(directory: str | Path, err: Exception) -> ModelFileError:
    """A failed write as one line naming the user's path (not the staging directory's); the
    previous model, if any, is still in place."""
    reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    return ModelFileError(
        f"cannot save the model to {Path(directory).expanduser()}: {reason}; any earlier model "
        "there is unchanged"
    )


def check_target(directory: str | Path) -> Path:
    """Check, before any work is done, that `save` may write a model to `directory`.

    Allowed: a path that does not exist yet (its parent is created, as `save` does), an empty
    directory, a latentrec model directory (its config names latentrec's format and it holds
    only latentrec's files), or a directory holding only a run's `checkpoint/`.

    Returns:
        The directory `save` writes: absolute, with symbolic links resolved.

    Raises:
        ModelFileError: naming the path, why it cannot be used and what to do instead; for a
            file, a path under a file, the current directory or one above it, a directory of
            anything but latentrec's files, or a place that cannot be written.
    """
    shown = Path(directory).expanduser()
    try:
        target = Path(os.path.realpath(shown))
        _check_place(target, shown)
    except OSError as err:  # a directory on the way that cannot be searched or read
        # the folder that refused, never the name of the probe made to find out
        named = err.filename is not None and not Path(err.filename).name.startswith(".")
        where = f" ({err.filename})" if named else ""
        raise ModelFileError(
            f"cannot write a model to {shown}: {err.strerror or err}{where}; choose a directory "
            "you can write to"
        ) from err
    return target


def _check_place(target: Path, shown: Path) -> None:
    try:
        here: Path | None = Path(os.getcwd()).resolve()
    except FileNotFoundError:  # the current directory was removed
        here = None
    if here is not None and (target == here or target in here.parents):
        raise ModelFileError(
            f"{shown} is the current directory or one above it; save the model to a directory "
            f"of its own, such as {shown / 'model'}"
        )
    blocker = next((p for p in (target, *target.parents) if p.exists() and not p.is_dir()), None)
    if blocker == target:
        raise ModelFileError(
            f"{shown} is a file, not a model directory; choose another path for the model"
        )
    if blocker is not None:
        raise ModelFileError(
            f"cannot save a model to {shown}: {blocker} is a file, not a directory; choose "
            "another path"
        )
    if target.is_dir() and _is_mount_point(target):
        raise ModelFileError(
            f"{shown} is a mount point, and saving replaces the model directory as a whole; "
            f"save to a directory inside it, such as {shown / 'model'}"
        )
    if target.is_dir():
        reason = _not_ours(target)
        if reason is not None:
            raise ModelFileError(
                f"{shown} is not a latentrec model directory ({reason}); refusing to replace "
                "it: choose a new or empty directory for the model"
            )
    _check_writable(target)


def _is_mount_point(folder: Path) -> bool:
    """Whether something is mounted on `folder`, bind mounts within one filesystem included
    (Linux's mount table; `os.path.ismount` sees only a change of device)."""
    if os.path.ismount(folder):
        return True
    try:
        table = Path("/proc/self/mountinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    # the fifth field is the mount point, with space, tab, newline and backslash as octal
    points = {
        re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split(" ")[4])
        for line in table.splitlines()
        if line.count(" ") >= 4
    }
    return str(folder) in points


def _check_writable(target: Path) -> None:
    """Check that `save` can create what it needs, creating nothing that stays: a directory
    is made and removed at once in the deepest folder that exists (`os.access` alone says yes
    to root on a read-only filesystem). Raises OSError."""
    existing = target.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    below = [p.name for p in target.parents if p != existing and p.is_relative_to(existing)]
    missing = [target.name, *below]
    longest = os.pathconf(existing, "PC_NAME_MAX") if hasattr(os, "pathconf") else 255
    for name in missing:
        if len(os.fsencode(f".{name}.{STAGING}-{'0' * TOKEN_DIGITS}")) > longest:
            raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), name[:40] + "...")
    for folder in (existing, target) if target.is_dir() else (existing,):
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(folder))
    # named as a staging directory where one would be, so a kill here leaves debris the next
    # save removes
    if existing == target.parent:
        probe = _made_beside(target, STAGING)
    else:
        probe = tempfile.mkdtemp(prefix=f".{STAGING}-probe-", dir=existing)
    with contextlib.suppress(FileNotFoundError):  # a concurrent save may have cleared it
        os.rmdir(probe)


def _not_ours(folder: Path, partial: bool = False) -> str | None:
    """Why `folder` is not latentrec's to replace or remove, or None when it is.

    Args:
        partial: judge a staging directory a killed save left: its files may be missing or
            torn, but none may be anything else.
    """
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as err:
        return f"it cannot be read: {err.strerror}"
    foreign = [
        e.name
        for e in entries
        if e.name not in (*FILES, CHECKPOINT_DIR)
        and not (partial and _SAFETENSORS_TEMPORARY.fullmatch(e.name))
    ]
    if foreign:
        listed = ", ".join(repr(name) for name in foreign[:3])
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        return f"it holds {listed}{more}, which latentrec did not write"
    for entry in entries:
        if entry.name == CHECKPOINT_DIR:
            reason = _not_checkpoints(Path(entry.path))
            if reason is not None:
                return reason
        elif not entry.is_file(follow_symlinks=False):
            return f"its {entry.name} is not a plain file"
    names = {entry.name for entry in entries} - {CHECKPOINT_DIR}
    written = _written_by_latentrec(folder / "config.json") if "config.json" in names else None
    if partial:
        return "its config.json was not written by latentrec" if written is False else None
    if names and "config.json" not in names:
        return "it has no config.json"
    if names and not written:
        return "its config.json was not written by latentrec"
    return None


def _not_checkpoints(folder: Path) -> str | None:
    """Why `folder` is not a `checkpoint/` of latentrec's, or None when it is."""
    if folder.is_symlink() or not folder.is_dir():
        return f"its {CHECKPOINT_DIR} is not a directory"
    try:
        entries = list(os.scandir(folder))
    except OSError as err:
        return f"its {CHECKPOINT_DIR}/ cannot be read: {err.strerror}"
    for entry in entries:
        if not _CHECKPOINT_FILE.fullmatch(entry.name) or not entry.is_file(follow_symlinks=False):
            return f"its {CHECKPOINT_DIR}/ holds {entry.name!r}, which latentrec did not write"
        if entry.name.endswith(".json") and not entry.name.startswith("."):
            record = _small_json(Path(entry.path))
            if not isinstance(record, dict) or record.get("format") != CHECKPOINT_FORMAT:
                return f"its {CHECKPOINT_DIR}/{entry.name} was not written by latentrec"
    return None


def _written_by_latentrec(config_path: Path) -> bool | None:
    """True when `config_path` names latentrec's model format and a version, False when it
    is JSON that does not, None when it cannot be read as JSON (torn by a killed save)."""
    config = _small_json(config_path)
    if config is None:
        return None
    version = isinstance(config, dict) and config.get("version")
    return (
        isinstance(config, dict)
        and config.get("format") == FORMAT
        and isinstance(version, int)
        and not isinstance(version, bool)
    )


def _small_json(path: Path) -> Any:
    """The JSON in `path`, or None when it is not a small readable JSON file."""
    try:
        if path.stat().st_size > _LARGEST_CONFIG:
            return None
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None


def _plain_info(info: Any) -> dict[str, Any]:
    """`info` as the JSON object `load` reads back: numpy numbers as numbers, paths as text;
    ConfigError, before anything is written, for what JSON cannot hold."""
    if info is None:
        return {}
    if not isinstance(info, Mapping):
        raise ConfigError(f"info must be a dict of JSON-able values, not {type(info).__name__}")

    def plain(value: Any) -> Any:
        if isinstance(value, np.generic | np.ndarray):
            return value.tolist()
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        raise TypeError(f"{type(value).__name__} is not JSON-able")

    try:
        return json.loads(json.dumps(dict(info), default=plain))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"info must hold JSON-able values: {err}") from err


def _title(value: Any) -> str | None:
    """A title as ids.json keeps it: text, or null where unknown (None, pandas' NaN)."""
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float | np.floating) and not np.isfinite(value)):
        return None
    return str(value)


def _write(
    model: LatentModel,
    folder: Path,
    ratings: Ratings,
    info: dict[str, Any],
    also_rated: Ratings | None,
) -> None:
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    _write_tensors(weights, folder / "model.safetensors")
    order = np.argsort(ratings.user_index, kind="stable")
    train = {
        "user_index": torch.from_numpy(ratings.user_index[order].astype(np.int32)),
        "item_index": torch.from_numpy(ratings.item_index[order].astype(np.int32)),
        "rating": torch.from_numpy(ratings.rating[order].astype(np.float32)),
    }
    if also_rated is not None and len(also_rated):
        for name in ("user_index", "item_index"):
            train[f"also_{name}"] = torch.from_numpy(getattr(also_rated, name).astype(np.int32))
    _write_tensors(train, folder / "train.safetensors")
    titles = None
    if ratings.titles:
        titles = [_title(ratings.titles.get(item_id)) for item_id in ratings.items.ids.tolist()]
    _write_json(
        folder / "ids.json",
        {"users": ratings.users.to_json(), "items": ratings.items.to_json(), "titles": titles},
    )
    config = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "model": model.config.to_json(),
        "source": "" if ratings.source is None else str(ratings.source),
        "implicit": ratings.implicit,
        "positive_min": ratings.positive_min,
        "info": info,
    }
    _write_json(folder / "config.json", config)


def _write_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file(tensors, str(path), metadata={"format": FORMAT})
    with open(path, "rb+") as handle:
        os.fchmod(handle.fileno(), 0o666 & ~umask())  # a new file's mode: safetensors', 0600
        os.fsync(handle.fileno())  # on disk before the directory is switched in


def _write_json(path: Path, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, ensure_ascii=False)
        handle.flush()
        os.fsync(handle.fileno())


def _switch(staging: Path, target: Path) -> Path | None:
    """Put `staging` at `target`, as one atomic step where the system allows.

    Returns:
        Where the previous model now is, for the caller to remove; None when there was none.
    """
    if not os.path.lexists(target):
        os.rename(staging, target)
        return None
    if _exchange(staging, target):
        return staging  # the previous model, under the staging name
    # two steps: a save killed between them leaves the previous model aside, where load finds it
    aside = _made_beside(target, SET_ASIDE)
    aside.rmdir()
    os.rename(target, aside)
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(aside, target)
        raise
    return aside


def _exchange(first: Path, second: Path) -> bool:
    """Swap the directory entries `first` and `second` in one atomic step (Linux 3.15+
    renameat2 with RENAME_EXCHANGE); False, having changed nothing, where the system or the
    filesystem cannot."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    paths = os.fsencode(first), os.fsencode(second)
    if renameat2(_AT_FDCWD, paths[0], _AT_FDCWD, paths[1], _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(first), None, str(second))


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    """libc's renameat2 (glibc 2.28+), or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    function.restype = ctypes.c_int
    return function


def _made_beside(target: Path, kind: str) -> Path:
    """A new empty directory `.NAME.KIND-<token>` beside `target` (mode 0700, as mkdtemp's)."""
    while True:
        folder = target.parent / f".{target.name}.{kind}-{secrets.token_hex(TOKEN_DIGITS // 2)}"
        try:
            folder.mkdir(mode=0o700)
            return folder
        except FileExistsError:
            continue


def _remove_debris(target: Path) -> None:
    """Remove what killed saves to `target` left beside it: staging directories and models
    set aside, recognised by their names and by holding nothing but latentrec's files. One
    that another save holds locked is its staging directory, still being written."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.({STAGING}|{SET_ASIDE})-{_TOKEN}")
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return
    for entry in entries:
        if not pattern.fullmatch(entry.name) or not entry.is_dir(follow_symlinks=False):
            continue
        debris = Path(entry.path)
        if _not_ours(debris, partial=True) is not None:
            continue
        lock = _try_lock(debris)
        if lock is None:
            continue
        try:
            shutil.rmtree(debris, ignore_errors=True)
        finally:
            os.close(lock)


def _try_lock(folder: Path) -> int | None:
    """An open descriptor of `folder` holding an exclusive lock on it, taken without waiting
    (the lock goes with the descriptor, or with the process if it is killed); None when
    another process holds the lock or the folder cannot be opened."""
    try:
        handle = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return None
    if fcntl is not None:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(handle)
            return None
    return handle


def publish(
    model: LatentModel,
    folder: str | Path,
    ratings: Ratings,
    info: dict[str, Any] | None = None,
    also_rated: Ratings | None = None,
) -> Path:
    """Save `model` as a new version inside `folder` and point `folder/current` at it.

    The version is a directory `v-YYYYMMDD-HHMMSS-XXXXXX` (the time in UTC and six random hex
    digits) written by `save`. `current` then becomes a relative symbolic link to it: made
    under a temporary name and renamed over the old link in one step, so whoever follows
    `current` finds the previous version or the new one, always complete. Earlier versions
    are kept; removing them is the user's choice.

    Args:
        ratings: the training ratings, in the model's id maps.
        info: extra JSON-able metadata, as for `save`.

    Returns:
        The new version's directory.
    """
    root = check_publish(folder)
    version = save(model, root / _version_name(), ratings, info, also_rated)
    link = root / CURRENT
    temporary = root / f".{CURRENT}.{STAGING}-{secrets.token_hex(4)}"
    try:
        os.symlink(version.name, temporary)
        try:
            os.replace(temporary, link)  # one rename: `current` is never missing or torn
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        _fsync_directory(root)
    except OSError as err:
        reason = err.strerror or str(err)
        raise ModelFileError(
            f"saved {version} but cannot point {link} at it: {reason}; {link} is unchanged"
        ) from err
    _remove_stale_links(root, keep=temporary.name)
    return version


def check_publish(folder: str | Path) -> Path:
    """Check, before any work is done, that `publish` may add a version to `folder`.

    Allowed: a folder that does not exist yet, or one whose `current`, if there is one, is a
    link `publish` made (a bare version name). Other entries in the folder are left alone.

    Returns:
        `folder`, as given (with `~` expanded).

    Raises:
        ModelFileError: naming the path and what to do instead; for a file, a model directory
            (a version goes inside a folder of versions, not over a model), a `current` that
            is a directory, a file or a link latentrec did not make, or a folder that cannot
            be written.
    """
    root = Path(folder).expanduser()
    if os.path.lexists(root) and not root.is_dir():
        raise ModelFileError(f"{root} is a file; --publish needs a folder to hold model versions")
    if root.is_dir() and (root / "config.json").exists() and _not_ours(root) is None:
        raise ModelFileError(
            f"{root} is a model directory; publishing needs the folder that holds the versions "
            "(a new folder, or one published to before)"
        )
    link = root / CURRENT
    if os.path.lexists(link):
        if not link.is_symlink():
            kind = "a directory" if link.is_dir() else "a file"
            raise ModelFileError(
                f"{link} is {kind}, not a link latentrec made; move it away (publishing "
                "points current at the newest version) or publish into another folder"
            )
        target = os.readlink(link)
        if not _VERSION.fullmatch(target):
            raise ModelFileError(
                f"{link} is a link to {target!r}, which latentrec did not make; move it away "
                "or publish into another folder"
            )
    check_target(root / _version_name())  # writable, not a mount point's root, ...
    return root


def _version_name() -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return f"v-{stamp}-{secrets.token_hex(3)}"


def _remove_stale_links(root: Path, keep: str) -> None:
    """Remove temporary `current` links a killed publish left (recognised by their name)."""
    pattern = re.compile(rf"\.{CURRENT}\.{STAGING}-[0-9a-f]{{8}}")
    with contextlib.suppress(OSError):
        for entry in os.scandir(root):
            if entry.name != keep and pattern.fullmatch(entry.name) and entry.is_symlink():
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def load(directory: str | Path, device: str | torch.device = "cpu") -> SavedModel:
    """Read a model directory written by `save`; `ModelFileError` says what is wrong.

    Everything in the directory is checked against its config before anything as large as
    the model is allocated, so a damaged or hostile directory costs only its own size.
    """
    folder = Path(directory).expanduser()
    for _ in range(3):
        found = _committed(folder)
        # held open while it is read, the directory's inode cannot be freed and given to the
        # next save's: a changed identity afterwards means another directory took the name
        held = _hold(found)
        try:
            before = _identity(found if held is None else held)
            try:
                saved = _load(found, device)
            except ModelFileError:
                if _identity(found) == before:
                    raise
                continue  # a save switched a new model in while this one was read: read again
            if _identity(found) == before:
                return saved
        finally:
            if held is not None:
                os.close(held)
    raise ModelFileError(f"{folder} kept changing while it was read; try again when the save ends")


def _committed(folder: Path) -> Path:
    """`folder`, or, when a save that could not exchange directories was killed between its
    two renames, the previous model it set aside."""
    if os.path.lexists(folder):
        return folder
    pattern = re.compile(rf"\.{re.escape(folder.name)}\.{SET_ASIDE}-{_TOKEN}")
    try:
        entries = list(os.scandir(folder.parent))
    except OSError:
        return folder
    aside = [
        Path(entry.path)
        for entry in entries
        if pattern.fullmatch(entry.name)
        and entry.is_dir(follow_symlinks=False)
        and all((Path(entry.path) / name).is_file() for name in FILES)
        and _not_ours(Path(entry.path)) is None
    ]
    return max(aside, key=lambda path: path.stat().st_mtime, default=folder)


def _hold(folder: Path) -> int | None:
    try:
        return os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return None


def _identity(folder: Path | int) -> tuple[int, int] | None:
    """The device and inode of a path, or of an open descriptor; None where it is gone."""
    try:
        status = os.stat(folder)
    except OSError:
        return None
    return status.st_dev, status.st_ino


def _load(folder: Path, device: str | torch.device) -> SavedModel:
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
        model_config = config_from_json(config["model"])
    except (ConfigError, KeyError, TypeError) as err:
        raise ModelFileError(f"{folder / 'config.json'} has a bad model config: {err}") from err
    info, source = config.get("info", {}), config.get("source", "")
    implicit = config.get("implicit", False)  # absent in models saved before interactions
    positive_min = config.get("positive_min")  # and this before --positive-min was saved
    if (
        not isinstance(info, dict)
        or not isinstance(source, str)
        or not isinstance(implicit, bool)
        or not (positive_min is None or is_finite(positive_min))
    ):
        raise ModelFileError(
            f"{folder / 'config.json'} is damaged: its info must be an object, its source "
            "a string, implicit true or false and positive_min a number or null"
        )
    _check_weights_fit(folder / "model.safetensors", model_config)
    ratings, also_rated = _read_ratings(folder, model_config, source)
    ratings = replace(
        ratings,
        implicit=implicit,
        positive_min=None if positive_min is None else float(positive_min),
    )
    model = build_model(model_config)
    weights = _read_tensors(folder / "model.safetensors")
    damaged = [k for k, v in weights.items() if v.is_floating_point() and not v.isfinite().all()]
    if damaged:
        raise ModelFileError(
            f"{folder / 'model.safetensors'} holds NaN or infinite weights in {damaged[0]} (a "
            "training that diverged); train the model again with a lower learning rate"
        )
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ModelFileError(
            f"{folder / 'model.safetensors'} does not fit its config: {first}"
        ) from err
    model.to(device).eval()
    return SavedModel(model, ratings, info, also_rated)


def _check_weights_fit(path: Path, config: ModelConfig) -> None:
    """Compare the tensor shapes in `path`'s header with those `config` describes, before
    the model is built: a config claiming millions of users fails here, with nothing
    allocated, instead of after building tables its weights cannot fill."""
    try:
        with torch.device("meta"):  # shapes without memory
            model = build_model(config)
        expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    except (RuntimeError, TypeError, ValueError, OverflowError) as err:
        raise ModelFileError(
            f"{path.parent / 'config.json'} describes a model that cannot be built: "
            f"{type(err).__name__}"
        ) from err
    try:
        with safe_open(str(path), framework="pt") as handle:
            names = handle.keys()  # a safe_open handle is not itself iterable
            found = {name: tuple(handle.get_slice(name).get_shape()) for name in names}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ModelFileError(f"{path} is damaged or not a safetensors file: {err}") from err
    problems = [f"{name} is missing" for name in sorted(expected.keys() - found.keys())]
    problems += [f"{name} is unexpected" for name in sorted(found.keys() - expected.keys())]
    problems += [
        f"{name} is {list(found[name])}, the config needs {list(expected[name])}"
        for name in sorted(expected.keys() & found.keys())
        if found[name] != expected[name]
    ]
    if problems:
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise ModelFileError(f"{path} does not fit its config: {'; '.join(problems[:3])}{more}")


def _read_json(path: Path) -> Any:
    try:
        with open(path, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):  # /dev/zero never ends
                raise ModelFileError(f"{path} is not a regular file; a model's files are")
            return json.loads(handle.read().decode("utf-8"))
    except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError
        detail = "nested too deeply" if isinstance(err, RecursionError) else str(err)
        raise ModelFileError(f"{path} is damaged: {detail}") from err
    except OSError as err:
        raise ModelFileError(f"{path} cannot be read: {err.strerror or err}") from err


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:  # RuntimeError: cut short
        raise ModelFileError(f"{path} is damaged or not a safetensors file: {err}") from err


def _read_ratings(folder: Path, config: ModelConfig, source: str) -> tuple[Ratings, Ratings | None]:
    """The training ratings in train.safetensors, and the `also_rated` pairs where saved."""
    ids_path, train_path = folder / "ids.json", folder / "train.safetensors"
    ids = _read_json(ids_path)
    if not isinstance(ids, dict) or not all(
        isinstance(ids.get(name), list) for name in ("users", "items")
    ):
        raise ModelFileError(f"{ids_path} is damaged: it needs a list of users and of items")
    try:
        users, items = IdMap.from_json(ids["users"]), IdMap.from_json(ids["items"])
    except (ValueError, TypeError) as err:  # DataError is a ValueError
        raise ModelFileError(f"{ids_path} is damaged: {err}") from err
    if len(users) != config.n_users or len(items) != config.n_items:
        raise ModelFileError(
            f"{ids_path} lists {len(users)} users and {len(items)} items, but the "
            f"model has {config.n_users} and {config.n_items}"
        )
    titles = _read_titles(ids_path, ids.get("titles"), items)
    train = _read_tensors(train_path)
    columns = ("user_index", "item_index", "rating")
    missing = [name for name in columns if name not in train]
    if missing:
        raise ModelFileError(f"{train_path} lacks {', '.join(missing)}")
    user_index, item_index, rating = (train[name] for name in columns)
    if any(column.dim() != 1 or len(column) != len(rating) for column in (user_index, item_index)):
        raise ModelFileError(f"{train_path} is damaged: its columns differ in shape")
    for name, column in (("user_index", user_index), ("item_index", item_index)):
        if column.is_floating_point() or column.is_complex() or column.dtype == torch.bool:
            raise ModelFileError(
                f"{train_path} is damaged: {name} holds {column.dtype}, not integers"
            )
    if not rating.is_floating_point() or not bool(torch.isfinite(rating).all()):
        raise ModelFileError(f"{train_path} is damaged: rating must hold finite numbers")
    also = [train.get("also_user_index"), train.get("also_item_index")]
    if (also[0] is None) != (also[1] is None) or (
        also[0] is not None and (also[0].dim() != 1 or also[0].shape != also[1].shape)
    ):
        raise ModelFileError(f"{train_path} is damaged: its also-rated columns do not pair up")
    for name, column, count in (
        ("user_index", user_index, len(users)),
        ("item_index", item_index, len(items)),
        ("also_user_index", also[0], len(users)),
        ("also_item_index", also[1], len(items)),
    ):
        if column is None:
            continue
        if name.startswith("also") and (column.is_floating_point() or column.dtype == torch.bool):
            raise ModelFileError(f"{train_path} is damaged: {name} holds {column.dtype}")
        if len(column) and (int(column.min()) < 0 or int(column.max()) >= count):
            raise ModelFileError(
                f"{train_path} is damaged: {name} runs from {int(column.min())} to "
                f"{int(column.max())}, outside the {count} ids of {ids_path.name} (0..{count - 1})"
            )
    ratings = Ratings(
        user_index.long().numpy(),
        item_index.long().numpy(),
        rating.float().numpy(),
        users,
        items,
        None,
        titles,
        source,
    )
    if also[0] is None:
        return ratings, None
    ones = np.ones(len(also[0]), dtype=np.float32)  # their ratings are not kept: only the pairs
    return ratings, Ratings(also[0].long().numpy(), also[1].long().numpy(), ones, users, items)


def _read_titles(ids_path: Path, titles: Any, items: IdMap) -> dict[Any, str] | None:
    """The item titles in ids.json (a list in item order, null where unknown), as a dict."""
    if titles is None:
        return None
    if not isinstance(titles, list) or len(titles) != len(items):
        count = len(titles) if isinstance(titles, list) else type(titles).__name__
        raise ModelFileError(
            f"{ids_path} is damaged: titles must be a list of {len(items)}, one per item, "
            f"got {count}"
        )
    wrong = next(
        (title for title in titles if title is not None and not isinstance(title, str)), None
    )
    if wrong is not None:
        raise ModelFileError(
            f"{ids_path} is damaged: titles must be strings or null, got {type(wrong).__name__}"
        )
    return {
        item_id: title
        for item_id, title in zip(items.ids.tolist(), titles, strict=True)
        if title is not None
    }


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
    write_atomically(tensors_path, lambda path: _save_tensors(weights, path))
    meta_path = folder / f"{stem}.json"
    record = {"format": CHECKPOINT_FORMAT, "version": FORMAT_VERSION, "step": step, **meta}
    write_atomically(meta_path, lambda path: _write_json(path, record))  # the pair is complete now
    _fsync_directory(folder)
    for old in folder.glob("step-*.json"):
        if old != meta_path:
            old.unlink(missing_ok=True)  # the marker first: a pair is never half there
            old.with_suffix(".safetensors").unlink(missing_ok=True)
    for stale in folder.glob(".*"):
        if stale.name.endswith(".tmp") or _SAFETENSORS_TEMPORARY.fullmatch(stale.name):
            stale.unlink(missing_ok=True)
    for orphan in folder.glob("step-*.safetensors"):
        if not orphan.with_suffix(".json").exists():
            orphan.unlink(missing_ok=True)
    return meta_path


def clear_checkpoints(directory: str | Path) -> None:
    """Remove the checkpoints (and any debris of one being written) in `directory`."""
    folder = Path(directory).expanduser()
    if folder.is_dir():
        for path in folder.iterdir():
            if _CHECKPOINT_FILE.fullmatch(path.name) and not path.is_dir():
                path.unlink(missing_ok=True)


def load_checkpoint(directory: str | Path) -> Checkpoint | None:
    """The newest complete checkpoint in `directory`, or None when there is none.

    A damaged newest checkpoint is skipped for an older complete one, if any; where there are
    checkpoints and every one is damaged, ModelFileError says so (not "none").
    """
    folder = Path(directory).expanduser()
    if not folder.is_dir():
        return None
    damaged: list[str] = []
    for meta_path in sorted(folder.glob("step-*.json"), reverse=True):
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
                continue  # not a checkpoint's
            tensors = load_file(str(meta_path.with_suffix(".safetensors")))
        except (OSError, ValueError, SafetensorError) as err:  # ValueError: JSON, UTF-8
            damaged.append(f"{meta_path.stem}: {getattr(err, 'strerror', None) or err}")
            continue
        if meta.get("version") != FORMAT_VERSION:
            raise ModelFileError(
                f"{meta_path} has checkpoint format version {meta.get('version')!r}; this "
                f"latentrec reads version {FORMAT_VERSION}"
            )
        return Checkpoint(int(meta["step"]), tensors, meta)
    if damaged:
        raise ModelFileError(
            f"no complete checkpoint in {folder}: {len(damaged)} damaged ({damaged[0]}); "
            "restore the folder from a copy, or start the run again without --resume"
        )
    return None


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file(tensors, str(path), metadata={"format": CHECKPOINT_FORMAT})
    with open(path, "rb+") as handle:
        os.fchmod(handle.fileno(), 0o666 & ~umask())  # a new file's mode: safetensors', 0600
        os.fsync(handle.fileno())


def write_atomically(path: Path, write: Callable[[Path], Any]) -> None:
    """Call write(temporary path) beside `path`, then rename it to `path`."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(handle, 0o666 & ~umask())  # a new file's mode, not mkstemp's 0600
    finally:
        os.close(handle)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def umask() -> int:
    """The process's file mode creation mask (files and directories made through temporary
    names get the modes a plain create would give them)."""
    mask = os.umask(0o022)  # reading the mask means setting it: put it straight back
    os.umask(mask)
    return mask


def _fsync_directory(folder: Path) -> None:
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
