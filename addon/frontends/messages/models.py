"""`GET /v1/models` in Anthropic's shape, for clients that say `anthropic-version` (the SDKs'
`models.list()` / `models.retrieve()`): the same names the OpenAI-shaped list has."""

from __future__ import annotations

import time
from typing import Any

ANTHROPIC_VERSION_HEADER = "anthropic-version"


def model_object(name: str, created: int) -> dict[str, Any]:
    return {"type": "model", "id": name, "display_name": name, "lifecycle": "active",
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))}


def model_list(names: list[str], created: int) -> dict[str, Any]:
    return {"data": [model_object(n, created) for n in names], "has_more": False,
            "first_id": names[0] if names else None, "last_id": names[-1] if names else None}
