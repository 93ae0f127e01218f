"""Reading every source layout, the splits, and the errors bad input gets."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from latentrec import ConfigError, DataError, fit, load_ratings
from latentrec.data import IdMap, Split, item_features, parse_synthetic

from .conftest import ROWS, TITLES


def _as_set(ratings):
    return set(
        zip(
            ratings.user_ids.tolist(),
            ratings.item_ids.tolist(),
            ratings.rating.tolist(),
            strict=False,
        )
    )


EXPECTED = {(u, i, r) for u, i, r, _ in ROWS}


def test_bundled_movielens_small_is_complete():
    ratings = load_ratings("movielens-small")
    assert len(ratings) == 100_836
    assert ratings.n_users == 610
    assert ratings.title(1) == "Toy Story (1995)"
    assert ratings.timestamp is not None
    assert ratings.rating_range == (0.5, 5.0)


def test_bundled_data_ships_its_licence():
    from importlib import resources

    readme = resources.files("latentrec") / "datasets" / "ml-latest-small" / "README.txt"
    assert "GroupLens" in readme.read_text(encoding="utf-8")


@pytest.mark.parametrize("layout", ["ml100k_dir", "ml1m_dir", "ml25m_dir"])
def test_movielens_directories_are_detected_by_their_files(layout, request):
    ratings = load_ratings(request.getfixturevalue(layout))
    assert _as_set(ratings) == EXPECTED
    assert ratings.title(30) == "Amélie (2001)"
    assert sorted(ratings.timestamp.tolist()) == sorted(t for *_, t in ROWS)


@pytest.mark.parametrize(
    ("layout", "genres"), [("ml1m_dir", ("Drama",)), ("ml25m_dir", ("Drama", "Comedy"))]
)
def test_movielens_item_files_give_each_items_genres(layout, genres, request):
    ratings = load_ratings(request.getfixturevalue(layout))
    assert ratings.genres == {item: genres for item in TITLES}


def test_the_100k_item_files_genre_flags_are_its_genres(tmp_path: Path):
    (tmp_path / "u.data").write_text("".join(f"{u}\t{i}\t{r:g}\t{t}\n" for u, i, r, t in ROWS))
    flags = {10: {3, 4, 5}, 20: {1, 6, 16}, 30: {5, 14}, 40: set()}  # Animation..., none
    lines = [
        f"{i}|{TITLES[i]}|01-Jan-1995||http://x|" + "|".join("01"[g in on] for g in range(19))
        for i, on in flags.items()
    ]
    (tmp_path / "u.item").write_bytes("\n".join(lines).encode("latin-1"))
    ratings = load_ratings(tmp_path / "u.data")
    assert ratings.genres[10] == ("Animation", "Children's", "Comedy")
    assert ratings.genres[20] == ("Action", "Crime", "Thriller")
    assert ratings.genres[40] == ()


def test_item_features_are_the_genres_and_the_decade_of_release():
    ratings = load_ratings("movielens-small")
    indptr, columns, names = item_features(ratings)
    assert len(indptr) == ratings.n_items + 1 and indptr[-1] == len(columns)

    def features(item_id):
        index = ratings.items.index_of(item_id)
        return {names[c] for c in columns[indptr[index] : indptr[index + 1]]}

    assert ratings.title(1) == "Toy Story (1995)"
    assert features(1) == {
        *(f"genre:{g}" for g in ("Adventure", "Animation", "Children", "Comedy", "Fantasy")),
        "released:1990-1999",
    }
    # "(no genres listed)" names none; a title without a year gives no decade
    assert "genre:(no genres listed)" not in names
    assert item_features(load_ratings("synthetic:ratings=500,users=20,items=10")) is None
    bare = replace(ratings, genres=None, titles={1: "Toy Story", 2: "Jumanji (1995)"})
    indptr, columns, names = item_features(bare)
    assert names == ["released:1990-1999"]
    assert np.diff(indptr)[ratings.items.index_of(1)] == 0


def test_a_genre_named_twice_is_one_feature_and_a_movies_file_needs_ids_and_titles(
    ml25m_dir: Path,
):
    ratings = load_ratings(ml25m_dir)
    twice = replace(ratings, genres={10: ("Drama", "Drama")}, titles=None)
    indptr, _, names = item_features(twice)
    counts = np.diff(indptr)
    assert names == ["genre:Drama"] and counts[ratings.items.index_of(10)] == counts.sum() == 1
    (ml25m_dir / "movies.csv").write_text("movieId,name\n10,Toy Story\n")
    with pytest.raises(DataError, match=r"movies\.csv has no title column"):
        load_ratings(ml25m_dir)


def test_100k_split_file_takes_titles_from_u_item(ml100k_dir: Path):
    ratings = load_ratings(ml100k_dir / "u1.base")
    assert _as_set(ratings) == EXPECTED
    assert ratings.title(10) == "Toy Story (1995)"


@pytest.mark.parametrize(
    ("layout", "name"), [("ml1m_dir", "ratings.dat"), ("ml25m_dir", "ratings.csv")]
)
def test_movielens_ratings_file_directly_takes_titles_beside_it(layout, name, request):
    ratings = load_ratings(request.getfixturevalue(layout) / name)
    assert _as_set(ratings) == EXPECTED
    assert ratings.title(40) == "Se7en (1995)"


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_table_files_with_usual_column_names(tmp_path: Path, suffix: str):
    frame = pd.DataFrame(ROWS, columns=["user_id", "item_id", "rating", "timestamp"])
    path = tmp_path / f"ratings{suffix}"
    if suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, sep="\t" if suffix == ".tsv" else ",", index=False)
    assert _as_set(load_ratings(path)) == EXPECTED


def test_table_file_with_named_columns_and_string_ids(tmp_path: Path):
    path = tmp_path / "stars.csv"
    path.write_text("who,what,stars\nann,book-1,4\nbob,book-2,2.5\nann,book-2,3\n")
    ratings = load_ratings(path, user_col="who", item_col="what", rating_col="stars")
    assert _as_set(ratings) == {
        ("ann", "book-1", 4.0),
        ("bob", "book-2", 2.5),
        ("ann", "book-2", 3.0),
    }
    assert ratings.users.index_of("bob") == 1
    assert ratings.users.index_of("nobody") == -1


def test_idmap_coerces_typed_ids():
    ids = IdMap(np.array([1, 5, 9]))
    assert ids.index_of("5") == 1
    assert ids.index_of(" 9 ") == 2
    assert ids.index_of("x") == -1
    assert ids.indexes(["1", 9, 7]).tolist() == [0, 2, -1]
    # what int() reads but nobody types as the id 15: "1_5", other scripts' digits
    assert ids.index_of("1_5") == ids.index_of("\uff15") == ids.index_of("\u0665") == -1
    assert IdMap(np.array([15])).indexes(["1_5", "15"]).tolist() == [-1, 0]


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("userId,movieId,rating\n1,2,4\n1,3,abc\n", "'abc'"),
        ("userId,movieId,stars\n1,2,4\n", "no rating column"),
        ("userId,movieId,stars\n1,2,4\n", "implicit=True"),
        ("a,b,c\n1,2,3\n", "no user column"),
        ("userId,movieId,rating\n1,2,4\n1,3\n", "cannot read"),
        ("userId,movieId,rating\n", "no ratings"),
    ],
)
def test_bad_tables_raise_data_error_naming_the_problem(tmp_path: Path, content, needle):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=needle):
        load_ratings(path)


def test_missing_file_says_what_to_give():
    with pytest.raises(DataError, match="no such file"):
        load_ratings("/no/such/ratings.csv")


def test_malformed_100k_line_is_reported(tmp_path: Path):
    path = tmp_path / "u.data"
    path.write_text("1\t2\t3\t4\n1\t2\n")
    with pytest.raises(DataError, match=r"u\.data"):
        load_ratings(path)


def test_named_column_that_does_not_exist(tmp_path: Path):
    path = tmp_path / "r.csv"
    path.write_text("user,item,rating\n1,2,3\n")
    with pytest.raises(DataError, match="no column 'score'"):
        load_ratings(path, rating_col="score")


def test_directory_without_ratings(tmp_path: Path):
    with pytest.raises(DataError, match="no MovieLens ratings file"):
        load_ratings(tmp_path)


def test_synthetic_source_is_deterministic_and_skewed():
    spec = "synthetic:ratings=20000,users=500,items=300,seed=3"
    first, second = load_ratings(spec), load_ratings(spec)
    assert len(first) == 20_000
    np.testing.assert_array_equal(first.rating, second.rating)
    assert first.rating.min() >= 0.5 and first.rating.max() <= 5.0
    counts = np.sort(np.bincount(first.item_index))[::-1]
    top_tenth = counts[: len(counts) // 10].sum() / counts.sum()
    assert top_tenth > 0.3  # popular items get far more than their 10% share
    assert load_ratings("synthetic:ratings=20000,users=500,items=300,seed=4").rating.tolist() != (
        first.rating.tolist()
    )


def test_distinct_synthetic_pairs_occur_once_with_the_same_skew():
    """distinct=1: as many ratings as asked, no pair twice, popular items still popular; the
    default keeps repeats (a re-rating), which libraries that keep one rating per pair drop."""
    spec = "synthetic:ratings=20000,users=500,items=300,seed=3"
    distinct = load_ratings(spec + ",distinct=1")
    pairs = distinct.user_index.astype(np.int64) * distinct.n_items + distinct.item_index
    assert len(distinct) == 20_000 == len(np.unique(pairs))
    counts = np.sort(np.bincount(distinct.item_index))[::-1]
    assert counts[: len(counts) // 10].sum() / counts.sum() > 0.2
    repeated = load_ratings(spec)
    pairs = repeated.user_index.astype(np.int64) * repeated.n_items + repeated.item_index
    assert len(np.unique(pairs)) < 20_000
    np.testing.assert_array_equal(load_ratings(spec + ",distinct=1").rating, distinct.rating)
    with pytest.raises(DataError, match="at most half of the 150,000 pairs"):
        load_ratings("synthetic:ratings=100000,users=500,items=300,distinct=1")
    with pytest.raises(DataError, match="distinct must be 0 or 1, got 2"):
        load_ratings("synthetic:ratings=100,distinct=2")


@pytest.mark.parametrize("spec", ["synthetic:ratings", "synthetic:colour=3", "synthetic:ratings=x"])
def test_bad_synthetic_spec(spec):
    with pytest.raises(DataError, match="synthetic option"):
        parse_synthetic(spec)


@pytest.mark.parametrize("seed", [-1, 2**63, 1.5])
def test_a_seed_numpy_or_torch_cannot_take_is_refused_by_name(seed):
    ratings = load_ratings("synthetic:ratings=200,users=20,items=10")
    with pytest.raises(DataError, match="seed must be a whole number"):
        ratings.split(0.2, seed=seed)
    with pytest.raises(ConfigError, match="seed must be a whole number"):
        fit(ratings, "dot", epochs=1, seed=seed, progress=False)


def test_rows_of_unknown_ids_have_no_raw_ids_to_show():
    # regression (review): a split's test rows unseen in training showed the map's last id
    train, test = load_ratings("movielens-small").split(0.2, seed=42, by="user")
    cold = test.item_index < 0
    assert cold.any()
    with pytest.raises(DataError, match=r"rows hold items the id map does not know"):
        test.to_frame()
    known = test.take(np.flatnonzero(~cold & (test.user_index >= 0)))
    frame = known.to_frame()
    assert frame.item.tolist() == train.items.ids[known.item_index].tolist()


def test_random_split_is_a_seeded_numpy_permutation():
    ratings = load_ratings("movielens-small")
    train, test = ratings.split(test_fraction=0.1, seed=42)
    order = np.random.default_rng(42).permutation(len(ratings))
    n_test = round(len(ratings) * 0.1)
    expected = ratings.take(np.sort(order[:n_test]))
    assert len(test) == n_test and len(train) == len(ratings) - n_test
    assert test.rating.tolist() == expected.rating.tolist()
    known = test.user_index >= 0
    assert (test.user_ids[known] == expected.user_ids[known]).all()


def test_split_reports_items_seen_only_in_test():
    split = load_ratings("movielens-small").split(0.1, seed=42)
    assert isinstance(split, Split)
    unknown_items = np.unique(split.test.item_index[split.test.item_index < 0])
    assert split.cold_items > 0
    assert unknown_items.tolist() == [-1]
    assert split.cold_ratings == int((split.test.item_index < 0).sum())
    assert split.train.n_items == len(np.unique(split.train.item_index))


def test_per_user_holdout_keeps_every_user_in_train():
    ratings = load_ratings("movielens-small")
    train, test = ratings.split(test_fraction=0.2, seed=1, by="user")
    assert train.n_users == ratings.n_users
    per_user = np.bincount(test.user_index, minlength=train.n_users)
    total = np.bincount(ratings.user_index)
    assert np.all(np.abs(per_user - np.round(total * 0.2)) <= 1)


def test_time_split_last_n_takes_each_users_newest(ml25m_dir: Path):
    train, test = load_ratings(ml25m_dir).split(by="time", last_n=1)
    assert sorted(test.timestamp.tolist()) == [250, 300, 400]  # newest of users 1, 2, 3
    assert len(train) == len(ROWS) - 3


def test_time_split_global_cutoff(ml25m_dir: Path):
    train, test = load_ratings(ml25m_dir).split(by="time", cutoff=250)
    assert sorted(test.timestamp.tolist()) == [250, 300, 400]
    assert sorted(train.timestamp.tolist()) == [50, 100, 150, 200]


def test_split_option_errors():
    ratings = load_ratings("movielens-small")
    with pytest.raises(DataError, match="test_fraction"):
        ratings.split(test_fraction=1.5)
    with pytest.raises(DataError, match="unknown split"):
        ratings.split(by="alphabet")
    with pytest.raises(DataError, match="exactly one"):
        ratings.split(by="time")


def test_separate_test_file_maps_into_train_ids(ml25m_dir: Path, tmp_path: Path):
    test_file = tmp_path / "test.csv"
    test_file.write_text("userId,movieId,rating\n1,40,2.0\n99,10,3.0\n")
    split = Split.from_parts(load_ratings(ml25m_dir), load_ratings(test_file))
    assert split.cold_users == 1 and split.cold_items == 0
    assert split.test.user_index.tolist()[1] == -1


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 30), st.integers(0, 30), st.floats(0.5, 5.0)),
        min_size=2,
        max_size=80,
    ),
    st.floats(0.05, 0.95),
    st.integers(0, 2**32 - 1),
)
def test_random_split_partitions_rows(rows, fraction, seed):
    frame = pd.DataFrame(rows, columns=["user", "item", "rating"])
    from latentrec.data import IdMap as Map
    from latentrec.data import Ratings

    users, user_index = Map.from_values(frame["user"].to_numpy())
    items, item_index = Map.from_values(frame["item"].to_numpy())
    ratings = Ratings(user_index, item_index, frame["rating"].to_numpy(np.float32), users, items)
    n_test = round(len(rows) * fraction)
    if n_test in (0, len(rows)):
        with pytest.raises(DataError):
            ratings.split(fraction, seed=seed)
        return
    train, test = ratings.split(fraction, seed=seed)
    assert len(train) + len(test) == len(rows)
    assert sorted(train.rating.tolist() + test.rating.tolist()) == sorted(
        frame["rating"].to_numpy(np.float32).tolist()
    )
    # every test row either maps to a train id or is flagged unknown (-1), never out of range
    assert test.user_index.max() < train.n_users and test.item_index.max() < train.n_items


def test_ids_of_2_63_and_more_stay_distinct_and_exact(tmp_path: Path):
    # regression (issue 14): Arrow read them as floats and 40 users became one
    big = [2**63 + k for k in range(40)] + [2**64 + 7]
    lines = "".join(f"{user},{k % 3},{k % 5 + 1}\n" for k, user in enumerate(big))
    path = tmp_path / "big.csv"
    path.write_text("user,item,rating\n" + lines + "1,1,3\n")
    ratings = load_ratings(path)
    assert ratings.n_users == 42
    assert set(ratings.users.ids.tolist()) == {str(u) for u in big} | {"1"}
    assert ratings.users.index_of(2**63 + 5) == ratings.users.index_of(str(2**63 + 5)) >= 0
    assert ratings.items.is_numeric  # the small ids of the other column stay numbers


@pytest.mark.parametrize(
    ("rows", "users"),
    [
        (["1,10,5", "01,20,4"], ["01", "1"]),
        (["1,10,5", "+1,20,4"], ["+1", "1"]),
        (["1,10,5", "1.0,20,4"], ["1", "1.0"]),
        (["5,10,5", "0x5,20,4"], ["0x5", "5"]),
        (["1,10,5", " 1,20,4"], [" 1", "1"]),
        (["0,10,5", "-0,20,4"], ["-0", "0"]),
        (["0,10,5", "1,20,4", '"-0",30,3'], ["-0", "0", "1"]),  # quoted
        (["001,10,5", "002,20,4"], [1, 2]),  # one spelling each: numbers
        (["1.0,10,5", "2.0,20,4"], [1, 2]),
        (["1,10,0.5", "10,20,4"], [1, 10]),
    ],
)
def test_one_number_spelt_two_ways_is_two_ids(rows, users, tmp_path: Path):
    # regression (review): Arrow read "1", "01", "+1", "1.0", "0x1" and " 1" as one number,
    # so two users of the file became one (README: "two ids never merge")
    path = tmp_path / "ratings.csv"
    path.write_text("user,item,rating\n" + "\n".join(rows) + "\n")
    ratings = load_ratings(path)
    assert sorted(ratings.users.ids.tolist(), key=str) == users
    assert ratings.items.ids.tolist() == [10, 20, 30][: ratings.n_items]
    assert len(ratings) == len(rows)


def test_files_that_hold_no_ids_are_one_clear_error(tmp_path: Path):
    # regression (review): tracebacks, exit 1
    latin = tmp_path / "latin1.csv"
    latin.write_bytes(b"user,item,rating\nRen\xe9,10,4\nBob,11,3\n")
    with pytest.raises(
        DataError, match=r"column 'user' holds binary values.*save the file as UTF-8"
    ):
        load_ratings(latin)
    twice = tmp_path / "twice.csv"
    twice.write_text("user,item,rating,rating\n1,10,4,3\n2,11,3,3\n")
    with pytest.raises(DataError, match="names the column 'rating' 2 times"):
        load_ratings(twice)
    listed = tmp_path / "list.parquet"
    pq.write_table(pa.table({"user": [1, 2], "item": [[10], [11]], "rating": [4, 3]}), listed)
    with pytest.raises(DataError, match=r"column 'item' holds list<element: int64> values"):
        load_ratings(listed)


def test_timestamps_keep_fractions_read_dates_and_refuse_what_is_no_time(tmp_path: Path):
    path = tmp_path / "times.csv"
    path.write_text("user,item,rating,timestamp\n1,10,4,1.7\n1,11,3,1.2\n2,10,5,1.5\n")
    ratings = load_ratings(path)
    assert ratings.timestamp.tolist() == [1.7, 1.2, 1.5]  # were cut to 1, 1, 1
    assert len(ratings.split(by="time", cutoff=1.5).test) == 2
    path.write_text("user,item,rating,timestamp\n1,10,4,2020-01-01\n1,11,3,2020-01-02\n")
    assert load_ratings(path).timestamp.tolist() == [1577836800, 1577923200]
    for bad in ("inf", "1e30"):  # were -2^63: the newest rows sorted first
        path.write_text(f"user,item,rating,timestamp\n1,10,4,1\n1,11,3,{bad}\n")
        with pytest.raises(DataError, match=r"has (inf|1e\+30) on data row 2, which is no time"):
            load_ratings(path)
    with pytest.raises(DataError, match="cutoff must be a finite time, got nan"):
        ratings.split(by="time", cutoff=float("nan"))
    with pytest.raises(DataError, match="last_n and cutoff choose the time split's test rows"):
        ratings.split(by="random", last_n=1)


def test_unsigned_and_float_id_columns_of_parquet(tmp_path: Path):
    frame = pd.DataFrame(
        {
            "user": np.array([2**63 + 1, 2**63 + 2, 5], dtype=np.uint64),
            "item": np.array([1.0, 2.0, 3.0]),
            "rating": [1.0, 2.0, 3.0],
        }
    )
    frame.to_parquet(tmp_path / "ok.parquet")
    ratings = load_ratings(tmp_path / "ok.parquet")
    assert sorted(ratings.users.ids.tolist()) == sorted(["5", str(2**63 + 1), str(2**63 + 2)])
    assert ratings.items.ids.tolist() == [1, 2, 3]
    frame.assign(user=[2.0**60, 2.0**60 + 256, 1.0]).to_parquet(tmp_path / "lossy.parquet")
    with pytest.raises(DataError, match="lost digits"):
        load_ratings(tmp_path / "lossy.parquet")


def test_id_maps_round_trip_through_json_exactly():
    for ids in ([1, 2, 3], ["a", "b"], [str(2**63), "1"], [1, 2**63]):
        restored = IdMap.from_json(IdMap.from_json(ids).to_json())
        assert [str(v) for v in restored.ids.tolist()] == [str(v) for v in ids]
    assert IdMap.from_json([1, 2**63]).ids.tolist() == ["1", str(2**63)]  # never a float


def test_numeric_ids_of_another_file_find_string_ids(tmp_path: Path):
    # regression (review): one id of 2^63 made the train ids strings, and a test file's
    # small numeric ids then matched nothing (every rating counted as unseen)
    train = tmp_path / "train.csv"
    rows = [(u, i, 3.0) for u in [*range(1, 6), 2**63] for i in range(1, 4)]
    train.write_text("user,item,rating\n" + "".join(f"{u},{i},{r}\n" for u, i, r in rows))
    test = tmp_path / "test.csv"
    test.write_text("user,item,rating\n2,1,4\n3,2,2\n")
    parts = Split.from_parts(load_ratings(train), load_ratings(test))
    assert parts.cold_ratings == 0 and parts.cold_users == 0


def test_titles_of_ids_of_2_63_and_more_are_kept(tmp_path: Path):
    big = 2**63 + 5
    (tmp_path / "ratings.csv").write_text(f"userId,movieId,rating\n1,{big},4\n2,{big},3\n2,7,1\n")
    (tmp_path / "movies.csv").write_text(f'movieId,title,genres\n{big},"Big",x\n7,1984,x\n')
    ratings = load_ratings(tmp_path)
    assert ratings.title(big) == "Big" and ratings.title(7) == "1984"  # a title of digits: text


# ----------------------------------------------------------------------------- interactions


def _weights(ratings) -> dict:
    return dict(
        zip(
            zip(ratings.user_ids.tolist(), ratings.item_ids.tolist(), strict=True),
            ratings.rating.tolist(),
            strict=True,
        )
    )


def test_user_item_file_loads_as_interactions_with_repeats_summed(tmp_path: Path):
    path = tmp_path / "log.csv"
    path.write_text(
        "user,item,timestamp\n"
        "ann,a,30\n"
        "bob,a,10\n"
        "ann,a,20\n"  # ann-a again, earlier
        "ann,b,40\n"
        "ann,a,50\n"
    )
    interactions = load_ratings(path)
    assert interactions.implicit
    assert len(interactions) == 3
    assert _weights(interactions) == {("ann", "a"): 3.0, ("bob", "a"): 1.0, ("ann", "b"): 1.0}
    stamps = dict(
        zip(
            zip(interactions.user_ids.tolist(), interactions.item_ids.tolist(), strict=True),
            interactions.timestamp.tolist(),
            strict=True,
        )
    )
    assert stamps == {("ann", "a"): 20, ("bob", "a"): 10, ("ann", "b"): 40}
    assert repr(interactions).startswith("Ratings(3 interactions, 2 users, 2 items")


def test_user_item_file_without_timestamp(tmp_path: Path):
    path = tmp_path / "log.csv"
    path.write_text("userId,movieId\n1,2\n1,3\n1,2\n")
    interactions = load_ratings(path)
    assert interactions.implicit and interactions.timestamp is None
    assert _weights(interactions) == {(1, 2): 2.0, (1, 3): 1.0}


@pytest.mark.parametrize("suffix", [".tsv", ".parquet"])
def test_count_column_weighs_each_row_and_repeats_add_up(tmp_path: Path, suffix: str):
    frame = pd.DataFrame(
        {
            "user_id": [1, 1, 2, 1],
            "item_id": [7, 8, 7, 7],
            "count": [3, 1, 5, 2],
            "timestamp": [100, 200, 300, 50],
        }
    )
    path = tmp_path / f"plays{suffix}"
    if suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, sep="\t", index=False)
    interactions = load_ratings(path)
    assert interactions.implicit
    assert _weights(interactions) == {(1, 7): 5.0, (1, 8): 1.0, (2, 7): 5.0}
    assert interactions.timestamp.tolist() == [50, 200, 300]  # earliest of 1-7 is 50


@pytest.mark.parametrize("name", ["plays", "clicks"])
def test_usual_count_column_names(tmp_path: Path, name: str):
    path = tmp_path / "log.csv"
    path.write_text(f"user,item,{name}\n1,7,12\n2,7,4\n")
    interactions = load_ratings(path)
    assert interactions.implicit
    assert _weights(interactions) == {(1, 7): 12.0, (2, 7): 4.0}


def test_count_col_names_the_count_even_beside_a_rating(tmp_path: Path):
    path = tmp_path / "log.csv"
    path.write_text("user,item,rating,n\n1,7,5,12\n2,7,1,4\n")
    assert not load_ratings(path).implicit  # the rating column wins unless told otherwise
    interactions = load_ratings(path, count_col="n")
    assert interactions.implicit
    assert _weights(interactions) == {(1, 7): 12.0, (2, 7): 4.0}
    with pytest.raises(DataError, match="not both"):
        load_ratings(path, rating_col="rating", count_col="n")
    with pytest.raises(DataError, match="no column 'hits'"):
        load_ratings(path, count_col="hits")


def test_unplaced_column_reads_as_interactions_only_when_asked(tmp_path: Path):
    path = tmp_path / "log.csv"
    path.write_text("user,item,stars\n1,7,5\n2,7,1\n")
    with pytest.raises(DataError, match="'stars'"):
        load_ratings(path)
    interactions = load_ratings(path, implicit=True)
    assert _weights(interactions) == {(1, 7): 1.0, (2, 7): 1.0}


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("user,item,count\n1,2,3\n1,3,0\n", r"count 0\.0 in column 'count' on data row 2"),
        ("user,item,plays\n1,2,-2\n", r"count -2\.0 in column 'plays' on data row 1"),
        ("user,item,count\n1,2,3\n1,3,nan\n", "'count' has an empty or NaN value on data row 2"),
    ],
)
def test_counts_that_are_not_positive_are_refused(tmp_path: Path, content, needle):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=needle):
        load_ratings(path)


def test_nan_count_of_parquet_is_refused(tmp_path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    # a NaN float, not a null (pandas would write a null)
    table = pa.table({"user": [1, 2], "item": [3, 4], "count": pa.array([2.0, float("nan")])})
    assert table.column("count").null_count == 0
    pq.write_table(table, tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=r"count nan in column 'count' on data row 2"):
        load_ratings(tmp_path / "bad.parquet")


def test_file_with_neither_user_nor_item_column_says_so_in_one_line(tmp_path: Path):
    path = tmp_path / "bad.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="no user column and no item column") as caught:
        load_ratings(path)
    assert "\n" not in str(caught.value)


def test_empty_interaction_file(tmp_path: Path):
    path = tmp_path / "log.csv"
    path.write_text("user,item\n")
    with pytest.raises(DataError, match="no interactions"):
        load_ratings(path)


def test_implicit_bundled_data_is_one_interaction_per_rating():
    ratings = load_ratings("movielens-small")
    interactions = load_ratings("movielens-small", implicit=True)
    assert not ratings.implicit and repr(ratings).startswith("Ratings(100,836 ratings")
    assert interactions.implicit
    assert len(interactions) == 100_836
    assert interactions.rating.dtype == np.float32
    assert np.all(interactions.rating == 1.0)
    np.testing.assert_array_equal(interactions.user_ids, ratings.user_ids)
    np.testing.assert_array_equal(interactions.item_ids, ratings.item_ids)
    np.testing.assert_array_equal(interactions.timestamp, ratings.timestamp)
    assert interactions.title(1) == "Toy Story (1995)"


@pytest.mark.parametrize("layout", ["ml100k_dir", "ml1m_dir", "ml25m_dir"])
def test_implicit_movielens_layouts(layout, request):
    interactions = load_ratings(request.getfixturevalue(layout), implicit=True)
    assert interactions.implicit
    assert _weights(interactions) == {(u, i): 1.0 for u, i, _, _ in ROWS}


def test_implicit_rating_file_sums_repeated_pairs(tmp_path: Path):
    path = tmp_path / "r.csv"
    path.write_text("user,item,rating,timestamp\n1,2,5,30\n1,2,1,10\n2,2,3,20\n")
    interactions = load_ratings(path, implicit=True)
    assert _weights(interactions) == {(1, 2): 2.0, (2, 2): 1.0}
    assert interactions.timestamp.tolist() == [10, 20]


def test_implicit_synthetic_source_sums_its_repeats():
    spec = "synthetic:ratings=5000,users=50,items=40,seed=1"
    ratings = load_ratings(spec)
    interactions = load_ratings(spec, implicit=True)
    pairs = ratings.user_index * ratings.n_items + ratings.item_index
    assert len(interactions) == len(np.unique(pairs)) < len(ratings)
    assert interactions.rating.sum() == len(ratings)
    assert interactions.implicit


def test_positives_keep_ratings_at_or_above_the_minimum(ml25m_dir: Path):
    ratings = load_ratings(ml25m_dir)
    liked = ratings.positives(4)
    assert liked.implicit and not ratings.implicit
    assert _weights(liked) == {(u, i): 1.0 for u, i, r, _ in ROWS if r >= 4}
    assert sorted(liked.timestamp.tolist()) == sorted(t for *_, r, t in ROWS if r >= 4)
    assert liked.users is ratings.users and liked.items is ratings.items
    assert liked.title(10) == "Toy Story (1995)"
    # user 2 rated nothing 4 or more: still in the map, with no rows
    assert liked.n_users == 3 and liked.users.index_of(2) not in liked.user_index.tolist()
    assert liked.compacted().n_users == 2
    nothing = ratings.positives(5.5)
    assert len(nothing) == 0 and nothing.implicit and nothing.users is ratings.users


def test_positives_of_interactions_are_refused(ml25m_dir: Path):
    interactions = load_ratings(ml25m_dir, implicit=True)
    with pytest.raises(DataError, match="already holds interactions"):
        interactions.positives(1)


@pytest.mark.parametrize(
    "options",
    [
        {"by": "random", "test_fraction": 0.3},
        {"by": "user", "test_fraction": 0.5},
        {"by": "time", "last_n": 1},
        {"by": "time", "cutoff": 250},
    ],
)
def test_splits_of_interactions_stay_interactions(ml25m_dir: Path, options):
    interactions = load_ratings(ml25m_dir, implicit=True)
    train, test = interactions.split(seed=0, **options)
    assert train.implicit and test.implicit
    assert len(train) + len(test) == len(ROWS)
    assert repr(test).startswith(f"Ratings({len(test)} interactions")
    explicit_train, explicit_test = load_ratings(ml25m_dir).split(seed=0, **options)
    assert not explicit_train.implicit and not explicit_test.implicit


def test_split_from_parts_and_derived_sets_keep_the_flag(ml25m_dir: Path, tmp_path: Path):
    test_file = tmp_path / "test.csv"
    test_file.write_text("userId,movieId\n1,40\n99,10\n")
    interactions = load_ratings(ml25m_dir, implicit=True)
    split = Split.from_parts(interactions, load_ratings(test_file))
    assert split.train.implicit and split.test.implicit and split.cold_users == 1
    assert interactions.take(np.array([0, 2])).implicit
    assert interactions.compacted().implicit
    assert interactions.reindexed(split.train.users, split.train.items).implicit
    assert list(interactions.to_frame().columns) == ["user", "item", "rating", "timestamp"]
