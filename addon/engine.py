"""The gateway engine: routes, auth, model mapping, account selection and the retry policy.

It knows nothing of mitmproxy: `handle()` takes a plain request and returns an Outcome
with either a whole body or an async iterator of bytes (an SSE stream whose upstream has
already answered 200, so retries and rotation all happen before the first byte).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import __version__, auth
from .accounts import AccountPool, NoAccount
from .mapping import ModelMap
from .protocol import canonical as c
from .protocol.errors import GatewayError
from .translate.chat import ChatFrontend
from .upstream.base import UpstreamError, retry_after_seconds
from .upstream.google import CloudCodeProvider, GeminiProvider, TokenManager
from .upstream.http import HttpClient
from .upstream.openai_compat import OpenAIProvider

log = logging.getLogger(__name__)

JSON_HEADERS = {"content-type": "application/json"}
SSE_HEADERS = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache",
               "x-accel-buffering": "no"}
MAX_ATTEMPTS = 3  # Antigravity Tools' MAX_RETRY_ATTEMPTS; also bounded by the pool size


@dataclass(slots=True)
class Incoming:
    method: str
    path: str  # without the query string
    headers: Mapping[str, str]  # case-insensitive mapping (mitmproxy's Headers qualifies)
    body: bytes = b""
    peer: str | None = None


@dataclass(slots=True)
class Story:
    """What happened to one request, told in one line in mitmweb's comment column."""

    route: str = ""
    client_model: str | None = None
    mapped_model: str | None = None
    account: str | None = None
    attempts: list[tuple[str, int]] = field(default_factory=list)
    status: int | None = None
    stream_error: str | None = None

    def mark(self) -> str:
        """mitmweb mark: failures and rotations stand out in the flow list ("" = none)."""
        if self.stream_error or (self.status or 0) >= 500 or self.status == 429:
            return ":x:"
        if len(self.attempts) > 1:
            return ":warning:"  # answered, but only after rotating away from failing accounts
        return ""

    def line(self) -> str:
        if self.client_model is None:
            return f"{self.route} → {self.status}"
        parts = [f"{self.client_model} → {self.mapped_model or '?'}"]
        if self.account:
            parts.append(self.account)
        parts.append(f"status {self.status}")
        if self.attempts:
            tries = ", ".join(f"{name}:{status or 'conn'}" for name, status in self.attempts)
            parts.append(f"{len(self.attempts)} attempt{'s' if len(self.attempts) > 1 else ''} [{tries}]")
        if self.stream_error:
            parts.append(f"stream failed: {self.stream_error}")
        return " · ".join(parts)


@dataclass(slots=True)
class Outcome:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None
    story: Story = field(default_factory=Story)


class StreamEncoder(Protocol):
    def start(self) -> bytes: ...
    def feed(self, ev: c.StreamEvent) -> bytes: ...
    def close(self) -> bytes: ...
    def fail(self, err: GatewayError) -> bytes: ...


class Frontend(Protocol):
    """One OpenAI API surface: parse into canonical, render back (JSON and SSE).

    Optionally `routes() -> [(method, path_regex, fn(match) -> (status, json_obj))]` for
    extra endpoints it owns; fn may raise GatewayError.
    """

    def parse(self, body: Any) -> tuple[c.ChatRequest, Any]: ...
    def render(self, completion: c.Completion, req: c.ChatRequest, ctx: Any) -> dict[str, Any]: ...
    def encoder(self, req: c.ChatRequest, ctx: Any) -> StreamEncoder: ...


@dataclass(slots=True)
class Settings:
    auth_mode: str = "off"  # already resolved from `auto`
    api_key: str = ""
    allow_lan_access: bool = False
    max_attempts: int = MAX_ATTEMPTS


class Redactor:
    """Removes every configured secret, and every live OAuth access token, from text that may
    reach a client or a log."""

    def __init__(self, secrets: list[str], dynamic: Any = lambda: ()) -> None:
        self._secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)
        self._dynamic = dynamic

    def __call__(self, text: str) -> str:
        for s in (*self._secrets, *self._dynamic()):
            if s and s in text:
                text = text.replace(s, "[redacted]")
        return text


def _json(status: int, obj: Any, headers: dict[str, str] | None = None) -> Outcome:
    return Outcome(status, {**JSON_HEADERS, **(headers or {})}, json.dumps(obj, ensure_ascii=False).encode())


def _error(err: GatewayError, extra: dict[str, str] | None = None) -> Outcome:
    return Outcome(err.status, {**JSON_HEADERS, **err.headers, **(extra or {})}, err.body())


_MODEL_PATH = re.compile(r"^/v1/models/(.+)$")


class Engine:
    def __init__(self, *, settings: Settings, mappings: Any, pool: AccountPool, http: HttpClient,
                 tokens: TokenManager | None = None, frontends: dict[str, Frontend] | None = None) -> None:
        self.settings = settings
        self.mapping_source = mappings  # anything with .current() -> ModelMap (a ReloadingFile in the addon)
        self.pool = pool
        self.http = http
        self.tokens = tokens or TokenManager(http)
        self.providers = {
            "gemini": GeminiProvider(http),
            "cloudcode": CloudCodeProvider(http, self.tokens),
            "openai": OpenAIProvider(http),
        }
        # path -> front end; the same surface is reachable without /v1 for clients that drop it
        self.frontends: dict[str, Frontend] = {"/v1/chat/completions": ChatFrontend(), **(frontends or {})}
        for path in list(self.frontends):
            self.frontends.setdefault(path.removeprefix("/v1"), self.frontends[path])
        # Extra routes a front end owns (e.g. GET /v1/responses/{id}): (method, regex, fn(match) -> (status, obj)).
        self.routes: list[tuple[str, re.Pattern[str], Any]] = []
        for frontend in {id(f): f for f in self.frontends.values()}.values():
            for method, pattern, fn in getattr(frontend, "routes", lambda: [])():
                self.routes.append((method, re.compile(pattern), fn))
        self.started = int(time.time())
        self.redact = Redactor([])
        self.refresh_secrets()

    def refresh_secrets(self) -> None:
        secrets = [self.settings.api_key]
        for acc in self.pool.accounts:
            secrets += [getattr(acc, k, None) or "" for k in ("api_key", "refresh_token", "client_secret")]
        self.redact = Redactor(secrets, getattr(self.tokens, "active_tokens", tuple))

    @property
    def mappings(self) -> ModelMap:
        return self.mapping_source.current()

    # ---- entry point --------------------------------------------------------------------
    async def handle(self, req: Incoming) -> Outcome:
        story = Story(route=f"{req.method} {req.path}")
        try:
            out = await self._route(req, story)
        except GatewayError as err:
            out = _error(err)
        except Exception:  # a bug must still answer in OpenAI's shape, without a traceback
            log.exception("internal error on %s %s", req.method, req.path)
            out = _error(GatewayError(500, "The gateway hit an internal error; see its log.", code="internal_error"))
        if story.mapped_model:
            out.headers["x-mapped-model"] = story.mapped_model
        if story.account:
            out.headers["x-account-email"] = story.account
        story.status = out.status
        out.story = story
        return out

    async def _route(self, req: Incoming, story: Story) -> Outcome:
        if not self.settings.allow_lan_access and not auth.is_loopback(req.peer):
            raise GatewayError(403, "LAN access is disabled on this gateway; connect from this machine or "
                                    "start it with allow_lan_access=true.", code="lan_access_disabled")
        path = req.path.rstrip("/") or "/"
        is_health = path in ("/healthz", "/health")
        # No CORS: a web page must not be able to spend this machine's accounts through a
        # loopback gateway with auth off. Browsers preflight JSON POSTs; those get a 405 here.
        auth.check(self.settings.auth_mode, self.settings.api_key, is_health, req.headers)

        if is_health:
            self._allow(req, "GET")
            return _json(200, {"status": "ok", "version": __version__})
        if path in ("/v1/models", "/models"):
            self._allow(req, "GET")
            return _json(200, {"object": "list", "data": [self._model_obj(m) for m in self._model_ids()]})
        m = _MODEL_PATH.match(path)
        if m:
            self._allow(req, "GET")
            return self._retrieve_model(m.group(1))
        frontend = self.frontends.get(path)
        if frontend is not None:
            self._allow(req, "POST")
            return await self._complete(frontend, req, story)
        allowed = []
        for method, pattern, fn in self.routes:
            m = pattern.fullmatch(path)
            if m is None:
                continue
            if req.method == method:
                status, obj = fn(m)
                return _json(status, obj)
            allowed.append(method)
        if allowed:
            raise GatewayError(405, f"Method {req.method} is not allowed on {req.path}; use "
                                    f"{' or '.join(allowed)}.", code="method_not_allowed")
        raise GatewayError(404, f"Unknown request URL: {req.method} {req.path}. The base URL of an OpenAI client "
                                "must end in /v1 (e.g. http://127.0.0.1:8045/v1).", code="unknown_url")

    @staticmethod
    def _allow(req: Incoming, method: str) -> None:
        if req.method != method:
            raise GatewayError(405, f"Method {req.method} is not allowed on {req.path}; use {method}.",
                               code="method_not_allowed")

    # ---- models ---------------------------------------------------------------------------
    def _model_ids(self) -> list[str]:
        names = self.mappings.listed_models()
        for acc in self.pool.accounts:
            names += [m for m in acc.models or [] if "*" not in m]
        return list(dict.fromkeys(names))

    def _model_obj(self, name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": self.started, "owned_by": "gateway"}

    def _retrieve_model(self, name: str) -> Outcome:
        if name in self._model_ids() or self.mappings.matches(name):
            return _json(200, self._model_obj(name), {"x-mapped-model": self.mappings.resolve(name)})
        raise GatewayError(404, f"The model '{name}' does not exist.", param="model", code="model_not_found")

    # ---- completions ----------------------------------------------------------------------
    async def _complete(self, frontend: Frontend, req: Incoming, story: Story) -> Outcome:
        try:
            body = json.loads(req.body) if req.body else None
        except ValueError as exc:
            raise GatewayError(400, f"The request body is not valid JSON ({exc.msg} at position {exc.pos}).",
                               code="invalid_json") from None
        creq, ctx = frontend.parse(body)
        story.client_model = creq.model
        mapped = self.mappings.resolve(creq.model)
        story.mapped_model = mapped

        acc, result = await self._call_upstream(creq, mapped, story)
        if creq.stream:
            enc = frontend.encoder(creq, ctx)
            return Outcome(200, dict(SSE_HEADERS), stream=self._sse(result, enc, acc, mapped, story))
        self.pool.record_usage(acc, mapped, result.usage)
        return _json(200, frontend.render(result, creq, ctx))

    def _sticky_key(self, req: c.ChatRequest) -> str:
        if req.user:
            return req.user
        first = next((m.text() for m in req.messages if m.role == "user"), "")
        system = next((m.text() for m in req.messages if m.role == "system"), "")
        return hashlib.blake2b(f"{system}\x00{first}".encode(), digest_size=16).hexdigest()

    async def _call_upstream(self, req: c.ChatRequest, mapped: str, story: Story) -> tuple[Any, Any]:
        """Try up to max_attempts accounts (bounded by the pool), rotating on rate limits and overloads."""
        tried: set[str] = set()
        last: UpstreamError | None = None
        sticky = self._sticky_key(req) if self.pool.sticky else None
        attempts = max(1, min(self.settings.max_attempts, self.pool.eligible_count(mapped)))
        for _ in range(attempts):
            try:
                acc = self.pool.pick(mapped, tried, sticky)
            except NoAccount as exc:
                if last is not None:
                    break
                raise self._no_account(exc, mapped) from None
            tried.add(acc.name)
            story.account = acc.name
            provider = self.providers[acc.provider]
            try:
                if req.stream:
                    result = await provider.stream(acc, req, mapped)
                else:
                    result = await provider.complete(acc, req, mapped)
            except UpstreamError as err:
                story.attempts.append((acc.name, err.status))
                last = err
                if err.account_fault:
                    self.pool.disable(acc, err.status, self.redact(f"{err.status}: {err.message}")[:200])
                    log.warning("account %s disabled after upstream %s", acc.name, err.status)
                    continue
                if err.rotate:
                    delay = self.pool.cool_down(acc, err.status, err.retry_after)
                    log.info("account %s cooling %.1fs after upstream %s", acc.name, delay, err.status)
                    continue
                raise self._upstream_error(err, acc) from None
            story.attempts.append((acc.name, 200))
            self.pool.succeeded(acc, mapped)
            return acc, result
        assert last is not None
        raise self._exhausted(last, mapped)

    def _no_account(self, exc: NoAccount, mapped: str) -> GatewayError:
        if exc.status == 429:
            ra = retry_after_seconds(exc.retry_after)
            return GatewayError(429, f"{exc} Retry after {ra or 'a few'} seconds.", code="rate_limit_exceeded",
                                headers={"retry-after": ra} if ra else {})
        # A configuration problem: the SDKs' automatic retries of a 5xx cannot help (x-should-retry).
        return GatewayError(503, str(exc), code="no_account_available", headers={"x-should-retry": "false"})

    def _upstream_error(self, err: UpstreamError, acc: Any) -> GatewayError:
        status = err.status if 400 <= err.status <= 599 else 502
        headers = {}
        ra = retry_after_seconds(err.retry_after)
        if ra:
            headers["retry-after"] = ra
        msg = self.redact(f"Upstream {acc.provider} error ({err.status}): {err.message}")
        return GatewayError(status, msg, code="upstream_error", headers=headers)

    def _exhausted(self, last: UpstreamError, mapped: str) -> GatewayError:
        if last.status == 429:
            wait = self.pool.shortest_wait(mapped) or last.retry_after
            ra = retry_after_seconds(wait)
            return GatewayError(429, self.redact(f"All accounts for '{mapped}' are rate-limited "
                                                 f"(last upstream message: {last.message})"),
                                code="rate_limit_exceeded", headers={"retry-after": ra} if ra else {})
        if last.status == 0:
            return GatewayError(502, f"Could not reach the upstream for '{mapped}': {last.message}",
                                code="upstream_unreachable")
        if last.account_fault or last.status in (401, 403):
            # Our account's credentials were refused, not the client's key: a 401/403 would make
            # clients think *their* key is wrong (and some would ask the user to log in again).
            return GatewayError(503, self.redact(f"No usable upstream account for '{mapped}': the upstream "
                                                 f"rejected the account's credentials ({last.status}: "
                                                 f"{last.message})"), code="no_account_available")
        status = last.status if 400 <= last.status <= 599 else 502
        return GatewayError(status, self.redact(f"Upstream error ({last.status}) after trying every eligible "
                                                f"account: {last.message}"), code="upstream_error")

    async def _sse(self, batches: AsyncIterator[list[c.StreamEvent]], enc: StreamEncoder, acc: Any,
                   mapped: str, story: Story) -> AsyncIterator[bytes]:
        try:
            head = enc.start()
            if head:
                yield head
            async for batch in batches:
                out = []
                for ev in batch:
                    if isinstance(ev, c.UsageUpdate):
                        self.pool.record_usage(acc, mapped, ev.usage)
                    out.append(enc.feed(ev))
                data = b"".join(out)
                if data:
                    yield data
            yield enc.close()
        except UpstreamError as err:
            story.stream_error = f"{err.status or 'conn'} {err.message}"[:120]
            log.warning("stream from %s failed mid-way: %s", acc.name, err.message)
            yield enc.fail(GatewayError(502, self.redact(f"Upstream stream failed: {err.message}"),
                                        code="upstream_stream_error"))
        except Exception:  # a bug must still end the stream in the client's protocol
            story.stream_error = "internal error"
            log.exception("stream translation failed")
            yield enc.fail(GatewayError(500, "The gateway hit an internal error; see its log.",
                                        code="internal_error"))
        finally:
            await batches.aclose()  # type: ignore[attr-defined]
