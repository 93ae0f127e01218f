"""Shared fixtures: small rating files in every supported layout, a checkerboard set, and
empty databases (a SQLite file, a database on a PostgreSQL server the tests start)."""

from __future__ import annotations

import glob
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
from pytest_postgresql import factories

from latentrec.data import IdMap, Ratings

# (user, item, rating, timestamp) rows shared by the MovieLens-layout fixtures
ROWS = [
    (1, 10, 4.0, 100),
    (1, 20, 3.0, 200),
    (1, 30, 5.0, 300),
    (2, 10, 2.0, 150),
    (2, 30, 1.0, 250),
    (3, 20, 4.0, 50),
    (3, 40, 3.0, 400),
]
TITLES = {10: "Toy Story (1995)", 20: "Heat (1995)", 30: "Amélie (2001)", 40: "Se7en (1995)"}


@pytest.fixture
def ml100k_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    lines = "".join(f"{u}\t{i}\t{int(r)}\t{t}\n" for u, i, r, t in ROWS)
    (folder / "u.data").write_text(lines)
    (folder / "u1.base").write_text(lines)
    items = "".join(f"{i}|{title}|01-Jan-1995||http://x|0|1\n" for i, title in TITLES.items())
    (folder / "u.item").write_bytes(items.encode("latin-1"))
    return folder


@pytest.fixture
def ml1m_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    lines = "".join(f"{u}::{i}::{int(r)}::{t}\n" for u, i, r, t in ROWS)
    (folder / "ratings.dat").write_text(lines)
    movies = "".join(f"{i}::{title}::Drama\n" for i, title in TITLES.items())
    (folder / "movies.dat").write_bytes(movies.encode("latin-1"))
    return folder


@pytest.fixture
def ml25m_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "ml-25m"
    folder.mkdir()
    lines = "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in ROWS)
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + lines)
    movies = "".join(f'{i},"{title}",Drama|Comedy\n' for i, title in TITLES.items())
    (folder / "movies.csv").write_text("movieId,title,genres\n" + movies, encoding="utf-8")
    return folder


def checkerboard(n_users: int = 24, n_items: int = 24, holdout: int = 3, seed: int = 0):
    """Even users love even items and hate odd ones; odd users the opposite.

    Each user leaves `holdout` items of each parity unrated; those pairs form the test set.
    Returns (train, test) Ratings sharing id maps (raw ids 100+index and 500+index).
    """
    rng = np.random.default_rng(seed)
    train_rows, test_rows = [], []
    for u in range(n_users):
        held = set(rng.choice(np.arange(0, n_items, 2), holdout, replace=False))
        held |= set(rng.choice(np.arange(1, n_items, 2), holdout, replace=False))
        for i in range(n_items):
            rating = 5.0 if (u + i) % 2 == 0 else 1.0
            (test_rows if i in held else train_rows).append((u, i, rating))
    users = IdMap(np.arange(n_users, dtype=np.int64) + 100)
    items = IdMap(np.arange(n_items, dtype=np.int64) + 500)

    def make(rows):
        array = np.array(rows, dtype=np.float64)
        return Ratings(
            array[:, 0].astype(np.int64),
            array[:, 1].astype(np.int64),
            array[:, 2].astype(np.float32),
            users,
            items,
            titles={500 + i: f"Item {i}" for i in range(n_items)},
            source="checkerboard",
        )

    return make(train_rows), make(test_rows)


@pytest.fixture(scope="session")
def board():
    return checkerboard()


@pytest.fixture(scope="session")
def small_split():
    """A quick split of the bundled data for end-to-end checks."""
    from latentrec.data import load_ratings

    return load_ratings("movielens-small").split(0.1, seed=42)


# ----------------------------------------------------------------------------- databases

# PostgreSQL will not run as root; the wrapper runs pg_ctl as the postgres user then
PG_CTL = Path(__file__).with_name("pg_ctl.sh")
POSTGRESQL_INSTALLED = bool(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl") or shutil.which("pg_ctl"))
postgresql_proc = factories.postgresql_proc(executable=str(PG_CTL))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path):
    """The URL of an empty database: a SQLite file not yet created, or a new database on the
    session's PostgreSQL server (started once, on first use)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'latentrec.db'}"
        return
    if not POSTGRESQL_INSTALLED:
        pytest.skip("PostgreSQL is not installed; `make test` installs it (apt-get install)")
    import psycopg
    from psycopg import sql

    server = request.getfixturevalue("postgresql_proc")
    name = f"latentrec_{uuid.uuid4().hex[:12]}"
    where = {"host": server.host, "port": server.port, "user": server.user}
    with psycopg.connect(dbname="postgres", autocommit=True, **where) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield f"postgresql+psycopg://{server.user}@{server.host}:{server.port}/{name}"
    with psycopg.connect(dbname="postgres", autocommit=True, **where) as admin:
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
