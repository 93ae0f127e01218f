"""The HTTP service through FastAPI's TestClient: every endpoint and every error, on models
with integer ids, string ids, and integer ids beyond JavaScript's 2^53."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
from fastapi.testclient import TestClient

from latentrec import fit, save
from latentrec.data import IdMap, Ratings
from latentrec.serving import MAX_JS_INTEGER, create_app

BIG = 2**60  # added to the bundled ids: beyond 2^53, so they travel as strings
ID_KINDS = ("int", "str", "big")
_MODEL_DIRS: dict[str, Path] = {}  # one trained model per kind and test session


def raw_user(kind: str, user: int) -> Any:
    """The raw id of the bundled data's user `user` in a model of the given id kind."""
    return {"int": user, "str": f"u{user}", "big": user + BIG}[kind]


def raw_item(kind: str, movie: int) -> Any:
    return {"int": movie, "str": f"tt{movie:07d}", "big": movie + BIG}[kind]


def relabelled(ratings: Ratings, kind: str) -> Ratings:
    """The same ratings under other raw ids: `str` ("u1", "tt0000001") or `big` (2^60 + id)."""
    if kind == "int":
        return ratings
    dtype = object if kind == "str" else np.int64

    def ids(values: np.ndarray, raw: Any) -> IdMap:
        return IdMap(np.array([raw(kind, v) for v in values.tolist()], dtype=dtype))

    titles = {raw_item(kind, movie): title for movie, title in (ratings.titles or {}).items()}
    return Ratings(
        ratings.user_index,
        ratings.item_index,
        ratings.rating,
        ids(ratings.users.ids, raw_user),
        ids(ratings.items.ids, raw_item),
        titles=titles,
        source=f"{ratings.source} ({kind} ids)",
    )


def model_dir_for(kind: str, split: Any, tmp_path_factory: Any) -> Path:
    """A dot model trained on the bundled split's training set under `kind` ids, saved once."""
    if kind not in _MODEL_DIRS:
        train = relabelled(split.train, kind)
        net, _ = fit(train, "dot", epochs=2, progress=False)
        _MODEL_DIRS[kind] = save(net, tmp_path_factory.mktemp(f"serve-{kind}") / "model", train)
    return _MODEL_DIRS[kind]


def wire(raw_id: Any) -> int | str:
    """An id as JSON carries it to and from the page."""
    return str(raw_id) if isinstance(raw_id, int) and abs(raw_id) > MAX_JS_INTEGER else raw_id


@dataclass
class Service:
    client: TestClient
    kind: str
    train: Ratings

    def user(self, user: int) -> Any:
        return raw_user(self.kind, user)

    def item(self, movie: int) -> Any:
        return raw_item(self.kind, movie)


@pytest.fixture(scope="module", params=ID_KINDS)
def service(request, small_split, tmp_path_factory):
    model_dir = model_dir_for(request.param, small_split, tmp_path_factory)
    with TestClient(create_app(model_dir), raise_server_exceptions=False) as test_client:
        yield Service(test_client, request.param, relabelled(small_split.train, request.param))


def _no_leak(response) -> None:
    text = response.text
    assert "Traceback" not in text and "/work" not in text and ".py" not in text


def test_health_describes_the_model(service):
    body = service.client.get("/health").json()
    train = service.train
    assert body.pop("version") == "model"  # the served directory's name
    assert body.pop("saved_at").endswith("Z") and body.pop("rating_model_version") is None
    assert body == {
        "status": "ok",
        "model": "dot",
        "users": train.n_users,
        "items": train.n_items,
        "rating_range": [0.5, 5.0],
        "predicts_ratings": True,
        "rating_model": None,
        "visitors": False,
    }
    assert (body["users"], body["items"]) == (610, len(np.unique(train.item_index)))


def test_search_and_item(service):
    # string ids gave 500 here: `.item()` on a str (issue 14, defect 4)
    client = service.client
    items = client.get("/items", params={"query": "toy", "limit": 5}).json()
    assert 0 < len(items) <= 5 and all("toy" in i["title"].lower() for i in items)
    for item in items:
        again = client.get(f"/items/{item['item_id']}").json()
        assert again == item
    one = client.get(f"/items/{service.item(1)}").json()
    assert one["title"] == "Toy Story (1995)" and one["n_ratings"] > 100
    assert one["item_id"] == wire(service.item(1))


def test_similar_and_user_recommendations(service):
    client = service.client
    similar = client.get(f"/items/{service.item(1)}/similar", params={"k": 7}).json()
    assert len(similar) == 7 and {"item_id", "title", "score"} <= set(similar[0])
    recs = client.get(f"/users/{service.user(1)}/recommendations").json()
    assert len(recs) == 10


def test_fold_in_recommendations_explain_themselves(service):
    rated = [service.item(1), service.item(2355), service.item(3114)]
    body = {
        "ratings": [
            {"item_id": wire(rated[0]), "rating": 5},
            {"item_id": wire(rated[1]), "rating": 4.5},
            {"item_id": wire(rated[2]), "rating": 5},
        ],
        "k": 10,
    }
    recs = service.client.post("/recommendations", json=body).json()
    assert len(recs) == 10
    assert {wire(i) for i in rated}.isdisjoint(r["item_id"] for r in recs)
    reasons = [b["item_id"] for r in recs for b in r["because"]]
    assert reasons and set(reasons) <= {wire(i) for i in rated}


def test_ids_travel_exactly_and_within_javascript_numbers(service):
    # ids above 2^53 lost their last digits in the page's JavaScript (issue 14, defect 5)
    client = service.client
    recs = client.get(f"/users/{service.user(1)}/recommendations").json()
    similar = client.get(f"/items/{service.item(1)}/similar").json()
    for entry in recs + similar:
        item_id = entry["item_id"]
        assert not isinstance(item_id, int) or abs(item_id) <= MAX_JS_INTEGER
        assert client.get(f"/items/{item_id}").json()["item_id"] == item_id
    assert all(isinstance(r["item_id"], str) for r in recs) == (service.kind != "int")
    # an id given as a string finds the same item, whatever the model's id type
    body = {"ratings": [{"item_id": str(service.item(1)), "rating": 5}], "k": 3}
    as_text = client.post("/recommendations", json=body).json()
    body["ratings"][0]["item_id"] = wire(service.item(1))
    assert as_text == client.post("/recommendations", json=body).json()


class Item(NamedTuple):
    """An item of the bundled data in a request body, written in the service's id kind."""

    movie: int


def _fill(value: Any, service: Service) -> Any:
    """Put the service's ids into a request body: `Item(n)` becomes that item's id."""
    if isinstance(value, Item):
        return wire(service.item(value.movie))
    if isinstance(value, dict):
        return {key: _fill(item, service) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill(item, service) for item in value]
    return value


def _ids(text: str, service: Service) -> str:
    """Put the service's ids into a path or message: user 1, and an unknown user and item."""
    return text.format(
        known_user=service.user(1), user=service.user(999999), item=service.item(424242)
    )


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "needle"),
    [
        ("get", "/users/{user}/recommendations", {}, 404, "unknown user id {user!r}"),
        ("get", "/items/{item}", {}, 404, "unknown item id {item!r}"),
        ("get", "/items/{item}/similar", {}, 404, "unknown item id"),
        ("get", "/users/{known_user}/recommendations", {"params": {"k": 0}}, 422, "k"),
        ("get", "/users/{known_user}/recommendations", {"params": {"k": 101}}, 422, "k"),
        ("get", "/items", {}, 422, "query"),
        ("get", "/no/such/route", {}, 404, "Not Found"),
        ("post", "/recommendations", {"json": {"ratings": []}}, 422, "ratings"),
        (
            "post",
            "/recommendations",
            {"json": {"ratings": [{"item_id": Item(1), "rating": 9}]}},
            422,
            "rating must be between",
        ),
        (
            "post",
            "/recommendations",
            {"json": {"ratings": [{"item_id": Item(424242), "rating": 4}]}},
            404,
            "none of the 1 rated item ids",
        ),
        (
            "post",
            "/recommendations",
            {"json": {"ratings": [{"item_id": Item(1), "rating": 4}], "k": 0}},
            422,
            "k",
        ),
        (
            "post",
            "/recommendations",
            {"json": {"ratings": [{"item_id": True, "rating": 4}]}},
            422,
            "valid integer",
        ),
        (
            "post",
            "/recommendations",
            {"content": "{not json", "headers": {"content-type": "application/json"}},
            422,
            "json",
        ),
    ],
)
def test_errors_are_json_with_a_clear_detail(service, method, path, kwargs, status, needle):
    call = getattr(service.client, method)
    response = call(_ids(path, service), **_fill(kwargs, service))
    assert response.status_code == status, response.text
    assert _ids(needle, service).lower() in json.dumps(response.json()["detail"]).lower()
    _no_leak(response)


def test_too_many_ratings_and_too_large_bodies(service):
    client = service.client
    one = {"item_id": wire(service.item(1)), "rating": 4}
    assert client.post("/recommendations", json={"ratings": [one] * 501}).status_code == 422
    huge = json.dumps({"ratings": [one], "pad": "x" * 70_000})
    response = client.post(
        "/recommendations", content=huge, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413 and "64 KiB" in response.json()["detail"]


def test_page_and_openapi(service):
    client = service.client
    page = client.get("/")
    assert page.status_code == 200 and "latentrec" in page.text
    assert client.get("/static/app.js").status_code == 200
    spec = client.get("/openapi.json").json()
    assert "/users/{user_id}/recommendations" in spec["paths"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "cdn" not in docs.text.lower()  # works offline
    assert "://" not in client.get("/").text  # the page loads nothing from elsewhere
