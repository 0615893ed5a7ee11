"""JSON responses rendered by ``orjson`` when it is installed (the serve extra), else by
``json`` as Starlette's ``JSONResponse`` does. orjson writes NaN and infinity as null, where
``json`` (``allow_nan=False``) raises."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

try:
    import orjson
except ModuleNotFoundError:  # pragma: no cover - depends on the environment
    orjson = None

OPTIONS = 0 if orjson is None else orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


class FastJSONResponse(JSONResponse):
    """``JSONResponse`` with orjson's encoder (same bytes for plain str/int/float/list/dict)."""

    def render(self, content: Any) -> bytes:
        if orjson is None:  # pragma: no cover
            return super().render(content)
        return orjson.dumps(content, option=OPTIONS)
