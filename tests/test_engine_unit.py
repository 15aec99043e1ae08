"""Engine routing, auth and LAN rules, without mitmproxy or sockets (Engine.handle directly).

The end-to-end suites exercise the same paths through mitmdump; these cover what a loopback
test host cannot produce, such as a peer address from the LAN.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from addon import auth
from addon.pool.pool import AccountPool
from addon.pool.accounts_file import AccountsFile, parse_accounts
from addon.protocol import canonical as c
from addon.protocol.errors import GatewayError
from addon.routes import Outcome, Route, RouteCall, json_outcome
from addon.engine import Engine, Fixed, Incoming, Settings
from addon.frontends import Frontend, build_frontends
from addon.config.mapping import parse_mappings
from addon.ops.redact import Redactor
from addon.stores.response_store import MemoryResponseStore


def make_engine(*, default: str | None = "gemini-2.5-flash", **settings: Any) -> Engine:
    mappings = parse_mappings({"default": default, "mappings": {"gpt-4o": "gemini-2.5-pro"}})
    # no providers: no request here reaches an upstream
    return Engine(settings=Settings(**settings), mappings=Fixed(mappings), accounts=Fixed(AccountsFile()),
                  pool=AccountPool(), providers={}, frontends=build_frontends(MemoryResponseStore()))


async def call(engine: Engine, method: str, path: str, *, peer: str = "127.0.0.1",
               headers: dict[str, str] | None = None, body: Any = None) -> tuple[int, dict[str, str], Any]:
    raw = json.dumps(body).encode() if body is not None else b""
    headers = {"content-type": "application/json", **(headers or {})} if method == "POST" else headers or {}
    out = await engine.handle(Incoming(method, path, headers, raw, peer))
    return out.status, out.headers, json.loads(out.body) if out.body else None


@pytest.mark.parametrize("peer", ["192.168.1.20", "10.0.0.5", "2001:db8::1", "::ffff:192.168.1.20", None])
async def test_lan_peers_are_refused_without_lan_access(peer: str | None) -> None:
    status, _, body = await call(make_engine(), "GET", "/healthz", peer=peer)  # type: ignore[arg-type]
    assert status == 403 and body["error"]["code"] == "lan_access_disabled"


@pytest.mark.parametrize("peer", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
async def test_loopback_peers_are_served(peer: str) -> None:
    status, _, body = await call(make_engine(), "GET", "/healthz", peer=peer)
    assert status == 200 and body["status"] == "ok"


async def test_lan_access_serves_lan_peers_but_still_checks_the_key() -> None:
    engine = make_engine(allow_lan_access=True, auth_mode="all_except_health", api_key="s3cret-key")
    assert (await call(engine, "GET", "/healthz", peer="192.168.1.20"))[0] == 200
    status, _, body = await call(engine, "GET", "/v1/models", peer="192.168.1.20")
    assert status == 401 and body["error"]["code"] == "missing_api_key"
    ok = await call(engine, "GET", "/v1/models", peer="192.168.1.20", headers={"x-api-key": "s3cret-key"})
    assert ok[0] == 200


def test_effective_modes() -> None:
    assert auth.effective_mode("auto", False) == "off"
    assert auth.effective_mode("auto", True) == "all_except_health"
    for mode in ("off", "strict", "all_except_health"):
        assert auth.effective_mode(mode, True) == auth.effective_mode(mode, False) == mode


def test_key_precedence_bearer_first() -> None:
    headers = {"authorization": "Bearer from-bearer", "x-api-key": "from-x", "x-goog-api-key": "from-goog"}
    assert auth.presented_key(headers) == "from-bearer"
    assert auth.presented_key({"x-api-key": "from-x", "x-goog-api-key": "g"}) == "from-x"
    assert auth.presented_key({"x-goog-api-key": "g"}) == "g"
    assert auth.presented_key({"authorization": "Basic abc"}) is None


async def test_no_cors_preflight_and_wrong_methods_are_405() -> None:
    engine = make_engine()
    status, headers, body = await call(engine, "OPTIONS", "/v1/chat/completions")
    assert status == 405 and body["error"]["code"] == "method_not_allowed"
    assert not any(h.startswith("access-control-") for h in headers)
    assert (await call(engine, "GET", "/v1/chat/completions"))[0] == 405
    assert (await call(engine, "POST", "/v1/models"))[0] == 405


async def test_unknown_paths_are_openai_shaped_404s() -> None:
    for path in ("/", "/v2/chat/completions", "/v1/chat/completions/responses", "/v1/nope"):
        status, _, body = await call(make_engine(), "POST", path, body={})
        assert status == 404 and set(body["error"]) == {"message", "type", "param", "code"}


async def test_models_resolve_through_the_mapping() -> None:
    status, headers, body = await call(make_engine(), "GET", "/v1/models/gpt-4o")
    assert status == 200 and body["id"] == "gpt-4o" and headers["x-mapped-model"] == "gemini-2.5-pro"
    # with a default every name is served by the chat route, so every name exists here too
    status, headers, body = await call(make_engine(), "GET", "/v1/models/no-such-model")
    assert status == 200 and body["id"] == "no-such-model" and headers["x-mapped-model"] == "gemini-2.5-flash"


async def test_without_a_default_models_and_chat_agree_that_an_unmapped_name_does_not_exist() -> None:
    engine = make_engine(default=None)
    status, _, body = await call(engine, "GET", "/v1/models/no-such-model")
    assert status == 404 and body["error"]["code"] == "model_not_found"
    status, _, body = await call(engine, "POST", "/v1/chat/completions",
                                 body={"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]})
    assert status == 404 and body["error"]["code"] == "model_not_found" and body["error"]["param"] == "model"
    assert (await call(engine, "GET", "/v1/models/gpt-4o"))[0] == 200
    listed = {m["id"] for m in (await call(engine, "GET", "/v1/models"))[2]["data"]}
    for name in listed:  # everything listed can be retrieved
        assert (await call(engine, "GET", f"/v1/models/{name}"))[0] == 200, name


async def test_no_account_is_a_503_that_says_what_to_do() -> None:
    status, headers, body = await call(make_engine(), "POST", "/v1/chat/completions",
                                       body={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    assert status == 503 and "GEMINI_API_KEY" in body["error"]["message"]
    assert headers["x-mapped-model"] == "gemini-2.5-pro"
    assert headers["x-should-retry"] == "false"  # the SDKs would otherwise retry a 503 in vain


def test_redactor_hides_static_and_live_secrets() -> None:
    live = ["ya29.live-token-123"]
    redact = Redactor(["AIzaStaticKey123", "short"], lambda: live)
    text = redact("key AIzaStaticKey123 token ya29.live-token-123 short")
    assert "AIzaStaticKey123" not in text and "ya29.live-token-123" not in text
    assert text.endswith("short")  # too short to be a secret worth masking: masking would garble text


def test_fast_json_keeps_what_the_standard_library_accepts() -> None:
    from addon.protocol import jsonfast

    big = {"seed": 2**70, "text": "héllo ✓"}  # orjson refuses integers beyond 64 bits
    assert json.loads(jsonfast.dumps(big)) == big
    assert jsonfast.dumps({"a": [1, None, True]}) == b'{"a":[1,null,true]}'
    assert jsonfast.loads(b'{"x": NaN}')["x"] != 0  # the stdlib's extension, still parsed
    with pytest.raises(json.JSONDecodeError) as err:
        jsonfast.loads(b'{"x": ')
    assert err.value.pos == 6 and err.value.msg  # the engine quotes both in its 400


# ---- the interfaces a new surface or provider builds on ------------------------------------------

class _MessagesLike(Frontend[None]):
    """A surface with its own error shape (Anthropic's), a completion route and a handler route
    that calls the pool for another operation."""

    name = "messages-like"

    def routes(self) -> list[Route]:
        return [Route("POST", r"/v1/messages", "/v1/messages"),
                Route("POST", r"/v1/messages/count", "/v1/messages/count", self._count)]

    def owns(self, path: str) -> bool:
        return path.startswith("/v1/messages")

    def error(self, err: GatewayError) -> Outcome:
        body = {"type": "error", "error": {"type": "invalid_request_error", "message": err.message}}
        return Outcome(err.status, {"content-type": "application/json", **err.headers}, json.dumps(body).encode())

    async def parse(self, body: Any, match: Any, incoming: Incoming) -> tuple[c.ChatRequest, None]:
        return c.ChatRequest(model=body["model"], messages=[c.Message("user", [c.TextPart("hi")])]), None

    def render(self, completion: c.Completion, req: c.ChatRequest, ctx: None) -> dict[str, Any]:
        return {"text": completion.choices[0].text}

    def encoder(self, req: c.ChatRequest, ctx: None) -> Any:
        raise AssertionError("not streamed here")

    async def _count(self, call: RouteCall) -> Outcome:
        async def op(provider: Any, acc: Any, model: str) -> int:
            return await provider.count_tokens(acc, model)

        n = await call.pool.run(call.body["model"], op, call.story, capability="count_tokens")
        return json_outcome(200, {"input_tokens": n})


class _Counting:
    name = "gemini"

    async def complete(self, acc: Any, req: c.ChatRequest, model: str) -> c.Completion:
        return c.Completion([c.Choice(text=f"from {model}", finish_reason="stop")], c.Usage(3, 4))

    async def count_tokens(self, acc: Any, model: str) -> int:
        return len(model)

    def describe(self, acc: Any) -> dict[str, Any]:
        return {}


def _engine_with(frontend: Frontend[Any], provider: Any, **settings: Any) -> Engine:
    accounts = parse_accounts({"accounts": [{"provider": "gemini", "email": "a@x", "api_key": "k" * 12}]})
    mappings = parse_mappings({"default": "gemini-2.5-flash", "mappings": {"gpt-4o": "gemini-2.5-pro"}})
    return Engine(settings=Settings(**settings), mappings=Fixed(mappings), accounts=Fixed(accounts), pool=AccountPool(),
                  providers={"gemini": provider},
                  # the real Anthropic surface would answer these paths first: the stand-in replaces it
                  frontends=[*(f for f in build_frontends(MemoryResponseStore()) if f.name != "messages"), frontend])


async def test_a_surface_answers_errors_in_its_own_shape_even_header_level_refusals() -> None:
    engine = _engine_with(_MessagesLike(), _Counting(), auth_mode="all_except_health", api_key="s3cret-key")
    refused = engine.refusal(Incoming("POST", "/v1/messages", {"content-type": "application/json"}, b"", "127.0.0.1"))
    assert refused is not None and refused.status == 401
    assert json.loads(refused.body)["type"] == "error"  # not OpenAI's {"error": {...}}
    status, _, body = await call(engine, "GET", "/v1/messages/nope", headers={"x-api-key": "s3cret-key"})
    assert status == 404 and body["error"]["type"] == "invalid_request_error" and body["type"] == "error"
    # the OpenAI surfaces and the engine's own routes keep OpenAI's shape
    status, _, body = await call(engine, "GET", "/v1/chat/completions", headers={"x-api-key": "s3cret-key"})
    assert status == 405 and body["error"]["code"] == "method_not_allowed"


async def test_completions_and_other_operations_go_through_the_pool() -> None:
    engine = _engine_with(_MessagesLike(), _Counting())
    out = await engine.handle(Incoming("POST", "/v1/messages", {"content-type": "application/json"},
                                       json.dumps({"model": "gpt-4o"}).encode(), "127.0.0.1"))
    assert out.status == 200 and json.loads(out.body) == {"text": "from gemini-2.5-pro"}
    assert (out.story.route, out.story.mapped_model, out.story.account) == ("/v1/messages", "gemini-2.5-pro", "a@x")
    assert (out.story.tokens_in, out.story.tokens_out) == (3, 4)
    out = await engine.handle(Incoming("POST", "/v1/messages/count", {"content-type": "application/json"},
                                       json.dumps({"model": "gpt-4o"}).encode(), "127.0.0.1"))
    assert out.status == 200 and json.loads(out.body) == {"input_tokens": len("gemini-2.5-pro")}
    assert out.story.route == "/v1/messages/count" and out.story.attempts[0].status == 200


async def test_an_operation_a_provider_lacks_is_a_400_naming_it() -> None:
    class _Plain(_Counting):
        count_tokens = None  # type: ignore[assignment]

    engine = _engine_with(_MessagesLike(), _Plain())
    out = await engine.handle(Incoming("POST", "/v1/messages/count", {"content-type": "application/json"},
                                       json.dumps({"model": "gpt-4o"}).encode(), "127.0.0.1"))
    body = json.loads(out.body)
    assert out.status == 400 and "count_tokens" in body["error"]["message"] and "'gemini'" in body["error"]["message"]


def test_every_account_model_has_a_provider_and_back() -> None:
    from addon.pool.accounts_file import ACCOUNT_MODELS
    from addon.upstream import HttpClient, TokenManager, build_providers

    providers = build_providers(HttpClient(), TokenManager(HttpClient(), None))
    kinds = {m.model_fields["provider"].annotation.__args__[0] for m in ACCOUNT_MODELS}
    assert kinds == set(providers) and all(p.name == k for k, p in providers.items())
