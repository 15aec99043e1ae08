"""Fallback chains: a mapping target may be a list of models, tried in order (addon/config/mapping.py).

The walk wraps the retry policy (addon/pool/policy.py): each target gets the policy's usual attempts
and rotation on its own accounts, and the next target is used -- always before the client got a
byte, since the policy only returns once an upstream accepted the request -- when

  * the upstream says the model does not exist: a 404 that names it (Google's "models/X is not
    found", Cloud Code's "Requested entity was not found", OpenAI-compatible `model_not_found`);
  * the model rests on every eligible account (a per-model quota, a daily quota, an overload), or
    every account that serves it cools down. A target known to rest is skipped without a request:
    a resting model is not asked again until its rest ends;
  * no account serves it (the accounts' `models` patterns, or the model lists fetched from the
    upstreams: addon/pool/model_lists.py).

Any other failure (the request's own 400, a refused credential) ends the walk: the next model
would refuse it too. The last target's failure is the client's answer, exactly as without a chain.
The story names the target that answered (`mapped_model`, hence X-Mapped-Model) and the ones
passed over with why (`fallbacks`: "gemini-4-argon:resting").
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from ..config.mapping import Target
from ..ops.story import Story
from .accounts_file import Account
from .model_lists import ModelLists
from .policy import RetryPolicy
from .pool import AccountPool
from ..protocol.errors import GatewayError, UpstreamError

log = logging.getLogger(__name__)

T = TypeVar("T")

# Why a target was passed over (bounded: a metrics label and the log line's words)
NOT_FOUND, RESTING, ABSENT = "not_found", "resting", "absent"
_GONE_TEXTS = ("requested entity was not found", "does not exist", "is not found", "not found for api version")


def model_missing(err: UpstreamError | None, model: str) -> bool:
    """True when an upstream error says `model` does not exist (rather than some other entity of
    the request, such as an uploaded file)."""
    if err is None or err.status != 404:
        return False
    text = err.message.lower()
    return err.reason == "model_not_found" or model.lower() in text or any(t in text for t in _GONE_TEXTS)


class ChainWalk:
    """Runs one operation along a target chain through the retry policy."""

    def __init__(self, policy: RetryPolicy, pool: AccountPool,
                 on_fallback: Callable[[str, str], None] = lambda model, why: None,
                 lists: ModelLists | None = None) -> None:
        self.policy = policy
        self.pool = pool
        self.on_fallback = on_fallback  # (model passed over, why): e.g. a metrics counter
        self.lists = lists  # where a 404 is remembered (what each account serves)

    def why_not(self, model: str, skip: frozenset[str] = frozenset()) -> str | None:
        """Why `model` cannot be asked now, known without a request (None: it can)."""
        if not self.pool.listed(model, skip):
            return ABSENT
        return None if self.pool.ready(model, skip) else RESTING

    async def run(self, chain: Sequence[Target], call: Callable[[Account, Target], Awaitable[T]], story: Story,
                  *, sticky_key: str | None = None, skip: frozenset[str] = frozenset()) -> tuple[Account, Target, T]:
        """`call(account, target)` along the chain; returns who answered, for which target, and
        the result. Raises the GatewayError of the last target tried. Accounts named in `skip` are
        never asked (their provider cannot do what is asked)."""
        last = len(chain) - 1
        for i, target in enumerate(chain):
            model = target.model
            assert model is not None  # ModelMap.chain fills in kept names
            story.mapped_model = model
            if i < last:
                why = self.why_not(model, skip)
                if why is not None:
                    self._passed(story, model, why)
                    continue
            made = len(story.attempts)
            try:
                acc, result = await self.policy.run(model, lambda acc: call(acc, target), sticky_key=sticky_key,
                                                    attempts=story.attempts, skip=skip)
            except GatewayError as err:
                why = self._after_failure(err, model, len(story.attempts) > made, skip)
                if why == NOT_FOUND and self.lists is not None and len(story.attempts) > made:
                    self.lists.absent(story.attempts[-1].account, model)
                if i == last or why is None:
                    raise
                self._passed(story, model, why)
                continue
            return acc, target, result
        raise AssertionError("a chain has at least one target")  # pragma: no cover

    def _after_failure(self, err: GatewayError, model: str, asked: bool, skip: frozenset[str]) -> str | None:
        if model_missing(getattr(err, "upstream", None), model):
            return NOT_FOUND
        if (err.status == 429 or err.status >= 500) and not self.pool.ready(model, skip):
            return RESTING if asked or self.why_not(model, skip) != ABSENT else ABSENT
        return None

    def _passed(self, story: Story, model: str, why: str) -> None:
        story.fallbacks.append(f"{model}:{why}")
        self.on_fallback(model, why)
        log.debug("fallback chain: passing over %s (%s)", model, why)
