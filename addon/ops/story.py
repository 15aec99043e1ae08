"""What happened to one request: the operator's view of it.

One Story per request, filled in by the engine as the request goes (route, models, attempts,
tokens, times) and told three ways when the flow ends: mitmweb's comment column and marker
(`comment()`, `mark()`), one structured log line (`log_line()`), and the /metrics counters
(addon/ops/metrics.py). Nothing in it is a secret: account labels are names from the accounts file,
stream errors are redacted before they get here, and client-chosen text is length-capped.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field

from ..pool.policy import Attempt

LOG_FORMATS = ("logfmt", "json", "off")
MAX_TEXT = 100  # client-chosen strings (model names) are cut to this in logs and comments

# Outcomes, one per request, and the mitmweb marker of each ("" = unmarked).
MARKS = {
    "ok": "",
    "rotated": ":arrows_counterclockwise:",  # 🔄 answered, after moving away from failing accounts
    "fallback": ":leftwards_arrow_with_hook:",  # ↩ answered by a later target of a fallback chain
    "upstream_failed": ":x:",  # ❌ the upstream(s) refused or failed it
    "stream_cut": ":scissors:",  # ✂ the stream started, then the upstream failed mid-way
    "refused": ":no_entry:",  # ⛔ the gateway said no itself (auth, bad request, pool cooling)
    "client_gone": ":electric_plug:",  # 🔌 the client left before the answer was over
    "internal_error": ":boom:",  # 💥 a gateway bug
}


@dataclass(slots=True)
class Story:
    method: str = ""
    path: str = ""
    route: str = "unknown"  # the route template that matched (bounded: a metrics label)
    client_model: str | None = None
    mapped_model: str | None = None  # the target that answered (with a fallback chain: the one that did)
    # Targets of a fallback chain passed over before `mapped_model`, each "model:why" (why: 404,
    # resting, absent = not in the accounts' model lists)
    fallbacks: list[str] = field(default_factory=list)
    served_model: str | None = None  # the upstream's own name for the answering model, when it differs
    account: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    status: int | None = None
    error_code: str | None = None  # the OpenAI error code the client got, if any
    stream: bool = False
    stream_error: str | None = None
    client_gone: bool = False
    tokens_in: int | None = None
    tokens_out: int | None = None
    left_out: list[str] = field(default_factory=list)  # parts of the request not forwarded (tools, ...)
    started: float = field(default_factory=time.monotonic)
    first_byte: float | None = None  # monotonic time the first answer byte was ready
    ended: float | None = None
    client: str | None = None  # the clients file's name of the caller (None: operator key, or no clients file)
    limit: str | None = None  # the client limit that refused it: rpm, max_concurrent, tokens_per_day, model
    limit_headers: dict[str, str] | None = None  # x-ratelimit-* for the client's answer
    admission: tuple | None = None  # (client, ticket, holds a slot) until the request is settled

    # ---- what happened ---------------------------------------------------------------------
    def outcome(self) -> str:
        if self.client_gone:
            return "client_gone"
        if self.stream_error:
            return "stream_cut"
        if (self.status or 0) >= 400:
            if self.error_code == "internal_error":
                return "internal_error"
            # an upstream was asked: its refusal; none was: the gateway's own (a 429 of a pool
            # that is all cooling is the gateway's, not an upstream failure)
            return "upstream_failed" if self.attempts else "refused"
        if self.fallbacks:
            return "fallback"
        return "rotated" if len(self.attempts) > 1 else "ok"

    def mark(self) -> str:
        """mitmweb marker: failures, rotations and refusals stand out in the flow list."""
        return MARKS[self.outcome()]

    @property
    def latency(self) -> float | None:
        return None if self.ended is None else self.ended - self.started

    @property
    def ttfb(self) -> float | None:
        return None if self.first_byte is None else self.first_byte - self.started

    # ---- how it is told --------------------------------------------------------------------
    def comment(self) -> str:
        """mitmweb's comment column, which is 150 px wide: what went wrong comes first, then
        the targets a fallback chain passed over, `client→mapped`, the model Google re-routed the
        name to, the account, the attempts when there was more than one, the tokens:
        `rotated · gpt-4o→gemini-3.8-flash · bob · alice:429, bob:200 · 12+34 tok`."""
        outcome = self.outcome()
        parts = {
            "rotated": ["rotated"],
            "upstream_failed": [f"upstream {self.status}"],
            "stream_cut": [f"cut: {self.stream_error}"],
            "refused": [f"refused {self.status} {self.error_code or ''}".rstrip()],
            "client_gone": ["client left"],
            "internal_error": [f"error {self.status}"],
        }.get(outcome, [])
        if self.client:
            parts.append(self.client)
        if self.fallbacks:
            parts.append("fallback from " + ", ".join(self.fallbacks))
        if self.client_model is not None:
            parts.append(f"{_cut(self.client_model)}→{self.mapped_model or '?'}")
        if self.served_model:
            parts.append(f"re-routed to {self.served_model}")
        if self.account and outcome != "refused":
            parts.append(self.account)
        if len(self.attempts) > 1:
            parts.append(", ".join(f"{a.account}:{a.status or 'conn'}" for a in self.attempts))
        if self.tokens_in is not None or self.tokens_out is not None:
            parts.append(f"{self.tokens_in or 0}+{self.tokens_out or 0} tok")
        if self.left_out:
            parts.append("left out: " + self._left_out())
        return " · ".join(parts)

    def _left_out(self) -> str:
        return _cut(", ".join(self.left_out))

    def fields(self) -> dict[str, object]:
        """The log line's fields, in a stable order; absent ones are left out."""
        out: dict[str, object] = {
            "method": self.method, "route": self.route, "status": self.status, "outcome": self.outcome(),
            "client": self.client,
            "client_model": _cut(self.client_model) if self.client_model is not None else None,
            "mapped_model": self.mapped_model, "fallback_from": ",".join(self.fallbacks) or None,
            "served_model": self.served_model, "account": self.account,
            "attempts": ",".join(f"{a.account}:{a.status or 'conn'}" for a in self.attempts) or None,
            "stream": self.stream if self.client_model is not None else None,
            "latency_ms": _ms(self.latency), "ttfb_ms": _ms(self.ttfb),
            "tokens_in": self.tokens_in, "tokens_out": self.tokens_out,
            "error": self.error_code, "limit": self.limit, "stream_error": self.stream_error,
            "left_out": self._left_out() if self.left_out else None,
        }
        if self.route == "unknown":
            out["path"] = _cut(self.path)
        return {k: v for k, v in out.items() if v is not None}

    def answered_by(self, model: str | None) -> None:
        """Note the upstream's name for the model that answered (Gemini's modelVersion) when it is
        another model than the one asked for: Google answers a deprecated name from its successor."""
        mapped = self.mapped_model
        if model and mapped and not _same_model(model.removeprefix("models/"), mapped):
            self.served_model = _cut(model.removeprefix("models/"))

    def log_line(self, fmt: str = "logfmt") -> str:
        fields = self.fields()
        if fmt == "json":
            return json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
        return " ".join(f"{k}={_logfmt(v)}" for k, v in fields.items())


def _same_model(served: str, asked: str) -> bool:
    """`gemini-x` answered as `gemini-x-001` (a pinned version of the same model) is no re-route."""
    return served == asked or bool(re.fullmatch(re.escape(asked) + r"-\d{3}", served))


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "…"


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


_BARE = re.compile(r'[!#-<>-\[\]-~]+')  # printable ASCII but space, '"', '=' and '\\': no quotes needed


def _logfmt(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if _BARE.fullmatch(text) or (text and not any(ch in text for ch in ' "=\\') and text.isprintable()):
        return text
    return json.dumps(text)  # quoted, with quotes, backslashes and control characters escaped
