"""The ceiling of the serving stack: a bare FastAPI app answering a constant 10-item JSON.

Same routes and answer shape as itemvec's ``GET /similar/{id}`` and ``POST /recommend`` (sync
handlers and a validated body, as itemvec's are), run by the same uvicorn settings:

    python -m uvicorn benchmarks.serving_ceiling:create --factory --workers 2 --port 8001
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel

ANSWER = {"items": [f"i{i}" for i in range(10)], "scores": [round(1 - i / 10, 6) for i in range(10)]}


class History(BaseModel):
    history: list[str]
    n: int = 10


def create() -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    def health() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/similar/{item_id}")
    def similar(item_id: str, n: int = 10) -> JSONResponse:
        return JSONResponse(ANSWER)

    @app.post("/recommend")
    def recommend(body: History) -> JSONResponse:
        return JSONResponse(ANSWER)

    return app
