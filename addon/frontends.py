"""Front ends beyond Chat Completions (Responses, legacy Completions), keyed by path.

The engine also serves each of them without the `/v1` prefix, for clients that drop it.
"""

from __future__ import annotations

from typing import Any

from .translate.completions import CompletionsFrontend
from .translate.responses import ResponsesFrontend


def extra_frontends() -> dict[str, Any]:
    # One instance per engine: the Responses front end owns the store behind previous_response_id.
    return {"/v1/responses": ResponsesFrontend(), "/v1/completions": CompletionsFrontend()}
