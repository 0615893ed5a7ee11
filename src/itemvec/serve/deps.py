"""FastAPI dependencies shared by the service's routers (``http``) and the explorer: the
model holder and the model that answers one request."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from itemvec.serve.state import LoadedModel, ModelHolder


async def current_holder(request: Request) -> ModelHolder:
    """The app's model holder (set by ``create_app``)."""
    return request.app.state.holder


async def current_model(request: Request) -> LoadedModel:
    """The model serving this request, taken once so a reload never mixes two models.

    ``async`` so it runs on the event loop: taking a reference needs no worker thread.
    """
    return request.app.state.holder.current()


Holder = Annotated[ModelHolder, Depends(current_holder)]
Model = Annotated[LoadedModel, Depends(current_model)]
