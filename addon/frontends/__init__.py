"""Front ends: the API surfaces clients call, each translated to and from the canonical model.

To add a surface, write a module with a `Frontend` subclass (its routes, the paths whose errors
it answers and its error shape, parse into a `ChatRequest`, render a `Completion`, encode stream
events; operations other than completions are routes with a handler) and add it to
`build_frontends`; a surface with handler routes only (no completions) is a `Surface`. The engine
builds its one route table from its own routes and these.
"""

from __future__ import annotations

from ..stores.response_store import ResponseStore
from ..stores.sealing import Sealer
from ..stores.signature_store import MemorySignatureStore, SignatureStore
from .base import Frontend, StreamEncoder, Surface, encode_stream
from .chat import ChatFrontend
from .completions import CompletionsFrontend
from .embeddings import EmbeddingsSurface
from .gemini import GeminiFrontend
from .messages import MessagesFrontend
from .responses import ResponsesFrontend

__all__ = ["Frontend", "StreamEncoder", "Surface", "build_frontends", "encode_stream"]


def build_frontends(store: ResponseStore, signatures: SignatureStore | None = None,
                    sealer: Sealer | None = None) -> list[Surface]:
    """Every surface the gateway serves: the one registry of front ends. `signatures`: where the
    Gemini-native surface keeps which credential issued each thought signature (the providers' store);
    `sealer`: seals reasoning state for clients that keep the conversation themselves (Responses)."""
    return [ChatFrontend(), ResponsesFrontend(store, sealer), CompletionsFrontend(), EmbeddingsSurface(),
            GeminiFrontend(signatures if signatures is not None else MemorySignatureStore()), MessagesFrontend()]
