"""The public API: what `import latentrec` offers."""

import latentrec


def test_all_is_sorted_and_importable():
    assert latentrec.__all__ == sorted(latentrec.__all__)
    for name in latentrec.__all__:
        assert hasattr(latentrec, name), name


def test_readme_tour_runs(tmp_path):
    ratings = latentrec.load_ratings("movielens-small")
    train, test = ratings.split(test_fraction=0.1, seed=42)
    model, _history = latentrec.fit((train, test), model="dot", epochs=1, progress=False)
    rec = latentrec.Recommender(model, train)
    assert len(rec.recommend(1, k=10)) == 10
    assert len(rec.similar_items(1, k=10)) == 10
    latentrec.save(model, tmp_path / "ml-small", train)
    again = latentrec.Recommender.from_dir(tmp_path / "ml-small")
    assert again.recommend(1, k=10) == rec.recommend(1, k=10)
