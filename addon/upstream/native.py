"""Reading a Gemini-native answer (the `native` capability of the Google providers): a whole JSON
object, or a stream of GenerateContentResponse objects from Google's SSE, Cloud Code's
{"response": ...} envelope removed. Errors become UpstreamError like every other call, so the
retry policy treats a native request exactly as a chat one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ..backends import gemini
from ..backends.gemini.native import unwrap_cloudcode
from ..protocol import jsonfast
from ..protocol.errors import UpstreamError
from .http import UpstreamResponse
from .streaming import read_ahead, sse_payloads

READ_AHEAD_SECONDS = 10.0  # how long the first event may take before the stream is handed over unread

NativeEvents = AsyncIterator[list[dict[str, Any]]]


def _object(raw: bytes | str, unwrap: bool, what: str) -> dict[str, Any]:
    try:
        data = jsonfast.loads(raw)
    except ValueError:
        raise UpstreamError(502, f"The upstream's {what} is not JSON.") from None
    if unwrap:
        data = unwrap_cloudcode(data)
    if not isinstance(data, dict):
        raise UpstreamError(502, f"The upstream's {what} is not a JSON object.")
    if isinstance(data.get("error"), dict):  # an error sent inside a 200 stream
        err = data["error"]
        status = err.get("code") if isinstance(err.get("code"), int) else 502
        raise gemini.error_from(status, raw.encode() if isinstance(raw, str) else raw, {})
    return data


async def whole(resp: UpstreamResponse, *, unwrap: bool = False) -> dict[str, Any]:
    return _object(await resp.read(), unwrap, "answer")


async def _events(resp: UpstreamResponse, unwrap: bool) -> NativeEvents:
    try:
        async for payloads in sse_payloads(resp.chunks()):
            yield [_object(p, unwrap, "stream event") for p in payloads if p.strip()]
    finally:
        await resp.close()


def _first(batch: list[dict[str, Any]]) -> bool:
    return True


async def events(resp: UpstreamResponse, *, unwrap: bool = False, patience: float = READ_AHEAD_SECONDS) -> NativeEvents:
    """The stream, its first events already read: a failure the upstream reports at once (an error
    event, a cut connection) still fails this attempt, so the policy can try another account
    before the client got a byte. A first event slower than `patience` is not waited for."""
    return await read_ahead(_events(resp, unwrap), patience, enough=_first)
