"""Front ends: the OpenAI API surfaces clients call, each translated to and from the canonical model.

To add a surface, write a module with a `Frontend` subclass (parse the wire request into a
`ChatRequest`, render a `Completion`, encode stream events) and add it to `build_frontends`;
the engine serves its `path` with and without the `/v1` prefix, plus any extra `routes()`.
"""

from __future__ import annotations

from ..stores.response_store import ResponseStore
from ..stores.sealing import Sealer
from ..stores.signature_store import MemorySignatureStore, SignatureStore
from .base import Frontend, Route, StreamEncoder, encode_stream
from .chat import ChatFrontend
from .completions import CompletionsFrontend
from .gemini import GeminiFrontend
from .responses import ResponsesFrontend

__all__ = ["Frontend", "Route", "StreamEncoder", "build_frontends", "encode_stream"]


def build_frontends(store: ResponseStore, signatures: SignatureStore | None = None,
                    sealer: Sealer | None = None) -> list[Frontend]:
    """Every surface the gateway serves: the one registry of front ends. `signatures`: where the
    Gemini-native surface keeps which credential issued each thought signature (the engine's store);
    `sealer`: seals reasoning state for clients that keep the conversation themselves (Responses)."""
    return [ChatFrontend(), ResponsesFrontend(store, sealer), CompletionsFrontend(),
            GeminiFrontend(signatures if signatures is not None else MemorySignatureStore())]
