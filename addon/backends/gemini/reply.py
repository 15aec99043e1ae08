"""What decoding an answer needs from the request that asked for it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ...protocol import canonical as c
from .names import ToolNames
from .signatures import tool_call_id


@dataclass(slots=True)
class Reply:
    """What decoding an answer needs from the request that asked for it; `origin` and `model`
    stamp the thought signatures the answer carries (who issued them)."""

    names: ToolNames = field(default_factory=lambda: ToolNames(()))
    visible_limit: int | None = None
    origin: str | None = None
    model: str | None = None

    def call(self, part: dict[str, Any]) -> c.ToolCall:
        fc = part["functionCall"]
        call_id = tool_call_id()
        value = part.get("thoughtSignature")
        return c.ToolCall(call_id, self.names.down(fc.get("name", "")),
                          json.dumps(fc.get("args") or {}, ensure_ascii=False),
                          c.Signature(value, self.origin, self.model, call_id) if value else None)

    def reasoning(self, value: str | None) -> c.Signature | None:
        # Clients refer to it by a key of its own (a Responses reasoning item's encrypted_content).
        return c.Signature(value, self.origin, self.model, c.new_signature_key()) if value else None

