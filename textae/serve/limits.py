"""What the server refuses, and how: the error type, the body-size cap, the API key, field names.

Every refusal is an `ApiError` rendered as the OpenAI error shape naming the field at fault. Error
messages are written here or come from pydantic's messages; neither ever contains the request's text.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable, Sequence
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found",
    405: "invalid_request_error",
    413: "payload_too_large",
    422: "invalid_request_error",
    429: "overloaded",
    500: "server_error",
    503: "unavailable",
}


class ApiError(Exception):
    """A refusal with its HTTP status; `param` names the request field when one is at fault."""

    def __init__(self, status: int, message: str, param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.param)


def error_body(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "invalid_request_error"), "param": param, "code": status}}


def field_name(loc: Sequence[Any]) -> str:
    """pydantic's error location as the field a client wrote: ("body", "inputs", 3) -> "inputs[3]".

    Union members add their type to the location ("str", "list[...]"); those are not fields.
    """
    name = ""
    for part in loc:
        if part == "body" and not name:
            continue
        if isinstance(part, int):
            name += f"[{part}]"
        elif isinstance(part, str) and not _is_union_tag(part):
            name += f".{part}" if name else part
    return name or "body"


def _is_union_tag(part: str) -> bool:
    return part in ("str", "int", "float", "bool", "list", "dict") or "[" in part or part.startswith(("constrained-", "function-"))


def validation_error(errors: Iterable[dict[str, Any]]) -> ApiError:
    """One 422 from pydantic's errors: the first few fields and messages, without their input values."""
    # deepest first: for `inputs: str | list[str]` given ["ok", 5], "inputs[1]" says more than "inputs"
    errors = sorted(errors, key=lambda error: -len(error.get("loc", ())))
    seen: dict[str, str] = {}
    for error in errors:
        name = field_name(error.get("loc", ()))
        message = str(error.get("msg", "invalid value"))
        if error.get("type") == "json_invalid":
            name, message = "body", f"malformed JSON ({(error.get('ctx') or {}).get('error', 'cannot parse')})"
        elif error.get("type") == "extra_forbidden":  # the location is the client's own key: never echoed
            name, message = "body", "unknown field (this route's fields are in the OpenAPI spec, /openapi.json)"
        elif error.get("type") == "string_unicode":  # pydantic's word for a lone surrogate
            message = "contains a lone surrogate (an unpaired \\ud800-\\udfff escape); send valid Unicode"
        if not any(known.startswith((f"{name}[", f"{name}.")) for known in seen):  # a union's other members
            seen.setdefault(name, message)
    # a union reports one error per member (e.g. "not a string", "not a list"): name the field once
    shown = list(seen.items())[:3]
    message = "; ".join(f"{name}: {text}" for name, text in shown)
    if len(seen) > len(shown):
        message += f"; and {len(seen) - len(shown)} more"
    return ApiError(422, message, shown[0][0] if shown else "body")


def check_api_key(authorization: str | None, expected: bytes) -> None:
    """401 unless the Authorization header is `Bearer <expected>`; compared in constant time."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode("utf-8", "surrogateescape"), expected):
        raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'", headers={"WWW-Authenticate": "Bearer"})


class BodyLimit:
    """ASGI middleware: 413 for a body over `max_bytes`, by its Content-Length and by the bytes that
    actually arrive (a chunked or lying client), before the app parses anything."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left before sending its body: nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the client to disconnect

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(error_body(413, f"request body over {self.max_bytes} bytes (--max-body-bytes)")).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
