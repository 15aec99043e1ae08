"""mitmproxy entry point: `mitmdump -s addon/gateway.py --mode reverse:http://127.0.0.1:9@8045`.

A thin adapter, modelled on mitmproxy's own addons: options declared in `load`, checked in
`configure` (raising OptionsError), async hooks. Everything else lives in the engine,
which can be tested without mitmproxy.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

# mitmproxy loads this file as a script, not as part of the package: make `addon` importable.
_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from mitmproxy import command, ctx, exceptions, http  # noqa: E402
from mitmproxy.connection import ConnectionState  # noqa: E402
from mitmproxy.proxy.mode_specs import ReverseMode  # noqa: E402

from addon import auth  # noqa: E402
from addon.accounts import AccountPool, AccountsFile, env_accounts, parse_accounts  # noqa: E402
from addon.engine import Engine, Incoming, Settings  # noqa: E402
from addon.frontends import extra_frontends  # noqa: E402
from addon.mapping import parse_mappings  # noqa: E402
from addon.protocol.errors import GatewayError  # noqa: E402
from addon.relay import Relay  # noqa: E402
from addon.reloading import ReloadingFile  # noqa: E402
from addon.state import StateStore  # noqa: E402
from addon.upstream.google import TokenManager  # noqa: E402
from addon.upstream.http import HttpClient  # noqa: E402

log = logging.getLogger("gateway")
# httpx logs every upstream request at INFO: noise in mitmdump's output, and URLs are not ours to print.
logging.getLogger("httpx").setLevel(logging.WARNING)
DEFAULT_MAPPINGS = str(_ROOT / "mappings.yaml")


class _Static:
    """The `current()` interface of ReloadingFile for configuration that is not a file."""

    def __init__(self, value) -> None:
        self.value = value

    def current(self):
        return self.value


class Gateway:
    def __init__(self) -> None:
        self.engine: Engine | None = None
        self.relay = Relay()
        self._accounts: ReloadingFile[AccountsFile] | _Static = _Static(AccountsFile())
        self._accounts_seen: AccountsFile | None = None
        self._store: StateStore | None = None
        self._housekeeping: asyncio.Task | None = None
        self._inflight: dict[asyncio.Future, http.HTTPFlow] = {}  # engine calls awaiting an answer

    # ---- options ----------------------------------------------------------------------------
    def load(self, loader) -> None:
        loader.add_option("accounts", str, "", "Accounts YAML file (gemini / cloudcode / openai). "
                          "Empty: one Gemini account from $GEMINI_API_KEY.")
        loader.add_option("mappings", str, DEFAULT_MAPPINGS, "Model mapping YAML file (reloaded on change).")
        loader.add_option("auth_mode", str, "auto", "Client auth: off | strict | all_except_health | auto "
                          "(auto = all_except_health with LAN access, else off).")
        loader.add_option("api_key", str, "", "Key clients must present when auth is on "
                          "(default: $GATEWAY_API_KEY). Accepted as Bearer, x-api-key or x-goog-api-key.")
        loader.add_option("allow_lan_access", bool, False, "Serve clients that are not on this machine.")
        loader.add_option("gateway_hosts", str, "api.openai.com", "Outside reverse mode: comma-separated hosts "
                          "whose requests the gateway answers (others pass through untouched).")
        loader.add_option("state_file", str, "", "Where cooldowns, disabled flags, tokens and usage persist "
                          "(default: next to the accounts file, or in mitmproxy's confdir).")
        loader.add_option("keepalive_seconds", int, 15, "Send an SSE comment after this much upstream silence.")
        loader.add_option("max_attempts", int, 3, "Upstream attempts per request (bounded by the pool size).")

    def configure(self, updated: set[str]) -> None:
        opts = ctx.options
        if "auth_mode" in updated and opts.auth_mode not in auth.AUTH_MODES:
            raise exceptions.OptionsError(f"auth_mode must be one of {', '.join(auth.AUTH_MODES)}")
        if opts.keepalive_seconds < 1 or opts.max_attempts < 1:
            raise exceptions.OptionsError("keepalive_seconds and max_attempts must be at least 1")
        api_key = opts.api_key or os.environ.get("GATEWAY_API_KEY", "")
        mode = auth.effective_mode(opts.auth_mode, opts.allow_lan_access)
        if mode != "off" and not api_key:
            raise exceptions.OptionsError(f"auth mode '{mode}' needs a key: --set api_key=... or $GATEWAY_API_KEY")
        settings = Settings(auth_mode=mode, api_key=api_key, allow_lan_access=opts.allow_lan_access,
                            max_attempts=opts.max_attempts)
        self.relay.keepalive = float(opts.keepalive_seconds)

        first = self.engine is None
        mappings = None
        if first or "mappings" in updated:
            try:
                mappings = ReloadingFile(opts.mappings, parse_mappings)
            except Exception as exc:
                raise exceptions.OptionsError(f"cannot load mappings {opts.mappings}: {exc}") from None
        if first or "accounts" in updated or "state_file" in updated:
            self._load_accounts(opts)
        if first:
            self.engine = Engine(settings=settings, mappings=mappings, pool=AccountPool(self._store),
                                 http=HttpClient(), tokens=TokenManager(HttpClient(read_timeout=60.0), self._store),
                                 frontends=extra_frontends())
        else:
            self.engine.settings = settings
            if mappings is not None:
                self.engine.mapping_source = mappings
        self._sync_accounts()
        if first or updated & {"listen_host", "allow_lan_access"}:
            self._check_listen_host()
        if "stream_large_bodies" in updated and opts.stream_large_bodies:
            # mitmproxy then streams large *request* bodies straight to the server, past the
            # `request` hook: the gateway never sees them. Its responses stream regardless.
            log.warning("stream_large_bodies=%s also streams request bodies past the gateway: requests larger "
                        "than that (e.g. with big images) cannot be answered. Leave it unset; gateway responses "
                        "are streamed anyway.", opts.stream_large_bodies)

    def _load_accounts(self, opts) -> None:
        if opts.accounts:
            try:
                self._accounts = ReloadingFile(opts.accounts, parse_accounts)
            except Exception as exc:
                raise exceptions.OptionsError(f"cannot load accounts {opts.accounts}: {exc}") from None
        else:
            self._accounts = _Static(env_accounts())
        state = opts.state_file or (str(Path(opts.accounts).with_suffix(".state.json")) if opts.accounts
                                    else os.path.join(os.path.expanduser(opts.confdir), "gateway-state.json"))
        if self._store is None:
            self._store = StateStore(state)
        elif Path(state) != self._store.path:
            self._store.path = Path(state)
            self._store.mark_dirty()

    def _sync_accounts(self) -> None:
        current = self._accounts.current()
        if current is not self._accounts_seen:
            self._accounts_seen = current
            self.engine.pool.update(current)
            self.engine.refresh_secrets()
            if current.accounts:
                log.info("gateway accounts: %s", ", ".join(f"{a.name} ({a.provider})" for a in current.accounts))
            else:
                log.warning("no upstream account configured: requests will get 503 until you set GEMINI_API_KEY "
                            "or --set accounts=accounts.yaml (see accounts.example.yaml)")

    def _check_listen_host(self) -> None:
        host = ctx.options.listen_host
        if not ctx.options.allow_lan_access and host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("listening on %s without allow_lan_access: requests from other machines get 403; "
                        "use --listen-host 127.0.0.1 to not accept them at all", host or "all interfaces")

    # ---- lifecycle ------------------------------------------------------------------------
    async def running(self) -> None:
        port = await self.relay.start()
        log.debug("gateway relay on 127.0.0.1:%d", port)
        self._housekeeping = asyncio.ensure_future(self._housekeep())

    async def _housekeep(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                self._cancel_abandoned()
                self._sync_accounts()
                if self._store is not None:
                    self._store.flush_if_dirty()
            except Exception:
                log.exception("gateway housekeeping failed")

    def _cancel_abandoned(self) -> None:
        for work, flow in list(self._inflight.items()):
            if not flow.client_conn.state & ConnectionState.CAN_READ:  # the client closed its side
                log.info("client went away before the answer; upstream request cancelled")
                work.cancel()

    async def done(self) -> None:
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        await self.relay.close()
        if self._store is not None:
            try:
                self._store.flush_if_dirty()
            except OSError as exc:
                log.warning("could not save gateway state: %s", exc)
        if self.engine is not None:
            await self.engine.http.aclose()
            await self.engine.tokens.http.aclose()

    # ---- hooks ----------------------------------------------------------------------------
    def _ours(self, flow: http.HTTPFlow) -> bool:
        if isinstance(flow.client_conn.proxy_mode, ReverseMode):
            return True
        hosts = {h.strip().lower() for h in ctx.options.gateway_hosts.split(",") if h.strip()}
        return flow.request.pretty_host.lower() in hosts

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or flow.error is not None or not self._ours(flow):
            return
        try:
            body = flow.request.content or b""
        except ValueError:  # undecodable content-encoding
            err = GatewayError(400, "The request body's content-encoding could not be decoded.", code="invalid_body")
            flow.response = http.Response.make(err.status, err.body(), {"content-type": "application/json"})
            return
        incoming = Incoming(flow.request.method, flow.request.path.split("?", 1)[0], flow.request.headers, body,
                            flow.client_conn.peername[0] if flow.client_conn.peername else None)
        # The engine runs as its own task so that a client who leaves mid-call can cancel it
        # (housekeeping checks the in-flight calls every second): no quota is spent for nobody.
        work = asyncio.ensure_future(self.engine.handle(incoming))
        self._inflight[work] = flow
        try:
            await asyncio.wait((work,))
        finally:
            self._inflight.pop(work, None)
            if not work.done():  # the hook itself was cancelled (shutdown)
                work.cancel()
        if work.cancelled():
            flow.comment = "client disconnected before the answer; upstream request cancelled"
            return
        outcome = work.result()
        self._tell(flow, outcome.story)
        _hide_credentials(flow.request)
        _show_client_address(flow)
        if outcome.stream is None:
            flow.response = http.Response.make(outcome.status, outcome.body, outcome.headers)
            return
        # Stream: let mitmproxy read it from the relay so it goes out chunk by chunk.
        path = self.relay.register(outcome.status, outcome.headers, outcome.stream)
        flow.metadata["gateway"] = {"request": flow.request, "story": outcome.story, "relay_path": path}
        flow.request = http.Request.make("GET", f"http://127.0.0.1:{self.relay.port}{path}")

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if "gateway" in flow.metadata:
            flow.response.stream = True

    def response(self, flow: http.HTTPFlow) -> None:
        self._restore(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        meta = flow.metadata.get("gateway")
        if meta:
            # The client left before mitmproxy reached the relay: close that upstream stream now
            # rather than when its unclaimed registration expires.
            self.relay.discard(meta["relay_path"])
        self._restore(flow)

    @staticmethod
    def _restore(flow: http.HTTPFlow) -> None:
        """Show the client's own request in mitmweb, not the relay hop; refresh the story."""
        meta = flow.metadata.pop("gateway", None)
        if meta:
            flow.request = meta["request"]
            Gateway._tell(flow, meta["story"])  # a stream may have failed after it started

    @staticmethod
    def _tell(flow: http.HTTPFlow, story) -> None:
        flow.comment = story.line()
        mark = story.mark()
        if mark or flow.marked in (":x:", ":warning:"):
            flow.marked = mark

    # ---- commands -------------------------------------------------------------------------
    @command.command("gateway.accounts")
    def accounts_command(self) -> str:
        """The account pool: status, last upstream status and usage of each account (no secrets)."""
        rows = self.engine.pool.describe() if self.engine else []
        lines = [f"{r['account']} [{r['provider']}] {r['status']} last={r['last_status']} requests={r['requests']}"
                 for r in rows]
        text = "\n".join(lines) or "no accounts configured"
        log.info("gateway accounts:\n%s", text)
        return text

    @command.command("gateway.enable")
    def enable_command(self, account: str) -> None:
        """Put a disabled or cooling account back into rotation."""
        if not self.engine or not self.engine.pool.enable(account):
            raise exceptions.CommandError(f"no account labelled {account!r}")
        log.info("account %s re-enabled", account)


def _show_client_address(flow: http.HTTPFlow) -> None:
    """In reverse mode the request carries the placeholder target (127.0.0.1:9), which the gateway
    never contacts; show the address the client actually called (e.g. 127.0.0.1:8045) instead."""
    if isinstance(flow.client_conn.proxy_mode, ReverseMode) and flow.client_conn.sockname:
        flow.request.host, flow.request.port = flow.client_conn.sockname[0], flow.client_conn.sockname[1]


_CREDENTIAL_HEADERS = ("authorization", "x-api-key", "x-goog-api-key")


def _hide_credentials(request: http.Request) -> None:
    """Flows are shown in mitmweb and saved to files: keep the client's key (the gateway key, or a
    real OpenAI key from an intercepted tool) out of them once it has been checked."""
    for name in _CREDENTIAL_HEADERS:
        if name in request.headers:
            scheme = request.headers[name].split(" ", 1)[0] if name == "authorization" else ""
            request.headers[name] = f"{scheme} [redacted]".strip() if scheme.lower() == "bearer" else "[redacted]"


addons = [Gateway()]
