"""The object graph, built in one place: state store, HTTP clients, providers, pool, front ends,
the response and thought-signature stores, engine. The mitmproxy adapter only turns options into
`Wiring` arguments; tests can build the same graph without mitmproxy."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from .pool.pool import AccountPool
from .pool.accounts_file import AccountsFile, env_accounts, parse_accounts
from .clients import ClientsFile, build_gate
from .engine import Engine, Fixed, Settings, Source
from .frontends import build_frontends
from .config.mapping import ModelMap, parse_mappings
from .pool.model_check import warn_unserved
from .pool.model_lists import REFRESH_SECONDS, ModelLists
from .config.reloading import ReloadingFile
from .stores.response_store import ResponseStore
from .stores.sealing import Sealer, encode_key, key_from_text, keys_from_text, new_key
from .stores.shared import SharedState, open_state
from .stores.signature_store import MemorySignatureStore, SharedSignatureStore, SignatureStore
from .upstream import HttpClient, TokenManager, build_providers
from .upstream.http import DEFAULT_CONNECTIONS_PER_HOST

log = logging.getLogger(__name__)

OAUTH_READ_TIMEOUT = 60.0  # token endpoints answer in well under a second; a hang must not hold a request


def load_mappings(path: str) -> Source[ModelMap]:
    """Raises (ValueError, OSError, YAML errors) when the file cannot be used at startup."""
    return ReloadingFile(path, parse_mappings)


def load_accounts(path: str) -> Source[AccountsFile]:
    """The accounts file, reloaded on change; with no file, one account from $GEMINI_API_KEY."""
    return ReloadingFile(path, parse_accounts) if path else Fixed(env_accounts())


class Wiring:
    def __init__(self, *, settings: Settings, mappings: Source[ModelMap], accounts: Source[AccountsFile],
                 state_path: str | Path, state_url: str = "", responses: ResponseStore | None = None,
                 headers_timeout: float = 300.0, connections_per_host: int = DEFAULT_CONNECTIONS_PER_HOST,
                 connect_timeout: float = 10.0, signatures: SignatureStore | None = None,
                 clients: Source[ClientsFile] | None = None, seal_key: str = "") -> None:
        """`state_url`: empty for the local state file, or redis://... to share state between
        instances (raises ValueError if it cannot be used). `seal_key`: the secret text that seals
        state handed to clients; empty = one generated once and kept with the state."""
        self.shared: SharedState = open_state(state_url, state_path)
        self.http = HttpClient(headers_timeout=headers_timeout, connections_per_host=connections_per_host,
                               connect_timeout=connect_timeout)
        self.tokens = TokenManager(HttpClient(read_timeout=OAUTH_READ_TIMEOUT, headers_timeout=OAUTH_READ_TIMEOUT),
                                   self.shared.tokens)
        self.pool = AccountPool(self.shared.accounts)  # before the seal key: a state-file write needs its records
        self.model_lists = ModelLists()  # what each account's upstream lists (filled by check_models)
        self.pool.model_filter = self.model_lists.may_serve
        self.sealer = Sealer(keys_from_text(seal_key) or
                             [key_from_text(self.shared.secret("seal_key", lambda: encode_key(new_key())))])
        # with a clients file: its keys, allow-lists and limits; counters where the other state lives
        self.clients = build_gate(clients, self.shared) if clients is not None else None
        self.signatures = signatures if signatures is not None else self._signatures(state_url)
        self.engine = Engine(settings=settings, mappings=mappings, accounts=accounts, pool=self.pool,
                             providers=build_providers(self.http, self.tokens, self.shared.state_file, self.signatures),
                             frontends=build_frontends(responses or self.shared.responses, self.signatures, self.sealer),
                             live_secrets=self.tokens.active_tokens, clients=self.clients)
        self.engine.chains.lists = self.model_lists  # a 404 is remembered as absent on that account
        self.engine.model_lists = self.model_lists

    def _signatures(self, state_url: str) -> SignatureStore:
        """In this process by default; in the shared state when instances share one (so a tool loop
        can continue on any instance with Gemini's real signature)."""
        if not state_url:
            return MemorySignatureStore()
        return SharedSignatureStore(self.shared.kv("signatures", max_items=100_000, ttl=86_400.0))

    @property
    def state(self):
        """The local state file (None when the state lives in Redis)."""
        return self.shared.state_file

    async def start(self) -> None:
        """Inside the running event loop: start following other instances' changes (Redis)."""
        await self.shared.start()
        if self.clients is not None:
            await self.clients.start()

    async def check_models(self, every: float = REFRESH_SECONDS) -> None:
        """In the background for as long as the gateway runs: fetch each listable account's model
        list now and then every `every` seconds (model_lists), warning once, after the first
        fetch, about mapping targets an account's upstream does not serve (model_check)."""
        first = True
        while True:
            await self.model_lists.refresh(self.pool.accounts, self.engine.providers, redact=self.engine.redact)
            if first:
                warn_unserved(self.engine.mappings, self.pool.accounts, self.model_lists)
                first = False
            await asyncio.sleep(every)

    async def aclose(self) -> None:
        if self.clients is not None:
            await self.clients.aclose()  # before the state: its last usage goes out first
        await self.shared.aclose()
        await self.http.aclose()
        await self.tokens.http.aclose()
