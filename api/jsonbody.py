"""JSON request bodies, parsed once at the edge for every route.

Every router uses `JsonRoute`, whose requests parse their JSON body with
`loads` instead of Starlette's `json.loads`: an object with a key given
twice is refused (422 naming the key) instead of the last one silently
winning, and so are `NaN`/`Infinity` (not JSON) and unpaired surrogate
escapes (not text: the database would fail on them). A body that is not
JSON is told with a stable sentence and its place (line, column), which
`api.errors` translates, never with the parser's own English.

`POST /api/v1/devices` reads its body itself (JSON or CSV) and calls
`loads` too, as does the CSV's `thresholds` cell.

Cost: the standard library's parser with a hook per object, then pydantic
on the objects. For a 10,000-device registration (1.4 MB) parsing and
validating took 79 ms instead of 61 ms (pydantic parsing the bytes itself;
best of 40), about 1.5 % of the request's 1.1-1.5 s. orjson plus a sound
count of keys (quotes before a colon in the text against keys parsed) was
measured too: no faster.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from api.errors import BodyNotJson
from firesafe.i18n import N_
from firesafe.json_keys import first_repeated

# A key longer than this is cut in the message (a body may be megabytes).
KEY_SHOWN_CHARS = 64


class JsonBodyError(ValueError):
    """Why a text is not JSON the API accepts: an English sentence that
    `api.errors` has a template for (prefix it with where, e.g. "body: ")."""


# The standard library's reasons (json.decoder, _json.c) in our words: its own
# sentences are English and may change between Python versions. (Each is a
# template of api.errors, as are the sentences raised below.)
_PROBLEMS: tuple[tuple[str, str], ...] = (
    ("Expecting value", N_("a value was expected")),
    ("Expecting property name", N_("a key in double quotes was expected")),
    ("Expecting ':'", N_("a colon was expected after the key")),
    ("Expecting ','", N_("a comma or the end of the object or list was expected")),
    ("Illegal trailing comma", N_("a comma before the end of the object or list")),
    ("Unterminated string", N_("a string is not closed")),
    ("Invalid control character", N_("a control character inside a string (escape it)")),
    ("Invalid \\", N_("an invalid escape in a string")),
    ("Extra data", N_("more text after the value")),
)
_SYNTAX = N_("a syntax error")
_DEEP = N_("nested too deeply")
_CONSTANT = N_("NaN and Infinity are not JSON numbers")
_LONG_NUMBER = N_("a number with too many digits")
_SURROGATE = N_("an unpaired surrogate escape in a string")

# A \uD800-\uDFFF escape: only then can a string hold a surrogate (valid pairs
# are joined by the parser; strict UTF-8 decoding lets no raw one through).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):  # (the common case costs one len() per object)
        key = first_repeated(pairs)
        assert key is not None
        shown = key if len(key) <= KEY_SHOWN_CHARS else key[:KEY_SHOWN_CHARS] + "..."
        raise JsonBodyError(f"duplicate key {shown!r} in an object")
    return obj


def _constant(name: str) -> NoReturn:
    raise JsonBodyError(f"not valid JSON: {_CONSTANT}")


_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_constant=_constant)


def _problem(reason: str) -> str:
    for prefix, problem in _PROBLEMS:
        if reason.startswith(prefix):
            return problem
    return _SYNTAX


def loads(data: bytes | str) -> Any:
    """The value of a JSON text (UTF-8, a BOM allowed), or JsonBodyError."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonBodyError(f"not valid JSON: not UTF-8 (byte {exc.start + 1})") from exc
    else:
        text = data
    text = text.removeprefix("\ufeff")
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise JsonBodyError(
            f"not valid JSON: {_problem(exc.msg)} at line {exc.lineno}, column {exc.colno}"
        ) from exc
    except RecursionError as exc:
        raise JsonBodyError(f"not valid JSON: {_DEEP}") from exc
    except JsonBodyError:
        raise
    except ValueError as exc:  # int(): over sys.get_int_max_str_digits() digits
        raise JsonBodyError(f"not valid JSON: {_LONG_NUMBER}") from exc
    if _SURROGATE_ESCAPE.search(text) is not None:
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise JsonBodyError(f"not valid JSON: {_SURROGATE}") from exc
    return value


class JsonRequest(Request):
    """A request whose JSON body is read by `loads`."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                self._json = loads(await self.body())
            except JsonBodyError as exc:
                # An HTTPException: FastAPI's body reading passes it on as it is.
                raise BodyNotJson(f"body: {exc}") from exc
        return self._json


class JsonRoute(APIRoute):
    """The route class of every router (a test checks): its requests are `JsonRequest`s."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def with_json_request(request: Request) -> Response:
            return await handler(JsonRequest(request.scope, request.receive))

        return with_json_request
