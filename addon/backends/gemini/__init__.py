"""Canonical <-> Gemini `generateContent` (also the inner request of Cloud Code v1internal).

Pure functions plus one stream state machine (GeminiStreamDecoder): Gemini SSE events in,
canonical stream events out. Gemini's wire rules that shape this file: roles are only
`user`/`model` (system text goes to `systemInstruction`); function results are `functionResponse`
parts in a `user` turn, as many as the calls of the turn before, paired by position; streamed
events are complete GenerateContentResponse objects holding only the new parts, with cumulative
`usageMetadata` (the last one is the total); `finishReason` is STOP even after function calls;
`candidatesTokenCount` excludes `thoughtsTokenCount`. What each model accepts (thinking controls,
penalties, several candidates, tools with JSON mode) is in models.py; function names
Gemini refuses are renamed and mapped back by names.py; schemas go up as JSON Schema
(../schema.py). `prepare` returns the body and the `Reply` that decoding its answer needs.
"""

from __future__ import annotations

from .errors import error_from
from .finish import finish_reason, usage_from
from .grounding import grounding_from
from .models import gemini_major
from .reply import Reply
from .request import build_request, prepare
from .response import completion_from, completion_from_body, unwrap
from .signatures import DUMMY_SIGNATURE, model_family, needs_signatures, signature_from_id, signature_refused, tool_call_id
from .stream import GeminiStreamDecoder
from .thinking import SMALL_ANSWER, OutputPlan, output_plan

__all__ = ["DUMMY_SIGNATURE", "SMALL_ANSWER", "GeminiStreamDecoder", "OutputPlan", "Reply", "build_request",
           "completion_from", "completion_from_body", "error_from", "finish_reason", "gemini_major", "grounding_from",
           "model_family", "needs_signatures", "output_plan", "prepare", "signature_from_id", "signature_refused",
           "tool_call_id", "unwrap", "usage_from"]
