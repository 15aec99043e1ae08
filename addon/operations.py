"""The engine's `PoolCalls` (addon/routes.py): any operation through the model mapping and the
account pool. Completions (the engine's own path), embeddings, token counts and Gemini-native
calls all go through `run` / `attempts`: the client's model checked (it exists, the client may use
it) and mapped, accounts picked by the retry policy among those whose provider has the capability,
the client's limits admitted last (a request refused for its content costs no rate), a fallback
chain walked target by target (addon/pool/fallback.py), the story filled. Also what the mapping
knows (model names, targets) for handlers that list models.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from .config.mapping import Chain, Target
from .ops.story import Story
from .pool.accounts_file import Account
from .protocol import canonical as c
from .protocol import limits
from .protocol.errors import GatewayError
from .upstream.streaming import until_shutdown

T = TypeVar("T")

# How a 400 names an operation the providers serving a model cannot do.
CAPABILITY_NAMES = {"embed": "Embeddings", "native": "Gemini-native requests",
                    "native_embed": "Gemini-native embeddings"}


class Operations:
    """`engine`: the Engine (its mapping, pool, policy, providers, clients and redactor are read
    at call time: configuration reloads replace them)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        # (mappings, accounts, model lists version, names): cached until one of them changes
        self._known: tuple[Any, Any, int, frozenset[str]] | None = None

    # ---- what the mapping knows -------------------------------------------------------------
    def model_ids(self) -> list[str]:
        """What is servable: the mapping file's exact names and concrete targets (once the accounts'
        model lists are known, only those with a target some account lists), the accounts' own
        `models` names and what their upstreams list."""
        mappings, pool, lists = self.engine.mappings, self.engine.pool, self.engine.model_lists
        names = mappings.listed_models()
        if lists is not None and lists.version:
            names = [n for n in names if any(pool.listed(t.model or n) for t in mappings.chain(n))]
            names += lists.all_listed()
        for acc in pool.accounts:
            names += [m for m in acc.models or [] if "*" not in m]
        return list(dict.fromkeys(names))

    def listed_for(self, client: str | None) -> list[str]:
        """What /v1/models lists to `client` (a clients file's name): the servable names its
        allow-list admits (all of them for the operator or without a clients file)."""
        names = self.model_ids()
        clients = self.engine.clients
        if client is not None and clients is not None:
            names = [n for n in names if clients.allows(client, n)]
        return names

    def known_models(self) -> frozenset[str]:
        """The listed names, cached until the mapping file, the accounts file or a model list changes."""
        mappings, accounts = self.engine.mappings, self.engine.accounts_seen
        lists = self.engine.model_lists
        version = lists.version if lists is not None else 0
        known = self._known
        if known is None or known[0] is not mappings or known[1] is not accounts or known[2] != version:
            self._known = known = (mappings, accounts, version, frozenset(self.model_ids()))
        return known[3]

    def model_exists(self, name: str) -> bool:
        """The one answer to "does this model exist", shared by /v1/models/{id} and every operation:
        a name is served if a mapping rule covers it (with a `default`, every name is), it is listed,
        or an account with a `models` list serves it."""
        mappings = self.engine.mappings
        return (bool(mappings.default) or mappings.matches(name) or name in self.known_models()
                or any(acc.models is not None and acc.serves(name) for acc in self.engine.pool.accounts))

    @staticmethod
    def no_such_model(name: str) -> GatewayError:
        return GatewayError(404, f"The model '{name}' does not exist: no mapping rule covers it and the mapping file "
                                 "has no default.", param="model", code="model_not_found")

    def target(self, client_model: str) -> Target:
        return self.engine.mappings.target(client_model)

    def resolve(self, client_model: str) -> str:
        return self.engine.mappings.resolve(client_model)

    def redact(self, text: str) -> str:
        return self.engine.redact(text)

    def until_shutdown(self, batches: AsyncIterator[Any]) -> AsyncIterator[Any]:
        return until_shutdown(batches, lambda: self.engine.stopping)

    # ---- calls through the pool -------------------------------------------------------------
    def checked_chain(self, client_model: str, story: Story) -> Chain:
        """The client's model, checked and mapped to its targets (a fallback chain has several);
        the story learns the client's name and the first target's."""
        limits.check_model_name(client_model)
        story.client_model = client_model
        if not self.model_exists(client_model):
            raise self.no_such_model(client_model)
        clients = self.engine.clients
        if clients is not None:
            clients.check_model(story.client, client_model, story)
        chain = self.engine.mappings.chain(client_model)
        story.mapped_model = chain[0].model
        return chain

    async def attempts(self, chain: Chain, call: Callable[[Account, Target], Awaitable[T]], story: Story,
                       capability: str = "chat", sticky_key: str | None = None) -> tuple[Account, Target, T]:
        """`call(account, target)` along the chain (addon/pool/fallback.py), each target through the retry
        policy; returns who answered, for which target, and the result."""
        engine = self.engine
        unable: frozenset[str] = frozenset()
        if capability != "chat":  # only accounts whose provider has the method serve the operation
            unable = frozenset(a.name for a in engine.pool.accounts
                               if not callable(getattr(engine.providers.get(a.provider), capability, None)))
            for target in chain:
                serving = engine.pool.candidates(target.model)
                if not serving or any(a.name not in unable for a in serving):
                    break
            else:  # every target is served only by accounts that cannot do this
                kinds = ", ".join(sorted({f"'{a.provider}'" for a in serving}))
                raise GatewayError(400, f"{CAPABILITY_NAMES.get(capability, capability)} are not served by {kinds} "
                                        f"accounts, and no other account serves '{story.mapped_model}'.",
                                   code="unsupported_operation")
        if engine.clients is not None:  # last, so a request refused for its content costs no rate
            await engine.clients.admit(story.client, story)

        async def attempt(acc: Account, target: Target) -> T:
            story.account = acc.name
            return await call(acc, target)

        acc, target, result = await engine.chains.run(chain, attempt, story, sticky_key=sticky_key, skip=unable)
        story.account = acc.name
        return acc, target, result

    async def run(self, client_model: str, op: Callable[[Any, Account, str], Awaitable[T]], story: Story, *,
                  capability: str = "chat", sticky_key: str | None = None) -> T:
        chain = self.checked_chain(client_model, story)
        providers = self.engine.providers
        acc, target, result = await self.attempts(
            chain, lambda acc, t: op(providers[acc.provider], acc, t.model or client_model), story,
            capability, sticky_key)
        usage = getattr(result, "usage", None)  # any operation's result; one with canonical usage counts it
        if isinstance(usage, c.Usage):
            self.record_usage(acc, target.model or client_model, usage, story)
        return result

    def record_usage(self, acc: Account | None, model: str, usage: c.Usage | None, story: Story | None) -> None:
        if usage is None:
            return
        if acc is not None:
            self.engine.pool.record_usage(acc, model, usage)
        if story is not None:
            story.tokens_in, story.tokens_out = usage.input_tokens, usage.output_tokens
