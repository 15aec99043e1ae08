"""Operations other than a completion (Gemini-native calls, token counts, embeddings) through the
account pool: the engine's side of `frontends.base.PoolCalls`.

`run(client_model, op, story, capability=)` does for any operation what the completion path does:
the model name checked and mapped, accounts picked by the retry policy (attempts, rotation on
429/503/529, per-model cooldowns, credential probes), the story filled (mapped model, account,
attempts). Only accounts whose provider has the capability (a method of that name) are picked; a
pool with none answers 400 naming the providers it has.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .protocol import canonical as c
from .protocol import limits
from .protocol.errors import GatewayError

if TYPE_CHECKING:
    from .engine import Engine

T = TypeVar("T")

CAPABILITY_WORDS = {"native": "Gemini-native requests", "native_embed": "Gemini-native embeddings",
                    "embed": "embeddings", "count_tokens": "token counts"}


class EnginePoolCalls:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _able(self, provider: Any, capability: str | tuple[str, ...]) -> bool:
        names = (capability,) if isinstance(capability, str) else capability
        return any(getattr(provider, name, None) is not None for name in names)

    async def run(self, client_model: str, op: Callable[[Any, Any, str], Awaitable[T]], story: Any, *,
                  capability: str | tuple[str, ...] = "chat") -> T:
        engine = self.engine
        limits.check_model_name(client_model)
        story.client_model = client_model
        if not engine._model_exists(client_model):
            raise engine._no_such_model(client_model)
        target = engine.mappings.target(client_model)
        mapped = target.model or client_model
        story.mapped_model = mapped
        serving = [a for a in engine.pool.accounts if a.serves(mapped)]
        skip = frozenset(a.name for a in serving if not self._able(engine.providers.get(a.provider), capability))
        if serving and len(skip) == len(serving):
            kinds = sorted({a.provider for a in serving})
            what = CAPABILITY_WORDS.get(capability if isinstance(capability, str) else capability[0], "This request")
            raise GatewayError(400, f"{what} are not served by {' or '.join(repr(k) for k in kinds)} accounts, and "
                                    f"the pool has no other account for '{mapped}'.", code="unsupported_by_provider")

        async def attempt(acc: Any) -> T:
            story.account = acc.name
            return await op(engine.providers[acc.provider], acc, mapped)

        _, result = await engine.policy.run(mapped, attempt, attempts=story.attempts, skip=skip)
        return result

    def record_usage(self, acc: Any, model: str, usage: c.Usage | None, story: Any) -> None:
        if usage is not None:
            self.engine.pool.record_usage(acc, model, usage)
            story.tokens_in, story.tokens_out = usage.input_tokens, usage.output_tokens

    def model_ids(self) -> list[str]:
        return self.engine._model_ids()

    def model_exists(self, name: str) -> bool:
        return self.engine._model_exists(name)

    def resolve(self, name: str) -> str:
        return self.engine.mappings.resolve(name)

    def redact(self, text: str) -> str:
        return self.engine.redact(text)
