"""Back ends: the canonical request/response in each upstream's wire format, and back.

Pure translation, no I/O: `gemini` (Gemini API and Cloud Code, which wraps the same payloads),
`openai` (any OpenAI-compatible Chat Completions server), `schema` (JSON Schema -> what Gemini
accepts). Each back end also parses its upstream's error bodies into `UpstreamError` and has one
stream state machine implementing `StreamDecoder`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol

from ..protocol import canonical as c
from ..protocol.errors import UpstreamError


class StreamDecoder(Protocol):
    """One upstream stream direction: SSE `data` payloads in, canonical stream events out."""

    def feed(self, payload: str) -> list[c.StreamEvent]:
        """One SSE event's data; raises UpstreamError for a payload that is or reports a failure."""
        ...

    def finish(self) -> list[c.StreamEvent]:
        """The stream ended; raises UpstreamError if the answer was not complete."""
        ...


# One to four "<number><unit>" runs: protobuf Durations ("34.074824224s"), gemini-cli's "900ms",
# and Go-style durations in Cloud Code's quotaResetDelay ("161h39m41.300432511s"); digits bounded.
_DURATION = re.compile(r"^(?:\d{1,12}(?:\.\d{1,9})?(?:ms|h|m|s)){1,4}$")
_DURATION_PART = re.compile(r"(\d{1,12}(?:\.\d{1,9})?)(ms|h|m|s)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# An upstream's wait is advice, not an order: a huge one (or inf) would bench an account for good
# and was once persisted as Infinity. Longer asks are capped; the account is simply tried again then.
MAX_UPSTREAM_DELAY = 3600.0


def clamp_delay(seconds: float | None) -> float | None:
    """A finite wait in [0, MAX_UPSTREAM_DELAY], or None for nonsense (NaN)."""
    if seconds is None or math.isnan(seconds):
        return None
    return min(max(0.0, seconds), MAX_UPSTREAM_DELAY)


def parse_duration(value: Any) -> float | None:
    """A Google duration string (`retryDelay: "1.5s"`, `"900ms"`, `"9h22m20s"`) -> seconds."""
    if isinstance(value, str):
        text = value.strip()
        if len(text) <= 64 and _DURATION.match(text):
            return clamp_delay(sum(float(n) * _UNITS[unit] for n, unit in _DURATION_PART.findall(text)))
    return None


def retry_after_header(headers: Mapping[str, str]) -> float | None:
    """`retry-after-ms` (OpenAI's) or `retry-after` (seconds) -> seconds."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw:
            try:
                return clamp_delay(float(raw[:32]) * scale)
            except ValueError:
                continue
    return None


# ---- an upstream's 200 is checked like its errors: malformed = 502 (and the policy rotates) ----

MAX_INDEX = 64  # choices (n <= 8) and tool calls per choice the encoders will index by
MAX_TOKENS = 10**12


@contextmanager
def decoding() -> Iterator[None]:
    """Around a decoder: a body of the wrong shape (a list where an object belongs, a number
    where text belongs) raises something in the translation; it is the upstream's fault."""
    try:
        yield
    except UpstreamError:
        raise
    except (AttributeError, TypeError, KeyError, ValueError, IndexError, RecursionError) as exc:
        raise _malformed(type(exc).__name__) from None


def _malformed(what: str) -> UpstreamError:
    return UpstreamError(502, f"Upstream answered with a malformed body ({what}).")


def _index(v: Any) -> bool:
    return type(v) is int and 0 <= v < MAX_INDEX


def _text(v: Any, optional: bool = False) -> bool:
    return isinstance(v, str) or (optional and v is None)


def _usage(u: c.Usage) -> None:
    for value in (u.input_tokens, u.output_tokens, u.reasoning_tokens, u.cached_tokens):
        if type(value) is not int or not 0 <= value < MAX_TOKENS:
            raise _malformed("usage")


def _signature(s: Any) -> bool:
    """None, or a signature whose value is text (an upstream may send anything as thoughtSignature)."""
    return s is None or (isinstance(s, c.Signature) and _text(s.value) and _text(s.key, True))


def _call(t: c.ToolCall) -> bool:
    return _text(t.id) and _text(t.name) and _text(t.arguments) and _signature(t.signature)


def well_formed(comp: c.Completion) -> c.Completion:
    """The completion, if every field has the type the front ends rely on."""
    for ch in comp.choices:
        if not (_index(ch.index) and _text(ch.text) and _text(ch.reasoning) and _signature(ch.reasoning_signature)
                and all(_call(t) for t in ch.tool_calls)):
            raise _malformed("choice")
    _usage(comp.usage)
    if not _text(comp.upstream_model, True):
        raise _malformed("model")
    return comp


def well_formed_events(events: list[c.StreamEvent]) -> list[c.StreamEvent]:
    for ev in events:
        if isinstance(ev, c.UsageUpdate):
            _usage(ev.usage)
            continue
        ok = _index(ev.choice)
        if isinstance(ev, (c.TextDelta, c.ReasoningDelta)):
            ok = ok and _text(ev.text) and _signature(getattr(ev, "signature", None))
        elif isinstance(ev, c.ToolCallDelta):
            ok = (ok and _index(ev.call_index) and _text(ev.arguments) and _text(ev.id, True) and _text(ev.name, True)
                  and _signature(ev.signature))
        if not ok:
            raise _malformed(type(ev).__name__)
    return events
