"""The HTTP service: a FastAPI app over one Recommender, loaded once and shared read-only.

Handlers stay thin: they validate, call the Recommender, and map its errors to statuses at
the edge (unknown ids 404, bad values 422, bodies over 64 KiB 413, headers over 16 KiB 431,
a database that fails 503).
Handlers are plain `def` functions, so FastAPI runs them in its thread pool and model work
never blocks the event loop.

Ids travel as the model holds them: integers as JSON numbers, except integers a JavaScript
number cannot hold exactly (beyond +-(2^53 - 1)), which travel as strings; requests may give
any id as a string.

The model is held by a `ModelHolder` (reloading.py): each request takes the served model once,
at its start; a new model published to the directory (or `models/current` pointed elsewhere) is
loaded in the background and swapped in between requests, and a model that fails to load leaves
the old one serving.

With a database, each browser is a visitor: an HttpOnly cookie holds a random id (made on its
first `POST /ratings`), and the `/ratings` and `/me` endpoints keep its ratings in the
database. A missing, malformed or unknown cookie reads as a visitor with no ratings.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import signal
import socket
import threading
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from latentrec import database
from latentrec.database import Store, UnknownVisitorError
from latentrec.errors import (
    ConfigError,
    DatabaseError,
    LatentrecError,
    StoreLimitError,
    UnknownIdError,
)
from latentrec.recommend import NewUser, Recommendation, Recommender
from latentrec.reloading import ModelHolder, watching

MAX_BODY_BYTES = 64 * 1024
MAX_HEADER_BYTES = 16 * 1024
MAX_RATINGS = 500
MAX_JS_INTEGER = 2**53 - 1  # Number.MAX_SAFE_INTEGER: larger ids travel as strings
MODEL_DIR_VARIABLE = "LATENTREC_MODEL_DIR"
RATING_MODEL_VARIABLE = "LATENTREC_RATING_MODEL_DIR"
DATABASE_VARIABLE = "LATENTREC_DB"
CHECK_EVERY_VARIABLE = "LATENTREC_CHECK_EVERY"
VISITOR_COOKIE = "latentrec_visitor"
VISITOR_MAX_AGE = 365 * 24 * 60 * 60  # seconds: a year
# the page loads only its own files; nothing may frame it
PAGE_POLICY = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
# the interactive docs start Swagger UI and ReDoc from inline scripts
DOCS_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
log = logging.getLogger("latentrec.serving")

ID_HELP = "A raw id; integers beyond +-(2^53 - 1) travel as strings."
IdIn = Annotated[
    int | Annotated[str, StringConstraints(min_length=1, max_length=200)],
    Field(description="A raw id, as a number or as a string."),
]
IdOut = Annotated[int | str, Field(description=ID_HELP)]


class RatingIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    item_id: IdIn
    rating: float = Field(allow_inf_nan=False)


class RatingsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    ratings: list[RatingIn] = Field(min_length=1, max_length=MAX_RATINGS)


class FoldInRequest(RatingsRequest):
    k: int = Field(default=10, ge=1, le=100)


class Stored(BaseModel):
    stored: int = Field(description="The distinct items this request rated.")
    total: int = Field(description="The visitor's stored ratings, these included.")


class StoredRating(BaseModel):
    item_id: IdOut
    title: str | None
    rating: float | None


class VisitorRatings(BaseModel):
    ratings: list[StoredRating] = Field(description="In the order they were first rated.")


class Deleted(BaseModel):
    deleted: int = Field(description="The visitor's rows removed.")


class Because(BaseModel):
    item_id: IdOut
    title: str | None
    rating: float


class RecommendationOut(BaseModel):
    item_id: IdOut
    title: str | None
    score: float = Field(
        description="What orders the list: a predicted rating from a rating model, a ranking "
        "score from a ranking model (see /health's predicts_ratings)."
    )
    predicted: float | None = Field(
        default=None,
        description="The paired rating model's predicted rating, when the service has one "
        "and it knows the item (and the user).",
    )
    because: list[Because] | None = None


class ItemOut(BaseModel):
    item_id: IdOut
    title: str | None
    n_ratings: int


class Health(BaseModel):
    status: str
    model: str
    users: int
    items: int
    rating_range: tuple[float, float] = Field(
        description="The scale ratings are given on (lowest, highest): the range of "
        "POST /recommendations' ratings (a ranking model of interactions without a rating "
        "model: its training weights' range; it takes weights above 0, up to a million "
        "times the heaviest)."
    )
    predicts_ratings: bool = Field(
        description="Whether recommendations' scores are predicted ratings (a rating model) or "
        "only order the items (a ranking model)."
    )
    rating_model: str | None = Field(
        default=None,
        description="The rating model paired with a ranking model: it gives recommendations' "
        "predicted ratings.",
    )
    visitors: bool = Field(
        default=False,
        description="Whether the service keeps visitors' ratings in a database (POST /ratings, "
        "GET /me/ratings, GET /me/recommendations, DELETE /me).",
    )
    version: str | None = Field(
        default=None,
        description="The served model directory's name, links resolved (a published version "
        "such as v-20261130-143512-a1b2c3); it changes when a new model is swapped in.",
    )
    saved_at: str | None = Field(
        default=None, description="When the served model was saved (UTC, ISO 8601)."
    )
    rating_model_version: str | None = Field(
        default=None, description="The paired rating model directory's name, links resolved."
    )


K = Annotated[int, Query(ge=1, le=100, description="How many items, 1 to 100.")]
PathId = Annotated[str, PathParam(min_length=1, max_length=200, description=ID_HELP)]


def create_app(
    model: str | Path | Recommender,
    rating_model: str | Path | None = None,
    db: str | None = None,
    check_every: float = 1.0,
) -> FastAPI:
    """The app for a model directory (loaded here, and again whenever it changes) or a ready
    `Recommender` (served as it is).

    Args:
        rating_model: a rating model's directory paired with a ranking model (the lists come
            from the ranking model, predicted ratings from the rating model).
        db: a database URL (`sqlite:///latentrec.db`, `postgresql+psycopg://...`) whose schema
            `latentrec db upgrade` made: visitors' ratings are kept there, through one `Store`
            per app (per worker process), closed when the app shuts down.
        check_every: seconds between looks for a new model in the directories (0: only on
            SIGHUP). The holder is `app.state.holder`.
    """
    torch.set_num_threads(1)  # one core per worker process: workers scale, threads contend
    if isinstance(model, Recommender):
        if rating_model is not None:
            raise ConfigError("pair a ready Recommender through its own rating_model")
        holder = ModelHolder.fixed(model)
    else:
        holder = ModelHolder(model, rating_model, check_every=check_every)
    store = None if db is None else Store(db)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with watching(holder):
            yield
        if store is not None:
            store.close()

    # FastAPIOffline serves the interactive docs from files it installs, not from a CDN
    app = FastAPIOffline(
        title="latentrec",
        summary="Recommendations from a trained latentrec model",
        version="1",
        favicon_url="/favicon.ico",
        lifespan=lifespan,
    )
    app.state.holder = holder
    docs = {app.docs_url or "/docs", "/redoc", app.swagger_ui_oauth2_redirect_url or ""}
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    app.add_middleware(Guard, max_header_bytes=MAX_HEADER_BYTES, docs_paths=frozenset(docs))
    web = resources.files("latentrec") / "web"
    app.mount("/static", StaticFiles(directory=str(web)), name="static")
    _add_error_handlers(app)

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(str(web / "index.html"))

    @app.api_route("/favicon.ico", methods=["GET", "HEAD"], include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(str(web / "favicon.svg"), media_type="image/svg+xml")

    @app.get("/health")
    def health() -> Health:
        served = holder.current()
        recommender = served.recommender
        partner = recommender.rating_model
        return Health(
            status="ok",
            model=recommender.model.config.kind,
            users=len(recommender.users),
            items=len(recommender.items),
            rating_range=served.rating_range,
            predicts_ratings=recommender.model.predicts_ratings,
            rating_model=None if partner is None else partner.model.config.kind,
            visitors=store is not None,
            version=served.version,
            saved_at=served.saved_at,
            rating_model_version=served.rating_model_version,
        )

    # load balancers probe with HEAD; kept out of the schema (one operation per path and verb)
    app.add_api_route("/health", health, methods=["HEAD"], include_in_schema=False)

    @app.get("/items")
    def search_items(
        query: Annotated[str, Query(min_length=1, max_length=200)],
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> list[ItemOut]:
        recommender = holder.current().recommender
        return [_item(recommender, m.item_id) for m in recommender.find_items(query, limit)]

    # ids may hold "/" (sent as %2F): path parameters take the rest of the path, and the
    # similar-items route comes first so that its suffix is not read as part of an id
    @app.get("/items/{item_id:path}/similar")
    def similar(request: Request, item_id: PathId, k: K = 10) -> list[RecommendationOut]:
        if not (request.scope.get("raw_path") or b"/similar").endswith(b"/similar"):
            # sent as "%2Fsimilar": the end of an item's id, which routing sees decoded
            whole = f"{item_id}/similar"
            return JSONResponse(_item(holder.current().recommender, whole).model_dump())
        return [_out(r) for r in holder.current().recommender.similar_items(item_id, k=k)]

    @app.get("/items/{item_id:path}")
    def get_item(item_id: PathId) -> ItemOut:
        return _item(holder.current().recommender, item_id)

    @app.get("/users/{user_id:path}/recommendations")
    def recommend_user(user_id: PathId, k: K = 10) -> list[RecommendationOut]:
        return [_out(r) for r in holder.current().recommender.recommend(user_id, k=k)]

    @app.post("/recommendations")
    def recommend_new(request: FoldInRequest) -> list[RecommendationOut]:
        served = holder.current()
        recommender = served.recommender
        _check_ratings(request.ratings, recommender)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unknown items are left out; all unknown is a 404
            new = recommender.fold_in({r.item_id: r.rating for r in request.ratings})
        return _explained(recommender, new, request.k)

    if store is not None:
        _add_visitor_routes(app, holder, store)
    return app


def _add_visitor_routes(app: FastAPI, holder: ModelHolder, store: Store) -> None:
    """`POST /ratings` and the `/me` endpoints: one visitor's ratings, kept in `store`."""

    @app.post("/ratings")
    def rate(body: RatingsRequest, request: Request, response: Response) -> Stored:
        """Keep ratings of items the model knows for this browser's visitor (made on its
        first call, with a cookie); rating an item again replaces its rating."""
        served = holder.current()
        recommender = served.recommender
        _check_ratings(body.ratings, recommender)
        chosen: dict[str, float] = {}  # the latest rating of each item, in first-given order
        for rating in body.ratings:
            index = recommender.item_index(rating.item_id)  # an unknown item is a 404
            chosen[str(wire_id(recommender.items.ids[index]))] = rating.rating
        given = list(chosen.items())
        try:  # one transaction for a known visitor: the check, the ratings and the count
            stored, total = store.rate_counted(request.cookies.get(VISITOR_COOKIE, ""), given)
        except UnknownVisitorError:  # no cookie, a malformed one, or a forgotten visitor
            visitor = store.new_visitor()
            response.set_cookie(
                VISITOR_COOKIE,
                visitor,
                max_age=VISITOR_MAX_AGE,
                path="/",
                secure=request.url.scheme == "https",
                httponly=True,
                samesite="lax",
            )
            stored, total = store.rate_counted(visitor, given)
        return Stored(stored=stored, total=total)

    @app.get("/me/ratings")
    def my_ratings(request: Request) -> VisitorRatings:
        """This browser's visitor's ratings; none without a visitor cookie."""
        recommender = holder.current().recommender
        visitor = _visitor(request, store)
        rows = [] if visitor is None else store.ratings(visitor)
        items = recommender.items
        ratings = []
        for item_id, rating in rows:
            index = items.index_of(item_id)  # -1 for an item a newer model no longer knows
            ratings.append(
                StoredRating(
                    item_id=wire_id(items.coerce(item_id)),
                    title=None if index < 0 else recommender.title(index),
                    rating=rating,
                )
            )
        return VisitorRatings(ratings=ratings)

    @app.get("/me/recommendations")
    def my_recommendations(request: Request, k: K = 10) -> list[RecommendationOut]:
        """Recommendations from this browser's visitor's stored ratings (folded in, as for
        `POST /recommendations`)."""
        recommender = holder.current().recommender
        visitor = _visitor(request, store)
        rows = [] if visitor is None else store.ratings(visitor)
        rated = {item_id: rating for item_id, rating in rows if rating is not None}
        if not rated:
            detail = "no stored ratings for this visitor: rate some items first (POST /ratings)"
            raise HTTPException(status_code=409, detail=detail)
        # ratings stored under an earlier model whose scale the one now served does not take
        # are left out, as items it does not know are
        fitting = {item_id: r for item_id, r in rated.items() if recommender.takes_rating(r)}
        if not fitting:
            low, high = recommender.rating_range
            detail = (
                f"none of this visitor's {len(rated)} stored ratings fits the model now served "
                f"(ratings {low:g}..{high:g}): rate some items again (POST /ratings)"
            )
            raise HTTPException(status_code=409, detail=detail)
        rated = fitting
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # items a newer model does not know are left out
            new = recommender.fold_in(rated)
        return _explained(recommender, new, k)

    @app.delete("/me")
    def forget_me(request: Request, response: Response) -> Deleted:
        """Forget this browser's visitor: their ratings and their id; the cookie is cleared."""
        visitor = _visitor(request, store)
        deleted = 0 if visitor is None else store.forget(visitor)
        response.delete_cookie(
            VISITOR_COOKIE, path="/", secure=request.url.scheme == "https", httponly=True
        )
        return Deleted(deleted=deleted)


def _visitor(request: Request, store: Store) -> str | None:
    """The visitor the request's cookie names, or None when it names none the store knows
    (`has_visitor` turns a malformed value away before it reaches the database)."""
    cookie = request.cookies.get(VISITOR_COOKIE, "")
    return cookie if store.has_visitor(cookie) else None


def _check_ratings(ratings: list[RatingIn], recommender: Recommender) -> None:
    """422 for a rating that fold-in would refuse (outside the scale, or for a model of
    interactions a weight of 0 or less), naming its place and the rule."""
    for position, rating in enumerate(ratings):
        if not recommender.takes_rating(rating.rating):
            raise _field_error(
                ("body", "ratings", position, "rating"),
                f"rating must be {recommender.rating_rule}",
            )


def _explained(recommender: Recommender, new: NewUser, k: int) -> list[RecommendationOut]:
    """A folded-in user's top k, each with the rated items that explain it."""
    results = []
    for rec in recommender.recommend(new, k=k):
        reasons = recommender.explain(new, rec.item_id, n=2)
        because = [
            Because(item_id=wire_id(r.item_id), title=r.title, rating=r.rating) for r in reasons
        ]
        results.append(_out(rec, because))
    return results


def wire_id(raw_id: Any) -> int | str:
    """A raw id as it travels in JSON: a Python int or str (numpy ids of any integer width
    converted exactly), and an integer beyond JavaScript's exact range as a string."""
    if isinstance(raw_id, np.generic):
        raw_id = raw_id.tolist()  # np.uint64 -> int, np.str_ -> str, exactly
    if isinstance(raw_id, int) and abs(raw_id) > MAX_JS_INTEGER:
        return str(raw_id)
    return raw_id


def _item(recommender: Recommender, item_id: Any) -> ItemOut:
    index = recommender.item_index(item_id)
    return ItemOut(
        item_id=wire_id(recommender.items.ids[index]),
        title=recommender.title(index),
        n_ratings=int(recommender.item_counts[index]),
    )


def _out(rec: Recommendation, because: list[Because] | None = None) -> RecommendationOut:
    predicted = None if rec.predicted is None else round(rec.predicted, 4)
    return RecommendationOut(
        item_id=wire_id(rec.item_id),
        title=rec.title,
        score=round(rec.score, 4),
        predicted=predicted,
        because=because,
    )


def _field_error(location: tuple, message: str) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": location, "msg": message}])


class ErrorResponse(JSONResponse):
    """An error as JSON in ASCII: text from the request (a lone surrogate such as \\udc80
    included, which UTF-8 cannot encode) is escaped, never a failure to answer."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
        return text.encode("ascii")


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StoreLimitError)
    def too_many(request: Request, error: StoreLimitError) -> JSONResponse:
        detail = (
            f"a visitor keeps at most {database.MAX_STORED:,} rated items; re-rate items "
            "already rated, or start again with DELETE /me"
        )
        return ErrorResponse({"detail": detail}, status_code=409)

    @app.exception_handler(DatabaseError)
    def unavailable(request: Request, error: DatabaseError) -> JSONResponse:
        # the Store's message (which shows its URL without the password) goes to the log only
        message = " ".join(str(error).splitlines())
        log.error(
            "database error while serving %s %s: %s", request.method, request.url.path, message
        )
        detail = "the ratings database is unavailable; try again later"
        return ErrorResponse({"detail": detail}, status_code=503)

    @app.exception_handler(RequestValidationError)
    def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        detail = [_plain_error(e) for e in error.errors()]
        return ErrorResponse({"detail": detail}, status_code=422)

    @app.exception_handler(UnknownIdError)
    def not_found(request: Request, error: UnknownIdError) -> JSONResponse:
        return ErrorResponse({"detail": str(error)}, status_code=404)

    @app.exception_handler(ConfigError)
    def bad_value(request: Request, error: ConfigError) -> JSONResponse:
        return ErrorResponse({"detail": str(error)}, status_code=422)

    @app.exception_handler(LatentrecError)
    def other_error(request: Request, error: LatentrecError) -> JSONResponse:
        return ErrorResponse({"detail": str(error)}, status_code=400)


def _plain_error(error: Any) -> dict[str, Any]:
    """One validation error as strict JSON. The offending input is echoed only when it is a
    single value (NaN, 1e309 and Infinity as text); a whole object or array is left out."""
    plain = {
        "type": str(error.get("type", "value_error")),
        "loc": [_json_safe(part) for part in error.get("loc", ())],
        "msg": str(error.get("msg", "")),
    }
    value = error.get("input")
    if value is None or isinstance(value, (bool, int, float, str)):
        plain["input"] = _json_safe(value)
    context = error.get("ctx")
    if isinstance(context, dict):
        plain["ctx"] = {str(key): _json_safe(item) for key, item in context.items()}
    return plain


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        return value if len(value) <= 200 else value[:200] + "…"
    if isinstance(value, int) and not isinstance(value, bool):
        if abs(value) <= MAX_JS_INTEGER:
            return value
        # str() of an int over 4,300 digits raises; a long one says nothing anyway
        return str(value) if value.bit_length() <= 256 else "an integer too large to show"
    if value is None or isinstance(value, (bool, float)):
        return value
    return str(value)[:200]


class Guard:
    """Security headers on every response; request headers over `max_header_bytes` refused
    with 431; an unexpected error answered with a bare 500 (the trace goes to the log)."""

    def __init__(self, app: ASGIApp, max_header_bytes: int, docs_paths: frozenset[str]) -> None:
        self.app, self.max_header_bytes, self.docs_paths = app, max_header_bytes, docs_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = DOCS_POLICY if scope["path"] in self.docs_paths else PAGE_POLICY
        extra = [
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"content-security-policy", policy.encode()),
            (b"referrer-policy", b"no-referrer"),
        ]
        started = False

        async def secured(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        if sum(len(name) + len(value) for name, value in scope["headers"]) > self.max_header_bytes:
            detail = f"request headers over {self.max_header_bytes // 1024} KiB"
            await _send_json(secured, 431, detail)
            return
        try:
            await self.app(scope, receive, secured)
        except Exception:
            log.exception("error while serving %s %s", scope["method"], scope["path"])
            if started:
                raise
            await _send_json(secured, 500, "internal error")


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413, by header or as they stream in.

    The body is read here, whole, before the app sees it (at most `limit` bytes held), so a
    chunked body without a length is refused as surely as one with a length.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await _too_large(send, self.limit)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left: let the app see it
                pending: list[Message] = [message]
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await _too_large(send, self.limit)
                return
            if not message.get("more_body", False):
                pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]
                break

        async def replay() -> Message:
            return pending.pop(0) if pending else await receive()

        await self.app(scope, replay, send)


async def _too_large(send: Send, limit: int) -> None:
    await _send_json(send, 413, f"request body over {limit // 1024} KiB")


async def _send_json(send: Send, status: int, detail: str) -> None:
    response = ErrorResponse({"detail": detail}, status_code=status)
    await send({"type": "http.response.start", "status": status, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


def check_port_free(host: str, port: int) -> None:
    """Raise `ConfigError` naming `host:port` when the service could not listen there.

    Binds and closes a socket the way uvicorn will (SO_REUSEADDR), so a port in use, a
    privileged port or an address this machine does not have is one line before start-up.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as err:
        raise ConfigError(
            f"cannot serve on {host}:{port}: unknown host {host!r}; give an address such as "
            "127.0.0.1 or 0.0.0.0 with --host"
        ) from err
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                advice = "stop what is using it or choose another --port"
                reason = "the port is in use"
            else:
                advice = "choose another --host or --port"
                reason = (err.strerror or str(err)).lower()
            raise ConfigError(f"cannot serve on {host}:{port}: {reason}; {advice}") from err


def app_from_environment() -> FastAPI:
    """App factory for `uvicorn --factory` with several workers: the model directory comes
    from the LATENTREC_MODEL_DIR environment variable, a paired rating model's from
    LATENTREC_RATING_MODEL_DIR, the visitors' database URL from LATENTREC_DB and the seconds
    between looks for a new model from LATENTREC_CHECK_EVERY (each when set)."""
    # a reload asked for while the worker starts must not end it: it loads the newest model
    # anyway (`watching` listens once it serves); signals are set from the main thread only
    if hasattr(signal, "SIGHUP") and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    model_dir = os.environ.get(MODEL_DIR_VARIABLE)
    if not model_dir:
        raise ConfigError(f"set {MODEL_DIR_VARIABLE} to a model directory")
    check_every = os.environ.get(CHECK_EVERY_VARIABLE) or "1"
    try:
        seconds = float(check_every)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(
            f"{CHECK_EVERY_VARIABLE} is {check_every!r}; set it to seconds, 0 or more"
        )
    return create_app(
        model_dir,
        os.environ.get(RATING_MODEL_VARIABLE) or None,
        db=os.environ.get(DATABASE_VARIABLE) or None,
        check_every=seconds,
    )
