"""The gateway engine: routes, auth, model mapping, and one completion through the retry policy.

It knows nothing of mitmproxy: `handle()` takes a plain request and returns an Outcome with
either a whole body or an async iterator of bytes (an SSE stream whose upstream has already
answered 200, so retries and rotation all happen before the first byte).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from . import __version__, auth
from .config.codex_catalog import codex_catalog
from .config.mapping import ModelMap, Target
from .pool.fallback import ChainWalk
from .pool.model_lists import ModelLists
from .clients import ClientGate
from .frontends import Frontend, Surface, encode_stream
from .ops.metrics import Metrics
from .ops.redact import Redactor
from .ops.story import Story
from .pool.accounts_file import Account, AccountsFile
from .pool.policy import MAX_ATTEMPTS, RetryPolicy
from .pool.pool import AccountPool
from .backends.embeddings import is_embedding_model
from .protocol import canonical as c
from .protocol import limits
from .protocol.errors import GatewayError, UpstreamError
from .operations import Operations
from .routes import SSE_HEADERS, Incoming, Outcome, Route, RouteCall, RouteTable, json_outcome, openai_error
from .upstream import Provider
from .upstream.streaming import until_shutdown

log = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = ["Engine", "Fixed", "Incoming", "Outcome", "Settings", "Source"]


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
class Settings:
    auth_mode: str = "off"  # already resolved from `auto`
    api_key: str = ""
    allow_lan_access: bool = False
    max_attempts: int = MAX_ATTEMPTS
    max_body_size: int = limits.MAX_BODY_BYTES
    # Host names (and Origin hosts) accepted besides IP literals, localhost and the listen host; "*": any
    allowed_hosts: frozenset[str] = frozenset()
    log_format: str = "logfmt"  # one line per request: logfmt | json | off (see Story.log_line)


# Monitoring traffic is counted, but its log lines go to debug so probes do not drown the log.
_QUIET_ROUTES = frozenset({"/healthz", "/metrics"})


def quiet(story: Story) -> bool:
    """A probe or scrape that went well: logged at debug level only (by the adapter too)."""
    return story.route in _QUIET_ROUTES and story.outcome() == "ok"


class Engine:
    def __init__(self, *, settings: Settings, mappings: Source[ModelMap], accounts: Source[AccountsFile],
                 pool: AccountPool, providers: Mapping[str, Provider], frontends: Iterable[Surface],
                 live_secrets: Any = tuple, clients: ClientGate | None = None) -> None:
        self.settings = settings
        self.stopping = False  # the adapter is shutting down: open streams end with an error event
        self.clients = clients  # per-client keys, model allow-lists and limits (None: no clients file)
        self.mapping_source = mappings
        self.accounts_source = accounts
        self.pool = pool
        self.providers = providers
        self._live_secrets = live_secrets  # e.g. the OAuth access tokens held right now
        self.frontends = list(frontends)
        # The one route table: the engine's own routes, then every surface's.
        routes = [(r, f) for f in self.frontends for r in f.routes()]
        for route, owner in routes:
            if route.handler is None and not isinstance(owner, Frontend):
                raise TypeError(f"{route.label}: a route without a handler needs a Frontend (parse/render/encoder)")
        self.table = RouteTable([*((r, None) for r in self._own_routes()), *routes])
        self.started = int(time.time())
        self.redact = Redactor([])
        self.policy = RetryPolicy(pool, max_attempts=settings.max_attempts, redact=lambda text: self.redact(text),
                                  probe=self._probe)
        self.accounts_seen: AccountsFile | None = None
        self.ops = Operations(self)  # PoolCalls: what handlers call the pool and the mapping through
        self.metrics = Metrics(pool, known_model=lambda name: name in self.ops.known_models())
        self.chains = ChainWalk(self.policy, pool, on_fallback=self.metrics.fallback)  # fallback targets
        self.model_lists: ModelLists | None = None  # what the accounts' upstreams list (set by the wiring)
        self.sync_accounts()

    def _own_routes(self) -> list[Route]:
        return [Route("GET", r"/healthz|/health", "/healthz", self._health),
                Route("GET", r"/metrics", "/metrics", self._metrics),  # behind the same auth as the API
                Route("GET", r"/(?:v1/)?models", "/v1/models", self._list_models),
                Route("GET", r"/gateway/accounts", "/gateway/accounts", self._accounts),
                Route("GET", r"/gateway/clients", "/gateway/clients", self._clients),
                Route("GET", r"/v1/models/(.+)", "/v1/models/{id}", self._retrieve_model)]

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
        if current is self.accounts_seen:
            return False
        self.accounts_seen = current
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
            out = self.error(req, err)
        except Exception:  # a bug must still answer in the surface's error shape, without a traceback
            log.exception("internal error on %s %s", req.method, req.path)
            story.error_code = "internal_error"
            out = self.error(req, GatewayError(500, "The gateway hit an internal error; see its log.",
                                                    code="internal_error"))
        return self._told(out, story)

    def error(self, req: Incoming, err: GatewayError) -> Outcome:
        """`err` in the error shape of the front end that owns the request (OpenAI's for the engine's
        own routes and unknown paths)."""
        owner = self._owner(req)
        return owner.error(err) if owner is not None else openai_error(err)

    def _owner(self, req: Incoming) -> Surface | None:
        """The surface whose error shape `req` gets: the one owning its path, else, on GET
        /v1/models[/{id}], the one whose client is listing there (google-genai lists at /v1/models,
        Anthropic's clients too), so its refusals come in the shape its SDK understands."""
        path = req.path.rstrip("/") or "/"
        for surface in self.frontends:
            if surface.owns(path):
                return surface
        if req.method == "GET":
            for surface in self.frontends:
                if surface.listing_for(req.headers, req.query, path) is not None:
                    return surface
        return None

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
        return self._told(self.error(req, err), story)

    def _story(self, req: Incoming, story: Story | None = None) -> Story:
        story = story if story is not None else Story()
        story.method, story.path, story.client = req.method, req.path, req.client
        story.route = self.table.label(req.method, req.path.rstrip("/") or "/")
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
        owner = self._owner(req)
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
        route, match, frontend = self.table.resolve(req.method, req.path.rstrip("/") or "/", req.path)
        if route.handler is None:
            return await self._complete(frontend, req, match, story)
        body = self._body(req) if route.method in ("POST", "PUT", "PATCH") else None  # GET bodies mean nothing
        return await route.handler(RouteCall(req, match, body, story, self._pool_for(req)))

    def _pool_for(self, req: Incoming) -> Any:
        """What a route handler sees of the pool: with a client key, only the models it may use."""
        return self.ops if self.clients is None else self.clients.listing_view(self.ops, req.client)

    def _body(self, req: Incoming) -> Any:
        """The request's JSON body (None when empty), within the bounds on client input."""
        if not req.body:
            return None
        if len(req.body) > self.settings.max_body_size:
            raise limits.too_large(self.settings.max_body_size)
        body = limits.parse_json(req.body)
        limits.check_counts(body)
        return body

    # ---- the engine's own routes ----------------------------------------------------------
    async def _health(self, call: RouteCall) -> Outcome:
        return json_outcome(200, {"status": "ok", "version": __version__})

    async def _metrics(self, call: RouteCall) -> Outcome:
        return Outcome(200, {"content-type": self.metrics.content_type}, self.metrics.render())

    async def _list_models(self, call: RouteCall) -> Outcome:
        return await self._listing(call) or json_outcome(200, self._models(call.incoming.query, call.incoming.client))

    async def _listing(self, call: RouteCall) -> Outcome | None:
        """GET /v1/models[/{id}] answered by a surface for its own clients (google-genai lists there too)."""
        req = call.incoming
        for surface in self.frontends:
            found = surface.listing_for(req.headers, req.query, req.path.rstrip("/"))
            if found is not None and found[0].handler is not None:
                call.story.route = found[0].label
                return await found[0].handler(RouteCall(req, found[1], None, call.story, self._pool_for(req)))
        return None

    async def _clients(self, call: RouteCall) -> Outcome:
        """The operator sees every client, a client only itself."""
        if self.clients is None:
            raise GatewayError(404, "No clients file is configured (--set clients=clients.yaml).",
                               code="no_clients_file")
        return json_outcome(200, {"object": "list", "data": await self.clients.view(call.incoming.client)})

    async def _accounts(self, call: RouteCall) -> Outcome:
        return json_outcome(200, {"object": "list", "data": self.accounts_view()})

    def accounts_view(self) -> list[dict[str, Any]]:
        """The pool as the operator sees it: per account its state, cooldown and why, last error,
        and per model its request and token counts; what providers learned (e.g. a discovered Cloud
        Code project). No secrets; error texts are redacted."""
        rows = []
        for acc, row in zip(self.pool.accounts, self.pool.describe()):
            provider = self.providers.get(acc.provider)
            if provider is not None:
                row.update(provider.describe(acc))
            for key in ("status", "last_error"):
                if row.get(key):
                    row[key] = self.redact(row[key])
            rows.append(row)
        return rows

    # ---- models ---------------------------------------------------------------------------
    def _models(self, query: str, client: str | None = None) -> dict[str, Any]:
        names = self.ops.listed_for(client)  # only what this client may use
        listing: dict[str, Any] = {"object": "list", "data": [self._model_obj(m) for m in names]}
        if "client_version=" in query:
            # Codex CLI (model_catalog_url) reads its own catalog from the same answer: see codex_catalog
            listing["models"] = codex_catalog(names, self.mappings.resolve)
        return listing

    def _model_obj(self, name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": self.started, "owned_by": "gateway"}

    async def _retrieve_model(self, call: RouteCall) -> Outcome:
        listed = await self._listing(call)
        if listed is not None:
            return listed
        name = call.match.group(1)
        limits.check_model_name(name)
        if not self.ops.model_exists(name):
            raise self.ops.no_such_model(name)
        if self.clients is not None:
            self.clients.check_model(call.incoming.client, name)
        return json_outcome(200, self._model_obj(name), {"x-mapped-model": self.mappings.resolve(name)})

    # ---- completions ----------------------------------------------------------------------
    async def _complete(self, frontend: Frontend, req: Incoming, match: Any, story: Story) -> Outcome:
        creq, ctx = await frontend.parse(self._body(req), match, req)
        story.stream = creq.stream
        story.left_out = creq.left_out  # told in the log line and the mitmweb comment
        rf = creq.response_format
        limits.check_schemas([t.parameters for t in creq.tools], rf.schema if rf is not None else None)
        chain = self.ops.checked_chain(creq.model, story)
        if all(is_embedding_model(t.model) for t in chain):  # refused here: an upstream 404 would rest the model
            raise GatewayError(400, f"The model '{creq.model}' is an embedding model ({chain[0].model}); send it to "
                                    "POST /v1/embeddings.", param="model", code="model_not_supported")
        client_level = creq.thinking_level

        async def call(acc: Account, target: Target) -> Any:
            creq.thinking_level = target.thinking_level or client_level
            provider = self.providers[acc.provider]
            if creq.stream:
                return await provider.stream(acc, creq, target.model)
            return await provider.complete(acc, creq, target.model)

        sticky = c.conversation_key(creq) if self.pool.sticky else None
        acc, answered, result = await self.ops.attempts(chain, call, story, "chat", sticky)
        model = answered.model or creq.model
        if creq.stream:
            stream = encode_stream(until_shutdown(result, lambda: self.stopping), frontend.encoder(creq, ctx),
                                   on_usage=lambda usage: self._used(acc, model, usage, story),
                                   on_failure=lambda why: setattr(story, "stream_error", why),
                                   settle=lambda: frontend.settle(ctx), redact=self.redact)
            return Outcome(200, {**SSE_HEADERS, **frontend.answer_headers(ctx)}, stream=_timed(stream, story),
                           keepalive=frontend.keepalive)
        self.ops.record_usage(acc, model, result.usage, story)
        story.answered_by(result.upstream_model)
        rendered = frontend.render(result, creq, ctx)
        await frontend.settle(ctx)
        return json_outcome(200, rendered, frontend.answer_headers(ctx))

    def _used(self, acc: Account, model: str, usage: c.Usage, story: Story) -> None:
        self.ops.record_usage(acc, model, usage, story)
        story.answered_by(usage.model)  # the upstream's name for the model that answered


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
