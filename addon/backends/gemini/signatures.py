"""Thought signatures: which one goes back upstream, and the dummy where Gemini requires one."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from ...protocol import canonical as c
from ...protocol.errors import UpstreamError
from ...protocol.ids import new_id
from .models import gemini_major

# ---- thought signatures ----------------------------------------------------------------------
# Gemini returns a `thoughtSignature` (opaque base64, often 1 KB+) on the first functionCall part
# of each model step, and on thought or last parts. Rules (ai.google.dev/gemini-api/docs/
# thought-signatures, "Validation"): in the current turn (everything after the last user content
# with text), the first functionCall of each model step must carry its signature on Gemini 3, and
# a signature issued to one credential is refused by another ("Corrupted thought signature.",
# google-gemini/gemini-cli#13467). The documented dummy `skip_thought_signature_validator` (same
# page, FAQ; also Vertex AI's docs) passes validation where the real one cannot be sent.
#
# Signatures stay out of the OpenAI ids (clients cap ids at 40 or 64 characters): the engine keeps
# them in a store keyed by id (addon/stores/signature_store.py) with their origin, and hands them back on
# the canonical request; this module sends one only to the credential and model family that
# issued it, and the dummy where Gemini requires a signature and none can be sent.

DUMMY_SIGNATURE = "skip_thought_signature_validator"
_LEGACY_MARK = ".sig."  # before the store, ids were "call_<16 hex>.sig.<urlsafe base64 signature>"
_FAMILY_END = frozenset({"preview", "exp", "latest", "high", "low", "medium", "minimal"})


def tool_call_id() -> str:
    """OpenAI's shape: "call_" + 24 characters."""
    return new_id("call_", 12)


def signature_from_id(call_id: str) -> str | None:
    """The signature inside an id this gateway issued before the store existed (clients may be
    mid-conversation across the upgrade)."""
    _, mark, encoded = call_id.partition(_LEGACY_MARK)
    if not mark:
        return None
    try:
        return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def needs_signatures(model: str) -> bool:
    """Gemini 3 and later validate the current turn's signatures; 2.5 only recommends them."""
    return gemini_major(model.lower().removeprefix("models/")) >= 3


def model_family(model: str) -> str:
    """The model a signature belongs to, without release tags: gemini-3-pro-preview ->
    gemini-3-pro, gemini-2.5-flash-lite-preview-09-2025 -> gemini-2.5-flash-lite. Signatures do not
    cross families (pro and flash encrypt differently; Antigravity-Manager PR #3342)."""
    tokens = model.lower().removeprefix("models/").split("-")
    kept = tokens[:2]
    for token in tokens[2:]:
        if token in _FAMILY_END or token.isdigit():
            break
        kept.append(token)
    return "-".join(kept)


class Signer:
    """Which signature value (if any) goes back upstream, for one attempt on one credential."""

    def __init__(self, model: str, origin: str | None, trust: bool) -> None:
        self.family = model_family(model)
        self.origin = origin
        self.trust = trust

    def value(self, sig: c.Signature | None, *, unknown_origin: bool = True) -> str | None:
        """Only the issuer's own signature. One of unknown origin (an old id, Google's extra_content
        the client echoes) is sent when `unknown_origin` allows, and a refusal is retried with
        dummies (the provider does that); a known other origin never is."""
        if sig is None or not sig.value or not self.trust:
            return None
        if (sig.origin is None and not unknown_origin) or (sig.origin is not None and sig.origin != self.origin):
            return None
        if sig.model is not None and model_family(sig.model) != self.family:
            return None
        return sig.value


def _current_turn(contents: list[dict[str, Any]]) -> int:
    """Index of the last user content with text: where Google's "current turn" starts."""
    for i in range(len(contents) - 1, -1, -1):
        content = contents[i]
        if content["role"] == "user" and any(p.get("text") for p in content["parts"]):
            return i
    return 0


def fill_required(contents: list[dict[str, Any]], everywhere: bool) -> None:
    """The dummy on each model step's first functionCall that has no signature: in the current turn
    (what Gemini 3 validates), or in every turn (`everywhere`, after a refusal)."""
    for content in contents[0 if everywhere else _current_turn(contents):]:
        if content["role"] != "model":
            continue
        first = next((p for p in content["parts"] if "functionCall" in p), None)
        if first is not None and not first.get("thoughtSignature"):
            first["thoughtSignature"] = DUMMY_SIGNATURE


def signature_refused(err: UpstreamError) -> bool:
    """Gemini refused the request's signatures ("Corrupted thought signature.", "... is missing a
    thought_signature ...", a base64 error on thought_signature) or answered MISSING_THOUGHT_SIGNATURE."""
    if err.reason == "MISSING_THOUGHT_SIGNATURE":
        return True
    text = err.message.lower()
    return err.status == 400 and "thought" in text and "signature" in text
