"""The model a service answers with, swapped for a new one without stopping.

`ModelHolder` holds the loaded `Recommender` of a model directory (a path such as
`models/current`, which `publish` points at the newest version, or any model directory). Each
request takes the holder's `Served` once, at its start, and answers with it to the end, so a
request in flight finishes on the model it began with.

Between requests, at most once every `check_every` seconds, the holder looks at the directory:
the symbolic links on its path resolved, and the `config.json` there stat'ed (its inode and
modification time change with every save and publish). When they differ from what it last
saw, a background thread loads the new model; only once that load has succeeded does the holder
swap its reference. A model that fails to load is logged, one line, and the old one keeps
serving. `reload` does the same whether or not anything looks changed (the service calls it on
SIGHUP). While the service runs, `watching` also checks on a timer, so a worker that gets no
requests is current too. With a paired rating model, the two are loaded and swapped together
when either changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from latentrec.recommend import Recommender

log = logging.getLogger("latentrec.serving")
MODEL_FILES = (".json", ".safetensors")  # what a model directory holds (`latentrec.storage`)

# what `check` compares: the resolved directory, its config.json's (device, inode, mtime)
# (None where it cannot be stat'ed), and each model file's (name, inode, mtime, size): a
# directory copied over file by file is loaded again as each file lands, the last time whole
Stamp = tuple[str, int | None, int | None, int | None, tuple[tuple[str, int, int, int], ...]]


@dataclass(frozen=True)
class Served:
    """One loaded model and where it came from.

    Attributes:
        version: the name of the directory the model was loaded from, symbolic links
            resolved (`v-20261130-143512-a1b2c3` for a published version); None for a
            Recommender handed over ready.
        saved_at: when its config.json was written (UTC, ISO 8601), or None.
        rating_model_version: the same name for the paired rating model, if any.
        rating_range: the recommender's, read once (for a model saved without a scale it
            is a pass over the training ratings).
    """

    recommender: Recommender
    version: str | None = None
    saved_at: str | None = None
    rating_model_version: str | None = None
    rating_range: tuple[float, float] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rating_range", self.recommender.rating_range)


class ModelHolder:
    """The served model of a directory, reloaded when the directory changes.

    Args:
        model_dir: a model directory, or a symbolic link to one (read again on every check).
        rating_model: a rating model's directory paired with a ranking model's.
        check_every: seconds between looks at the directories (0: only on `check` or
            `reload`).
        clock: seconds on a monotonic clock (tests pass their own).

    Raises:
        LatentrecError: when the model (or the pair) cannot be loaded at first.
    """

    def __init__(
        self,
        model_dir: str | Path,
        rating_model: str | Path | None = None,
        check_every: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._paths: tuple[Path, Path | None] | None = (
            Path(model_dir),
            None if rating_model is None else Path(rating_model),
        )
        self.check_every = check_every
        self._clock = clock
        self._lock = threading.Lock()
        self._loading: threading.Thread | None = None
        stamps = self._stamps()
        self._served = self._load(stamps)
        self._seen: tuple[Stamp, Stamp | None] | None = stamps
        self._next_check = clock() + check_every

    @classmethod
    def fixed(cls, recommender: Recommender) -> ModelHolder:
        """A holder of a ready Recommender: nothing to watch, never reloaded."""
        holder = cls.__new__(cls)
        holder._paths, holder.check_every, holder._clock = None, 0.0, time.monotonic
        holder._lock, holder._loading, holder._seen = threading.Lock(), None, None
        holder._served, holder._next_check = Served(recommender), 0.0
        return holder

    def current(self) -> Served:
        """The model to answer one request with: take it once, at the request's start.

        When a check is due (every `check_every` seconds), first looks for a new model (a
        stat or two; a load goes to a background thread). A check another thread is making is
        not waited for.
        """
        due = self._paths is not None and self.check_every > 0 and self._next_check <= self._clock()
        if due and self._lock.acquire(blocking=False):
            try:
                if self._next_check <= self._clock():  # not checked meanwhile by another thread
                    self._check_locked(force=False)
            finally:
                self._lock.release()
        return self._served

    def check(self) -> threading.Thread | None:
        """Look at the directories now; when they changed, start loading them.

        Returns:
            The thread loading the new model (join it to wait for the swap), or None when
            nothing changed or a load is already running.
        """
        with self._lock:
            return self._check_locked(force=False)

    def reload(self) -> threading.Thread | None:
        """Load the directories again, changed or not (SIGHUP); as `check` otherwise."""
        with self._lock:
            return self._check_locked(force=True)

    def _check_locked(self, force: bool) -> threading.Thread | None:
        if self._paths is None:
            return None
        self._next_check = self._clock() + self.check_every
        if self._loading is not None and self._loading.is_alive():
            if force:
                self._seen = None  # the next check after this load loads again
            return None
        stamps = self._stamps()
        if stamps == self._seen and not force:
            return None
        self._seen = stamps  # a model that fails to load is tried again only once it changes
        thread = threading.Thread(
            target=self._swap, args=(stamps,), name="latentrec-reload", daemon=True
        )
        self._loading = thread
        thread.start()
        return thread

    def _swap(self, stamps: tuple[Stamp, Stamp | None]) -> None:
        old = self._served
        try:
            served = self._load(stamps)
        except Exception as err:  # whatever the new files hold, the service keeps answering
            reason = " ".join(str(err).splitlines()) or type(err).__name__
            log.error(
                "kept serving model %s: the model at %s did not load: %s",
                old.version,
                self._where(stamps),
                reason,
            )
            return
        self._served = served  # one reference assignment: requests see the old or the new
        if served.rating_model_version != old.rating_model_version:
            log.info(
                "now serving model %s with rating model %s (was %s with %s)",
                served.version,
                served.rating_model_version,
                old.version,
                old.rating_model_version,
            )
        else:
            log.info("now serving model %s (was %s)", served.version, old.version)

    def _stamps(self) -> tuple[Stamp, Stamp | None]:
        model_dir, rating_model = self._paths or (Path(), None)  # a fixed holder never asks
        return _stamp(model_dir), None if rating_model is None else _stamp(rating_model)

    def _load(self, stamps: tuple[Stamp, Stamp | None]) -> Served:
        model, partner = stamps
        recommender = Recommender.from_dir(
            model[0], rating_model=None if partner is None else partner[0]
        )
        return Served(
            recommender,
            version=Path(model[0]).name,
            saved_at=_time(model[3]),
            rating_model_version=None if partner is None else Path(partner[0]).name,
        )

    def _where(self, stamps: tuple[Stamp, Stamp | None]) -> str:
        model, partner = stamps
        return model[0] if partner is None else f"{model[0]} (with {partner[0]})"


def _stamp(path: Path) -> Stamp:
    """`path` resolved, its config.json's device, inode and modification time (None where
    it cannot be stat'ed: a link to nothing, a directory without a config), and the name,
    inode, modification time and size of each of its model files (JSON and safetensors: not,
    say, a visitors' database kept beside them, which changes with every rating)."""
    real = os.path.realpath(path)
    files = []
    try:
        with os.scandir(real) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):  # a file removed while listed
                    if entry.name.endswith(MODEL_FILES) and entry.is_file():
                        status = entry.stat()
                        files.append(
                            (entry.name, status.st_ino, status.st_mtime_ns, status.st_size)
                        )
    except OSError:
        pass
    listed = tuple(sorted(files))
    try:
        status = os.stat(os.path.join(real, "config.json"))
    except OSError:
        return real, None, None, None, listed
    return real, status.st_dev, status.st_ino, status.st_mtime_ns, listed


def _time(mtime_ns: int | None) -> str | None:
    if mtime_ns is None:
        return None
    moment = datetime.fromtimestamp(mtime_ns / 1e9, tz=UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


@contextlib.asynccontextmanager
async def watching(holder: ModelHolder) -> AsyncIterator[None]:
    """Within the block, keep `holder` current while no requests come, and reload it on
    SIGHUP.

    A task on the event loop makes the holder's check every `check_every` seconds, so an idle
    worker has the new model before its next request. SIGHUP is heard where the running event
    loop can take signals (a process's main thread on a POSIX system); elsewhere only the
    checks run.
    """
    loop = asyncio.get_running_loop()
    hangup = getattr(signal, "SIGHUP", None)
    try:
        loop.add_signal_handler(hangup, holder.reload)  # type: ignore[arg-type]
        listening = True
    except (NotImplementedError, RuntimeError, ValueError, TypeError):  # no signals here
        listening = False
    ticking = loop.create_task(_tick(holder)) if holder.check_every > 0 else None
    try:
        yield
    finally:
        if ticking is not None:
            ticking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticking
        if listening:
            loop.remove_signal_handler(hangup)  # type: ignore[arg-type]


async def _tick(holder: ModelHolder) -> None:
    while True:
        await asyncio.sleep(holder.check_every)
        holder.current()  # a stat or two when due; a load goes to its own thread
