"""Bounds on what a client may send, so that no single request costs unbounded work or memory.

Every check here is linear in the bytes already received and answers a clear 4xx: the body size
(413, enforced from the headers before the body is read), the JSON shape (nesting depth and
number of objects/arrays, so later walkers and pydantic never see pathological input), the
number of messages / input items / tools, the model name (it ends up in upstream URLs and
response headers), and the text of header values the gateway sends back.
"""

from __future__ import annotations

import json
import re
import zlib
from typing import Any
from urllib.parse import quote

import orjson

from .errors import GatewayError, bad_request

MAX_BODY_BYTES = 32 * 1024 * 1024  # default of the `max_body_size` option
MAX_JSON_DEPTH = 100  # nested objects/arrays; real requests stay well under 30
MAX_JSON_CONTAINERS = 200_000  # objects + arrays in one body (10k messages take ~50k)
MAX_ITEMS = 10_000  # messages (Chat) / input items (Responses)
MAX_TOOLS = 512  # OpenAI itself accepts 128
MAX_MODEL_NAME = 128

# Model names of every upstream the gateway knows fit this (gemini-2.5-flash, gpt-4o-2024-08-06,
# Qwen/Qwen2.5-7B, llama3:8b, ft:gpt-4o:org::id); the name ends up in upstream URLs and headers.
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]*")
# A JSON escape of a UTF-16 surrogate: the only way a lone surrogate can enter a decoded str
# (strict UTF-8 cannot carry one), and such a str cannot be encoded again to send it upstream.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def too_large(limit: int) -> GatewayError:
    return GatewayError(413, f"The request body is larger than this gateway accepts ({limit} bytes; "
                             "option max_body_size).", code="request_too_large")


def decode_body(raw: bytes, encoding: str, limit: int) -> bytes:
    """The request body with its content-encoding removed, never inflating past `limit` bytes
    (a few KB of gzip can expand to GBs)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise GatewayError(415, f"Unsupported content-encoding '{encoding[:40]}'; send gzip, deflate or none.",
                           code="unsupported_content_encoding")
    # gzip has its own header; "deflate" is zlib-wrapped by the spec but often sent raw
    attempts = (31,) if "gzip" in encoding else (15, -15)
    for wbits in attempts:
        inflater = zlib.decompressobj(wbits)
        try:
            out = inflater.decompress(raw, limit + 1)
        except zlib.error:
            continue
        if len(out) > limit:
            raise too_large(limit)
        if inflater.eof:
            return out
    raise _undecodable()


def _undecodable() -> GatewayError:
    return GatewayError(400, "The request body's content-encoding could not be decoded.", code="invalid_body")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw: bytes) -> Any:
    """The JSON value of a request body, or a 400: strict UTF-8, no NaN/Infinity, no lone
    surrogates, bounded depth and size."""
    try:
        value = orjson.loads(raw)  # strict already (UTF-8, no NaN/Infinity), and ~5x faster
    except (orjson.JSONDecodeError, RecursionError):
        pass  # the standard library below says precisely what is wrong (or accepts what orjson cannot)
    else:
        return _checked(value, raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GatewayError(400, f"The request body is not valid UTF-8 (byte {exc.start}).",
                           code="invalid_json") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise GatewayError(400, f"The request body is not valid JSON ({exc.msg} at position {exc.pos}).",
                           code="invalid_json") from None
    except RecursionError:
        raise _too_deep() from None
    except ValueError as exc:  # NaN/Infinity, integers beyond Python's digit limit
        raise GatewayError(400, f"The request body is not valid JSON ({str(exc)[:80]}).", code="invalid_json") from None
    return _checked(value, raw)


def _checked(value: Any, raw: bytes) -> Any:
    check_shape(value)
    if _SURROGATE_ESCAPE.search(raw) and _has_lone_surrogate(value):
        raise GatewayError(400, "The request body contains a lone UTF-16 surrogate escape (\\ud800-\\udfff); "
                                "strings must be valid Unicode.", code="invalid_json")
    return value


def _too_deep() -> GatewayError:
    return GatewayError(400, f"The request body is nested more than {MAX_JSON_DEPTH} levels deep.",
                        code="invalid_json")


def check_shape(value: Any) -> None:
    """Depth and container count of decoded JSON, iteratively (no recursion to overflow)."""
    stack = [(value, 1)]
    containers = 0
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        containers += 1
        if depth > MAX_JSON_DEPTH:
            raise _too_deep()
        if containers > MAX_JSON_CONTAINERS:
            raise GatewayError(400, f"The request body has more than {MAX_JSON_CONTAINERS} JSON objects and arrays.",
                               code="request_too_complex")
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def check_counts(body: Any) -> None:
    """Messages, input items and tools: each item costs validation and translation work."""
    if not isinstance(body, dict):
        return
    for key, limit in (("messages", MAX_ITEMS), ("input", MAX_ITEMS), ("tools", MAX_TOOLS), ("functions", MAX_TOOLS)):
        value = body.get(key)
        if isinstance(value, list) and len(value) > limit:
            raise bad_request(f"'{key}' has {len(value)} entries; this gateway accepts at most {limit}.", key,
                              code="array_too_long")


def check_model_name(name: str, param: str = "model") -> str:
    if len(name) > MAX_MODEL_NAME or not _MODEL_NAME.fullmatch(name) or ".." in name or "//" in name:
        raise bad_request(f"Invalid model name {name[:MAX_MODEL_NAME]!r}: use at most {MAX_MODEL_NAME} letters, "
                          "digits and . _ - : / @ + (no '..').", param, code="invalid_model")
    return name


def header_value(text: str) -> str:
    """Text for a response header: visible ASCII is kept, anything else percent-encoded, so no
    value can break the header block (CR/LF) or the latin-1 encoding of HTTP/1 headers."""
    if text.isascii() and text.isprintable():
        return text
    return quote(text, safe=" !#$&'()*+,/:;=?@[]~")


MAX_CLIENT_SCHEMA_NODES = 20_000  # objects and arrays in all of one request's schemas together


def check_schemas(parameters: list[Any], response: Any = None) -> None:
    """A clear 400 for tool and response schemas too large to walk (every back end's converter
    walks them). Run on the client's request before an account is picked: a client's mistake
    must stay a 400 even when every account is resting. Objects and arrays counted iteratively."""
    stack = [s for s in (*parameters, response) if isinstance(s, (dict, list))]
    nodes = 0
    while stack:
        node = stack.pop()
        nodes += 1
        if nodes > MAX_CLIENT_SCHEMA_NODES:
            raise bad_request(f"The JSON schemas of this request have more than {MAX_CLIENT_SCHEMA_NODES} objects "
                              "and arrays; simplify them.", "tools", code="schema_too_complex")
        children = node.values() if isinstance(node, dict) else node
        stack.extend(c for c in children if isinstance(c, (dict, list)))
