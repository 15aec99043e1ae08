"""mitmproxy entry point: `mitmdump -s addon/gateway.py --mode reverse:http://127.0.0.1:9@8045`.

A thin adapter, modelled on mitmproxy's own addons: options declared in `load`, checked in
`configure` (raising OptionsError), async hooks. The object graph is built in addon/wiring.py and
everything else lives in the engine, which can be tested without mitmproxy.

Why the relay: mitmproxy sends a response set in the `request` hook in one piece (it ignores
`response.stream` on that path) and streams only responses it reads from a server, with
`flow.response.stream = True` set in `responseheaders`. So a streamed answer is registered with a
loopback relay listener and the flow is pointed there; the client's own request is put back on
the flow when it ends, so mitmweb shows what the client asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from pathlib import Path

# mitmproxy loads this file as a script, not as part of the package: make `addon` importable.
_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from mitmproxy import command, ctx, exceptions, http  # noqa: E402
from mitmproxy.connection import ConnectionState  # noqa: E402
from mitmproxy.proxy.mode_specs import ReverseMode  # noqa: E402
from mitmproxy.utils import human  # noqa: E402

from addon import auth  # noqa: E402
from addon.engine import Incoming, Outcome, Settings, quiet  # noqa: E402
from addon.mitm.connections import ClientLimits, raise_open_files_limit  # noqa: E402
from addon.mitm.flow_secrets import hide_credentials  # noqa: E402
from addon.mitm.flows import duration, once, shutting_down, show_client_address, tell, whole_response  # noqa: E402
from addon.mitm.log_filters import ConnectionChatter, RelayNoise, quiet_dumper  # noqa: E402
from addon.mitm.options import check_listen_host, declare_options, own_options  # noqa: E402
from addon.mitm.relay import Relay  # noqa: E402
from addon.protocol import limits  # noqa: E402
from addon.protocol.errors import GatewayError  # noqa: E402
from addon.ops.story import Story  # noqa: E402
from addon.clients import load_clients  # noqa: E402
from addon.config.reloading import one_line  # noqa: E402
from addon.wiring import Wiring, load_accounts, load_mappings  # noqa: E402

log = logging.getLogger("gateway")
WATCH_INTERVAL = 0.5  # seconds between looks at the clients of in-flight calls
# mitmweb's flow list: its default columns plus the comment, where each flow's story is told.
WEB_COLUMNS_DEFAULT = ["tls", "icon", "path", "method", "status", "size", "time"]
WEB_COLUMNS = ["icon", "path", "method", "status", "size", "time", "comment"]


class Handoff:
    """One of our flows until it ends: its story, and for a stream pointed at the relay what to
    put back. (A plain class: mitmproxy loads this file outside sys.modules, which @dataclass needs.)"""

    __slots__ = ("request", "story", "relay_path")

    def __init__(self, story: Story, request: http.Request | None = None, relay_path: str | None = None) -> None:
        self.story = story
        self.request = request  # the client's own request, while the flow points at the relay
        self.relay_path = relay_path


class Gateway:
    def __init__(self) -> None:
        self.wiring: Wiring | None = None
        self.relay = Relay()
        self._hosts: frozenset[str] = frozenset()
        self._handoffs: dict[str, Handoff] = {}  # flow id -> our flow's story (and relay hand-off), until it ends
        self._noise = RelayNoise(self.relay)
        self._chatter = ConnectionChatter()
        self._inflight: dict[asyncio.Future, http.HTTPFlow] = {}  # engine calls awaiting an answer
        self._watcher: asyncio.Task | None = None
        self._model_check: asyncio.Future | None = None
        self._start_error = ""
        self._stopping = False
        self.addons = [ClientLimits()]  # a sub-addon: mitmproxy calls its hooks after these

    # ---- options ----------------------------------------------------------------------------
    def load(self, loader) -> None:
        raise_open_files_limit()
        declare_options(loader)

    def configure(self, updated: set[str]) -> None:
        try:
            self._configure(updated)
        except exceptions.OptionsError as exc:
            server = ctx.master.addons.get("proxyserver")
            if self.wiring is not None or server is None or server.is_running:
                raise  # a change while running: mitmproxy refuses it and keeps the old value
            # Starting: one line saying what is wrong, not the script loader's traceback (an error
            # logged during start-up makes mitmproxy exit).
            if str(exc) != self._start_error:
                self._start_error = str(exc)
                log.error("gateway: %s", exc)

    def _configure(self, updated: set[str]) -> None:
        opts = ctx.options
        if "auth_mode" in updated and opts.auth_mode not in auth.AUTH_MODES:
            raise exceptions.OptionsError(f"auth_mode must be one of {', '.join(auth.AUTH_MODES)}")
        if opts.keepalive_seconds < 1 or opts.max_attempts < 1 or opts.upstream_headers_timeout < 1:
            raise exceptions.OptionsError("keepalive_seconds, max_attempts and upstream_headers_timeout must be "
                                          "at least 1")
        try:
            max_body = human.parse_size(opts.max_body_size)
        except ValueError as exc:
            raise exceptions.OptionsError(f"max_body_size: {exc}") from None
        if not max_body or max_body < 1024:
            raise exceptions.OptionsError("max_body_size must be at least 1k")
        if opts.upstream_connections < 0 or opts.upstream_connect_timeout <= 0:
            raise exceptions.OptionsError("upstream_connections must be >= 0 and upstream_connect_timeout > 0")
        api_key = opts.api_key or os.environ.get("GATEWAY_API_KEY", "")
        mode = auth.effective_mode(opts.auth_mode, opts.allow_lan_access, bool(api_key or opts.clients))
        if opts.clients and mode == "off":
            raise exceptions.OptionsError("a clients file needs client keys checked: drop auth_mode=off (auto, "
                                          "all_except_health or strict)")
        if mode != "off" and not api_key and not opts.clients:
            raise exceptions.OptionsError(f"auth mode '{mode}' needs a key: --set api_key=... or $GATEWAY_API_KEY")
        allowed = {h.strip().lower() for v in opts.allowed_hosts for h in v.split(",") if h.strip()}
        if opts.listen_host:
            allowed.add(opts.listen_host.lower())
        settings = Settings(auth_mode=mode, api_key=api_key, allow_lan_access=opts.allow_lan_access,
                            max_attempts=opts.max_attempts, max_body_size=max_body, allowed_hosts=frozenset(allowed),
                            log_format=opts.log_format)
        # "a,b" in one value is accepted too (the option used to be a comma-separated string)
        self._hosts = frozenset(h.strip().lower() for v in opts.gateway_hosts for h in v.split(",") if h.strip())
        self.relay.keepalive = float(opts.keepalive_seconds)

        first = self.wiring is None
        mappings = self._source("mappings", opts.mappings, load_mappings) if first or "mappings" in updated else None
        accounts = (self._source("accounts", opts.accounts, load_accounts)
                    if first or "accounts" in updated else None)
        state_path = opts.state_file or (str(Path(opts.accounts).with_suffix(".state.json")) if opts.accounts
                                         else os.path.join(os.path.expanduser(opts.confdir), "gateway-state.json"))
        if self.wiring is None:
            clients = self._source("clients", opts.clients, load_clients) if opts.clients else None
            try:
                self.wiring = Wiring(settings=settings, mappings=mappings, accounts=accounts, state_path=state_path,
                                     clients=clients,
                                     state_url=opts.state, headers_timeout=float(opts.upstream_headers_timeout),
                                     connections_per_host=opts.upstream_connections,
                                     connect_timeout=opts.upstream_connect_timeout, seal_key=opts.seal_key)
            except ValueError as exc:
                raise exceptions.OptionsError(str(exc)) from None
            log.info("gateway state: %s", self.wiring.shared.describe())
        else:
            if "clients" in updated:
                log.warning("the clients option is read at start-up: restart the gateway to use %r (edits of "
                            "the file itself are picked up while running)", opts.clients)
            self.wiring.engine.configure(settings, mappings, accounts)
            self.wiring.http.headers_timeout = float(opts.upstream_headers_timeout)
            if self.wiring.state is not None and Path(state_path) != self.wiring.state.path:
                self.wiring.state.path = Path(state_path)
                self.wiring.state.mark_dirty()
        if first or updated & {"listen_host", "allow_lan_access"}:
            check_listen_host(ctx.options)
        own_options(ctx.options)
        if "stream_large_bodies" in updated and opts.stream_large_bodies:
            # mitmproxy then streams large *request* bodies straight to the server, past the
            # `request` hook: the gateway never sees them. Its responses stream regardless.
            log.warning("stream_large_bodies=%s also streams request bodies past the gateway: requests larger "
                        "than that (e.g. with big images) cannot be answered. Leave it unset; gateway responses "
                        "are streamed anyway.", opts.stream_large_bodies)

    @staticmethod
    def _source(what: str, path: str, load):
        try:
            return load(path)
        except Exception as exc:
            raise exceptions.OptionsError(f"cannot load {what} {path}: {one_line(exc)}") from None

    # ---- lifecycle ------------------------------------------------------------------------
    async def running(self) -> None:
        # First, before any await: by the time the proxy answers, SIGUSR1 must not kill mitmproxy.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not on Windows / a thread
            asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, self.accounts_command)
        logging.getLogger("mitmproxy.proxy.server").addFilter(self._noise)
        logging.getLogger("mitmproxy.proxy.server").addFilter(self._chatter)
        quiet_dumper(ctx.master)
        if "web_columns" in ctx.options and list(ctx.options.web_columns) == WEB_COLUMNS_DEFAULT:
            ctx.options.update(web_columns=WEB_COLUMNS)  # mitmweb: show each flow's story in the list
        port = await self.relay.start()
        log.debug("gateway relay on 127.0.0.1:%d", port)
        if self.wiring is not None:
            await self.wiring.start()
        web_url = getattr(ctx.master, "web_url", None)
        if web_url:  # mitmweb asks for this token (the address alone answers 403)
            log.info("mitmweb flow inspector: open %s (the token is new at each start; --set web_password=... "
                     "sets a fixed password)", web_url)
        if self._model_check is None and self.wiring is not None and ctx.options.check_models:  # background, hourly
            self._model_check = asyncio.ensure_future(self.wiring.check_models())

    async def done(self) -> None:
        await self._drain()
        logging.getLogger("mitmproxy.proxy.server").removeFilter(self._noise)
        logging.getLogger("mitmproxy.proxy.server").removeFilter(self._chatter)
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGUSR1)
        for task in (self._watcher, self._model_check):
            if task is not None:
                task.cancel()
        await self.relay.close()
        if self.wiring is not None:
            await self.wiring.aclose()

    def _busy(self) -> int:
        return len(self._inflight) + len(self._handoffs) + len(self.relay.pumping) + self.relay.active

    async def _drain(self) -> None:
        """Shutting down: stop accepting, let what is open finish for shutdown_grace_seconds, then
        end each remaining stream with its protocol's error event (and its log line)."""
        if self.wiring is None or self._stopping:
            return
        self._stopping = True
        server = ctx.master.addons.get("proxyserver")
        if server is not None and hasattr(server, "servers"):
            with contextlib.suppress(Exception):
                await server.servers.update([])  # closes the listeners; open connections stay
        if not self._busy():
            return
        loop, grace = asyncio.get_running_loop(), ctx.options.shutdown_grace_seconds
        log.info("shutting down: %d open request(s) get %ds to finish", len(self._handoffs) + len(self._inflight),
                 grace)
        deadline = loop.time() + grace
        while self._busy() and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if not self._busy():
            return
        self.wiring.engine.stopping = True
        for work in list(self._inflight):
            work.cancel()
        self.relay.interrupt()
        deadline = loop.time() + 2  # the error events go out, the flows end and are logged
        while (self._handoffs or self.relay.pumping or self._inflight) and loop.time() < deadline:
            await asyncio.sleep(0.05)

    # ---- hooks ----------------------------------------------------------------------------
    def _ours(self, flow: http.HTTPFlow) -> bool:
        if isinstance(flow.client_conn.proxy_mode, ReverseMode):
            return True
        return flow.request.pretty_host.lower() in self._hosts

    def client_connected(self, client) -> None:
        # Outside reverse mode mitmproxy forwards to any host, the relay's loopback port included:
        # a peer from the LAN must not get that. (Reverse-mode peers get the gateway's JSON 403.)
        if (self.wiring is not None and not self.wiring.engine.settings.allow_lan_access
                and not isinstance(client.proxy_mode, ReverseMode) and client.peername
                and not auth.is_loopback(client.peername[0])):
            log.info("refused connection from %s: LAN access is disabled", client.peername[0])
            client.error = "LAN access is disabled"

    def _incoming(self, flow: http.HTTPFlow, body: bytes = b"", admitted: bool = False) -> Incoming:
        req = flow.request
        reverse = isinstance(flow.client_conn.proxy_mode, ReverseMode)
        path, _, query = req.path.partition("?")
        return Incoming(req.method, path, req.headers, body,
                        flow.client_conn.peername[0] if flow.client_conn.peername else None, query,
                        host=req.host_header if reverse else None, admitted=admitted)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """Peer, Host/Origin, key, content type and size are checked here, before mitmproxy reads
        (or anyone decodes) the body; the client's key leaves the recorded flow at once."""
        if flow.response or flow.error or not flow.live or not self._ours(flow) or flow.id in self._handoffs:
            return
        incoming = self._incoming(flow)
        try:
            refusal = self.wiring.engine.refusal(incoming)
        finally:
            hide_credentials(flow.request)
        if refusal is None and self._stopping:
            refusal = self.wiring.engine.refused(incoming, shutting_down())
        if refusal is None:
            flow.metadata["gateway_admitted"] = True
            flow.metadata["gateway_client"] = incoming.client  # a name from the clients file, never a key
        else:
            self._refuse(flow, refusal)

    def _answer_now(self, flow: http.HTTPFlow, out: Outcome) -> None:
        """A whole answer, sent as the hook returns; its story is finished when the flow ends."""
        tell(flow, out.story)
        flow.response = whole_response(out.status, out.headers, out.body)
        self._handoffs[flow.id] = Handoff(out.story)

    def _refuse(self, flow: http.HTTPFlow, out: Outcome) -> None:
        if "content-length" not in flow.request.headers and "transfer-encoding" not in flow.request.headers:
            self._answer_now(flow, out)
            return
        tell(flow, out.story)
        # A response set now is only sent once mitmproxy has buffered the whole body, however
        # large it claims to be. Instead, stream the body to the relay, which drops it and answers.
        path = self.relay.register(out.status, out.headers, once(out.body))
        self._handoffs[flow.id] = Handoff(out.story, flow.request, path)
        relay_request = http.Request.make("POST", f"http://127.0.0.1:{self.relay.port}{path}")
        del relay_request.headers["content-length"]  # make() says 0; the client's framing applies
        for name in ("content-length", "transfer-encoding"):
            if name in flow.request.headers:
                relay_request.headers[name] = flow.request.headers[name]
        relay_request.stream = True
        flow.request = relay_request
        if flow.client_conn.peername:
            self._noise.announcing.add(tuple(flow.client_conn.peername))

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live or not self._ours(flow) or flow.id in self._handoffs:
            return
        try:
            await self._serve(flow)
        finally:  # whatever happened (client gone, undecodable body, a bug), the key leaves the flow
            hide_credentials(flow.request)

    async def _serve(self, flow: http.HTTPFlow) -> None:
        admitted = bool(flow.metadata.get("gateway_admitted"))
        client = flow.metadata.get("gateway_client")
        if not admitted:  # requestheaders did not run (e.g. a flow replayed from a file)
            incoming = self._incoming(flow)
            refusal = self.wiring.engine.refusal(incoming)
            if refusal is not None:
                self._answer_now(flow, refusal)
                return
            client = incoming.client
        try:
            body = limits.decode_body(flow.request.raw_content or b"",
                                      flow.request.headers.get("content-encoding", ""),
                                      self.wiring.engine.settings.max_body_size)
        except GatewayError as err:
            self._answer_now(flow, self.wiring.engine.refused(self._incoming(flow), err))
            return
        story = Story()
        incoming = self._incoming(flow, body, admitted=True)
        incoming.client = client
        outcome = await self._answer(flow, incoming, story)
        show_client_address(flow)
        if outcome is None:
            story.client_gone = True
            tell(flow, story)
            self.wiring.engine.finish(story)
            return
        if outcome.stream is None:
            self._answer_now(flow, outcome)
            return
        tell(flow, story)
        # Stream: let mitmproxy read it from the relay so it goes out chunk by chunk.
        path = self.relay.register(outcome.status, outcome.headers, outcome.stream, outcome.keepalive)
        self._handoffs[flow.id] = Handoff(story, flow.request, path)
        now = time.time()  # (the constructor, not Request.make: no URL parsing per stream)
        flow.request = http.Request("127.0.0.1", self.relay.port, b"GET", b"http", b"", path.encode(), b"HTTP/1.1",
                                    http.Headers(), b"", None, now, now)

    async def _answer(self, flow: http.HTTPFlow, incoming: Incoming, story: Story):
        """The engine's answer, or None if the client left first (the upstream call is then
        cancelled: no quota is spent for nobody)."""
        work = asyncio.ensure_future(self.wiring.engine.handle(incoming, story))
        self._inflight[work] = flow
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.ensure_future(self._watch_clients())
        try:
            return await work  # a cancelled hook (shutdown) cancels the work with it
        except asyncio.CancelledError:
            if work.cancelled() and not asyncio.current_task().cancelling():
                if self.wiring.engine.stopping:  # the grace period is over
                    return self.wiring.engine.refused(incoming, shutting_down())
                return None  # the watcher cancelled it: the client left
            raise
        finally:
            self._inflight.pop(work, None)

    async def _watch_clients(self) -> None:
        # While a hook is pending, mitmproxy queues the client's disconnect for the layer and fires
        # no event an addon could await (client_disconnected comes only once the flow is over);
        # what it does update at once is the connection's CAN_READ bit. So this looks at it, and
        # only while calls are in flight.
        while self._inflight:
            await asyncio.sleep(WATCH_INTERVAL)
            for work, flow in list(self._inflight.items()):
                if not flow.client_conn.state & ConnectionState.CAN_READ:
                    log.info("client went away before the answer; upstream request cancelled")
                    work.cancel()

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        handoff = self._handoffs.get(flow.id)
        if handoff is not None and handoff.relay_path is not None:
            flow.response.stream = True
            if flow.client_conn.peername:
                self._noise.announcing.add(tuple(flow.client_conn.peername))

    def response(self, flow: http.HTTPFlow) -> None:
        self._end(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        # Also the end of requests mitmproxy refused itself before any other hook (duplicate
        # Content-Length, Content-Length with Transfer-Encoding, a bad header name, CONNECT in
        # reverse mode): their flows go to mitmweb and -w files too. (Script addons run before
        # mitmproxy's own Save addon and mitmweb's view, so those get the redacted flow.)
        if flow.request is not None and self._ours(flow):
            hide_credentials(flow.request)
        handoff = self._end(flow, failed=True)
        if handoff is not None and handoff.relay_path is not None:
            # The client may have left before mitmproxy reached the relay: close that upstream
            # stream now rather than when its unclaimed registration expires (no-op if claimed).
            self.relay.discard(handoff.relay_path)

    def _end(self, flow: http.HTTPFlow, failed: bool = False) -> Handoff | None:
        """The flow is over: show the client's own request in mitmweb (not the relay hop), tell
        the final story (a stream may have failed after it started), log and count it."""
        handoff = self._handoffs.pop(flow.id, None)
        if handoff is None:
            return None
        if handoff.request is not None:
            flow.request = handoff.request
        if failed and not handoff.story.stream_error:
            handoff.story.client_gone = True  # the connection broke before the answer was complete
        tell(flow, handoff.story)
        if self.wiring is not None:
            self.wiring.engine.finish(handoff.story)
        if quiet(handoff.story):
            flow.metadata["gateway_quiet"] = True  # mitmdump's own lines about it are left out too
        return handoff

    # ---- commands -------------------------------------------------------------------------
    @command.command("gateway.accounts")
    def accounts_command(self) -> str:
        """The account pool: status, resting models (and why), last upstream status and usage of each
        account (no secrets); the same view as GET /gateway/accounts."""
        rows = self.wiring.engine.accounts_view() if self.wiring else []
        lines = []
        for r in rows:
            lines.append(f"{r['account']} [{r['provider']}] {r['status']} last={r['last_status']} "
                         f"requests={r['requests']}" + (f" project={r['project']}" if r.get("project") else ""))
            lines += [f"  {model}: {m['why']} ({m['status']}), {duration(m['cooldown_seconds'])} left"
                      for model, m in r.get("models", {}).items()]
        text = "\n".join(lines) or "no accounts configured"
        log.info("gateway accounts:\n%s", text)
        return text

    @command.command("gateway.enable")
    def enable_command(self, account: str) -> None:
        """Put a disabled or cooling account back into rotation."""
        if not self.wiring or not self.wiring.pool.enable(account):
            raise exceptions.CommandError(f"no account labelled {account!r}")
        log.info("account %s re-enabled", account)


addons = [Gateway()]
