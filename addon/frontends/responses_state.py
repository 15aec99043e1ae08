"""What a Responses reasoning item's `encrypted_content` carries between turns.

Gemini 3 wants each tool-calling step's thought signature back on that call in the next request,
from the credential and model family that issued it. A client that keeps the conversation itself
(`store: false` with `include: ["reasoning.encrypted_content"]`, as Codex sends every request)
returns reasoning items untouched, so when it asks for encrypted content the gateway seals the
step's signatures, with their origin, into the reasoning item (addon/stores/sealing.py): the next
request brings them back to any instance holding the key, with no server-side store. A token that
does not open (altered, another gateway's, OpenAI's own) carries nothing: Gemini then gets the
documented dummy signature where it requires one.

Without that `include`, encrypted_content keeps the key of the signature in the gateway's
signature store (addon/signature_store.py), as before.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from ..protocol import canonical as c
from ..stores.sealing import Sealer

log = logging.getLogger(__name__)

PURPOSE = "responses.reasoning"
INCLUDE = "reasoning.encrypted_content"


@dataclass(slots=True)
class StepState:
    """The signatures of one answer step: on its reasoning, and on its tool calls (by call id)."""

    reasoning: c.Signature | None = None
    calls: dict[str, c.Signature] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.reasoning is not None or bool(self.calls)


def _record(sig: c.Signature) -> list[Any]:
    return [sig.value, sig.origin, sig.model]


def _signature(raw: Any, key: str | None = None) -> c.Signature | None:
    if (isinstance(raw, list) and len(raw) == 3 and isinstance(raw[0], str) and raw[0]
            and all(v is None or isinstance(v, str) for v in raw[1:])):
        return c.Signature(raw[0], raw[1], raw[2], key=key)
    return None


def seal_step(sealer: Sealer, step: StepState) -> str:
    body: dict[str, Any] = {"v": 1}
    if step.reasoning is not None and step.reasoning.value:
        body["r"] = _record(step.reasoning)
    if step.calls:
        body["c"] = {call_id: _record(sig) for call_id, sig in step.calls.items() if sig.value}
    return sealer.seal(PURPOSE, body)


def open_step(sealer: Sealer, token: str) -> StepState | None:
    """The step sealed in `token`, or None when it does not open (then it is ignored)."""
    body = sealer.open(PURPOSE, token)
    if not isinstance(body, dict) or body.get("v") != 1:
        log.debug("a sealed reasoning item did not open; its signatures are not used")
        return None
    calls = body.get("c") if isinstance(body.get("c"), dict) else {}
    step = StepState(_signature(body.get("r")))
    for call_id, raw in calls.items():
        sig = _signature(raw, call_id)
        if sig is not None:
            step.calls[call_id] = sig
    return step


def wants_sealing(include: list[str] | None) -> bool:
    return bool(include) and INCLUDE in include
