"""The gateway engine: routes, auth, model mapping, and one completion through the retry policy.

It knows nothing of mitmproxy: `handle()` takes a plain request and returns an Outcome with
either a whole body or an async iterator of bytes (an SSE stream whose upstream has already
answered 200, so retries and rotation all happen before the first byte).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from . import __version__, auth
from .pool.accounts_file import Account, AccountsFile
from .pool.pool import AccountPool
from .config.codex_catalog import codex_catalog
from .backends.schema import check_schemas
from .clients import ClientGate
from .frontends import Frontend, encode_stream
from .config.mapping import ModelMap, Target
from .fallback import ChainWalk
from .frontends import embeddings
from .frontends.base import OpRoute
from .ops.metrics import Metrics
from .operations import EnginePoolCalls
from .pool.policy import MAX_ATTEMPTS, RetryPolicy
from .protocol import canonical as c
from .protocol import jsonfast, limits
from .protocol.errors import GatewayError, UpstreamError
from .ops.redact import Redactor
from .stores.signature_store import MemorySignatureStore, SignatureStore, hydrate, in_completion, remembering
from .ops.story import Story
from .upstream import Provider
from .upstream.streaming import until_shutdown

log = logging.getLogger(__name__)

JSON_HEADERS = {"content-type": "application/json"}
SSE_HEADERS = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache",
               "x-accel-buffering": "no"}

T = TypeVar("T")


class Source(Protocol[T]):
    """Configuration that may change while running (a ReloadingFile, or a fixed value)."""

    def current(self) -> T: ...


class Fixed(Source[T]):
    """The `current()` interface for configuration that is not a file."""

    def __init__(self, value: T) -> None:
        self.value = value

    def current(self) -> T:
        return self.value


@dataclass(slots=True)
class Incoming:
    method: str
    path: str  # without the query string
    headers: Mapping[str, str]  # case-insensitive mapping (mitmproxy's Headers qualifies)
    body: bytes = b""
    peer: str | None = None
    query: str = ""  # the raw query string, without "?"
    host: str | None = None  # the Host header when the client called the listener itself (reverse mode)
    admitted: bool = False  # admit() already passed on these headers (the adapter does it before the body)
    client: str | None = None  # the clients file's name for the key admit() accepted (None: operator / no file)


@dataclass(slots=True)
class Outcome:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None
    story: Story = field(default_factory=Story)


@dataclass(slots=True)
class Settings:
    auth_mode: str = "off"  # already resolved from `auto`
    api_key: str = ""
    allow_lan_access: bool = False
    max_attempts: int = MAX_ATTEMPTS
    max_body_size: int = limits.MAX_BODY_BYTES
    # Host names (and Origin hosts) accepted besides IP literals, localhost and the listen host; "*": any
    allowed_hosts: frozenset[str] = frozenset()
    log_format: str = "logfmt"  # one line per request: logfmt | json | off (see Story.log_line)


def _json(status: int, obj: Any, headers: dict[str, str] | None = None) -> Outcome:
    return Outcome(status, {**JSON_HEADERS, **(headers or {})}, jsonfast.dumps(obj))


def _error(err: GatewayError, extra: dict[str, str] | None = None) -> Outcome:
    return Outcome(err.status, {**JSON_HEADERS, **err.headers, **(extra or {})}, err.body())


_MODEL_PATH = re.compile(r"^/v1/models/(.+)$")
_EMBEDDINGS = ("/v1/embeddings", "/embeddings")
# Monitoring traffic is counted, but its log lines go to debug so probes do not drown the log.
_QUIET_ROUTES = frozenset({"/healthz", "/metrics"})


def quiet(story: Story) -> bool:
    """A probe or scrape that went well: logged at debug level only (by the adapter too)."""
    return story.route in _QUIET_ROUTES and story.outcome() == "ok"


class Engine:
    def __init__(self, *, settings: Settings, mappings: Source[ModelMap], accounts: Source[AccountsFile],
                 pool: AccountPool, providers: Mapping[str, Provider], frontends: Iterable[Frontend],
                 live_secrets: Any = tuple, signatures: SignatureStore | None = None,
                 clients: ClientGate | None = None) -> None:
        self.settings = settings
        self.stopping = False  # the adapter is shutting down: open streams end with an error event
        self.clients = clients  # per-client keys, model allow-lists and limits (None: no clients file)
        self.signatures = signatures if signatures is not None else MemorySignatureStore()
        self.mapping_source = mappings
        self.accounts_source = accounts
        self.pool = pool
        self.providers = providers
        self._live_secrets = live_secrets  # e.g. the OAuth access tokens held right now
        # path -> front end; the same surface is reachable without /v1 for clients that drop it
        self.frontends: dict[str, Frontend] = {}
        # Extra routes a front end owns (e.g. GET /v1/responses/{id}), with their label for logs.
        self.routes: list[tuple[str, re.Pattern[str], Any, str]] = []
        self.op_routes: list[OpRoute] = []  # operations with a handler of their own (Gemini-native, ...)
        self.surfaces = list(frontends)  # who shapes the errors of which paths (Frontend.owns)
        for frontend in self.surfaces:
            self.op_routes += frontend.op_routes()
            if frontend.path is None:  # operations only, no completion route
                continue
            self.frontends[frontend.path] = self.frontends[frontend.path.removeprefix("/v1")] = frontend
            for method, pattern, fn in frontend.routes():
                self.routes.append((method, re.compile(pattern), fn, frontend.path + "/{id}"))
        self.started = int(time.time())
        self.redact = Redactor([])
        self.policy = RetryPolicy(pool, max_attempts=settings.max_attempts, redact=lambda text: self.redact(text),
                                  probe=self._probe)
        self._accounts_seen: AccountsFile | None = None
        self._known: tuple[Any, Any, frozenset[str]] | None = None  # (mappings, accounts, names) cache
        self.metrics = Metrics(pool, known_model=lambda name: name in self._known_models())
        self.chains = ChainWalk(self.policy, pool, on_fallback=self.metrics.fallback)
        self.pool_calls = EnginePoolCalls(self)
        self.sync_accounts()

    def configure(self, settings: Settings, mappings: Source[ModelMap] | None = None,
                  accounts: Source[AccountsFile] | None = None) -> None:
        self.settings = settings
        self.policy.max_attempts = settings.max_attempts
        if mappings is not None:
            self.mapping_source = mappings
        if accounts is not None:
            self.accounts_source = accounts
        self.sync_accounts()

    def sync_accounts(self) -> bool:
        """Install the accounts file if it changed (a reload returns a new object); True if it did."""
        current = self.accounts_source.current()
        if current is self._accounts_seen:
            return False
        self._accounts_seen = current
        self.pool.update(current)
        secrets = [self.settings.api_key]
        for acc in current.accounts:
            secrets += acc.secrets()
        self.redact = Redactor(secrets, self._live_secrets)
        if current.accounts:
            log.info("gateway accounts: %s", ", ".join(f"{a.name} ({a.provider})" for a in current.accounts))
        else:
            log.warning("no upstream account configured: requests will get 503 until you set GEMINI_API_KEY "
                        "or --set accounts=accounts.yaml (see accounts.example.yaml)")
        return True

    async def _probe(self, acc: Account) -> UpstreamError | None:
        return await self.providers[acc.provider].probe(acc)

    @property
    def mappings(self) -> ModelMap:
        return self.mapping_source.current()

    # ---- entry point --------------------------------------------------------------------
    async def handle(self, req: Incoming, story: Story | None = None) -> Outcome:
        """One request. `story` (the caller's, so it survives a cancelled call) is filled in as
        the request goes; call `finish(story)` once the answer has gone out."""
        story = self._story(req, story)
        try:
            self.sync_accounts()
            if not req.admitted:
                self.admit(req)
            out = await self._route(req, story)
        except GatewayError as err:
            story.error_code = err.code
            out = self._error_for(req.path, err)
        except Exception:  # a bug must still answer in its surface's shape, without a traceback
            log.exception("internal error on %s %s", req.method, req.path)
            story.error_code = "internal_error"
            out = self._error_for(req.path, GatewayError(500, "The gateway hit an internal error; see its log.",
                                                         code="internal_error"))
        return self._told(out, story)

    def _owner(self, path: str) -> Frontend | None:
        """The surface whose error shape the path's errors take (None: OpenAI's, the default)."""
        for frontend in self.surfaces:
            if frontend.owns(path):
                return frontend
        return None

    def _error_for(self, path: str, err: GatewayError) -> Outcome:
        owner = self._owner(path)
        if owner is None:
            return _error(err)
        status, headers, body = owner.error(err)
        return Outcome(status, headers, body)

    def refusal(self, req: Incoming) -> Outcome | None:
        """The answer to a request refused on its headers alone (see `admit`), or None if it may go on.
        Its story, like every other, is to be `finish`ed once the answer has gone out."""
        try:
            self.admit(req)
        except GatewayError as err:
            return self.refused(req, err)
        return None

    def refused(self, req: Incoming, err: GatewayError) -> Outcome:
        """`err` as the answer to `req`, with its story."""
        story = self._story(req)
        story.error_code = err.code
        return self._told(self._error_for(req.path, err), story)

    def _story(self, req: Incoming, story: Story | None = None) -> Story:
        story = story if story is not None else Story()
        story.method, story.path, story.client = req.method, req.path, req.client
        story.route = self._route_name(req.path.rstrip("/") or "/")
        return story

    def _told(self, out: Outcome, story: Story) -> Outcome:
        # Both may carry client text (a "~" mapping keeps the client's model name): never raw in a header.
        if story.mapped_model:
            out.headers["x-mapped-model"] = limits.header_value(story.mapped_model)
        if story.account:
            out.headers["x-account-email"] = limits.header_value(story.account)
        if story.limit_headers:
            out.headers.update(story.limit_headers)
        story.status = out.status
        if out.stream is None:
            story.first_byte = story.ended = time.monotonic()
        else:
            self.metrics.stream_opened()
        out.story = story
        return out

    def finish(self, story: Story) -> None:
        """The request is over (a stream: it ended, or its client left): count it and log its line."""
        if story.ended is None:
            story.ended = time.monotonic()
        if self.clients is not None:
            self.clients.finished(story)  # its tokens count against the client's budget; its slot frees
        self.metrics.observe(story)
        if self.settings.log_format != "off":
            level = logging.DEBUG if quiet(story) else logging.INFO
            log.log(level, "%s", story.log_line(self.settings.log_format))

    def admit(self, req: Incoming) -> None:
        """Every check that needs only the request line and headers, so that the adapter can run
        them before mitmproxy's body is read or decoded: peer, Host/Origin, key, type, size."""
        settings = self.settings
        if not settings.allow_lan_access and not auth.is_loopback(req.peer):
            raise GatewayError(403, "LAN access is disabled on this gateway; connect from this machine or "
                                    "start it with allow_lan_access=true.", code="lan_access_disabled")
        # A web page can reach a loopback gateway too: through DNS rebinding (a name of the
        # attacker's that resolves to 127.0.0.1: refused by the Host check) or with a "simple"
        # cross-origin POST that needs no CORS preflight (refused by the Origin and content-type
        # checks). The gateway serves no pages and answers no preflight (OPTIONS gets a 405).
        auth.check_browser_headers(req.host, req.headers.get("origin"), settings.allowed_hosts)
        path = req.path.rstrip("/") or "/"
        is_health = path in ("/healthz", "/health")
        owner = self._owner(path)
        url_key = auth.query_key(req.query) if owner is not None and owner.accepts_query_key(path) else None
        if self.clients is None:
            auth.check(settings.auth_mode, settings.api_key, is_health, req.headers, url_key)
        elif not auth.exempt(settings.auth_mode, is_health):
            req.client = self.clients.authenticate(req.headers, settings.api_key, url_key)
        if req.method == "POST":
            length = req.headers.get("content-length")
            if length is None and req.headers.get("transfer-encoding"):
                raise GatewayError(411, "Send the request body with a Content-Length header.", code="length_required")
            if length is not None and (not length.strip().isdigit() or int(length) > settings.max_body_size):
                raise limits.too_large(settings.max_body_size)
            ctype = req.headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if length not in (None, "0") and ctype != "application/json":
                raise GatewayError(415, "Send the request body as JSON with 'Content-Type: application/json'.",
                                   code="unsupported_media_type")

    async def _route(self, req: Incoming, story: Story) -> Outcome:
        path = req.path.rstrip("/") or "/"
        is_health = path in ("/healthz", "/health")
        if is_health:
            self._allow(req, "GET")
            return _json(200, {"status": "ok", "version": __version__})
        if path == "/metrics":  # behind the same auth as the API
            self._allow(req, "GET")
            return Outcome(200, {"content-type": self.metrics.content_type}, self.metrics.render())
        # first: POST /v1/models/{model}:generateContent is not GET /v1/models/{id}
        found = self.pool_calls.route_for(req, path, listing=path in ("/v1/models", "/models")
                                          or _MODEL_PATH.match(path) is not None)
        if found is not None:
            story.route = found[0].label
            answer = await self.pool_calls.operate(*found, req, story)
            stream = _timed(answer.stream, story) if answer.stream is not None else None
            return Outcome(answer.status, answer.headers, answer.body, stream)
        if path in ("/v1/models", "/models"):
            self._allow(req, "GET")
            return _json(200, self._models(req.query, req.client))
        if path == "/gateway/accounts":
            self._allow(req, "GET")
            return _json(200, {"object": "list", "data": self.accounts_view()})
        if path == "/gateway/clients":  # the operator sees every client, a client only itself
            self._allow(req, "GET")
            if self.clients is None:
                raise GatewayError(404, "No clients file is configured (--set clients=clients.yaml).",
                                   code="no_clients_file")
            return _json(200, {"object": "list", "data": await self.clients.view(req.client)})
        m = _MODEL_PATH.match(path)
        if m:
            self._allow(req, "GET")
            return self._retrieve_model(m.group(1), req.client)
        if path in _EMBEDDINGS:
            self._allow(req, "POST")
            return await self._embeddings(req, story)
        frontend = self.frontends.get(path)
        if frontend is not None:
            self._allow(req, "POST")
            return await self._complete(frontend, req, story)
        allowed = []
        for method, pattern, fn, _ in self.routes:
            m = pattern.fullmatch(path)
            if m is None:
                continue
            if req.method == method:
                status, obj = await fn(m)
                return _json(status, obj)
            allowed.append(method)
        if allowed:
            raise GatewayError(405, f"Method {req.method} is not allowed on {req.path}; use "
                                    f"{' or '.join(allowed)}.", code="method_not_allowed")
        raise GatewayError(404, f"Unknown request URL: {req.method} {req.path}. The base URL of an OpenAI client "
                                "must end in /v1 (e.g. http://127.0.0.1:8045/v1).", code="unknown_url")

    def _route_name(self, path: str) -> str:
        """The route template a path belongs to: a bounded label for logs and metrics."""
        if path in ("/healthz", "/health"):
            return "/healthz"
        for route in self.op_routes:
            if route.pattern.fullmatch(path):
                return route.label
        if path in ("/metrics", "/gateway/accounts", "/gateway/clients", "/v1/models", "/models"):
            return "/v1/models" if path == "/models" else path
        if _MODEL_PATH.match(path):
            return "/v1/models/{id}"
        if path in _EMBEDDINGS:
            return "/v1/embeddings"
        frontend = self.frontends.get(path)
        if frontend is not None:
            return frontend.path
        for _, pattern, _, label in self.routes:
            if pattern.fullmatch(path):
                return label
        return "unknown"

    @staticmethod
    def _allow(req: Incoming, method: str) -> None:
        if req.method != method:
            raise GatewayError(405, f"Method {req.method} is not allowed on {req.path}; use {method}.",
                               code="method_not_allowed")

    def accounts_view(self) -> list[dict[str, Any]]:
        """The pool as the operator sees it: per account its state, cooldown and why, last error,
        and per model its request and token counts; what providers learned (e.g. a discovered Cloud
        Code project). No secrets; error texts are redacted."""
        rows = []
        for acc, row in zip(self.pool.accounts, self.pool.describe()):
            describe = getattr(self.providers.get(acc.provider), "describe", None)
            row.update(describe(acc) if describe else {})
            for key in ("status", "last_error"):
                if row.get(key):
                    row[key] = self.redact(row[key])
            rows.append(row)
        return rows

    # ---- models ---------------------------------------------------------------------------
    def _model_ids(self) -> list[str]:
        names = self.mappings.listed_models()
        for acc in self.pool.accounts:
            names += [m for m in acc.models or [] if "*" not in m]
        return list(dict.fromkeys(names))

    def _models(self, query: str, client: str | None = None) -> dict[str, Any]:
        names = self._model_ids()
        if client is not None and self.clients is not None:  # only what this client may use
            names = [n for n in names if self.clients.allows(client, n)]
        listing: dict[str, Any] = {"object": "list", "data": [self._model_obj(m) for m in names]}
        if "client_version=" in query:
            # Codex CLI (model_catalog_url) reads its own catalog from the same answer: see codex_catalog
            listing["models"] = codex_catalog(names, self.mappings.resolve)
        return listing

    def _model_obj(self, name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": self.started, "owned_by": "gateway"}

    def _known_models(self) -> frozenset[str]:
        """The listed names (mapping file and accounts), cached until either file changes."""
        mappings, accounts = self.mappings, self._accounts_seen
        if self._known is None or self._known[0] is not mappings or self._known[1] is not accounts:
            self._known = (mappings, accounts, frozenset(self._model_ids()))
        return self._known[2]

    def _model_exists(self, name: str) -> bool:
        """The one answer to "does this model exist", shared by /v1/models/{id} and the completion
        routes: a name is served if a mapping rule covers it (with a `default`, every name is), it
        is listed, or an account with a `models` list serves it."""
        return (bool(self.mappings.default) or self.mappings.matches(name) or name in self._known_models()
                or any(acc.models is not None and acc.serves(name) for acc in self.pool.accounts))

    @staticmethod
    def _no_such_model(name: str) -> GatewayError:
        return GatewayError(404, f"The model '{name}' does not exist: no mapping rule covers it and the mapping file "
                                 "has no default.", param="model", code="model_not_found")

    def _retrieve_model(self, name: str, client: str | None = None) -> Outcome:
        limits.check_model_name(name)
        if not self._model_exists(name):
            raise self._no_such_model(name)
        if self.clients is not None:
            self.clients.check_model(client, name)
        return _json(200, self._model_obj(name), {"x-mapped-model": self.mappings.resolve(name)})

    # ---- completions ----------------------------------------------------------------------
    async def _complete(self, frontend: Frontend, req: Incoming, story: Story) -> Outcome:
        if len(req.body) > self.settings.max_body_size:
            raise limits.too_large(self.settings.max_body_size)
        body = limits.parse_json(req.body) if req.body else None
        limits.check_counts(body)
        creq, ctx = await frontend.parse(body)
        limits.check_model_name(creq.model)
        story.client_model, story.stream = creq.model, creq.stream
        story.left_out = creq.left_out  # told in the log line and the mitmweb comment
        if not self._model_exists(creq.model):
            raise self._no_such_model(creq.model)
        if self.clients is not None:
            self.clients.check_model(req.client, creq.model, story)
        await hydrate(self.signatures, creq)  # the history's thought signatures, with their origin
        chain = self.mappings.chain(creq.model)
        story.mapped_model = chain[0].model
        client_level = creq.thinking_level

        async def attempt(acc: Account, target: Target) -> Any:
            story.account = acc.name
            creq.thinking_level = target.thinking_level or client_level
            provider = self.providers[acc.provider]
            if creq.stream:
                return await provider.stream(acc, creq, target.model)
            return await provider.complete(acc, creq, target.model)

        rf = creq.response_format
        check_schemas([t.parameters for t in creq.tools], rf.schema if rf is not None else None)
        sticky = c.conversation_key(creq) if self.pool.sticky else None
        if self.clients is not None:  # last, so a request refused for its content costs no rate
            await self.clients.admit(req.client, story)
        acc, answered, result = await self.chains.run(chain, attempt, story, sticky_key=sticky)
        mapped = answered.model or creq.model
        if creq.stream:
            def on_usage(usage: c.Usage) -> None:
                self.pool.record_usage(acc, mapped, usage)
                story.tokens_in, story.tokens_out = usage.input_tokens, usage.output_tokens
                story.answered_by(usage.model)

            kept = until_shutdown(remembering(self.signatures, result, frontend.returns_reasoning_state),
                                  lambda: self.stopping)
            stream = encode_stream(kept, frontend.encoder(creq, ctx), on_usage=on_usage,
                                   on_failure=lambda why: setattr(story, "stream_error", why),
                                   settle=lambda: frontend.settle(ctx), redact=self.redact)
            return Outcome(200, dict(SSE_HEADERS), stream=_timed(stream, story))
        self.pool.record_usage(acc, mapped, result.usage)
        story.tokens_in, story.tokens_out = result.usage.input_tokens, result.usage.output_tokens
        story.answered_by(result.upstream_model)
        issued = in_completion(result, frontend.returns_reasoning_state)
        if issued:
            await self.signatures.put(issued)  # before the client can send the next step
        rendered = frontend.render(result, creq, ctx)
        await frontend.settle(ctx)
        return _json(200, rendered)

    # ---- other operations through the pool (embeddings) ----------------------------------------
    async def run(self, client_model: str, op: Any, story: Story, *, capability: str = "chat") -> Any:
        """`op(provider, account, upstream model)` through the mapping and the retry policy, on
        accounts whose provider has `capability` (a method name, e.g. "embed"); fills the story."""
        limits.check_model_name(client_model)
        story.client_model = client_model
        if not self._model_exists(client_model):
            raise self._no_such_model(client_model)
        if self.clients is not None:
            self.clients.check_model(story.client, client_model, story)
        chain = self.mappings.chain(client_model)
        story.mapped_model = chain[0].model
        unable = frozenset(a.name for a in self.pool.accounts
                           if getattr(self.providers.get(a.provider), capability, None) is None)
        for target in chain:
            serving = [a for a in self.pool.candidates(target.model or client_model)]
            if not serving or any(a.name not in unable for a in serving):
                break
        else:  # every target is served only by accounts that cannot do this
            kinds = ", ".join(sorted({f"'{a.provider}'" for a in serving}))
            raise GatewayError(400, f"{_CAPABILITY_NAMES.get(capability, capability)} are not served by {kinds} "
                                    f"accounts, and no other account serves '{story.mapped_model}'.",
                               code="unsupported_operation")

        async def attempt(acc: Account, target: Target) -> Any:
            story.account = acc.name
            return await op(self.providers[acc.provider], acc, target.model)

        if self.clients is not None:
            await self.clients.admit(story.client, story)
        acc, _, result = await self.chains.run(chain, attempt, story, skip=unable)
        story.account = acc.name
        return result

    async def _embeddings(self, req: Incoming, story: Story) -> Outcome:
        if len(req.body) > self.settings.max_body_size:
            raise limits.too_large(self.settings.max_body_size)
        body = limits.parse_json(req.body) if req.body else None
        limits.check_counts(body)
        creq, as_base64 = embeddings.parse(body)
        story.client_model = creq.model
        target = self.mappings.target(creq.model)
        if creq.task_type is None and target.task_type:
            creq.task_type = target.task_type
        if creq.dimensions is None and target.dimensions:
            creq.dimensions = target.dimensions
        result = await embeddings.embed_all(creq, lambda model, op: self.run(model, op, story, capability="embed"))
        tokens = embeddings.usage_tokens(creq, result)
        story.tokens_in = tokens
        acc = next((a for a in self.pool.accounts if a.name == story.account), None)
        if acc is not None and story.mapped_model:
            self.pool.record_usage(acc, story.mapped_model, c.Usage(input_tokens=tokens))
        data = await embeddings.render_off_loop(creq, result, as_base64, tokens, jsonfast.dumps)
        return Outcome(200, dict(JSON_HEADERS), data)


_CAPABILITY_NAMES = {"embed": "Embeddings", "native": "Gemini-native requests",
                     "native_embed": "Gemini-native embeddings"}

async def _timed(stream: AsyncIterator[bytes], story: Story) -> AsyncIterator[bytes]:
    """Notes in the story when the first answer byte was ready and when the stream ended."""
    try:
        async for chunk in stream:
            if chunk and story.first_byte is None:
                story.first_byte = time.monotonic()
            yield chunk
    finally:
        story.ended = time.monotonic()
        await stream.aclose()
