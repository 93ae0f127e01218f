"""Visitors and their ratings in a SQL database: a SQLite file or a PostgreSQL server.

`Store` is the one way in, through SQLAlchemy Core with bound parameters only. The schema is
versioned by the Alembic migrations in `migrations/` (shipped with the package):
`Store.upgrade(url)` (`latentrec db upgrade --db URL`) brings a database to the newest revision,
and opening a `Store` refuses a database at any other.

Tables: `visitors(id, created_at)` and `interactions(visitor_id, item_id, rating, kind,
position, created_at, updated_at)`, one row per visitor and item. `rating` is null for an
implicit event (`kind` 'event'), a number otherwise (`kind` 'rating'); `position` keeps the
order a visitor first rated their items in. Item ids are stored as text, exactly as given.

URLs are shown with their password hidden (`safe_url`), in messages as everywhere.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import random
import re
import secrets
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.dialects import postgresql, sqlite

from latentrec.errors import DatabaseError, DataError, StoreLimitError

MAX_STORED = 5000  # ratings one visitor may keep
BUSY_SECONDS = 5.0  # how long a SQLite writer waits for another's write lock
MIGRATIONS = Path(__file__).with_name("migrations")
BACKENDS = ("sqlite", "postgresql")
VISITOR_ID = re.compile(r"[0-9a-f]{32}")
_WRITE = "latentrec_write"  # execution option: this transaction writes
_IN_CHUNK = 500  # item ids per IN (...) list

metadata = sa.MetaData()
visitors = sa.Table(
    "visitors",
    metadata,
    sa.Column("id", sa.Text(), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
interactions = sa.Table(
    "interactions",
    metadata,
    sa.Column("visitor_id", sa.Text(), sa.ForeignKey("visitors.id", ondelete="CASCADE")),
    sa.Column("item_id", sa.Text(), nullable=False),
    sa.Column("rating", sa.Double(), nullable=True),
    sa.Column("kind", sa.Text(), nullable=False),
    sa.Column("position", sa.BigInteger(), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("visitor_id", "item_id"),
)


# the statements each write runs, built once
_MINE = interactions.c.visitor_id == sa.bindparam("visitor")
_LOCK_VISITOR = (
    sa.select(visitors.c.id).where(visitors.c.id == sa.bindparam("visitor")).with_for_update()
)
_STORED = sa.select(sa.func.count(), sa.func.max(interactions.c.position)).where(_MINE)
_COUNT = sa.select(sa.func.count()).where(_MINE)


class UnknownVisitorError(DatabaseError):
    """Ratings given to a visitor the database does not hold."""


def safe_url(url: str) -> str:
    """`url` for messages and logs: its password as `***`, also where it does not parse."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except (sa.exc.ArgumentError, ValueError):
        scheme, separator, rest = url.partition("://")
        if "@" not in rest:
            return url
        credentials, _, where = rest.rpartition("@")  # a password may hold '@', a host not
        return f"{scheme}{separator}{credentials.partition(':')[0]}:***@{where}"


class Store:
    """Visitors and their ratings in the database at a SQLAlchemy URL.

    `sqlite:///path.db` (a file, opened in WAL mode) or `postgresql+psycopg://user@host/db`
    (`postgresql://` means the same). The schema must be at the newest revision. Every method
    runs in one transaction of its own; a `Store` may be shared by threads.
    """

    def __init__(self, url: str) -> None:
        self.url = safe_url(url)
        self._password = _password(url)
        self._engine = _engine(url, self.url)
        insert = (sqlite if self._engine.dialect.name == "sqlite" else postgresql).insert
        self._upsert_ratings = _upsert_ratings(insert)
        self._group = _GroupCommit(self._write_all)
        self._writers = _WriterLock(self._engine.url)
        # the driver's own errors, raised past SQLAlchemy where a cursor is used directly
        self._driver_error = self._engine.dialect.loaded_dbapi.Error
        try:
            with self._errors("reach"), self._engine.connect() as conn:
                current = MigrationContext.configure(conn).get_current_revision()
            head = _head()
            if current != head:
                raise DatabaseError(_behind(self.url, current, head))
        except BaseException:
            self._writers.close()
            self._engine.dispose()
            raise

    @staticmethod
    def upgrade(url: str) -> str:
        """Run the migrations that bring the database at `url` to the newest revision (creating
        a SQLite file that does not exist yet); returns that revision."""
        shown = safe_url(url)
        engine = _engine(url, shown, create=True)
        config = _alembic_config()
        try:
            with engine.connect() as conn:
                conn.execution_options(**{_WRITE: True})
                with conn.begin():
                    config.attributes["connection"] = conn
                    command.upgrade(config, "head")
                with conn.begin():
                    revision = MigrationContext.configure(conn).get_current_revision()
        except CommandError as err:  # a revision this latentrec does not know
            with contextlib.suppress(sa.exc.SQLAlchemyError), engine.connect() as conn:
                current = MigrationContext.configure(conn).get_current_revision()
                raise DatabaseError(f"cannot upgrade: {_behind(shown, current, _head())}") from err
            raise DatabaseError(f"cannot upgrade the database at {shown}: {err}") from err
        except sa.exc.SQLAlchemyError as err:
            raise DatabaseError(
                f"cannot upgrade the database at {shown}: {_reason(err, _password(url))}"
            ) from err
        finally:
            engine.dispose()
        return str(revision)

    def close(self) -> None:
        """Close the store's connections."""
        self._writers.close()
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # ------------------------------------------------------------------------- visitors

    def new_visitor(self) -> str:
        """A new visitor: 128 random bits as 32 lowercase hex characters, stored."""
        visitor = secrets.token_hex(16)
        with self._transaction("add a visitor to", write=True) as conn:
            conn.execute(sa.insert(visitors), {"id": visitor, "created_at": datetime.now(UTC)})
        return visitor

    def has_visitor(self, visitor: str) -> bool:
        """Whether `visitor` is stored (anything but a stored id, malformed ones too: False)."""
        if not isinstance(visitor, str) or not VISITOR_ID.fullmatch(visitor):
            return False
        with self._transaction("look up a visitor in") as conn:
            query = sa.select(visitors.c.id).where(visitors.c.id == visitor)
            return conn.execute(query).first() is not None

    def forget(self, visitor: str) -> int:
        """Delete the visitor and all their interactions; returns how many interactions went
        (0 for a visitor not stored)."""
        with self._transaction("delete a visitor from", write=True) as conn:
            mine = interactions.c.visitor_id == visitor
            count = conn.execute(sa.select(sa.func.count()).where(mine)).scalar_one()
            conn.execute(sa.delete(visitors).where(visitors.c.id == visitor))  # rows cascade
        return int(count)

    # ------------------------------------------------------------------------- ratings

    def rate(self, visitor: str, ratings: list[tuple[str, float | None]]) -> int:
        """`rate_counted` without the count: how many rows were written."""
        return self.rate_counted(visitor, ratings)[0]

    def rate_counted(
        self, visitor: str, ratings: list[tuple[str, float | None]]
    ) -> tuple[int, int]:
        """Store a visitor's ratings: one row per item, the latest rating of an item wins (also
        within `ratings`). A rating of None is an implicit event.

        Threads writing at once share transactions (group commit): one of them writes the
        others' ratings with its own, and each returns once the transaction holding its
        ratings has committed.

        Raises:
            StoreLimitError: the visitor would then keep more than `MAX_STORED` items; nothing
                is stored.
            UnknownVisitorError: the visitor is not stored (malformed ids too).

        Returns:
            How many rows were written (inserted or updated): the distinct items in `ratings`;
            and how many items the visitor then keeps.
        """
        if not isinstance(visitor, str) or not VISITOR_ID.fullmatch(visitor):
            raise UnknownVisitorError(f"no visitor {visitor!r}: visitor ids are 32 hex digits")
        latest = _latest(ratings)
        if not latest:
            return 0, self.count(visitor)
        return self._group.submit(_Write(visitor, latest))

    def _write_all(self, writes: list[_Write]) -> None:
        """Write `writes` in one transaction, each one's outcome kept on it. When the
        transaction fails, each is tried again alone, so that one write cannot fail another."""
        try:
            with self._transaction("store ratings in", write=True) as conn:
                for write in writes:
                    write.outcome = self._written(conn, write)
        except DatabaseError as err:
            if len(writes) == 1:
                writes[0].outcome = err
                return
            for write in writes:
                self._write_all([write])

    def _written(self, conn: sa.Connection, write: _Write) -> tuple[int, int] | DatabaseError:
        """Write one visitor's ratings inside `conn`'s transaction: (rows written, items the
        visitor then keeps), or the error that refused them before anything was written."""
        # the visitor's row, locked on PostgreSQL: one visitor's writes go one at a time, so
        # the limit holds (SQLite's write transactions go one at a time anyway)
        visitor, latest = write.visitor, write.latest
        if conn.execute(_LOCK_VISITOR, {"visitor": visitor}).first() is None:
            return UnknownVisitorError(
                f"no visitor {visitor!r} in the database; give ratings to a visitor from "
                "new_visitor()"
            )
        stored, last = conn.execute(_STORED, {"visitor": visitor}).one()
        if stored + len(latest) > MAX_STORED:
            new = len(latest) - _count_stored(conn, visitor, list(latest))
            if stored + new > MAX_STORED:
                return StoreLimitError(
                    f"visitor {visitor} keeps {stored:,} ratings and these add {new:,}: at "
                    f"most {MAX_STORED:,} are kept per visitor; forget some first"
                )
        first = 0 if last is None else int(last) + 1
        now = datetime.now(UTC)
        rows = [
            {
                "visitor_id": visitor,
                "item_id": item,
                "rating": rating,
                "kind": "event" if rating is None else "rating",
                "position": first + offset,
                "created_at": now,
                "updated_at": now,
            }
            for offset, (item, rating) in enumerate(latest.items())
        ]
        conn.execute(self._upsert_ratings, rows)
        total = conn.execute(_COUNT, {"visitor": visitor}).scalar_one()
        return len(rows), int(total)

    def count(self, visitor: str) -> int:
        """How many items the visitor has rated (or chosen)."""
        with self._transaction("count ratings in") as conn:
            return int(conn.execute(_COUNT, {"visitor": visitor}).scalar_one())

    def ratings(self, visitor: str) -> list[tuple[str, float | None]]:
        """A visitor's (item id, rating or None) pairs, in the order first rated."""
        query = (
            sa.select(interactions.c.item_id, interactions.c.rating)
            .where(interactions.c.visitor_id == visitor)
            .order_by(interactions.c.position)
        )
        with self._transaction("read ratings from") as conn:
            return [(item, rating) for item, rating in conn.execute(query)]

    def read_interactions(
        self, chunk_rows: int = 500_000, times: bool = False
    ) -> tuple[np.ndarray, ...]:
        """Every interaction, streamed in chunks of `chunk_rows` (a server-side cursor on
        PostgreSQL): visitor ids and item ids as object arrays of str, ratings as float32 with
        NaN for events; with `times`, a fourth array: when each was last rated or recorded, in
        whole Unix seconds (float64; NaN where the database cannot read the stored time as
        one). Rows come in no particular order.

        Each chunk's ids are deduplicated as it arrives, so the arrays hold one string per
        distinct id in a chunk rather than one per row.
        """
        if chunk_rows < 1:
            raise DataError(f"chunk_rows must be at least 1, got {chunk_rows}")
        columns = [interactions.c.visitor_id, interactions.c.item_id, interactions.c.rating]
        if times:  # the seconds computed by the database: no datetime object per row here
            changed = interactions.c.updated_at
            if self._engine.dialect.name == "postgresql":
                columns.append(sa.cast(sa.extract("epoch", changed), sa.BigInteger))
            else:  # SQLite keeps the UTC time as text
                columns.append(sa.cast(sa.func.strftime("%s", changed), sa.Integer))
        query = sa.select(*columns)
        # run on the driver's own cursor, with no parameters: constants written into the text
        sql = str(
            query.compile(dialect=self._engine.dialect, compile_kwargs={"literal_binds": True})
        )
        parts: list[tuple[np.ndarray, ...]] = []
        with self._errors("read interactions from"), self._engine.connect() as conn:
            raw = conn.connection.dbapi_connection
            if self._engine.dialect.name == "postgresql":
                cursor = raw.cursor(name="latentrec_read_interactions")  # type: ignore[union-attr]
                cursor.itersize = chunk_rows
            else:
                cursor = raw.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute(sql)
                while rows := cursor.fetchmany(chunk_rows):
                    table = np.array(rows, dtype=object)  # (rows, 3), filled in C
                    del rows  # the row tuples; each row's own strings go with `table`
                    ratings = table[:, 2].astype(np.float64)  # None -> NaN
                    part = (_shared(table[:, 0]), _shared(table[:, 1]), ratings.astype(np.float32))
                    if times:  # None where the stored text is no time the database reads
                        part += (table[:, 3].astype(np.float64),)
                    parts.append(part)
                    del table
            finally:
                cursor.close()
        if not parts:
            empty = (np.array([], dtype=object), np.array([], dtype=object))
            return empty + (np.array([], np.float32),) + (np.array([], np.float64),) * times
        return tuple(np.concatenate(column) for column in zip(*parts, strict=True))  # type: ignore[return-value]

    # ------------------------------------------------------------------------- plumbing

    @contextmanager
    def _transaction(self, doing: str, write: bool = False) -> Iterator[sa.Connection]:
        writing = self._writers.held() if write else contextlib.nullcontext()
        with self._errors(doing), writing, self._engine.connect() as conn:
            if write:
                conn.execution_options(**{_WRITE: True})
            with conn.begin():
                yield conn

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """The database's own errors as a `DatabaseError` naming what failed, and where."""
        try:
            yield
        except (sa.exc.SQLAlchemyError, self._driver_error) as err:
            raise DatabaseError(
                f"cannot {doing} the database at {self.url}: {_reason(err, self._password)}"
            ) from err


def _engine(url: str, shown: str, create: bool = False) -> sa.Engine:
    """An engine for a SQLite or PostgreSQL URL; SQLite connections set up for several
    writers. Without `create`, a SQLite file must exist already."""
    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        raise DatabaseError(
            f"{shown!r} is not a database URL; give sqlite:///path/to/file.db or "
            "postgresql+psycopg://user:password@host:5432/database"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite" and _in_memory(parsed.database or ""):
        raise DatabaseError(
            f"{shown} is an in-memory database: each connection gets an empty one, gone when "
            "it closes; give a file, such as sqlite:///latentrec.db"
        )
    if backend not in BACKENDS:
        raise DatabaseError(
            f"the database URL {shown} is for {backend}; latentrec keeps visitors' ratings in "
            "SQLite (sqlite:///path.db) or PostgreSQL (postgresql+psycopg://...)"
        )
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        _check_sqlite_file(parsed, shown, create)
    options: dict[str, Any] = {}
    if backend == "postgresql":
        # a pooled connection the server dropped (a restart) is replaced, not handed out
        options["pool_pre_ping"] = True
        if "connect_timeout" not in parsed.query:
            options["connect_args"] = {"connect_timeout": 10}
    try:
        with warnings.catch_warnings():
            # SQLAlchemy warns of a query argument the driver does not take: one line here
            warnings.simplefilter("error", sa.exc.SAWarning)
            engine = sa.create_engine(parsed, **options)
    except (sa.exc.SQLAlchemyError, sa.exc.SAWarning, ImportError) as err:
        raise DatabaseError(f"cannot use the database URL {shown}: {err}") from None
    if backend == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_connect)
        sa.event.listen(engine, "begin", _sqlite_begin)
    return engine


def _in_memory(database: str) -> bool:
    return database in ("", ":memory:") or "mode=memory" in database


def _check_sqlite_file(url: sa.URL, shown: str, create: bool) -> None:
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return
    path = Path(database)
    if path.exists() and not path.is_file():  # SQLite would write a journal beside /dev/null
        raise DatabaseError(f"{shown} names {path}, which is not a regular file; give a file")
    if not path.exists() and not create:
        raise DatabaseError(
            f"no database at {shown} ({path} does not exist): create it with "
            f"`latentrec db upgrade --db {shown}`"
        )
    if not path.parent.is_dir():
        raise DatabaseError(f"cannot create {shown}: the directory {path.parent} does not exist")


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # the driver's own transaction handling off: _sqlite_begin starts each one, so that a
    # writer takes the write lock at BEGIN and waits for it, instead of failing when it
    # upgrades a read lock later
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    busy = f"busy_timeout = {int(BUSY_SECONDS * 1000)}"
    for pragma in (busy, "journal_mode = WAL", "synchronous = NORMAL"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    """Start a transaction; a writer takes the write lock now. While another process holds
    it, the writer tries again every millisecond or two (for up to BUSY_SECONDS) instead of
    in SQLite's own busy wait, whose sleeps grow to 100 ms: the wait ends when the lock is
    free, not a long sleep later."""
    if not conn.get_execution_options().get(_WRITE, False):
        conn.exec_driver_sql("BEGIN")
        return
    deadline = time.monotonic() + BUSY_SECONDS
    conn.exec_driver_sql("PRAGMA busy_timeout = 0")
    try:
        while True:
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                return
            except sa.exc.OperationalError as err:
                if "locked" not in str(err.orig) or time.monotonic() > deadline:
                    raise
            time.sleep(random.uniform(0.0005, 0.002))
    finally:
        conn.exec_driver_sql(f"PRAGMA busy_timeout = {int(BUSY_SECONDS * 1000)}")


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def _head() -> str:
    try:
        head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    except CommandError as err:
        head, cause = None, err
    else:
        cause = None
    if head is None:
        raise DatabaseError(
            f"latentrec's schema migrations are missing from {MIGRATIONS}: reinstall latentrec"
        ) from cause
    return head


def _behind(shown: str, current: str | None, head: str) -> str:
    known = {
        script.revision
        for script in ScriptDirectory.from_config(_alembic_config()).walk_revisions()
    }
    if current is not None and current not in known:
        return (
            f"the database at {shown} is at revision {current}, which this latentrec does not "
            f"know (its newest is {head}): a newer latentrec wrote it; upgrade latentrec"
        )
    return (
        f"the database at {shown} is at revision {current or 'none (no latentrec tables)'}, "
        f"this latentrec needs {head}: run `latentrec db upgrade --db {shown}`"
    )


def _password(url: str) -> str | None:
    try:
        return sa.make_url(url).password
    except (sa.exc.ArgumentError, ValueError):
        return None


def _reason(err: Exception, password: str | None) -> str:
    """The driver's own first line (no SQL, no parameters), with any password hidden."""
    cause = getattr(err, "orig", None) or err
    lines = str(cause).strip().splitlines()
    reason = lines[0] if lines else type(cause).__name__
    if password:
        # as a word of its own (a URL's user:password@, a quoted value): a short password
        # replaced everywhere would mangle the words that hold its letters
        pattern = rf"(?<![A-Za-z0-9]){re.escape(password)}(?![A-Za-z0-9])"
        reason = re.sub(pattern, "***", reason)
    return reason


def _latest(ratings: list[tuple[str, float | None]]) -> dict[str, float | None]:
    """Item id -> its last rating in `ratings`, items in the order they first appear."""
    latest: dict[str, float | None] = {}
    for item, rating in ratings:
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            raise DataError(f"an item id must be text or a whole number, got {item!r}")
        if "\0" in str(item):  # PostgreSQL's text cannot hold it; refused alike everywhere
            raise DataError(f"item id {item!r} holds the NUL character, which ids may not")
        if rating is not None:
            if isinstance(rating, bool) or not isinstance(rating, (int, float)):
                raise DataError(f"rating {rating!r} of item {item!r} is not a number")
            if not math.isfinite(rating):
                raise DataError(f"rating {rating!r} of item {item!r} is not a finite number")
            rating = float(rating)
        latest[str(item)] = rating
    return latest


def _upsert_ratings(insert: Any) -> Any:
    """Insert rows of `interactions`; a (visitor, item) pair stored already takes the new
    rating, kind and time (`insert`: the dialect's own, which has ON CONFLICT)."""
    statement = insert(interactions)
    return statement.on_conflict_do_update(
        index_elements=[interactions.c.visitor_id, interactions.c.item_id],
        set_={
            "rating": statement.excluded.rating,
            "kind": statement.excluded.kind,
            "updated_at": statement.excluded.updated_at,
        },
    )


class _WriterLock:
    """Writers of one SQLite file, in this process and others, one at a time: an exclusive
    flock on the database file, which a waiting writer gets the moment it is released (SQLite's
    own write lock can only be polled for). SQLite's locks are POSIX record locks, which do not
    see flocks, so other programs' writers still meet SQLite's lock, as before. Nothing for
    PostgreSQL or an in-memory database. A process that dies holding it releases it."""

    def __init__(self, url: sa.URL) -> None:
        self._fd: int | None = None
        database = url.database or ""
        if (
            url.get_backend_name() == "sqlite"
            and database not in ("", ":memory:")
            and not database.startswith("file:")
        ):
            # a file that cannot be opened so falls back to polling SQLite's lock alone
            with contextlib.suppress(OSError):
                self._fd = os.open(database, os.O_RDONLY | os.O_CLOEXEC)

    @contextmanager
    def held(self) -> Iterator[None]:
        if self._fd is None:
            yield
            return
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass(eq=False)
class _Write:
    """One call's ratings on their way into the database, and what came of them."""

    visitor: str
    latest: dict[str, float | None]
    outcome: tuple[int, int] | DatabaseError | None = None


class _GroupCommit:
    """Writes from several threads in shared transactions (flat combining). A thread queues
    its write and takes the writer's lock; holding it, it writes every queued write at once,
    unless another thread has written its write meanwhile. Threads of one process thereby
    never wait for each other's database lock, and one commit serves many writes."""

    def __init__(self, write_all: Callable[[list[_Write]], None]) -> None:
        self._write_all = write_all
        self._writer = threading.Lock()
        self._queue_lock = threading.Lock()
        self._queue: list[_Write] = []

    def submit(self, write: _Write) -> tuple[int, int]:
        with self._queue_lock:
            self._queue.append(write)
        with self._writer:
            if write.outcome is None:
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                try:
                    self._write_all(batch)
                except BaseException as err:  # not the database's: every write learns of it
                    for queued in batch:
                        if queued.outcome is None:
                            queued.outcome = DatabaseError(f"cannot store ratings: {err!r}")
                    raise
        if isinstance(write.outcome, DatabaseError):
            raise write.outcome
        assert write.outcome is not None
        return write.outcome


def _count_stored(conn: sa.Connection, visitor: str, items: list[str]) -> int:
    """How many of `items` the visitor has stored already."""
    count = 0
    for start in range(0, len(items), _IN_CHUNK):
        query = sa.select(sa.func.count()).where(
            interactions.c.visitor_id == visitor,
            interactions.c.item_id.in_(items[start : start + _IN_CHUNK]),
        )
        count += conn.execute(query).scalar_one()
    return count


def _shared(ids: np.ndarray) -> np.ndarray:
    """`ids` as an object array in which equal ids are one string object."""
    codes, uniques = pd.factorize(ids)
    return uniques[codes]
