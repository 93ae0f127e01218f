"""The service against hostile requests (issue 14, defects 5, 7 and 10): non-finite numbers,
chunked bodies, HEAD, huge headers, security headers, the favicon, ids of 2^63 and above,
and `serve` on a busy port."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from latentrec.cli import app as cli
from latentrec.data import IdMap, Ratings
from latentrec.recommend import Recommender
from latentrec.serving import MAX_HEADER_BYTES, MODEL_DIR_VARIABLE, create_app, wire_id
from latentrec.storage import load

from .test_serving import model_dir_for

JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def model_dir(small_split, tmp_path_factory) -> Path:
    return model_dir_for("int", small_split, tmp_path_factory)


@pytest.fixture(scope="module")
def client(model_dir):
    with TestClient(create_app(model_dir), raise_server_exceptions=False) as test_client:
        yield test_client


def _one_line_of_json(response) -> None:
    assert "Traceback" not in response.text and ".py" not in response.text
    json.loads(response.text)  # strict JSON: no NaN


@pytest.mark.parametrize(
    "body",
    [
        '{"ratings": [{"item_id": 1, "rating": NaN}]}',
        '{"ratings": [{"item_id": NaN, "rating": 4}]}',
        '{"ratings": [{"item_id": 1, "rating": 4}], "k": Infinity}',
        '{"ratings": [{"item_id": 1, "rating": -Infinity}]}',
        '{"ratings": [{"item_id": 1, "rating": 1e309}]}',
        '{"ratings": [{"item_id": 1e309, "rating": 4}]}',
        '{"ratings": [{"item_id": 1, "rating": 4}], "k": 1e309}',
        '{"ratings": [{"item_id": 1, "rating": 4, "extra": NaN}]}',
        '{"ratings": [{"item_id": [NaN, {"a": Infinity}], "rating": 4}]}',
        '{"ratings": [{"item_id": 1, "rating": 4}], "k": "\\udc80"}',
    ],
)
def test_non_finite_numbers_in_a_body_are_422(client, body):
    # rendering the validation error failed on the echoed non-finite float: 500 (defect 7)
    response = client.post("/recommendations", content=body, headers=JSON)
    assert response.status_code == 422, response.text
    _one_line_of_json(response)


def test_booleans_are_not_ids_or_ratings(client):
    # `true` was read as item 1 and as the rating 1.0
    for rating in ({"item_id": True, "rating": 4}, {"item_id": 1, "rating": True}):
        response = client.post("/recommendations", json={"ratings": [rating]})
        assert response.status_code == 422, response.text


def _chunks(total: int, size: int = 4096):
    body = json.dumps({"ratings": [{"item_id": 1, "rating": 4}], "pad": "x" * total}).encode()
    for start in range(0, len(body), size):
        yield body[start : start + size]


def test_a_chunked_body_over_64_kib_is_413(client):
    # a body without a length over the limit got FastAPI's 400 "error parsing the body"
    response = client.post("/recommendations", content=_chunks(70_000), headers=JSON)
    assert response.status_code == 413 and "64 KiB" in response.json()["detail"]


def test_a_chunked_body_under_the_limit_is_served(client):
    body = _chunks(10)
    response = client.post("/recommendations", content=body, headers=JSON)
    assert response.status_code == 422 and "pad" in response.text  # read whole, then validated
    good = json.dumps({"ratings": [{"item_id": 1, "rating": 4}], "k": 3}).encode()
    response = client.post("/recommendations", content=iter([good[:10], good[10:]]), headers=JSON)
    assert response.status_code == 200 and len(response.json()) == 3


@pytest.mark.parametrize("path", ["/health", "/", "/static/app.js", "/favicon.ico"])
def test_head_is_answered(client, path):
    # HEAD /health was 405 (defect 7)
    response = client.head(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == client.get(path).headers["content-type"]


def test_request_headers_over_16_kib_are_431(client):
    # headers of any size were accepted (defect 7)
    assert client.get("/health", headers={"x-pad": "a" * 8000}).status_code == 200
    response = client.get("/health", headers={"x-pad": "a" * (MAX_HEADER_BYTES + 1)})
    assert response.status_code == 431 and "16 KiB" in response.json()["detail"]
    many = {f"x-pad-{n}": "a" * 100 for n in range(200)}
    assert client.get("/health", headers=many).status_code == 431


def test_every_response_forbids_sniffing_and_framing(client):
    # no nosniff, no CSP for the page, no frame protection (defect 7)
    responses = [
        client.get("/"),
        client.get("/health"),
        client.get("/static/app.js"),
        client.get("/favicon.ico"),
        client.get("/items/424242"),
        client.get("/no/such/route"),
        client.post("/recommendations", content="{", headers=JSON),
        client.post("/recommendations", content=_chunks(70_000), headers=JSON),
        client.get("/health", headers={"x-pad": "a" * (MAX_HEADER_BYTES + 1)}),
        client.get("/docs"),
    ]
    for response in responses:
        headers = response.headers
        assert headers["x-content-type-options"] == "nosniff", response.url
        assert headers["x-frame-options"] == "DENY", response.url
        assert "frame-ancestors 'none'" in headers["content-security-policy"], response.url
    page_policy = responses[0].headers["content-security-policy"]
    assert "default-src 'self'" in page_policy and "unsafe" not in page_policy
    # the docs page starts Swagger UI from an inline script: allowed there only
    assert "'unsafe-inline'" in responses[-1].headers["content-security-policy"]


def test_favicon_is_served_and_linked(client):
    # every page load asked for /favicon.ico and got 404 (defect 7)
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"
    assert icon.text.startswith("<svg")
    page = client.get("/").text
    assert 'rel="icon"' in page and client.get("/static/favicon.svg").status_code == 200


def test_an_unexpected_error_is_a_bare_500(model_dir, monkeypatch):
    recommender = Recommender.from_dir(model_dir)

    def broken(*args, **kwargs):
        raise RuntimeError("secret detail in /work/somewhere.py")

    monkeypatch.setattr(recommender, "recommend", broken)
    with TestClient(create_app(recommender), raise_server_exceptions=False) as broken_client:
        response = broken_client.get("/users/1/recommendations")
    assert response.status_code == 500 and response.json() == {"detail": "internal error"}
    assert response.headers["x-content-type-options"] == "nosniff"


def test_wire_ids_are_exact_python_values():
    # ids above 2^53 reached the page as numbers JavaScript rounds (defect 5)
    assert wire_id(np.int64(2**53 - 1)) == 2**53 - 1
    assert wire_id(np.int64(2**53)) == str(2**53)
    assert wire_id(np.int64(-(2**62))) == str(-(2**62))
    assert wire_id(np.uint64(2**64 - 1)) == "18446744073709551615"
    assert wire_id(np.str_("tt0114709")) == "tt0114709"
    assert wire_id("u1") == "u1" and wire_id(7) == 7


def test_uint64_ids_of_2_63_and_above_travel_exactly(model_dir):
    # uint64 ids (the loader keeps ids >= 2^63 so) must reach the page digit for digit
    saved = load(model_dir)
    train = saved.ratings
    base = 2**63
    items = IdMap(train.items.ids.astype(np.uint64) + np.uint64(base))
    titles = {int(movie) + base: title for movie, title in train.titles.items()}
    ratings = Ratings(
        train.user_index, train.item_index, train.rating, train.users, items, titles=titles
    )
    toy = str(base + 1)
    with TestClient(create_app(Recommender(saved.model, ratings))) as big:
        item = big.get(f"/items/{toy}").json()
        assert item["item_id"] == toy and item["title"] == "Toy Story (1995)"
        found = big.get("/items", params={"query": "toy story", "limit": 1}).json()
        assert found[0]["item_id"] == toy
        similar = big.get(f"/items/{toy}/similar", params={"k": 3}).json()
        assert all(isinstance(s["item_id"], str) and int(s["item_id"]) > base for s in similar)
        body = {"ratings": [{"item_id": toy, "rating": 5}], "k": 5}
        recs = big.post("/recommendations", json=body).json()
        assert len(recs) == 5 and toy not in {r["item_id"] for r in recs}
        assert all(int(r["item_id"]) >= base for r in recs)


def test_serve_refuses_a_busy_port_with_one_line(model_dir):
    # uvicorn's log and exit 3 before (defect 10)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = CliRunner().invoke(cli, ["serve", str(model_dir), "--port", str(port)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "in use" in lines[0]
    assert "--port" in lines[0]


def test_serve_refuses_an_unknown_host_with_one_line(model_dir):
    result = CliRunner().invoke(cli, ["serve", str(model_dir), "--host", "no-such-host.invalid"])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and "--host" in result.output


def test_serve_caps_request_heads(model_dir, monkeypatch):
    # uvicorn ran with no bound on the request head (defect 7)
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: calls.append(kwargs))
    monkeypatch.setenv(MODEL_DIR_VARIABLE, "")  # serve sets it; put back after the test
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = CliRunner().invoke(cli, ["serve", str(model_dir), "--port", str(port)])
    assert result.exit_code == 0, result.output
    assert calls[0]["port"] == port
    assert MAX_HEADER_BYTES <= calls[0]["h11_max_incomplete_event_size"] <= 8 * MAX_HEADER_BYTES


def test_ids_holding_a_slash_are_reachable():
    # regression (review): /items/a%2Fb was a 404, as were users and similar items like it
    from latentrec import fit

    users = IdMap(np.array(["u/1", "u2", "u3"], dtype=object))
    items = IdMap(np.array(["a/b", "http://e.com/m/1", "c/similar", "d"], dtype=object))
    pairs = [(u, i) for u in range(3) for i in range(4) if (u + i) % 3]
    train = Ratings(
        np.array([u for u, _ in pairs]),
        np.array([i for _, i in pairs]),
        np.array([float(1 + (u * i) % 5) for u, i in pairs], dtype=np.float32),
        users,
        items,
    )
    net, _ = fit(train, "dot", epochs=1, progress=False)
    with TestClient(create_app(Recommender(net, train))) as client:
        assert client.get("/items/a%2Fb").json()["item_id"] == "a/b"
        assert client.get("/items/http%3A%2F%2Fe.com%2Fm%2F1").json()["item_id"].startswith("http")
        similar = client.get("/items/a%2Fb/similar", params={"k": 2})
        assert similar.status_code == 200 and "a/b" not in {r["item_id"] for r in similar.json()}
        recs = client.get("/users/u%2F1/recommendations", params={"k": 1})
        assert recs.status_code == 200 and len(recs.json()) == 1
        assert client.get("/items/zz%2Fy").status_code == 404
        # an id ending in "/similar" is the item, not the similar items of "c"
        assert client.get("/items/c%2Fsimilar").json()["item_id"] == "c/similar"
        assert client.get("/items/zz%2Fsimilar").status_code == 404
        similar = client.get("/items/c%2Fsimilar/similar", params={"k": 2})
        assert similar.status_code == 200 and len(similar.json()) == 2
