"""Ids in Anthropic's shapes (msg_…, toolu_…, srvtoolu_…, req_…) and the tool-call id mapping.

Canonical tool-call ids are OpenAI-shaped (`call_` + 24 hex, issued by the back ends); Anthropic
clients expect `toolu_…`. The mapping is a pure prefix swap both ways, so the id a client echoes
back in `tool_use` / `tool_result` finds the same thought signature in the gateway's store as the
id that was issued, on any instance, with nothing kept per request.
"""

from __future__ import annotations

from ...protocol.ids import new_id

_CANONICAL, _CLIENT = "call_", "toolu_"


def tool_id_out(call_id: str) -> str:
    """A canonical tool-call id as the client sees it."""
    return _CLIENT + call_id[len(_CANONICAL):] if call_id.startswith(_CANONICAL) else call_id


def tool_id_in(tool_use_id: str) -> str:
    """A client's tool_use id back to the canonical id it was issued as."""
    return _CANONICAL + tool_use_id[len(_CLIENT):] if tool_use_id.startswith(_CLIENT) else tool_use_id


def message_id() -> str:
    return new_id("msg_", 12)


def server_tool_id() -> str:
    return new_id("srvtoolu_", 12)


def request_id() -> str:
    return new_id("req_", 12)
