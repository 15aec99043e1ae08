"""Front ends beyond Chat Completions (Responses, legacy Completions), keyed by path."""

from __future__ import annotations

from typing import Any


def extra_frontends() -> dict[str, Any]:
    return {}
