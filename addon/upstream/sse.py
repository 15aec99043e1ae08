"""Incremental Server-Sent Events parser (upstream bytes -> events).

Upstreams frame events with LF or CRLF (Gemini uses CRLF) and chunks split anywhere,
so this buffers partial lines and yields an event at each blank line. A partial line is kept
as a list of pieces (joined once, when its end arrives: linear, however the line is split) and
neither a line nor an event may exceed MAX_EVENT bytes: a broken upstream sending one endless
line is a 502, not a gateway that grows until it dies.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..protocol.errors import UpstreamError

MAX_EVENT = 16 * 1024 * 1024  # an event carrying an inline image is a few MB


@dataclass(slots=True)
class SSEEvent:
    data: str
    event: str | None = None


class SSEParser:
    def __init__(self, max_event: int = MAX_EVENT) -> None:
        self._pieces: list[bytes] = []  # the current line, not yet terminated
        self._pending = 0  # bytes in _pieces
        self._data: list[str] = []
        self._data_size = 0
        self._event: str | None = None
        self._max = max_event

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        out: list[SSEEvent] = []
        start = 0
        while True:
            nl = chunk.find(b"\n", start)
            if nl < 0:
                break
            line = chunk[start:nl]
            if self._pieces:
                line = b"".join((*self._pieces, line))
                self._pieces, self._pending = [], 0
            start = nl + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            self._line(line, out)
        if start < len(chunk):
            self._pieces.append(chunk[start:])
            self._pending += len(chunk) - start
            if self._pending > self._max:
                raise self._too_large()
        return out

    def flush(self) -> list[SSEEvent]:
        """End of stream: a final event without its blank line still counts."""
        out: list[SSEEvent] = []
        if self._pieces:
            self._line(b"".join(self._pieces).rstrip(b"\r"), out)
            self._pieces, self._pending = [], 0
        self._line(b"", out)
        return out

    def _too_large(self) -> UpstreamError:
        return UpstreamError(502, f"Upstream sent an SSE event larger than {self._max} bytes.")

    def _line(self, line: bytes, out: list[SSEEvent]) -> None:
        if not line:
            if self._data:
                out.append(SSEEvent("\n".join(self._data), self._event))
            self._data, self._data_size = [], 0
            self._event = None
            return
        if line[:1] == b":":
            return  # comment / keep-alive
        field, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            self._data_size += len(value)
            if self._data_size > self._max:
                raise self._too_large()
            self._data.append(value.decode("utf-8", "replace"))
        elif field == b"event":
            self._event = value.decode("utf-8", "replace")
