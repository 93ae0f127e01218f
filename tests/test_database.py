"""The database of visitors' ratings: the same tests on a SQLite file and on a real PostgreSQL
server (the `database_url` fixture), and training from it."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time

import numpy as np
import pytest
import sqlalchemy as sa
from alembic import command

from latentrec import load_ratings
from latentrec.data import VISITOR_PREFIX, combine
from latentrec.database import (
    MAX_STORED,
    Store,
    UnknownVisitorError,
    _alembic_config,
    _Write,
    safe_url,
)
from latentrec.errors import DatabaseError, DataError, StoreLimitError
from tests.test_contract import invoke, one_error_line

HEAD = "0001"
# ids and values that would break a query built by pasting text into SQL
HOSTILE = [
    "1; DROP TABLE interactions",
    "'; DELETE FROM visitors; --",
    "Robert'); DROP TABLE visitors;--",
    'double "quoted" \\ backslash',
    "naïve café ünïcödé 日本語",
    "🎬🍿",
    "%s %(x)s ? :name",
    "  spaced  ",
    "",
]


@pytest.fixture
def store(database_url: str):
    Store.upgrade(database_url)
    with Store(database_url) as opened:
        yield opened


def execute(url: str, statement: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(statement)
    engine.dispose()


def test_upgrade_creates_the_schema_and_a_store_opens(database_url):
    assert Store.upgrade(database_url) == HEAD
    assert Store.upgrade(database_url) == HEAD  # a second run has nothing to do
    with Store(database_url) as store:
        visitor = store.new_visitor()
        assert re.fullmatch(r"[0-9a-f]{32}", visitor)
        assert store.has_visitor(visitor)
        assert not store.has_visitor(store.new_visitor()[::-1])
        assert store.new_visitor() != visitor


def test_a_schema_behind_the_code_names_the_command_that_upgrades_it(database_url):
    if database_url.startswith("sqlite"):
        sqlite3.connect(database_url.removeprefix("sqlite:///")).close()  # an empty file
    advice = f"this latentrec needs {HEAD}: run `latentrec db upgrade --db {database_url}`"
    with pytest.raises(DatabaseError, match="at revision none") as empty:
        Store(database_url)
    assert advice in str(empty.value)

    Store.upgrade(database_url)
    config = _alembic_config()
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "base")  # every table gone, the version table empty
    engine.dispose()
    with pytest.raises(DatabaseError) as behind:
        Store(database_url)
    assert advice in str(behind.value)

    Store.upgrade(database_url)
    execute(database_url, "UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(DatabaseError, match="revision 9999, which this latentrec does not know"):
        Store(database_url)
    # regression (review): upgrade showed alembic's "Can't locate revision identified by"
    with pytest.raises(DatabaseError, match="revision 9999, which this latentrec does not know"):
        Store.upgrade(database_url)


def test_urls_that_keep_nothing_or_name_no_file_are_one_line(tmp_path):
    """Regression (review): `db upgrade` of an in-memory URL said it was upgraded (and serve
    then said to upgrade it); a directory or device was opened, and SQLite wrote a journal
    beside it; an argument the driver ignores was a two-line SQLAlchemy warning."""
    for url in ("sqlite://", "sqlite:///:memory:"):
        for call in (Store.upgrade, Store, load_ratings):
            with pytest.raises(DatabaseError, match="is an in-memory database"):
                call(url)
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(DatabaseError, match="which is not a regular file"):
        Store.upgrade(f"sqlite:///{folder}")
    assert [p.name for p in tmp_path.iterdir()] == ["folder"]
    with pytest.raises(DatabaseError, match=r"Query string argument\(s\) 'foo' are not accepted"):
        Store.upgrade(f"sqlite:///{tmp_path / 'q.db'}?foo=bar")


def test_a_missing_sqlite_file_is_not_created_by_opening_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'typo.db'}"
    with pytest.raises(DatabaseError, match="latentrec db upgrade"):
        Store(url)
    with pytest.raises(DatabaseError, match="latentrec db upgrade"):
        load_ratings(url)
    assert not (tmp_path / "typo.db").exists()


def test_the_latest_rating_of_an_item_wins(store):
    visitor = store.new_visitor()
    assert store.rate(visitor, [("10", 4.0), ("20", None), ("10", 2.5), ("30", 1.0)]) == 3
    assert store.ratings(visitor) == [("10", 2.5), ("20", None), ("30", 1.0)]
    assert store.rate(visitor, [("20", 5.0), ("30", None), ("40", 3.0)]) == 3
    # order of first rating kept; values and kinds replaced
    assert store.ratings(visitor) == [("10", 2.5), ("20", 5.0), ("30", None), ("40", 3.0)]
    assert store.rate(visitor, []) == 0
    assert store.count(visitor) == 4 and store.count(store.new_visitor()) == 0
    visitor_ids, _, ratings = store.read_interactions()
    assert len(ratings) == 4 and set(visitor_ids) == {visitor}
    assert store.rate_counted(visitor, [("40", 1.0), ("50", 2.0)]) == (2, 5)
    with pytest.raises(UnknownVisitorError):
        store.rate_counted("not a visitor", [("1", 4.0)])


def test_ratings_are_refused_for_no_visitor_and_for_values_that_are_not_numbers(store):
    with pytest.raises(DatabaseError, match="no visitor"):
        store.rate("0" * 32, [("1", 4.0)])
    visitor = store.new_visitor()
    for bad in [("1", float("nan")), ("1", float("inf")), ("1", "4"), (None, 4.0), ("a\0b", 1.0)]:
        with pytest.raises(DataError):
            store.rate(visitor, [bad])
    assert store.ratings(visitor) == []


def test_a_visitor_keeps_at_most_MAX_STORED_items(store):
    visitor = store.new_visitor()
    assert store.rate(visitor, [(str(i), 3.0) for i in range(MAX_STORED - 1)]) == MAX_STORED - 1
    # two new items would make MAX_STORED + 1: refused whole
    with pytest.raises(StoreLimitError, match=f"at most {MAX_STORED:,}"):
        store.rate(visitor, [("new-1", 5.0), ("new-2", 5.0)])
    assert len(store.ratings(visitor)) == MAX_STORED - 1
    # re-rating stored items and one new item reaches the limit exactly
    assert store.rate(visitor, [(str(i), 1.0) for i in range(10)] + [("new-1", 5.0)]) == 11
    assert len(store.ratings(visitor)) == MAX_STORED
    with pytest.raises(StoreLimitError):
        store.rate(visitor, [("new-2", 5.0)])
    assert store.rate(visitor, [("0", 4.5)]) == 1  # a stored item may still change
    other = store.new_visitor()  # the limit is each visitor's own
    assert store.rate(other, [("x", 1.0)]) == 1


def test_forget_removes_that_visitor_and_their_rows_only(store):
    first, second = store.new_visitor(), store.new_visitor()
    store.rate(first, [("1", 4.0), ("2", None), ("3", 2.0)])
    store.rate(second, [("1", 5.0), ("4", 1.0)])
    assert store.forget(first) == 3
    assert not store.has_visitor(first) and store.ratings(first) == []
    assert store.has_visitor(second)
    assert store.ratings(second) == [("1", 5.0), ("4", 1.0)]
    visitor_ids, _, _ = store.read_interactions()
    assert set(visitor_ids) == {second}
    assert store.forget(first) == 0  # forgetting twice is not an error


def test_ids_and_values_carrying_sql_are_stored_and_returned_verbatim(store):
    visitor = store.new_visitor()
    rows = [(item, float(n)) for n, item in enumerate(HOSTILE)]
    assert store.rate(visitor, rows) == len(HOSTILE)
    assert store.ratings(visitor) == rows
    _, item_ids, _ = store.read_interactions()
    assert sorted(item_ids) == sorted(HOSTILE)
    for forged in ["' OR '1'='1", f"{visitor}' OR '1'='1", "1; DROP TABLE visitors", visitor[:-1]]:
        assert not store.has_visitor(forged)
        assert store.ratings(forged) == []
        assert store.forget(forged) == 0
    assert store.ratings(visitor) == rows  # every table and row still there


def test_read_interactions_streams_every_row_in_chunks(store):
    expected = {}
    for n in range(7):
        visitor = store.new_visitor()
        rows = [(str(i), None if i % 5 == 0 else float(i % 10) / 2) for i in range(n, n + 30)]
        store.rate(visitor, rows)
        expected.update({(visitor, item): rating for item, rating in rows})
    visitor_ids, item_ids, ratings = store.read_interactions(chunk_rows=16)
    assert visitor_ids.dtype == object and item_ids.dtype == object
    assert ratings.dtype == np.float32 and len(ratings) == len(expected)
    for visitor, item, rating in zip(visitor_ids, item_ids, ratings, strict=True):
        wanted = expected[(visitor, item)]
        assert np.isnan(rating) if wanted is None else rating == wanted
    with pytest.raises(DataError):
        store.read_interactions(chunk_rows=0)


def test_load_ratings_reads_visitors_as_users(store, database_url):
    first, second = store.new_visitor(), store.new_visitor()
    before = time.time()
    store.rate(first, [("318", 5.0), ("296", 4.5), ("1", 3.0)])
    store.rate(second, [("318", 4.0), ("2", 2.0)])
    after = time.time()
    ratings = load_ratings(database_url)
    # when each was rated, in Unix seconds: sessions and time splits work on visitors too
    assert ratings.timestamp is not None and ratings.timestamp.dtype == np.int64
    assert np.all((ratings.timestamp >= int(before)) & (ratings.timestamp <= after + 1))
    assert not ratings.implicit and len(ratings) == 5
    assert ratings.items.ids.dtype == np.int64  # whole numbers, as a file's would be
    assert sorted(ratings.users.ids) == sorted([first, second])
    rows = zip(ratings.user_ids, ratings.item_ids, ratings.rating, strict=True)
    assert {(u, i): r for u, i, r in rows} == {
        (first, 318): 5.0,
        (first, 296): 4.5,
        (first, 1): 3.0,
        (second, 318): 4.0,
        (second, 2): 2.0,
    }
    assert "***" not in ratings.source and ratings.source.startswith(database_url.split(":")[0])

    store.rate(second, [("0318", None)])  # text that is not how a number is written
    with pytest.warns(UserWarning, match="1 events"):
        mixed = load_ratings(database_url)
    assert len(mixed) == 5 and mixed.items.ids.dtype == np.int64  # the event left out
    everything = load_ratings(database_url, implicit=True)
    assert everything.implicit and len(everything) == 6
    assert everything.items.ids.dtype == object and "0318" in everything.items.ids
    assert np.all(everything.rating == 1.0)


def test_times_the_database_cannot_read_load_without_timestamps(tmp_path):
    """A row whose updated_at some other program wrote as text SQLite does not read as a
    time: the ratings load, without timestamps, and a warning says why."""
    url = f"sqlite:///{tmp_path / 'written.db'}"
    Store.upgrade(url)
    with Store(url) as store:
        store.rate(store.new_visitor(), [("318", 5.0), ("1", 3.0)])
    with sqlite3.connect(tmp_path / "written.db") as conn:
        conn.execute("UPDATE interactions SET updated_at = 'yesterday' WHERE item_id = '1'")
    with pytest.warns(UserWarning, match="1 of 2 interactions have an updated_at"):
        ratings = load_ratings(url)
    assert len(ratings) == 2 and ratings.timestamp is None


def test_a_database_of_events_only_loads_as_interactions(store, database_url):
    visitor = store.new_visitor()
    store.rate(visitor, [("a", None), ("b", None)])
    ratings = load_ratings(database_url)
    assert ratings.implicit and list(ratings.rating) == [1.0, 1.0]
    assert list(ratings.items.ids) == ["a", "b"]


def test_with_keeps_visitors_apart_from_users_and_shares_items(store, database_url, ml25m_dir):
    visitor = store.new_visitor()
    store.rate(visitor, [("10", 5.0), ("99", 1.0)])
    both = combine(load_ratings(database_url), load_ratings(ml25m_dir))
    assert sorted(both.users.ids) == ["1", "2", "3", f"{VISITOR_PREFIX}{visitor}"]
    assert both.items.ids.dtype == np.int64 and sorted(both.items.ids) == [10, 20, 30, 40, 99]
    assert len(both) == 2 + 7 and both.title(10) == "Toy Story (1995)"
    assert both.genres[10] == ("Drama", "Comedy")  # what bayes's item features read

    store.forget(visitor)
    store.rate(store.new_visitor(), [("10", None)])  # events only: interactions
    with pytest.raises(DataError, match="--implicit"):
        combine(load_ratings(database_url), load_ratings(ml25m_dir))
    both = combine(load_ratings(database_url), load_ratings(ml25m_dir, implicit=True))
    assert both.implicit and len(both) == 1 + 7 and both.genres[40] == ("Drama", "Comedy")


def test_train_on_the_database_with_the_bundled_sample(tmp_path):
    url = f"sqlite:///{tmp_path / 'visitors.db'}"
    result = invoke("db", "upgrade", "--db", url, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["revision"] == HEAD
    with Store(url) as store:
        rng = np.random.default_rng(0)
        for _ in range(20):
            items = rng.choice(np.arange(1, 400), 25, replace=False)
            store.rate(store.new_visitor(), [(str(i), float(rng.integers(1, 6))) for i in items])
    out = tmp_path / "model"
    result = invoke(
        "train", "--data", url, "--with", "movielens-small", "--epochs", "1", "--out", out, "--json"
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["n_train"] + summary["n_test"] == 100_836 + 500

    from latentrec import Recommender

    recommender = Recommender.from_dir(out)
    visitors = [u for u in recommender.users.ids.tolist() if u.startswith(VISITOR_PREFIX)]
    assert len(visitors) == 20 and len(recommender.users) == 610 + 20
    assert recommender.recommend(visitors[0], k=3)  # a visitor is a user of the model
    assert recommender.recommend(1, k=3)  # and the sample's users keep their ids

    # regression (review): evaluating on the database alone took every visitor for unseen
    result = invoke("evaluate", out, "--data", url, "--json")
    assert result.exit_code == 0, result.output
    scored = json.loads(result.stdout.strip().splitlines()[-1])
    rows = load_ratings(url)
    unknown_items = sum(recommender.items.index_of(i) < 0 for i in rows.item_ids.tolist())
    assert scored["n"] == 500 and scored["cold_ratings"] == unknown_items < 50


def test_a_bad_url_is_one_line_without_the_password(tmp_path):
    for url in [
        "postgresql+psycopg://reader:s3cr3t-pw@127.0.0.1:1/ratings",
        "postgresql://reader:s3cr3t-pw@host:notaport/ratings",
        "mysql://reader:s3cr3t-pw@localhost/ratings",
        "not a url",
    ]:
        for args in (["db", "upgrade", "--db", url], ["train", "--data", url]):
            line = one_error_line(invoke(*args))
            assert "s3cr3t-pw" not in line, line
            assert "database" in line or "no such file" in line, line
    assert safe_url("postgresql://u:p%40ss@h/db") == "postgresql://u:***@h/db"
    # regression (review): a one-letter password was hidden inside every word holding it
    line = one_error_line(invoke("db", "upgrade", "--db", "postgresql+psycopg://u:o@127.0.0.1:1/d"))
    assert "u:***@127.0.0.1" in line and "connection" in line, line


def test_two_writers_at_once_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'busy.db'}"
    Store.upgrade(url)
    shared = Store(url)
    visitor = shared.new_visitor()
    failures: list[BaseException] = []

    def write(offset: int) -> None:
        try:
            with Store(url) as own:  # as a second server worker would
                mine = own.new_visitor()
                for n in range(60):
                    own.rate(mine, [(f"{offset}-{n}", 1.0 + n % 5)])
                    shared.rate(visitor, [(f"{offset}-{n}", 2.0), ("both", float(offset))])
        except BaseException as err:  # reported below, in the test's thread
            failures.append(err)

    threads = [threading.Thread(target=write, args=(offset,)) for offset in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    visitor_ids, _, _ = shared.read_interactions()
    assert len(visitor_ids) == 2 * 60 + 2 * 60 + 1
    assert len(shared.ratings(visitor)) == 2 * 60 + 1
    shared.close()
    with sqlite3.connect(tmp_path / "busy.db") as conn:  # readers never wait for the writer
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_writes_queued_while_another_commits_share_one_transaction(store, monkeypatch):
    """Threads that write while one holds the writer's lock are written together, each gets
    its own outcome, and one refused write (an unknown visitor, the limit) fails no other."""
    first, second = store.new_visitor(), store.new_visitor()
    store.rate(second, [(str(i), 1.0) for i in range(MAX_STORED)])
    batches: list[int] = []
    write_all = store._group._write_all
    monkeypatch.setattr(
        store._group, "_write_all", lambda writes: (batches.append(len(writes)), write_all(writes))
    )
    calls = [
        (first, [("a", 4.0)]),
        (first, [("b", 3.0), ("a", 5.0)]),
        ("0" * 32, [("a", 1.0)]),  # no such visitor
        (second, [("new", 2.0)]),  # over the limit
        (second, [("7", 5.0)]),  # a stored item may still change
    ]
    outcomes: dict[int, object] = {}

    def rate(index: int) -> None:
        try:
            outcomes[index] = store.rate_counted(*calls[index])
        except DatabaseError as err:
            outcomes[index] = type(err)

    threads = [threading.Thread(target=rate, args=(index,)) for index in range(len(calls))]
    with store._group._writer:  # as if a transaction were committing: all five queue up
        for thread in threads:
            thread.start()
        while len(store._group._queue) < len(calls):
            threading.Event().wait(0.001)
    for thread in threads:
        thread.join()
    assert batches == [len(calls)]
    assert outcomes[0] in ((1, 1), (1, 2)) and outcomes[1] in ((2, 2),)
    assert outcomes[2] is UnknownVisitorError
    assert outcomes[3] is StoreLimitError
    assert outcomes[4] == (1, MAX_STORED)
    assert dict(store.ratings(first))["b"] == 3.0
    assert store.count(second) == MAX_STORED and dict(store.ratings(second))["7"] == 5.0


def test_a_transaction_that_fails_is_retried_write_by_write(store, monkeypatch):
    good, bad = store.new_visitor(), store.new_visitor()
    written = store._written

    def failing(conn, write):
        if write.visitor == bad:
            conn.exec_driver_sql("SELECT * FROM no_such_table")
        return written(conn, write)

    monkeypatch.setattr(store, "_written", failing)
    writes = [_Write(good, {"1": 4.0}), _Write(bad, {"1": 2.0}), _Write(good, {"2": 3.0})]
    store._write_all(writes)
    assert [w.outcome for w in writes[::2]] == [(1, 1), (1, 2)]
    assert isinstance(writes[1].outcome, DatabaseError) and "no_such_table" in str(
        writes[1].outcome
    )
    assert store.ratings(good) == [("1", 4.0), ("2", 3.0)] and store.ratings(bad) == []


def test_sqlite_writers_of_two_stores_take_turns_on_the_file(tmp_path):
    """A store's write waits while another store (as another server worker would) holds the
    file's writer lock, and goes through the moment it is released; readers never wait."""
    url = f"sqlite:///{tmp_path / 'turns.db'}"
    Store.upgrade(url)
    with Store(url) as first, Store(url) as second:
        visitor = second.new_visitor()
        done = threading.Event()

        def write() -> None:
            second.rate(visitor, [("1", 4.0)])
            done.set()

        with first._writers.held():
            writer = threading.Thread(target=write)
            writer.start()
            assert not done.wait(0.3)  # held: the write waits
            assert first.count(visitor) == 0  # reading does not
        writer.join(10)
        assert done.is_set() and first.ratings(visitor) == [("1", 4.0)]
