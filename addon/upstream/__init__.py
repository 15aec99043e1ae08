"""Upstream providers: who sends the translated request, and how.

A provider turns one attempt on one account into an HTTP call: `complete` returns the whole
canonical Completion; `stream` returns once the upstream has accepted the request (status 200),
handing back the canonical event batches to come; `probe` checks the account's credentials alone.
`complete` and `stream` raise UpstreamError; the retry policy (addon/pool/policy.py) decides
what an error means for the account. To add a provider, write a module with a class
implementing `Provider`, give its accounts a model in addon/pool/accounts_file.py (the
`provider:` value), and register it in `build_providers`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol, TypeVar

from ..protocol import canonical as c
from ..pool.state import StateStore
from ..protocol.errors import UpstreamError
from ..stores.signature_store import MemorySignatureStore, SignatureStore
from .cloudcode import CloudCodeProvider
from .codeassist import ProjectDirectory
from .gemini import GeminiProvider
from .http import HttpClient
from .oauth import TokenManager
from .openai import OpenAIProvider
from .vertex import VertexProvider


A = TypeVar("A", contravariant=True)


class Provider(Protocol[A]):
    """One kind of account (`A`: its model in addon/pool/accounts_file.py) and how to call it.

    Optional capabilities are further methods, looked up by name when an operation needs one
    (`PoolCalls.run(..., capability="embed")`): a provider without it answers a 400 naming it."""

    name: str

    async def complete(self, acc: A, req: c.ChatRequest, model: str) -> c.Completion: ...

    async def stream(self, acc: A, req: c.ChatRequest, model: str) -> AsyncIterator[list[c.StreamEvent]]: ...

    async def probe(self, acc: A) -> UpstreamError | None:
        """Check the account's credentials with a request holding no client input (the policy
        believes a credential error only when this is refused too): None = accepted."""
        ...

    def describe(self, acc: A) -> dict[str, Any]:
        """What the provider learned about an account (shown by GET /gateway/accounts), e.g. a
        discovered Cloud Code project; {} when nothing."""
        ...


def build_providers(http: HttpClient, tokens: TokenManager, store: StateStore | None = None,
                    signatures: SignatureStore | None = None) -> dict[str, Provider[Any]]:
    """Provider by the `provider:` value of an account: the one registry of providers. Google's
    OAuth and setup calls go through `tokens.http` (short timeouts); model calls through `http`;
    the Gemini-format providers keep thought signatures in `signatures`."""
    signatures = signatures if signatures is not None else MemorySignatureStore()
    return {
        "gemini": GeminiProvider(http, signatures),
        "cloudcode": CloudCodeProvider(http, tokens, ProjectDirectory(tokens.http, tokens, store), signatures=signatures),
        "vertex": VertexProvider(http, tokens, signatures=signatures),
        "openai": OpenAIProvider(http),
    }


__all__ = ["HttpClient", "Provider", "TokenManager", "build_providers"]
