"""Generated hostile requests through the service: whatever arrives (NaN and Infinity
literals, 1e309, 10**400, 10,000-deep nesting, wrong types, unicode, markup), the answer is
2xx or 4xx with a JSON body and no trace; never a 5xx."""

from __future__ import annotations

import json
import math
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from latentrec.serving import create_app

from .test_serving import model_dir_for, raw_item, raw_user

BOUNDS = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
JSON = {"content-type": "application/json"}


class Literal(str):
    """Text that goes into the JSON body as it is: NaN, Infinity, 1e309, 10**400."""


LITERALS = ["NaN", "-NaN", "Infinity", "-Infinity", "1e309", "-1e309", "1e-400", str(10**400)]
MARKUP = ["[/x]", "[bold]hi", "<script>alert(1)</script>", '"><img src=x onerror=alert(1)>']
ODD_TEXT = [
    "\udc80",
    "\x00",
    "\uff11\uff12\uff13",
    " 1 ",
    "-0",
    "1.0",
    "💥",
    "tt0114709",
    "u1",
    "9" * 60,
]
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(),
    st.sampled_from([Literal(text) for text in LITERALS]),
)
texts = st.one_of(st.text(max_size=20), st.sampled_from(MARKUP + ODD_TEXT))
keys = st.one_of(st.sampled_from(["ratings", "item_id", "rating", "k"]), st.text(max_size=6))
values = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, texts),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)


def _known_ids(kind: str) -> st.SearchStrategy:
    movies = st.sampled_from([1, 2, 3, 318, 2355, 3114, 424242])
    return movies.map(lambda movie: raw_item(kind, movie)).flatmap(
        lambda raw: st.sampled_from([raw, str(raw)])
    )


def _bodies(kind: str) -> st.SearchStrategy:
    """Request bodies: near-valid ones (known and unknown ids, ratings in range) as often as
    hostile ones (any value anywhere, extra fields, non-finite and huge numbers)."""
    in_range = st.one_of(st.sampled_from([0.5, 1, 3, 4.5, 5]), st.floats(0.5, 5.0))
    plausible = st.fixed_dictionaries({"item_id": _known_ids(kind), "rating": in_range})
    hostile = st.fixed_dictionaries(
        {
            "item_id": st.one_of(_known_ids(kind), values),
            "rating": st.one_of(in_range, numbers, values),
        },
        optional={"extra": values},
    )
    ratings = st.one_of(
        st.lists(plausible, min_size=1, max_size=4),
        st.lists(st.one_of(plausible, hostile, values), min_size=1, max_size=4),
        values,
    )
    k = st.one_of(st.integers(-3, 120), values)
    request = st.fixed_dictionaries({"ratings": ratings}, optional={"k": k})
    return st.one_of(request, request, values)


def dump(value) -> str:
    """JSON text of a generated value, with the literals strict JSON has no words for."""
    if isinstance(value, Literal):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, list):
        return "[" + ",".join(dump(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{dump(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def _check(response) -> None:
    assert response.status_code < 500, (response.request.url, response.text)
    assert "Traceback" not in response.text and ".py" not in response.text
    if response.status_code >= 400 and response.request.method != "HEAD":
        assert "detail" in json.loads(response.text)  # strict JSON, never NaN


@pytest.fixture(scope="module", params=["int", "str"])
def service(request, small_split, tmp_path_factory):
    app = create_app(model_dir_for(request.param, small_split, tmp_path_factory))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, request.param


def test_generated_bodies_never_give_a_server_error(service):
    client, kind = service

    @BOUNDS
    @given(body=_bodies(kind))
    def post(body):
        _check(client.post("/recommendations", content=dump(body).encode(), headers=JSON))

    post()


def test_raw_bytes_never_give_a_server_error(service):
    client, _ = service

    @BOUNDS
    @given(body=st.binary(max_size=200))
    def post(body):
        _check(client.post("/recommendations", content=body, headers=JSON))

    post()


@pytest.mark.parametrize(
    "body",
    [
        "[" * 10_000 + "]" * 10_000,
        "{" + '"a":{' * 10_000 + "}" * 10_001,
        '{"ratings": ' + "[" * 10_000 + "]" * 10_000 + "}",
        '{"ratings": [{"item_id": ' + "[" * 10_000 + "]" * 10_000 + ', "rating": 4}]}',
        '{"ratings": [{"item_id": 1, "rating": ' + "[" * 500 + "]" * 500 + "}]}",
        '{"ratings": [{"item_id": 1, "rating": 4}], "k": ' + "[" * 30_000 + "]" * 30_000 + "}",
        '{"ratings": [{"item_id": ' + "9" * 5_000 + ', "rating": 4}]}',
        '{"ratings": [{"item_id": ' + str(10**400) + ', "rating": 4}]}',
        '{"ratings": [{"item_id": 1, "rating": ' + str(10**400) + "}]}",
    ],
    ids=[
        "array-10k",
        "object-10k",
        "ratings-10k",
        "item-id-10k",
        "rating-500",
        "k-30k-over-limit",
        "5000-digits",
        "id-10e400",
        "rating-10e400",
    ],
)
def test_deep_nesting_and_huge_numbers_are_client_errors(service, body):
    client, _ = service
    response = client.post("/recommendations", content=body.encode(), headers=JSON)
    _check(response)
    assert 400 <= response.status_code < 500


def _quote(text: str) -> str:
    """Percent-encoded, lone surrogates included (as the bytes no UTF-8 decoder accepts)."""
    return quote(text, safe="", errors="surrogatepass")


path_text = st.one_of(st.text(min_size=1, max_size=30), st.sampled_from(MARKUP + ODD_TEXT))
query_number = st.one_of(
    st.integers(-5, 200).map(str), st.sampled_from([*LITERALS, "", "1.5", "0x10", "\uff11\uff10"])
)


def test_generated_paths_and_queries_never_give_a_server_error(service):
    client, kind = service
    user = st.one_of(path_text, st.just(str(raw_user(kind, 1))))
    item = st.one_of(path_text, st.just(str(raw_item(kind, 1))))
    requests = st.one_of(
        st.builds(lambda i: f"/items/{_quote(i)}", item),
        st.builds(lambda i, k: f"/items/{_quote(i)}/similar?k={_quote(k)}", item, query_number),
        st.builds(
            lambda u, k: f"/users/{_quote(u)}/recommendations?k={_quote(k)}",
            user,
            query_number,
        ),
        st.builds(
            lambda q, n: f"/items?query={_quote(q)}&limit={_quote(n)}",
            path_text,
            query_number,
        ),
    )

    @BOUNDS
    @given(path=requests, method=st.sampled_from(["GET", "HEAD"]))
    def get(path, method):
        _check(client.request(method, path))

    get()
