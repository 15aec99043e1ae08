"""At start, once and in the background: are the mapping's targets models the upstream serves?

A mapping target the upstream does not know fails every request mapped to it with a 404 (a name
from another tool, such as Antigravity's `gemini-3-pro-high`, or a model Google has shut down).
Each account whose provider can list its models (`list_models`: the Gemini API's
`GET /v1beta/models`, paged) is compared with the targets the account would serve; a warning
names the missing ones. It never blocks or fails the start: an upstream
that cannot be asked is reported and skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

from ..backends.gemini.lifecycle import advice
from ..config.mapping import ModelMap
from ..protocol.errors import UpstreamError
from .accounts_file import Account


@runtime_checkable
class ListsModels(Protocol):
    async def list_models(self, acc: Any) -> set[str]: ...

log = logging.getLogger(__name__)


async def unserved_targets(mappings: ModelMap, accounts: Iterable[Account], providers: Mapping[str, Any],
                           page_size: int | None = None,
                           redact: Callable[[str], str] = str) -> dict[str, list[str]]:
    """Account name -> the mapping targets it would be asked for but does not list."""
    targets = mappings.targets()
    found: dict[str, list[str]] = {}
    for acc in accounts:
        provider = providers.get(acc.provider)
        if not isinstance(provider, ListsModels) or acc.disabled:
            continue
        wanted = [t for t in targets if acc.serves(t)]
        if not wanted:
            continue
        try:
            served = await (provider.list_models(acc) if page_size is None else provider.list_models(acc, page_size))
        except (UpstreamError, ValueError, TypeError, AttributeError) as exc:
            log.warning("could not list the models of %s to check the mapping targets: %s", acc.name,
                        redact(getattr(exc, "message", type(exc).__name__)))
            continue
        missing = [t for t in wanted if t not in served]
        if missing:
            found[acc.name] = missing
            named = ", ".join(t + (f" ({advice(t)})" if advice(t) else "") for t in missing)
            log.warning("account %s: the upstream does not serve mapping target(s) %s (not in GET /v1beta/models); "
                        "requests mapped there will fail or be answered by another model. Fix the target in the "
                        "mappings file.", acc.name, named)
    return found
