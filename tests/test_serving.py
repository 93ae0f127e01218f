"""The HTTP service through FastAPI's TestClient: every endpoint and every error."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from latentrec import fit, save
from latentrec.serving import create_app


@pytest.fixture(scope="module")
def model_dir(small_split, tmp_path_factory):
    net, _ = fit(small_split, "dot", epochs=2, progress=False)
    return save(net, tmp_path_factory.mktemp("serve") / "model", small_split.train)


@pytest.fixture(scope="module")
def client(model_dir):
    with TestClient(create_app(model_dir), raise_server_exceptions=False) as test_client:
        yield test_client


def _no_leak(response) -> None:
    text = response.text
    assert "Traceback" not in text and "/work" not in text and ".py" not in text


def test_health(client):
    body = client.get("/health").json()
    assert body == {"status": "ok", "model": "dot", "users": 610, "items": body["items"]}
    assert body["items"] > 9000


def test_search_and_item(client):
    items = client.get("/items", params={"query": "toy", "limit": 5}).json()
    assert 0 < len(items) <= 5 and all("toy" in i["title"].lower() for i in items)
    one = client.get("/items/1").json()
    assert one["title"] == "Toy Story (1995)" and one["n_ratings"] > 100


def test_similar_and_user_recommendations(client):
    similar = client.get("/items/1/similar", params={"k": 7}).json()
    assert len(similar) == 7 and {"item_id", "title", "score"} <= set(similar[0])
    recs = client.get("/users/1/recommendations").json()
    assert len(recs) == 10


def test_fold_in_recommendations_explain_themselves(client):
    body = {
        "ratings": [
            {"item_id": 1, "rating": 5},
            {"item_id": 2355, "rating": 4.5},
            {"item_id": 3114, "rating": 5},
        ],
        "k": 10,
    }
    recs = client.post("/recommendations", json=body).json()
    assert len(recs) == 10
    assert {1, 2355, 3114}.isdisjoint(r["item_id"] for r in recs)
    assert any(r["because"] for r in recs)


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "needle"),
    [
        ("get", "/users/999999/recommendations", {}, 404, "unknown user id 999999"),
        ("get", "/items/424242", {}, 404, "unknown item id 424242"),
        ("get", "/items/424242/similar", {}, 404, "unknown item id"),
        ("get", "/users/1/recommendations", {"params": {"k": 0}}, 422, "k"),
        ("get", "/users/1/recommendations", {"params": {"k": 101}}, 422, "k"),
        ("get", "/items", {}, 422, "query"),
        ("get", "/no/such/route", {}, 404, "Not Found"),
        ("post", "/recommendations", {"json": {"ratings": []}}, 422, "ratings"),
        (
            "post",
            "/recommendations",
            {"json": {"ratings": [{"item_id": 1, "rating": 9}]}},
            422,
            "rating must be between",
        ),
        (
            "post",
            "/recommendations",
            {"json": {"ratings": [{"item_id": 424242, "rating": 4}]}},
            404,
            "none of the 1 rated item ids",
        ),
        (
            "post",
            "/recommendations",
            {"json": {"ratings": [{"item_id": 1, "rating": 4}], "k": 0}},
            422,
            "k",
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
def test_errors_are_json_with_a_clear_detail(client, method, path, kwargs, status, needle):
    response = getattr(client, method)(path, **kwargs)
    assert response.status_code == status, response.text
    assert needle.lower() in json.dumps(response.json()["detail"]).lower()
    _no_leak(response)


def test_too_many_ratings_and_too_large_bodies(client):
    many = {"ratings": [{"item_id": 1, "rating": 4}] * 501}
    assert client.post("/recommendations", json=many).status_code == 422
    huge = json.dumps({"ratings": [{"item_id": 1, "rating": 4}], "pad": "x" * 70_000})
    response = client.post(
        "/recommendations", content=huge, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413 and "64 KiB" in response.json()["detail"]


def test_page_and_openapi(client):
    page = client.get("/")
    assert page.status_code == 200 and "latentrec" in page.text
    assert client.get("/static/app.js").status_code == 200
    spec = client.get("/openapi.json").json()
    assert "/users/{user_id}/recommendations" in spec["paths"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "cdn" not in docs.text.lower()  # works offline
    assert "://" not in client.get("/").text  # the page loads nothing from elsewhere
