"""The HTTP service: a FastAPI app over one Recommender, loaded once and shared read-only.

Handlers stay thin: they validate, call the Recommender, and map its errors to statuses at
the edge (unknown ids 404, bad values 422, bodies over 64 KiB 413). Handlers are plain `def`
functions, so FastAPI runs them in its thread pool and model work never blocks the event loop.
"""

from __future__ import annotations

import logging
import os
import warnings
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import torch
from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from latentrec.errors import ConfigError, LatentrecError, UnknownIdError
from latentrec.recommend import Recommendation, Recommender

MAX_BODY_BYTES = 64 * 1024
MAX_RATINGS = 500
MODEL_DIR_VARIABLE = "LATENTREC_MODEL_DIR"
log = logging.getLogger("latentrec.serving")


class RatingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_id: int | str
    rating: float = Field(allow_inf_nan=False)


class FoldInRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ratings: list[RatingIn] = Field(min_length=1, max_length=MAX_RATINGS)
    k: int = Field(default=10, ge=1, le=100)


class Because(BaseModel):
    item_id: int | str
    title: str | None
    rating: float


class RecommendationOut(BaseModel):
    item_id: int | str
    title: str | None
    score: float
    because: list[Because] | None = None


class ItemOut(BaseModel):
    item_id: int | str
    title: str | None
    n_ratings: int


class Health(BaseModel):
    status: str
    model: str
    users: int
    items: int


K = Annotated[int, Query(ge=1, le=100, description="How many items, 1 to 100.")]


def create_app(model_dir: str | Path) -> FastAPI:
    """The app for one model directory; the model is loaded here, once."""
    torch.set_num_threads(1)  # one core per worker process: workers scale, threads contend
    recommender = Recommender.from_dir(model_dir)
    low, high = recommender.ratings.rating_range
    # FastAPIOffline serves the interactive docs from files it installs, not from a CDN
    app = FastAPIOffline(
        title="latentrec",
        summary="Recommendations from a trained latentrec model",
        version="1",
    )
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    web = resources.files("latentrec") / "web"
    app.mount("/static", StaticFiles(directory=str(web)), name="static")
    _add_error_handlers(app)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(str(web / "index.html"))

    @app.get("/health")
    def health() -> Health:
        return Health(
            status="ok",
            model=recommender.model.config.kind,
            users=len(recommender.users),
            items=len(recommender.items),
        )

    @app.get("/items")
    def search_items(
        query: Annotated[str, Query(min_length=1, max_length=200)],
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> list[ItemOut]:
        return [_item(recommender, m.item_id) for m in recommender.find_items(query, limit)]

    @app.get("/items/{item_id}")
    def get_item(item_id: Annotated[str, PathParam(max_length=100)]) -> ItemOut:
        return _item(recommender, item_id)

    @app.get("/items/{item_id}/similar")
    def similar(
        item_id: Annotated[str, PathParam(max_length=100)], k: K = 10
    ) -> list[RecommendationOut]:
        return [_out(r) for r in recommender.similar_items(item_id, k=k)]

    @app.get("/users/{user_id}/recommendations")
    def recommend_user(
        user_id: Annotated[str, PathParam(max_length=100)], k: K = 10
    ) -> list[RecommendationOut]:
        return [_out(r) for r in recommender.recommend(user_id, k=k)]

    @app.post("/recommendations")
    def recommend_new(request: FoldInRequest) -> list[RecommendationOut]:
        for position, rating in enumerate(request.ratings):
            if not low <= rating.rating <= high:
                raise _field_error(
                    ("body", "ratings", position, "rating"),
                    f"rating must be between {low:g} and {high:g}",
                )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unknown items are left out; all unknown is a 404
            new = recommender.fold_in({r.item_id: r.rating for r in request.ratings})
        results = []
        for rec in recommender.recommend(new, k=request.k):
            reasons = recommender.explain(new, rec.item_id, n=2)
            because = [Because(item_id=r.item_id, title=r.title, rating=r.rating) for r in reasons]
            results.append(_out(rec, because))
        return results

    return app


def _item(recommender: Recommender, item_id: Any) -> ItemOut:
    index = recommender.item_index(item_id)
    return ItemOut(
        item_id=recommender.items.ids[index].item(),
        title=recommender.title(index),
        n_ratings=int(recommender.item_counts[index]),
    )


def _out(rec: Recommendation, because: list[Because] | None = None) -> RecommendationOut:
    return RecommendationOut(
        item_id=rec.item_id, title=rec.title, score=round(rec.score, 4), because=because
    )


def _field_error(location: tuple, message: str) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": location, "msg": message}])


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(UnknownIdError)
    def not_found(request: Request, error: UnknownIdError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=404)

    @app.exception_handler(ConfigError)
    def bad_value(request: Request, error: ConfigError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=422)

    @app.exception_handler(LatentrecError)
    def other_error(request: Request, error: LatentrecError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=400)

    @app.exception_handler(Exception)
    def crash(request: Request, error: Exception) -> JSONResponse:
        # the trace goes to the log, never to the client
        log.exception("error while serving %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error"}, status_code=500)


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413, by header or as they stream in."""

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
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _BodyTooLarge:
            await _too_large(send, self.limit)


class _BodyTooLarge(Exception):
    pass


async def _too_large(send: Send, limit: int) -> None:
    response = JSONResponse({"detail": f"request body over {limit // 1024} KiB"}, status_code=413)
    await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


def app_from_environment() -> FastAPI:
    """App factory for `uvicorn --factory` with several workers: the model directory comes
    from the LATENTREC_MODEL_DIR environment variable."""
    model_dir = os.environ.get(MODEL_DIR_VARIABLE)
    if not model_dir:
        raise ConfigError(f"set {MODEL_DIR_VARIABLE} to a model directory")
    return create_app(model_dir)
