"""Gemini finish reasons through every translator: none becomes a silent empty `stop`.

The reasons are google-genai's FinishReason values and promptFeedback.blockReason (the SDK's
types.py); what each becomes is decided in addon/backends/gemini/finish.py (the table above
`finish_reason`) and pinned here in one golden file: tests/fixtures/gemini/finish_reasons.golden.json
(`UPDATE_GOLDEN=1` rewrites it; review the diff). For each reason and each candidate shape (some
text, no content, a function call) it records what a Chat Completions client and a Responses
client get, whole and streamed; "retry" marks failures the retry policy tries once more.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from addon.backends import gemini
from addon.frontends import chat, encode_stream
from addon.frontends.responses import ResponsesFrontend
from addon.pool.policy import RetryPolicy
from addon.protocol import canonical as c
from addon.protocol.errors import GatewayError, UnusableAnswer
from addon.stores.response_store import MemoryResponseStore
from addon.upstream.streaming import decode_stream, read_ahead
from tests.golden import golden
from tests.test_pool_unit import gem, make_pool
from tests.test_translate_unit import FakeUpstreamResponse, parse_client_sse, sse_bytes

GOLDEN = Path(__file__).parent / "fixtures" / "gemini" / "finish_reasons.golden.json"
REASONS = [None, "FINISH_REASON_UNSPECIFIED", "STOP", "MAX_TOKENS", "SAFETY", "RECITATION", "LANGUAGE", "OTHER",
           "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "MALFORMED_FUNCTION_CALL", "IMAGE_SAFETY",
           "IMAGE_PROHIBITED_CONTENT", "IMAGE_OTHER", "NO_IMAGE", "IMAGE_RECITATION", "UNEXPECTED_TOOL_CALL",
           "TOO_MANY_TOOL_CALLS", "MISSING_THOUGHT_SIGNATURE", "MALFORMED_RESPONSE", "ESCALATION",
           "PUP_LIMITED_DISABLED", "CONTINUATION", "MODEL_ARMOR", "SOMETHING_NEW"]
SHAPES = {
    "text": [{"text": "Partial answer"}],
    "empty": [],
    "thoughts only": [{"text": "Let me think", "thought": True}],
    "call": [{"functionCall": {"name": "lookup", "args": {"q": "x"}}}],
}
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "lookup"}}]}
RESPONSES = {"model": "gpt-4o", "input": "hi", "tools": [{"type": "function", "name": "lookup"}]}


def candidate(shape: str, reason: str | None) -> dict[str, Any]:
    cand: dict[str, Any] = {"content": {"role": "model", "parts": SHAPES[shape]} if SHAPES[shape] else {"role": "model"},
                            "index": 0}
    if reason:
        cand["finishReason"] = reason
        cand["finishMessage"] = f"{reason} details"
    return cand


def failure(err: UnusableAnswer) -> str:
    return f"error {err.code}" + (" (retry)" if err.retry else "")


def whole_chat(data: dict[str, Any]) -> str:
    try:
        completion = gemini.completion_from(data)
    except UnusableAnswer as err:
        return failure(err)
    ch = chat.render(completion, chat.parse(CHAT))["choices"][0]
    return f"{ch['finish_reason']}, content {ch['message']['content']!r}"


def whole_responses(data: dict[str, Any]) -> str:
    try:
        completion = gemini.completion_from(data)
    except UnusableAnswer as err:
        return failure(err)
    front = ResponsesFrontend(MemoryResponseStore())
    req, ctx = asyncio.run(front.parse(RESPONSES))
    obj = front.render(completion, req, ctx)
    why = f" ({obj['incomplete_details']['reason']})" if obj["incomplete_details"] else ""
    return f"{obj['status']}{why}, output {[item['type'] for item in obj['output']]}"


async def _client_bytes(data: dict[str, Any], encoder: Any) -> bytes:
    """Gemini SSE (text first, the finish in a later event) -> what the client receives."""
    events = [{"candidates": [{"content": {"role": "model", "parts": SHAPES["text"]}, "index": 0}]}] \
        if data["candidates"][0]["content"].get("parts") == SHAPES["text"] else []
    last = json.loads(json.dumps(data))
    if events:
        last["candidates"][0]["content"] = {"role": "model", "parts": []}
    events.append(last)
    batches = decode_stream(FakeUpstreamResponse([sse_bytes(events)]), gemini.GeminiStreamDecoder(1))
    return b"".join([piece async for piece in encode_stream(batches, encoder)])


def streamed_chat(data: dict[str, Any]) -> str:
    req = chat.parse({**CHAT, "stream": True})
    events = parse_client_sse(asyncio.run(_client_bytes(data, chat.ChatStreamEncoder(req))))
    if "error" in events[-1]:
        return f"error event {events[-1]['error']['code']}"
    finishes = [e["choices"][0]["finish_reason"] for e in events if isinstance(e, dict) and e.get("choices")]
    return str([f for f in finishes if f][-1])


def streamed_responses(data: dict[str, Any]) -> str:
    front = ResponsesFrontend(MemoryResponseStore())
    req, ctx = asyncio.run(front.parse({**RESPONSES, "stream": True}))
    raw = asyncio.run(_client_bytes(data, front.encoder(req, ctx)))
    final = json.loads(raw.decode().strip().split("\n\n")[-1].split("data: ", 1)[1])
    response = final["response"]
    detail = response["incomplete_details"] or response["error"] or {}
    why = f" ({detail.get('reason') or detail.get('code')})" if detail else ""
    return f"{final['type']}{why}, output {[item['type'] for item in response['output']]}"


def test_every_finish_reason_has_a_decided_outcome() -> None:
    table: dict[str, Any] = {}
    for reason in REASONS:
        for shape in SHAPES:
            data = {"candidates": [candidate(shape, reason)]}
            table[f"{reason or '(none)'} / {shape}"] = {
                "chat": whole_chat(data), "chat stream": streamed_chat(data),
                "responses": whole_responses(data), "responses stream": streamed_responses(data)}
    blocked = {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "usageMetadata": {"promptTokenCount": 3}}
    table["promptFeedback.blockReason / no candidates"] = {
        "chat": whole_chat(blocked), "responses": whole_responses(blocked)}
    table["(no candidates, not blocked)"] = {"chat": whole_chat({"usageMetadata": {"promptTokenCount": 3}})}
    golden(GOLDEN, table)
    # the point of it all: nothing ends as an empty, silent stop
    silent = ("stop, content ''", "stop, content None", "completed, output []", "response.completed, output []",
              "stop")
    for case, outcomes in table.items():
        for surface, outcome in outcomes.items():
            assert outcome not in silent or not case.endswith(("empty", "thoughts only")), (case, surface, outcome)


@pytest.mark.parametrize("reason", ["MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL"])
def test_a_valid_call_wins_over_a_failed_one(reason: str) -> None:
    """gemini-cli fails these only when no function call came; calls that did come are used."""
    data = {"candidates": [candidate("call", reason)]}
    assert whole_chat(data).startswith("tool_calls")


def test_failure_messages_carry_googles_finish_message() -> None:
    with pytest.raises(UnusableAnswer) as info:
        gemini.completion_from({"candidates": [{"finishReason": "MALFORMED_FUNCTION_CALL",
                                                "finishMessage": "Malformed function call: print(default_api.x("}]})
    err = info.value
    assert err.status == 502 and err.reason == "MALFORMED_FUNCTION_CALL" and err.retry
    assert "Malformed function call: print(default_api.x(" in err.message and err.code == "malformed_function_call"


# ---- retried once before the first byte ----------------------------------------------------------

async def test_the_policy_retries_an_unusable_answer_once_without_cooling_anyone() -> None:
    malformed = UnusableAnswer("malformed", reason="MALFORMED_FUNCTION_CALL")
    pool = make_pool(gem("a"))  # one account: the retry goes to the same one
    outcomes: list[Any] = [malformed, "ok"]

    async def attempt(acc: Any) -> Any:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert (await RetryPolicy(pool).run("gemini-2.5-flash", attempt))[1] == "ok"
    st = pool.state(pool.accounts[0])
    assert st.cooldown_until == 0 and st.models == {} and st.disabled_reason is None
    outcomes[:] = [malformed, malformed, "never"]
    with pytest.raises(GatewayError) as info:
        await RetryPolicy(pool).run("gemini-2.5-flash", attempt)
    assert (info.value.status, info.value.code) == (502, "malformed_function_call") and outcomes == ["never"]
    outcomes[:] = [UnusableAnswer("loop", reason="TOO_MANY_TOOL_CALLS", retry=False), "never"]
    with pytest.raises(GatewayError) as info:
        await RetryPolicy(pool).run("gemini-2.5-flash", attempt)
    assert info.value.code == "too_many_tool_calls" and outcomes == ["never"]


async def test_read_ahead_raises_a_failure_that_comes_before_any_answer_text() -> None:
    events = [{"candidates": [{"content": {"parts": [{"text": "hmm", "thought": True}]}}]},
              {"candidates": [{"content": {"role": "model"}, "finishReason": "MALFORMED_FUNCTION_CALL"}]}]
    resp = FakeUpstreamResponse([sse_bytes(events[:1]), sse_bytes(events[1:])])
    with pytest.raises(UnusableAnswer):
        await read_ahead(decode_stream(resp, gemini.GeminiStreamDecoder(1)), patience=5)
    assert resp.closed
    # with answer text first, the stream is handed over and the failure ends it later
    ok = [{"candidates": [{"content": {"parts": [{"text": "Hi"}]}}]}, events[1]]
    resp = FakeUpstreamResponse([sse_bytes(ok[:1]), sse_bytes(ok[1:])])
    batches = await read_ahead(decode_stream(resp, gemini.GeminiStreamDecoder(1)), patience=5)
    first = await anext(batches)
    assert first == [c.TextDelta(0, "Hi")]
    with pytest.raises(UnusableAnswer):
        await anext(batches)


async def test_read_ahead_hands_a_silent_stream_over_after_its_patience() -> None:
    gate = asyncio.Event()

    async def slow() -> Any:
        yield [c.ReasoningDelta(0, "thinking")]
        await gate.wait()
        yield [c.TextDelta(0, "late")]

    batches = await asyncio.wait_for(read_ahead(slow(), patience=0.05), timeout=2)
    assert await anext(batches) == [c.ReasoningDelta(0, "thinking")]
    gate.set()
    assert await anext(batches) == [c.TextDelta(0, "late")]
    with pytest.raises(StopAsyncIteration):
        await anext(batches)
