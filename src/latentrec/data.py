"""Rating data in: MovieLens layouts, CSV/TSV/Parquet files, a database of visitors' ratings and
a synthetic source -> Ratings.

A `Ratings` holds either explicit ratings or, with `implicit=True`, interactions (a user played,
clicked or bought an item): one row per (user, item) pair whose `rating` is the interaction's
weight (a count, or 1).

Raw ids are the ids as the data wrote them (`user_ids`, `item_ids`); indexes are the contiguous
integers the model uses (`user_index`, `item_index`). An `IdMap` converts between the two. An
index of -1 marks an id the map does not know (a user or item seen only in a test set).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from latentrec.errors import DataError

BUNDLED = "movielens-small"
USER_COLUMNS = ("user", "userId", "user_id", "userid", "UserID")
ITEM_COLUMNS = ("item", "movieId", "item_id", "itemId", "movie_id", "MovieID")
RATING_COLUMNS = ("rating", "Rating", "score")
TIMESTAMP_COLUMNS = ("timestamp", "Timestamp", "time")
COUNT_COLUMNS = ("count", "plays", "clicks")
DATABASE_SCHEMES = ("sqlite:", "postgresql:", "postgresql+")
VISITOR_PREFIX = "visitor:"  # a database's visitors among another source's users (`combine`)
UNKNOWN = -1
# seeds go to numpy and to torch's int64 generators, and seed + 1 seeds a second generator
LARGEST_SEED = 2**63 - 2
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_DIGITS = re.compile(r"[+-]?[0-9]+")  # an integer id as a person types it (ASCII digits)


@dataclass(frozen=True, eq=False)
class IdMap:
    """Raw ids <-> contiguous indexes. `ids[index]` is the raw id of `index`."""

    ids: np.ndarray
    _index: pd.Index = field(init=False, repr=False)

    def __post_init__(self) -> None:
        ids = np.asarray(self.ids)
        if ids.dtype.kind == "f":  # ids are whole numbers or text (pandas makes floats of gaps)
            if len(ids) and not _exact_whole(ids):
                raise DataError(
                    "ids are whole numbers or text; these are floating-point numbers that are "
                    "not all whole (or lie past 2^53); give them as integers or as text"
                )
            ids = ids.astype(np.int64)
        object.__setattr__(self, "ids", ids)
        index = pd.Index(ids)
        if not index.is_unique:
            raise DataError("an IdMap needs unique ids; found duplicates")
        object.__setattr__(self, "_index", index)

    @classmethod
    def from_values(cls, values: np.ndarray) -> tuple[IdMap, np.ndarray]:
        """Build a map of the distinct values (sorted) and return it with each value's index."""
        codes, uniques = pd.factorize(pd.Series(values), sort=True)
        return cls(np.asarray(uniques)), codes.astype(np.int64, copy=False)

    def __len__(self) -> int:
        return len(self.ids)

    def same_as(self, other: IdMap) -> bool:
        """Whether `other` holds the same ids in the same order (indexes mean the same)."""
        return self is other or (len(self) == len(other) and np.array_equal(self.ids, other.ids))

    @property
    def is_numeric(self) -> bool:
        return self.ids.dtype.kind in "iu"

    def coerce(self, raw_id: Any) -> Any:
        """Convert an id typed by a person (`"42"`) to the map's id type where it can."""
        if self.is_numeric and isinstance(raw_id, str):
            # ASCII digits only: int() also reads "1_0" as 10 and other scripts' digits
            text = raw_id.strip()
            return int(text) if _DIGITS.fullmatch(text) else raw_id
        if not self.is_numeric and not isinstance(raw_id, str):
            return str(raw_id)
        return raw_id

    def index_of(self, raw_id: Any) -> int:
        """The index of one raw id, or -1 when unknown."""
        raw_id = self.coerce(raw_id)
        try:
            position = self._index.get_loc(raw_id)
        except (KeyError, TypeError, pd.errors.InvalidIndexError):  # a list is no one id
            return UNKNOWN
        return int(position) if isinstance(position, (int, np.integer)) else UNKNOWN

    def indexes(self, raw_ids: Iterable[Any] | np.ndarray) -> np.ndarray:
        """Indexes of many raw ids at once (vectorised); -1 for each unknown id."""
        values = np.asarray(list(raw_ids) if not isinstance(raw_ids, np.ndarray) else raw_ids)
        if values.size == 0:
            return np.zeros(0, dtype=np.int64)
        if self.is_numeric and values.dtype.kind not in "iuf":
            values = np.array([self.coerce(v) for v in values], dtype=object)
        elif not self.is_numeric and values.dtype.kind != "U":
            # string ids (some were too large for int64): other files' numbers as text
            values = np.array([self.coerce(v) for v in values.tolist()], dtype=object)
        return self._index.get_indexer(values).astype(np.int64)

    def describe(self, noun: str) -> str:
        """`610 users (ids 1..610)`: for error messages."""
        if len(self) == 0:
            return f"no {noun}s"
        shown = f"ids {self.ids[0]}..{self.ids[-1]}" if self.is_numeric else f"e.g. {self.ids[0]!r}"
        return f"{len(self)} {noun}s ({shown})"

    def to_json(self) -> list:
        return self.ids.tolist()

    @classmethod
    def from_json(cls, ids: list) -> IdMap:
        """The map `to_json` wrote: whole numbers that fit int64 stay numbers, anything else
        (strings, larger numbers, a mix) becomes strings, exactly as written."""
        if ids and all(isinstance(v, int) and not isinstance(v, bool) for v in ids):
            try:
                return cls(np.array(ids, dtype=np.int64))
            except OverflowError:
                pass
        return cls(np.array([str(v) for v in ids], dtype=object))


@dataclass(frozen=True, eq=False)
class Ratings:
    """A table of ratings held as arrays, with the id maps that give their raw ids.

    `user_index`/`item_index` (int32, or int64 for a map of 2^31 ids or more) may hold -1 for
    ids their map does not know (test sets only).
    With `implicit=True` the rows are interactions and `rating` holds each one's weight (above 0);
    `positive_min` is set when they are the ratings at or above it (`positives`), and `scale`
    then keeps the scale those ratings were given on. `genres` maps an item id to its genres
    where the data name them (MovieLens item files); see `item_features`.
    """

    user_index: np.ndarray
    item_index: np.ndarray
    rating: np.ndarray
    users: IdMap
    items: IdMap
    timestamp: np.ndarray | None = None
    titles: Mapping[Any, str] | None = None
    source: str = ""
    implicit: bool = False
    positive_min: float | None = None
    scale: tuple[float, float] | None = None
    genres: Mapping[Any, tuple[str, ...]] | None = None

    def __post_init__(self) -> None:
        n = len(self.rating)
        for name, ids in (("user_index", self.users), ("item_index", self.items)):
            index = np.asarray(getattr(self, name))
            if len(index) != n:
                raise DataError(f"{name} has {len(index)} rows, rating has {n}")
            # int32 where the ids allow (always, in practice): 8 bytes a rating less than
            # int64 for the two; the same values
            if len(ids) < 2**31 - 1 and index.dtype != np.int32:
                object.__setattr__(self, name, index.astype(np.int32))
            if n and index.dtype.kind not in "iu":
                raise DataError(f"{name} must hold whole numbers, not {index.dtype}")
            low, high = (int(index.min()), int(index.max())) if n else (0, -1)
            if low < -1 or high >= len(ids):
                bad = low if low < -1 else high
                raise DataError(
                    f"{name} holds {bad}, outside its id map's indexes 0..{len(ids) - 1} (and "
                    "-1, an id the map does not know); build the indexes from the maps, e.g. "
                    "with IdMap.from_values"
                )
        if self.timestamp is not None and len(self.timestamp) != n:
            raise DataError(f"timestamp has {len(self.timestamp)} rows, rating has {n}")

    def __len__(self) -> int:
        return len(self.rating)

    def __repr__(self) -> str:
        noun = "interactions" if self.implicit else "ratings"
        return (
            f"Ratings({len(self):,} {noun}, {len(self.users):,} users, {len(self.items):,} items"
            f", source={self.source!r})"
        )

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def user_ids(self) -> np.ndarray:
        """Raw user id of each rating (unknown indexes are not allowed here)."""
        return self._raw_ids(self.users, self.user_index, "user")

    @property
    def item_ids(self) -> np.ndarray:
        """Raw item id of each rating (unknown indexes are not allowed here)."""
        return self._raw_ids(self.items, self.item_index, "item")

    def require_known(self, purpose: str) -> None:
        """DataError unless every row's user and item are in the id maps (no index -1, which a
        split's test rows hold for ids training never saw); `purpose` names what needs it."""
        for what, index in (("user", self.user_index), ("item", self.item_index)):
            unknown = int(np.count_nonzero(index < 0))
            if unknown:
                raise DataError(
                    f"{self.source}: {unknown} rows hold {what}s their id map does not know "
                    f"(index -1, as a split's test rows do), which {purpose} cannot take; leave "
                    f"them out first, e.g. ratings.take(np.flatnonzero(ratings.{what}_index >= 0))"
                )

    def _raw_ids(self, ids: IdMap, index: np.ndarray, what: str) -> np.ndarray:
        unknown = int(np.count_nonzero(index < 0))
        if unknown:  # index -1 would read the map's last id
            raise DataError(
                f"{self.source}: {unknown} rows hold {what}s the id map does not know (a "
                f"split's test rows whose {what} training never saw keep no raw id); leave "
                f"them out first, e.g. ratings.take(np.flatnonzero(ratings.{what}_index >= 0))"
            )
        return ids.ids[index]

    @property
    def rating_range(self) -> tuple[float, float]:
        """The lowest and highest rating (for interactions picked by `positives`, those of
        the ratings they were picked from)."""
        if self.scale is not None:
            return self.scale
        if len(self) == 0:
            return (0.0, 0.0)
        return float(self.rating.min()), float(self.rating.max())

    def title(self, item_id: Any) -> str | None:
        if not self.titles:
            return None
        return self.titles.get(self.items.coerce(item_id))

    def take(self, rows: np.ndarray) -> Ratings:
        """The ratings at `rows`, with the same id maps."""
        return replace(
            self,
            user_index=self.user_index[rows],
            item_index=self.item_index[rows],
            rating=self.rating[rows],
            timestamp=None if self.timestamp is None else self.timestamp[rows],
        )

    def positives(self, minimum: float) -> Ratings:
        """Explicit ratings as interactions: each rating of at least `minimum` becomes one of
        weight 1, row for row; the rest are dropped.

        The id maps are the same objects, so indexes stay valid; a user or item left with no
        rating simply has no rows (`compacted()` drops them). A `minimum` above every rating
        gives an empty set.
        """
        if self.implicit:
            raise DataError(
                f"{self!r} already holds interactions; positives() turns explicit ratings into "
                "interactions"
            )
        if np.isnan(minimum):
            raise DataError("positives() needs a number as its minimum rating, got nan")
        rows = np.flatnonzero(self.rating >= minimum)
        ones = np.ones(len(rows), dtype=np.float32)
        return replace(
            self.take(rows),
            rating=ones,
            implicit=True,
            positive_min=float(minimum),
            scale=self.rating_range,
        )

    def to_frame(self) -> pd.DataFrame:
        """Raw ids and ratings as a DataFrame (`user`, `item`, `rating`[, `timestamp`]);
        for interactions `rating` holds their weights."""
        frame = pd.DataFrame({"user": self.user_ids, "item": self.item_ids, "rating": self.rating})
        if self.timestamp is not None:
            frame["timestamp"] = self.timestamp
        return frame

    def reindexed(self, users: IdMap, items: IdMap) -> Ratings:
        """The same ratings expressed in other id maps; ids those maps lack get index -1."""
        return replace(
            self,
            user_index=_translate(self.user_index, users.indexes(self.users.ids)),
            item_index=_translate(self.item_index, items.indexes(self.items.ids)),
            users=users,
            items=items,
        )

    def compacted(self) -> Ratings:
        """Drop users and items that have no rating here, renumbering the rest."""
        users, user_index = IdMap.from_values(self.user_ids)
        items, item_index = IdMap.from_values(self.item_ids)
        return replace(self, user_index=user_index, item_index=item_index, users=users, items=items)

    def split(
        self,
        test_fraction: float = 0.1,
        seed: int = 42,
        by: str = "random",
        last_n: int | None = None,
        cutoff: float | None = None,
    ) -> Split:
        """Split into train and test sets.

        Args:
            test_fraction: share of ratings held out (`by="random"` or `"user"`).
            seed: seed of numpy's `default_rng` that shuffles rows.
            by: `"random"` (rows of a seeded permutation), `"user"` (that share of each user's
                ratings), or `"time"` (each user's `last_n` latest ratings, or all ratings at or
                after the timestamp `cutoff`).

        Returns:
            A `Split` whose train set is renumbered to the ids it holds and whose test set uses
            the train set's maps (-1 where an id appears only in the test set).
        """
        n = len(self)
        test_mask = self.test_mask(test_fraction, seed, by, last_n, cutoff)
        test_rows, train_rows = np.flatnonzero(test_mask), np.flatnonzero(~test_mask)
        if len(train_rows) == 0 or len(test_rows) == 0:
            raise DataError(
                f"the {by} split of {n} ratings left an empty "
                f"{'train' if len(train_rows) == 0 else 'test'} set; change the split options"
            )
        return Split.from_parts(self.take(train_rows), self.take(test_rows))

    def test_mask(
        self,
        test_fraction: float = 0.1,
        seed: int = 42,
        by: str = "random",
        last_n: int | None = None,
        cutoff: float | None = None,
    ) -> np.ndarray:
        """The rows `split` holds out, as a boolean mask (either part may be empty here)."""
        n = len(self)
        fraction_kinds = (int, float, np.integer, np.floating)
        if by in ("random", "user") and (
            not isinstance(test_fraction, fraction_kinds) or not 0.0 < test_fraction < 1.0
        ):
            raise DataError(
                f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction}"
            )
        _check_seed(seed)
        rng = np.random.default_rng(seed)
        if by in ("random", "user") and (last_n is not None or cutoff is not None):
            raise DataError(
                f"last_n and cutoff choose the time split's test rows (by='time'); the {by} "
                "split holds out test_fraction: leave them out, or split by time"
            )
        if by == "random":
            mask = np.zeros(n, dtype=bool)
            mask[rng.permutation(n)[: round(n * test_fraction)]] = True
            return mask
        if by == "user":
            return _per_user_holdout(self.user_index, test_fraction, rng)
        if by == "time":
            return self._time_mask(last_n, cutoff)
        raise DataError(f"unknown split {by!r}: use 'random', 'user' or 'time'")

    def _time_mask(self, last_n: int | None, cutoff: float | None) -> np.ndarray:
        if self.timestamp is None:
            raise DataError(f"a time split needs timestamps, and {self.source!r} has none")
        if (last_n is None) == (cutoff is None):
            raise DataError("a time split needs exactly one of last_n (per user) or cutoff")
        if cutoff is not None:
            if not isinstance(cutoff, int | float | np.number) or not np.isfinite(cutoff):
                raise DataError(f"cutoff must be a finite time, got {cutoff!r}")
            return self.timestamp >= cutoff
        if last_n is None or last_n < 1:
            raise DataError(f"last_n must be a positive number of ratings, got {last_n}")
        # rank each user's ratings from the newest; ties broken by row order
        order = np.lexsort((-np.arange(len(self)), -self.timestamp, self.user_index))
        sorted_users = self.user_index[order]
        starts = np.r_[0, np.flatnonzero(np.diff(sorted_users)) + 1]
        rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
        mask = np.zeros(len(self), dtype=bool)
        mask[order[rank < last_n]] = True
        return mask


@dataclass(frozen=True, eq=False)
class Split:
    """Train and test ratings; the test set is expressed in the train set's id maps.

    Unpacks like a pair: `train, test = ratings.split(...)`.
    """

    train: Ratings
    test: Ratings
    cold_users: int = 0
    """Distinct users that appear only in the test set (predicted by fallback)."""
    cold_items: int = 0
    """Distinct items that appear only in the test set."""

    @classmethod
    def from_parts(cls, train: Ratings, test: Ratings) -> Split:
        """Renumber `train` to the ids it holds and express `test` in its maps."""
        train = train.compacted()
        test_users = np.unique(test.user_index[test.user_index >= 0])
        test_items = np.unique(test.item_index[test.item_index >= 0])
        cold_users = int(np.sum(train.users.indexes(test.users.ids[test_users]) < 0))
        cold_items = int(np.sum(train.items.indexes(test.items.ids[test_items]) < 0))
        return cls(train, test.reindexed(train.users, train.items), cold_users, cold_items)

    def __iter__(self):
        return iter((self.train, self.test))

    @property
    def cold_ratings(self) -> int:
        """Test ratings whose user or item the train set lacks."""
        return int(np.sum((self.test.user_index < 0) | (self.test.item_index < 0)))


def _translate(index: np.ndarray, new_of_old: np.ndarray) -> np.ndarray:
    """Map old indexes to new ones through a lookup array, keeping -1 as -1."""
    if len(new_of_old) == 0:
        return np.full(len(index), UNKNOWN, dtype=np.int64)
    return np.where(index >= 0, new_of_old[np.maximum(index, 0)], UNKNOWN)


def _per_user_holdout(user_index: np.ndarray, fraction: float, rng) -> np.ndarray:
    """Mark round(fraction * n_u) random ratings of each user (at least one kept for training)."""
    n = len(user_index)
    order = np.lexsort((rng.random(n), user_index))
    sorted_users = user_index[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_users)) + 1]
    counts = np.diff(np.r_[starts, n])
    rank = np.arange(n) - np.repeat(starts, counts)
    n_test = np.minimum(np.round(counts * fraction).astype(np.int64), counts - 1)
    mask = np.zeros(n, dtype=bool)
    mask[order[rank < np.repeat(n_test, counts)]] = True
    return mask


# ----------------------------------------------------------------------------- loading


def load_ratings(
    source: str | Path = BUNDLED,
    *,
    user_col: str | None = None,
    item_col: str | None = None,
    rating_col: str | None = None,
    timestamp_col: str | None = None,
    implicit: bool = False,
    count_col: str | None = None,
) -> Ratings:
    """Read ratings or interactions from a named source, a MovieLens directory or a table file.

    A table with no rating column (`user,item[,timestamp][,count]`) holds interactions: the
    result has `implicit=True`, each row's weight is its count column (`count`, `plays`,
    `clicks` or `count_col`) or 1, and a (user, item) pair that repeats becomes one row with
    the weights summed and the earliest timestamp.

    Args:
        source: `"movielens-small"` (bundled); `"synthetic:ratings=N,users=U,items=I,seed=S"`;
            a MovieLens directory (100k, 1M/10M or 20M/25M/latest layout, found by its files);
            a file of the 100k layout (`u.data`, `u1.base`, ...); a CSV/TSV/Parquet file; or
            the URL of a database of visitors' ratings (`sqlite:///latentrec.db`,
            `postgresql+psycopg://user@host/db`; see `load_database`).
        user_col, item_col, rating_col, timestamp_col: column names of a table file, when
            they are not among the usual ones (`userId`, `user_id`, `movieId`, `rating`, ...).
        implicit: read any source as interactions: every rated pair becomes an interaction of
            weight 1 (repeated pairs summed), whatever its rating.
        count_col: the column of a table file that counts each row's interactions.

    Returns:
        `Ratings`, with `implicit=True` when it holds interactions.
    """
    text = str(source)
    columns = (user_col, item_col, rating_col, timestamp_col, count_col)
    if text == BUNDLED:
        ratings = _load_bundled()
    elif text.startswith("synthetic:") or text == "synthetic":
        ratings = synthetic_ratings(**parse_synthetic(text))
    elif is_database_url(text):
        given = [name for name, value in zip(_COLUMN_NAMES, columns, strict=True) if value]
        if given:
            raise DataError(
                f"the column options ({', '.join(given)}) are for table files; a database's "
                "columns are fixed: visitors, items, ratings"
            )
        return load_database(text, implicit=implicit)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise DataError(
                f"no such file or directory: {text!r}; give a path, '{BUNDLED}' or "
                "'synthetic:ratings=N,users=U,items=I,seed=S'"
            )
        try:
            ratings = _load_path(path, columns, implicit)
        finally:
            _release_arrow_memory()  # the table's, now freed: training would add to them
    if implicit and not ratings.implicit:
        ratings = _summed_pairs(ratings, np.ones(len(ratings)))
    return ratings


_COLUMN_NAMES = ("user_col", "item_col", "rating_col", "timestamp_col", "count_col")


def is_database_url(source: str | Path) -> bool:
    """Whether `source` names a database (`sqlite:...`, `postgresql:...`, or any `scheme://`
    URL, which the database layer then accepts or refuses) rather than a file."""
    if not isinstance(source, str):
        return False
    return source.startswith(DATABASE_SCHEMES) or bool(_URL.match(source))


def load_database(url: str, implicit: bool = False) -> Ratings:
    """Visitors' ratings from the database at `url` (written by `latentrec serve --db`).

    The users are the visitors (their ids, as text); the items are the item ids the visitors
    rated, as int64 when every one is written as a whole number (`"318"`, not `"0318"`), else
    as text. Rows come sorted by user and item, so a split of the same rows is the same split.
    Each row's timestamp is when it was last rated (Unix seconds), so a time split and the ease
    model's sessions work on visitors' ratings as on a file's.

    What the rows hold decides what the result holds: only ratings give explicit ratings; only
    events (no rating) give interactions of weight 1; ratings and events together give the
    ratings, and the events are left out with a warning. With `implicit`, every row (rating or
    event) is an interaction of weight 1.
    """
    from latentrec.database import Store  # SQLAlchemy loads only for a database source

    with Store(url) as store:
        visitor_ids, item_ids, values, stamps = store.read_interactions(times=True)
        source = store.url  # its password hidden
    if len(values) == 0:
        raise DataError(f"{source} holds no interactions yet; rate some items first")
    events = np.isnan(values)
    n_events = int(events.sum())
    implicit = implicit or n_events == len(values)
    if implicit:
        values = np.ones(len(values), dtype=np.float32)
    elif n_events:
        warnings.warn(
            f"{source}: {n_events:,} events (no rating) beside {len(values) - n_events:,} "
            "ratings are left out; train on both, as interactions, with implicit=True "
            "(--implicit)",
            stacklevel=3,
        )
        kept = ~events
        visitor_ids, item_ids, values = visitor_ids[kept], item_ids[kept], values[kept]
        stamps = stamps[kept]
    unread = int(np.isnan(stamps).sum())
    if unread:
        warnings.warn(
            f"{source}: {unread:,} of {len(stamps):,} interactions have an updated_at the "
            "database does not read as a time; loaded without timestamps (no time split, no "
            "sessions for the ease model)",
            stacklevel=3,
        )
    users, user_index = IdMap.from_values(visitor_ids)
    items, item_index = IdMap.from_values(_whole_numbers(item_ids))
    order = np.lexsort((item_index, user_index))
    return Ratings(
        user_index[order],
        item_index[order],
        values[order],
        users,
        items,
        timestamp=None if unread else stamps[order].astype(np.int64),
        source=source,
        implicit=implicit,
    )


def _whole_numbers(ids: np.ndarray) -> np.ndarray:
    """Text ids as int64 when every distinct one is exactly how an int64 is written, else
    unchanged: `"0318"` or `"+1"` would merge with `"318"` and `"1"` as numbers."""
    codes, uniques = pd.factorize(ids)
    text = pa.array(uniques, type=pa.string())
    try:
        numbers = pc.cast(text, pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return ids
    if not pc.all(pc.equal(pc.cast(numbers, pa.string()), text)).as_py():
        return ids
    return numbers.to_numpy()[codes]


def combine(first: Ratings, second: Ratings) -> Ratings:
    """Two sources' ratings as one set (`latentrec train --data A --with B`).

    Users stay apart: a database's visitors become `visitor:<id>`, so no visitor is taken for
    another source's user; otherwise equal ids are one user. Items are shared: equal ids are
    one item. Ids are numbers where both sides' are, else text (`1` and `"1"` are one id).
    Both must be ratings, or both interactions (`implicit=True` when loading makes them so).
    """
    if first.implicit != second.implicit:
        rated, other = (second, first) if first.implicit else (first, second)
        raise DataError(
            f"{rated.source} holds ratings and {other.source} interactions; train on both as "
            "interactions with --implicit (implicit=True)"
        )
    parts = (first, second)
    for part in parts:
        part.require_known("combine")  # index -1 would read the map's last id
    user_values = _joined([_ids_apart(part)[part.user_index] for part in parts])
    item_values = _joined([part.items.ids[part.item_index] for part in parts])
    users, user_index = IdMap.from_values(user_values)
    items, item_index = IdMap.from_values(item_values)
    titles, genres = {}, {}
    for part in parts:
        titles.update({items.coerce(key): title for key, title in (part.titles or {}).items()})
        genres.update({items.coerce(key): named for key, named in (part.genres or {}).items()})
    stamps = None
    if first.timestamp is not None and second.timestamp is not None:
        stamps = np.concatenate([first.timestamp, second.timestamp])
    rating = np.concatenate([first.rating, second.rating]).astype(np.float32)
    ratings = Ratings(
        user_index,
        item_index,
        rating,
        users,
        items,
        stamps,
        titles or None,
        f"{first.source} + {second.source}",
        genres=genres or None,
    )
    return _summed_pairs(ratings, rating.astype(np.float64)) if first.implicit else ratings


def as_trained(ratings: Ratings, trained: IdMap) -> Ratings:
    """A database's ratings with their visitors named as a model trained with `combine` named
    them (`visitor:<id>`), where `trained` (that model's users) holds such names; else as
    they are."""
    if not is_database_url(ratings.source) or trained.is_numeric:
        return ratings
    if not any(isinstance(u, str) and u.startswith(VISITOR_PREFIX) for u in trained.ids):
        return ratings
    return replace(ratings, users=IdMap(_ids_apart(ratings)))


def _ids_apart(ratings: Ratings) -> np.ndarray:
    """The user ids of `ratings` for `combine`: a database's prefixed, as text."""
    if not is_database_url(ratings.source):
        return ratings.users.ids
    return VISITOR_PREFIX + ratings.users.ids.astype(str).astype(object)


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    """Ids of two sources in one array: int64 where both are numbers, else text."""
    if all(part.dtype.kind in "iu" for part in parts):
        return np.concatenate(parts).astype(np.int64, copy=False)
    return np.concatenate(
        [part.astype(str).astype(object) if part.dtype.kind in "iu" else part for part in parts]
    )


def _load_path(path: Path, columns: tuple[str | None, ...], implicit: bool) -> Ratings:
    if path.is_dir():
        return _load_movielens_dir(path, implicit)
    if _is_100k_file(path) and not any(columns):
        return _load_100k_file(path)
    if path.name == "ratings.dat" and not any(columns):
        return _load_dat_dir(path.parent)
    if path.name in ("ratings.csv", "ratings.csv.gz") and not any(columns):
        return _load_csv_layout(path, _movies_beside(path.parent), str(path), implicit)
    return _load_table(path, *columns, implicit=implicit)


def _load_bundled() -> Ratings:
    folder = resources.files("latentrec") / "datasets" / "ml-latest-small"
    with resources.as_file(folder) as directory:
        return _load_csv_layout(
            directory / "ratings.csv.gz", directory / "movies.csv.gz", BUNDLED, implicit=False
        )


def _load_movielens_dir(path: Path, implicit: bool) -> Ratings:
    if (path / "u.data").exists():
        return _load_100k_file(path / "u.data")
    if (path / "ratings.dat").exists():
        return _load_dat_dir(path)
    for name in ("ratings.csv", "ratings.csv.gz", "ratings.parquet"):
        if (path / name).exists():
            return _load_csv_layout(path / name, _movies_beside(path), str(path), implicit)
    raise DataError(
        f"{path} holds no MovieLens ratings file (u.data, ratings.dat or ratings.csv); "
        "point at the directory that holds one, or at a rating file"
    )


def _movies_beside(folder: Path) -> Path | None:
    return next(
        (folder / m for m in ("movies.csv", "movies.csv.gz") if (folder / m).exists()), None
    )


_100K_NAME = re.compile(r"^u(\.data|[1-5]?\.(base|test)|[ab]\.(base|test))$")


def _is_100k_file(path: Path) -> bool:
    return bool(_100K_NAME.match(path.name))


def _read_csv_arrow(path: Path, **options: Any) -> pa.Table:
    read = pacsv.ReadOptions(**options.pop("read", {}))
    parse = pacsv.ParseOptions(**options.pop("parse", {}))
    convert = pacsv.ConvertOptions(**options.pop("convert", {}))
    try:
        table = pacsv.read_csv(
            path, read_options=read, parse_options=parse, convert_options=convert
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError) as err:
        raise DataError(
            f"cannot read {path}: {_first_line(err)}; check that it is {_what(path)}"
        ) from err
    finally:
        _release_arrow_memory()
    return table


def _release_arrow_memory() -> None:
    """Hand the memory Arrow's allocator keeps for reuse back to the system.

    Parsing a large CSV leaves freed parse buffers held that way, more than the table itself
    takes, and converting the table to arrays would add to them."""
    pa.default_memory_pool().release_unused()


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _what(path: Path) -> str:
    if _is_100k_file(path):
        return "a MovieLens 100k file: tab-separated 'user item rating timestamp' lines"
    if path.suffix == ".dat":
        return "a MovieLens 1M/10M file: 'user::item::rating::timestamp' lines"
    return "a table with user and item columns, and a rating or count column"


def _load_100k_file(path: Path) -> Ratings:
    names = ["user", "item", "rating", "timestamp"]
    table = _read_csv_arrow(
        path,
        read={"column_names": names},
        parse={"delimiter": "\t"},
        convert={"column_types": {"user": pa.int64(), "item": pa.int64(), "rating": pa.float32()}},
    )
    titles = genres = None
    item_file = path.parent / "u.item"
    if item_file.exists():
        titles, genres = _read_titles(item_file, "|", "latin-1")
    ratings = _from_columns(table, "user", "item", "rating", "timestamp", titles, str(path))
    return replace(ratings, genres=genres)


def _load_dat_dir(path: Path) -> Ratings:
    ratings_file = path / "ratings.dat"
    # '::' is two one-character delimiters with an empty column between them
    table = _read_csv_arrow(
        ratings_file,
        read={"column_names": ["user", "_a", "item", "_b", "rating", "_c", "timestamp"]},
        parse={"delimiter": ":"},
        convert={
            "include_columns": ["user", "item", "rating", "timestamp"],
            "column_types": {"user": pa.int64(), "item": pa.int64(), "rating": pa.float32()},
        },
    )
    titles = genres = None
    if (path / "movies.dat").exists():
        titles, genres = _read_titles(path / "movies.dat", "::", None)
    ratings = _from_columns(table, "user", "item", "rating", "timestamp", titles, str(ratings_file))
    return replace(ratings, genres=genres)


# the 100k release's genre flags (u.item's fields 6 to 24), in its u.genre's order
GENRES_100K = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]


def _read_titles(
    path: Path, separator: str, encoding: str | None
) -> tuple[dict[int, str], dict[int, tuple[str, ...]]]:
    """Item id -> title, and item id -> genres, from a MovieLens item file (`u.item`, whose
    sixth to 24th fields flag the genres, or `movies.dat`, whose third is 'Genre|Genre')."""
    raw = path.read_bytes()
    if encoding is None:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:  # the 1M release is latin-1, the 10M one UTF-8
            text = raw.decode("latin-1")
    else:
        text = raw.decode(encoding)
    titles: dict[int, str] = {}
    genres: dict[int, tuple[str, ...]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(separator)
        if len(parts) < 2:
            raise DataError(
                f"{path}, line {number}: expected 'id{separator}title...', got {line!r}"
            )
        try:
            key = int(parts[0])
        except ValueError as err:
            raise DataError(f"{path}, line {number}: item id {parts[0]!r} is not a number") from err
        titles[key] = parts[1].strip()
        flags = parts[5 : 5 + len(GENRES_100K)]  # after id, title, dates and address
        if separator == "|" and len(flags) == len(GENRES_100K):
            genres[key] = tuple(
                g for g, flag in zip(GENRES_100K, flags, strict=True) if flag == "1"
            )
        elif separator != "|" and len(parts) > 2:
            genres[key] = _genre_names(parts[2])
    return titles, genres


RELEASE_YEARS = 10  # the width of the release-year features, in years (validate_bayes.py)
_TITLE_YEAR = re.compile(r"\((\d{4})(?:[-\u2013]\d{0,4})?\)\s*$")


def item_features(ratings: Ratings) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """What the data say of each item beside its ratings, as compressed rows: (indptr over
    item indexes, the feature index of each entry, the features' names). An item's features
    are its genres ("genre:Comedy") and the RELEASE_YEARS-year span its title's trailing
    "(1995)" falls in ("released:1990-1999"). None when no item has any."""
    per_item: list[list[str]] = []
    for item_id in ratings.items.ids.tolist():
        named = [f"genre:{g}" for g in (ratings.genres or {}).get(item_id, ())]
        found = _TITLE_YEAR.search((ratings.titles or {}).get(item_id) or "")
        if found:
            start = int(found.group(1)) // RELEASE_YEARS * RELEASE_YEARS
            named.append(f"released:{start}-{start + RELEASE_YEARS - 1}")
        per_item.append(list(dict.fromkeys(named)))  # a genre named twice counts once
    names = sorted({name for named in per_item for name in named})
    if not names:
        return None
    index = {name: k for k, name in enumerate(names)}
    counts = np.array([len(named) for named in per_item], dtype=np.int64)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    columns = np.array([index[name] for named in per_item for name in named], dtype=np.int32)
    return indptr, columns, names


def _genre_names(text: str | None) -> tuple[str, ...]:
    """'Comedy|Drama' -> ('Comedy', 'Drama'); MovieLens' '(no genres listed)' names none."""
    return tuple(g for g in (text or "").strip().split("|") if g and not g.startswith("("))


def _load_csv_layout(
    ratings_file: Path, movies_file: Path | None, source: str, implicit: bool
) -> Ratings:
    ratings = _load_table(ratings_file, implicit=implicit)
    titles = genres = None
    if movies_file is not None:
        columns = ["movieId", "title", "genres"]
        movies = _read_csv_arrow(
            movies_file,
            convert={
                "include_columns": columns,
                "include_missing_columns": True,  # genres may be missing
                "column_types": dict.fromkeys(columns, pa.string()),
            },
        )
        for needed in ("movieId", "title"):
            if len(movies) and movies[needed].null_count == len(movies):
                raise DataError(
                    f"{movies_file} has no {needed} column: a MovieLens movies file has "
                    "movieId,title,genres; move it aside to load the ratings without titles"
                )
        keys = [ratings.items.coerce(key) for key in movies["movieId"].to_pylist()]
        titles = dict(zip(keys, movies["title"].to_pylist(), strict=True))
        named = [_genre_names(text) for text in movies["genres"].to_pylist()]
        genres = dict(zip(keys, named, strict=True)) if any(named) else None
    return replace(ratings, titles=titles, genres=genres, source=source)


def _load_table(
    path: Path,
    user_col: str | None = None,
    item_col: str | None = None,
    rating_col: str | None = None,
    timestamp_col: str | None = None,
    count_col: str | None = None,
    *,
    implicit: bool,
) -> Ratings:
    suffixes = [s.lower() for s in path.suffixes]
    if ".parquet" in suffixes or ".pq" in suffixes:
        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as err:
            raise DataError(f"cannot read {path} as Parquet: {_first_line(err)}") from err
    else:
        delimiter = "\t" if ".tsv" in suffixes or ".tab" in suffixes else _sniff_delimiter(path)
        table = _read_csv_arrow(path, parse={"delimiter": delimiter})
    names = table.column_names
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise DataError(
            f"{path} names the column {twice[0]!r} {names.count(twice[0])} times; give each "
            "column its own name in the header"
        )
    if (
        user_col is None
        and item_col is None
        and not any(c in names for c in (*USER_COLUMNS, *ITEM_COLUMNS))
    ):
        raise DataError(
            f"{path} has no user column and no item column (looked for {', '.join(USER_COLUMNS)}"
            f" and {', '.join(ITEM_COLUMNS)}); its columns are {names}; name them with "
            "--user-col and --item-col"
        )
    user = _pick_column(names, user_col, USER_COLUMNS, "user", path)
    item = _pick_column(names, item_col, ITEM_COLUMNS, "item", path)
    if ".parquet" not in suffixes and ".pq" not in suffixes:
        table = _text_ids(table, path, {"delimiter": delimiter}, [user, item])
    timestamp = timestamp_col or next((c for c in TIMESTAMP_COLUMNS if c in names), None)
    if timestamp is not None and timestamp not in names:
        raise DataError(f"{path} has no column {timestamp!r}; its columns are {names}")
    weight, counted = _weight_column(
        names, rating_col, count_col, {user, item, timestamp}, path, implicit
    )
    return _from_columns(table, user, item, weight, timestamp, None, str(path), counted)


def _weight_column(
    names: list[str],
    rating_col: str | None,
    count_col: str | None,
    known: set[str | None],
    path: Path,
    implicit: bool,
) -> tuple[str | None, bool]:
    """The column that weighs each row (None: 1 per row), and whether rows are interactions."""
    if rating_col is not None and count_col is not None:
        raise DataError(
            f"give a rating column or a count column, not both (got {rating_col!r} and "
            f"{count_col!r})"
        )
    if count_col is not None:
        return _pick_column(names, count_col, COUNT_COLUMNS, "count", path), True
    if rating_col is not None or any(c in names for c in RATING_COLUMNS):
        return _pick_column(names, rating_col, RATING_COLUMNS, "rating", path), False
    count = next((c for c in COUNT_COLUMNS if c in names), None)
    if count is not None:
        return count, True
    # a column we cannot place may be a rating under another name: reading it as
    # interactions would drop it silently
    others = [c for c in names if c not in known]
    if others and not implicit:
        raise DataError(
            f"{path} has no rating column ({', '.join(RATING_COLUMNS)}) or count column "
            f"({', '.join(COUNT_COLUMNS)}), and its columns {others} are neither ids nor a "
            "timestamp; name the rating with --rating-col or the count with --count-col, or "
            "load it with implicit=True to count each row as one interaction"
        )
    return None, True


def _sniff_delimiter(path: Path) -> str:
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
            first = handle.readline()
    except OSError as err:
        raise DataError(f"cannot read {path}: {err}") from err
    counts = {d: first.count(d) for d in (",", "\t", ";", "|")}
    best = max(counts, key=counts.__getitem__)
    return best if counts[best] else ","


def _pick_column(
    names: list[str], chosen: str | None, usual: tuple[str, ...], what: str, path: Path
) -> str:
    if chosen is not None:
        if chosen not in names:
            raise DataError(f"{path} has no column {chosen!r}; its columns are {names}")
        return chosen
    for name in usual:
        if name in names:
            return name
    raise DataError(
        f"{path} has no {what} column (looked for {', '.join(usual)}); its columns are "
        f"{names}; name it with --{what}-col"
    )


def _from_columns(
    table: pa.Table,
    user: str,
    item: str,
    rating: str | None,
    timestamp: str | None,
    titles: Mapping[Any, str] | None,
    source: str,
    implicit: bool = False,
) -> Ratings:
    """Ratings from a table's columns; with `implicit`, interactions weighted by the `rating`
    column (1 per row when it is None) with repeated pairs summed."""
    if table.num_rows == 0:
        raise DataError(f"{source} holds no {'interactions' if implicit else 'ratings'}")
    if rating is None:
        values = np.ones(table.num_rows)
    elif implicit:
        values = _weights(table.column(rating), rating, source)
    else:
        values = _ratings(table.column(rating), rating, source)
    users, user_index = IdMap.from_values(_ids(table.column(user), user, source))
    items, item_index = IdMap.from_values(_ids(table.column(item), item, source))
    stamps = None
    if timestamp is not None:
        stamps = _timestamps(table.column(timestamp), timestamp, source)
    ratings = Ratings(
        user_index, item_index, values.astype(np.float32), users, items, stamps, titles, source
    )
    return _summed_pairs(ratings, values) if implicit else ratings


_LATEST = np.iinfo(np.int64).max


def _timestamps(column: pa.ChunkedArray, name: str, source: str) -> np.ndarray:
    """A timestamp column as numbers: dates and times as seconds since 1970 (UTC), numbers
    as they are (int64; float64 where some have a fraction). Values past int64 or not finite
    are an error naming the row: cast, they would sort the newest rows first."""
    if pa.types.is_date(column.type) or pa.types.is_timestamp(column.type):
        if column.null_count:
            row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            raise DataError(f"{source}: column {name!r} has an empty value on data row {row + 1}")
        seconds = pc.cast(column, pa.timestamp("s", getattr(column.type, "tz", None)))
        return pc.cast(seconds, pa.int64()).to_numpy()
    values = _numeric(column, name, source)
    if values.dtype.kind != "f":
        return values.astype(np.int64, copy=False)
    bad = np.flatnonzero(~(np.abs(values) < 2.0**63))
    if len(bad):
        raise DataError(
            f"{source}: column {name!r} has {values[bad[0]]:g} on data row {bad[0] + 1}, which "
            "is no time (not finite, or past what int64 seconds hold)"
        )
    whole = bool(np.all(values == np.round(values)))
    return values.astype(np.int64) if whole else values.astype(np.float64, copy=False)


def _ratings(column: pa.ChunkedArray, name: str, source: str) -> np.ndarray:
    values = _numeric(column, name, source)
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{source}: rating {float(values[row])!r} on data row {row + 1} is missing or not a "
            "finite number"
        )
    too_large = np.abs(values) > np.finfo(np.float32).max
    if too_large.any():
        row = int(np.flatnonzero(too_large)[0])
        raise DataError(
            f"{source}: rating {values[row]:g} on data row {row + 1} is beyond float32's range "
            "(about 3.4e38); rescale the ratings"
        )
    return values


def _weights(column: pa.ChunkedArray, name: str, source: str) -> np.ndarray:
    """An interaction count column as float64, every value finite and above 0."""
    values = _numeric(column, name, source).astype(np.float64, copy=False)
    bad = ~(np.isfinite(values) & (values > 0))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{source}: count {float(values[row])!r} in column {name!r} on data row {row + 1} "
            "is not a finite number above 0; an interaction's weight must be positive"
        )
    return values


def _summed_pairs(ratings: Ratings, weight: np.ndarray) -> Ratings:
    """Interactions of `ratings` (every index known), one row per (user, item) pair: `weight`
    summed over the pair's rows and the earliest timestamp, in order of first appearance."""
    n_items = np.int64(max(ratings.n_items, 1))
    # in int64 whatever numpy's promotion rules (numpy 1 multiplies int32 by an int64 scalar
    # in int32, and users x items passes 2^31 at scale)
    key = np.multiply(ratings.user_index, n_items, dtype=np.int64)
    key += ratings.item_index
    codes, pairs = pd.factorize(key)  # hashing: linear time, first-appearance order
    summed = np.bincount(codes, weights=weight, minlength=len(pairs))
    if np.any(summed > np.finfo(np.float32).max):
        raise DataError(
            f"{ratings.source}: the counts of one (user, item) pair sum to {summed.max():g}, "
            "beyond float32's range (about 3.4e38); rescale the counts"
        )
    stamps = None
    if ratings.timestamp is not None:
        stamps = np.full(len(pairs), np.inf if ratings.timestamp.dtype.kind == "f" else _LATEST)
        np.minimum.at(stamps, codes, ratings.timestamp)
    return replace(
        ratings,
        user_index=pairs // n_items,  # int64 keys: `Ratings` narrows them to int32
        item_index=pairs % n_items,
        rating=summed.astype(np.float32),
        timestamp=stamps,
        implicit=True,
    )


def _numeric(column: pa.ChunkedArray, name: str, source: str) -> np.ndarray:
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        if column.null_count:
            row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            raise DataError(
                f"{source}: column {name!r} has an empty or NaN value on data row {row + 1} "
                f"({column.null_count} in all)"
            )
        return column.to_numpy()
    sample = next((v for v in column.to_pylist() if v is not None), None)
    try:
        float(sample)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DataError(
            f"{source}: column {name!r} must hold numbers, found {sample!r}; "
            "check the delimiter and the column options"
        ) from None
    values = pd.to_numeric(column.to_pandas(), errors="coerce")
    first_bad = values.isna().to_numpy().nonzero()[0]
    if len(first_bad):
        raise DataError(
            f"{source}: column {name!r} has {column.to_pylist()[first_bad[0]]!r} on data row "
            f"{first_bad[0] + 1}, which is not a number"
        )
    return values.to_numpy()


def _ids(column: pa.ChunkedArray, name: str, source: str) -> np.ndarray:
    """Raw ids as int64 where every id is a whole number that int64 holds exactly, else as
    strings. Ids are never rounded: two ids that differ stay two ids."""
    if column.null_count:
        raise DataError(f"{source}: column {name!r} has {column.null_count} empty ids")
    if pa.types.is_signed_integer(column.type):
        return column.to_numpy().astype(np.int64, copy=False)
    if pa.types.is_unsigned_integer(column.type):
        values = column.to_numpy()
        if len(values) == 0 or values.max() <= np.iinfo(np.int64).max:
            return values.astype(np.int64, copy=False)
        return np.asarray([str(v) for v in values.tolist()], dtype=object)
    if pa.types.is_floating(column.type):
        values = column.to_numpy()
        if _exact_whole(values):
            return values.astype(np.int64)
        if np.all(np.isfinite(values) & (values == np.round(values))):
            raise DataError(
                f"{source}: column {name!r} holds ids as floating-point numbers of 2^53 or "
                "more, which have lost digits; store the ids as integers or as text"
            )
    try:
        text = column.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise DataError(
            f"{source}: column {name!r} holds {column.type} values, which are not ids "
            f"({_first_line(err)}); ids are whole numbers or UTF-8 text"
            + ("; save the file as UTF-8" if pa.types.is_binary(column.type) else "")
        ) from err
    return np.asarray(text.to_pylist(), dtype=object)


def _exact_whole(values: np.ndarray) -> bool:
    """Whole numbers small enough that a float64 holds each one exactly (below 2^53)."""
    finite = np.isfinite(values)
    return bool(np.all(finite) and np.all(values == np.round(values))) and bool(
        np.all(np.abs(values) < 2.0**53)
    )


def _text_ids(table: pa.Table, path: Path, read: dict[str, Any], columns: list[str]) -> pa.Table:
    """Read the id `columns` of a CSV again as text where their numbers could merge two ids:
    floats that are not all exact whole numbers (ids of 2^63 and more, "1.5"), and numbers
    spelt two ways in one column ("1" and "01", "1.0", "+1", "0x1", " 1"), which Arrow reads
    as one number. A column whose every number has one spelling stays numbers."""
    numeric = [
        c
        for c in columns
        if pa.types.is_integer(table.column(c).type) or pa.types.is_floating(table.column(c).type)
    ]
    suspect = [c for c in numeric if pa.types.is_floating(table.column(c).type)]
    if len(suspect) < len(numeric) and _other_spellings(path, read["delimiter"]):
        suspect = numeric
    if not suspect:
        return table
    text = _read_csv_arrow(
        path,
        parse=dict(read),
        convert={"column_types": dict.fromkeys(suspect, pa.string()), "include_columns": suspect},
    )
    for name in suspect:
        numbers = table.column(name)
        whole = not pa.types.is_floating(numbers.type) or _exact_whole(numbers.to_numpy())
        if (
            whole
            and pc.count_distinct(numbers).as_py() == pc.count_distinct(text.column(name)).as_py()
        ):
            continue  # one spelling a number: numbers
        table = table.set_column(table.column_names.index(name), name, text.column(name))
    return table


def _other_spellings(path: Path, delimiter: str) -> bool:
    """Whether a CSV may spell a whole number in a way other than plain digits (a sign "+",
    a leading zero, "-0", "0x", a space or a tab beside a value): one compiled pass over its
    bytes, before the exact check that reads the id columns as text. True for a compressed
    file, or without numba."""
    if path.suffix.lower() in (".gz", ".bz2", ".lz4", ".zst", ".zstd") or _scan_bytes is None:
        return True
    if path.stat().st_size == 0:
        return False
    data = np.memmap(path, dtype=np.uint8, mode="r")
    try:
        return bool(_scan_bytes(data, ord(delimiter)))
    finally:
        del data


def _scan(data: np.ndarray, delimiter: int) -> bool:  # pragma: no cover - compiled
    previous = 10  # the file starts as a line does
    last = len(data) - 1
    for at in range(len(data)):
        byte = data[at]
        if byte <= 48:  # what matters lies at or below "0"; digits 1-9 pass at once
            if byte == 48:  # "-0", or "0" then a digit or x at a value's start
                if previous == 45:
                    return True
                starts = previous in (delimiter, 10, 13, 34)  # after , \n \r or a quote
                after = data[at + 1] if at < last else 10
                if starts and (48 <= after <= 57 or (after | 32) == 120):
                    return True
            elif byte in (43, 32, 9) and byte != delimiter:  # + space tab
                return True
        previous = byte
    return False


try:
    import numba

    _scan_bytes = numba.njit(cache=True, nogil=True)(_scan)
except ImportError:  # numba is a dependency; without it the exact check always runs
    _scan_bytes = None


# ----------------------------------------------------------------------------- synthetic


@dataclass(frozen=True)
class SyntheticSpec:
    """Parameters of the synthetic source; `load_ratings("synthetic:ratings=1000000")`."""

    ratings: int = 100_000
    users: int = 1_000
    items: int = 500
    seed: int = 0
    factors: int = 8
    noise: float = 0.5
    skew: float = 1.0
    # 1: every (user, item) pair at most once (pairs drawn again until there are `ratings`
    # distinct ones); 0: pairs repeat as their draws fall, as re-ratings would
    distinct: int = 0


def _check_seed(seed: Any, name: str = "seed") -> None:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise DataError(f"{name} must be a whole number, got {seed!r}")
    if not 0 <= seed <= LARGEST_SEED:
        raise DataError(f"{name} must be a whole number from 0 to {LARGEST_SEED}, got {seed}")


def parse_synthetic(text: str) -> dict[str, Any]:
    """`synthetic:ratings=N,users=U,...` -> keyword arguments of `synthetic_ratings`."""
    spec = text.partition(":")[2]
    allowed = SyntheticSpec.__dataclass_fields__
    result: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key not in allowed:
            raise DataError(
                f"bad synthetic option {part!r}: use key=value with keys {', '.join(allowed)}"
            )
        kind = allowed[key].type
        try:
            number = float(value.replace("_", ""))
        except ValueError:
            raise DataError(f"synthetic option {key} must be a number, got {value!r}") from None
        if kind != "float" and not (math.isfinite(number) and number.is_integer()):
            raise DataError(f"synthetic option {key} must be a whole number, got {value!r}")
        result[key] = number if kind == "float" else int(number)
    return result


LARGEST_SYNTHETIC = 2**31 - 1  # ratings, users, items or factors a synthetic set may have


def synthetic_ratings(**options: Any) -> Ratings:
    """Ratings in 0.5..5 from a low-rank model with biases and noise, with skewed popularity.

    User and item ids are drawn from Zipf-like distributions (weight of rank k is 1/k**skew),
    so a few popular items get most ratings, as in real catalogues. A (user, item) pair can
    repeat, as a re-rating would, unless `distinct=1` asks for each pair once (the same
    popularity; a library that keeps one rating per pair then trains on all the rows).
    Deterministic for a seed.
    """
    unknown = sorted(set(options) - set(SyntheticSpec.__dataclass_fields__))
    if unknown:
        raise DataError(
            f"unknown synthetic option {unknown[0]!r}; the options are "
            + ", ".join(SyntheticSpec.__dataclass_fields__)
        )
    for name, value in options.items():
        whole = SyntheticSpec.__dataclass_fields__[name].type != "float"
        kinds = (int, np.integer) if whole else (int, float, np.integer, np.floating)
        if (
            not isinstance(value, kinds)
            or isinstance(value, bool)
            or not math.isfinite(value)
            or (whole and name != "seed" and abs(value) > LARGEST_SYNTHETIC)
        ):
            what = f"whole number up to {LARGEST_SYNTHETIC:,}" if whole else "finite number"
            raise DataError(f"synthetic option {name} must be a {what}, got {value!r}")
    spec = SyntheticSpec(**options)
    for name in ("noise", "skew"):
        if getattr(spec, name) < 0:
            raise DataError(f"synthetic option {name} must be 0 or more, got {getattr(spec, name)}")
    for name in ("ratings", "users", "items", "factors"):
        if getattr(spec, name) < 1:
            raise DataError(
                f"synthetic option {name} must be at least 1, got {getattr(spec, name)}"
            )
    if spec.distinct not in (0, 1):
        raise DataError(f"synthetic option distinct must be 0 or 1, got {spec.distinct}")
    if spec.distinct and spec.ratings > spec.users * spec.items // 2:
        raise DataError(
            f"synthetic option distinct=1 asks for {spec.ratings:,} distinct pairs of "
            f"{spec.users:,} users and {spec.items:,} items; ask for at most half of the "
            f"{spec.users * spec.items:,} pairs there are"
        )
    _check_seed(spec.seed, "synthetic option seed")
    rng = np.random.default_rng(spec.seed)
    if spec.distinct:
        user_index, item_index = _distinct_pairs(rng, spec)
    else:
        user_index = _zipf_draw(rng, spec.users, spec.ratings, spec.skew)
        item_index = _zipf_draw(rng, spec.items, spec.ratings, spec.skew)
    scale = 1.0 / np.sqrt(spec.factors)
    user_factors = rng.normal(0, 1, (spec.users, spec.factors)).astype(np.float32) * scale
    item_factors = rng.normal(0, 1, (spec.items, spec.factors)).astype(np.float32) * scale
    user_bias = rng.normal(0, 0.4, spec.users).astype(np.float32)
    item_bias = rng.normal(0, 0.5, spec.items).astype(np.float32)
    rating = np.empty(spec.ratings, dtype=np.float32)
    chunk = 1_000_000  # bounds the temporary (chunk x factors) arrays
    for start in range(0, spec.ratings, chunk):
        u = user_index[start : start + chunk]
        i = item_index[start : start + chunk]
        value = np.einsum("ij,ij->i", user_factors[u], item_factors[i])
        value += 3.5 + user_bias[u] + item_bias[i]
        value += rng.normal(0, spec.noise, len(u)).astype(np.float32)
        rating[start : start + chunk] = np.clip(np.round(value * 2) / 2, 0.5, 5.0)
    # ids are ranks shuffled, so popularity does not follow the id order
    user_ids = rng.permutation(spec.users).astype(np.int64) + 1
    item_ids = rng.permutation(spec.items).astype(np.int64) + 1
    users, user_codes = IdMap.from_values(user_ids[user_index])
    items, item_codes = IdMap.from_values(item_ids[item_index])
    return Ratings(
        user_codes, item_codes, rating, users, items, source=f"synthetic:{_spec_text(spec)}"
    )


def _distinct_pairs(rng: np.random.Generator, spec: SyntheticSpec) -> tuple[np.ndarray, np.ndarray]:
    """`spec.ratings` distinct (user, item) pairs, each drawn as `synthetic_ratings` draws
    pairs; a pair drawn again is dropped and more are drawn, in rounds, until there are
    enough. The pairs keep the order they were first drawn in."""
    users = np.empty(0, dtype=np.int64)
    items = np.empty(0, dtype=np.int64)
    new_per_draw = 1.0  # of the last round's draws, the share that were new pairs
    while len(users) < spec.ratings:
        # enough draws that the round's new pairs should cover what is missing
        more = int((spec.ratings - len(users)) / new_per_draw * 1.1) + 1000
        before = len(users)
        users = np.concatenate([users, _zipf_draw(rng, spec.users, more, spec.skew)])
        items = np.concatenate([items, _zipf_draw(rng, spec.items, more, spec.skew)])
        _, first = np.unique(users * spec.items + items, return_index=True)
        first.sort()
        users, items = users[first], items[first]
        new_per_draw = max((len(users) - before) / more, 1e-3)
    return users[: spec.ratings], items[: spec.ratings]


def _zipf_draw(rng: np.random.Generator, n: int, size: int, skew: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** skew
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    return np.minimum(np.searchsorted(cdf, rng.random(size)), n - 1).astype(np.int64)


def _spec_text(spec: SyntheticSpec) -> str:
    return ",".join(f"{k}={getattr(spec, k)}" for k in SyntheticSpec.__dataclass_fields__)
