"""Responses API and legacy Completions end to end: the official `openai` SDK -> a real mitmdump with the
addon -> the Gemini emulator.

Covers what a Responses client relies on (instructions + input, streaming with the SDK's own
accumulator, previous_response_id, tool loops, retrieval, failures) and the legacy text completions.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import Emulator, Gateway

pytestmark = pytest.mark.e2e

ECHO = "Echo(gemini-3.8-flash): "
WEATHER = {"type": "function", "name": "get_weather", "description": "Current weather",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                          "additionalProperties": False}, "strict": True}


def last_upstream(emulator: Emulator) -> dict[str, Any]:
    """The body of the last Gemini generate request the emulator saw."""
    calls = [r for r in emulator.log() if ":generateContent" in r["path"] or ":streamGenerateContent" in r["path"]]
    assert calls, "the gateway made no upstream call"
    return calls[-1]["body"]


def user_texts(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["role"], "".join(p.get("text", "") for p in c["parts"])) for c in body["contents"]]


def sse_events(raw: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in raw.strip().split("\n\n"):
        lines = [ln for ln in block.split("\n") if not ln.startswith(":")]
        if lines:
            assert lines[0].startswith("event: ") and lines[1].startswith("data: "), block
            out.append((lines[0][7:], json.loads(lines[1][6:])))
    return out


# ---- Responses --------------------------------------------------------------------------------


def test_create_keeps_instructions_and_string_input(gateway: Gateway, emulator: Emulator) -> None:
    raw = gateway.openai().responses.with_raw_response.create(model="gpt-4o", instructions="Be terse.",
                                                              input="hello there")
    assert raw.headers["x-mapped-model"] == "gemini-3.8-flash"
    resp = raw.parse()
    assert resp.id.startswith("resp_") and resp.object == "response" and resp.status == "completed"
    assert resp.model == "gpt-4o" and resp.instructions == "Be terse."
    assert resp.output_text == ECHO + "hello there"
    assert resp.usage is not None and resp.usage.total_tokens == resp.usage.input_tokens + resp.usage.output_tokens
    body = last_upstream(emulator)
    assert body["systemInstruction"] == {"parts": [{"text": "Be terse."}]}
    assert user_texts(body) == [("user", "hello there")]


def test_stream_arrives_incrementally_and_builds_the_final_response(gateway: Gateway, emulator: Emulator) -> None:
    client = gateway.openai()
    with client.responses.stream(model="gpt-4o", input="warm up") as stream:
        # the SDK builds its event models lazily (~1 s, once): keep that out of the timing below
        assert stream.get_final_response().output_text == ECHO + "warm up"
    emulator.rules({"reply": {"chunks": ["a", "b", "c", "d"]}, "chunk_delay_ms": 200, "times": 1})
    deltas: list[tuple[float, str]] = []
    types: list[str] = []
    t0 = time.monotonic()
    with client.responses.stream(model="gpt-4o", input="slow please") as stream:
        for event in stream:
            types.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append((time.monotonic() - t0, event.delta))
        final = stream.get_final_response()
    assert [d for _, d in deltas] == ["a", "b", "c", "d"]
    gaps = [b[0] - a[0] for a, b in zip(deltas, deltas[1:], strict=False)]
    assert all(g >= 0.1 for g in gaps), f"deltas were buffered: {gaps}"
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert final.output_text == "abcd" and final.status == "completed"
    # a streamed response is stored too
    follow = client.responses.create(model="gpt-4o", input="next", previous_response_id=final.id)
    assert follow.output_text == ECHO + "next"


def test_previous_response_id_continues_the_conversation(gateway: Gateway, emulator: Emulator) -> None:
    client = gateway.openai()
    first = client.responses.create(model="gpt-4o", input="first question", instructions="Rule one.")
    second = client.responses.create(model="gpt-4o", input="second question", previous_response_id=first.id)
    assert second.output_text == ECHO + "second question"
    assert second.previous_response_id == first.id
    body = last_upstream(emulator)
    assert user_texts(body) == [("user", "first question"), ("model", ECHO + "first question"),
                                ("user", "second question")]
    assert "systemInstruction" not in body, "instructions are not carried over to the next response"


def test_tool_loop_with_previous_response_id(gateway: Gateway, emulator: Emulator) -> None:
    client = gateway.openai()
    first = client.responses.create(model="gpt-4o", tools=[WEATHER],  # type: ignore[list-item]
                                    input='What is the weather? [[tool:get_weather {"city":"Paris"}]]')
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather" and call.id.startswith("fc_")
    assert json.loads(call.arguments) == {"city": "Paris"} and call.status == "completed"
    second = client.responses.create(
        model="gpt-4o", tools=[WEATHER], previous_response_id=first.id,  # type: ignore[list-item]
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": json.dumps({"temp": 21})}])
    assert second.output_text == 'Tool get_weather returned: {"temp":21}'
    roles = [c["role"] for c in last_upstream(emulator)["contents"]]
    assert roles == ["user", "model", "user"]


def test_tool_loop_with_full_input_keeps_gemini3_signatures(gateway: Gateway, emulator: Emulator) -> None:
    """Codex-style: store false, the whole history sent back each turn; Gemini 3 checks thought signatures."""
    client = gateway.openai()
    history: list[Any] = [{"role": "user", "content": 'Weather? [[tool:get_weather {"city":"Oslo"}]]'}]
    with client.responses.stream(model="gemini-3-pro-preview", tools=[WEATHER], input=history,  # type: ignore
                                 store=False) as stream:
        first = stream.get_final_response()
    [call] = [item for item in first.output if item.type == "function_call"]
    history += [item.model_dump(exclude_none=True) for item in first.output]
    history.append({"type": "function_call_output", "call_id": call.call_id, "output": "cold"})
    second = client.responses.create(model="gemini-3-pro-preview", tools=[WEATHER], input=history,  # type: ignore
                                     store=False)
    assert second.output_text == 'Tool get_weather returned: {"content":"cold"}'
    model_turn = last_upstream(emulator)["contents"][1]
    assert model_turn["parts"][-1]["thoughtSignature"], "the signature came back on the call"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(second.id)  # store: false is not kept


def test_retrieve_returns_the_stored_response(gateway: Gateway, emulator: Emulator) -> None:
    client = gateway.openai()
    created = client.responses.create(model="gpt-4o", input="keep me", metadata={"k": "v"})
    got = client.responses.retrieve(created.id)
    assert got.id == created.id and got.output_text == ECHO + "keep me" and got.metadata == {"k": "v"}
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.retrieve("resp_does_not_exist")
    assert info.value.body["type"] == "not_found_error"  # type: ignore[index]
    # deleting forgets it; a second delete and a later retrieval are 404s
    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(created.id)
    raw = httpx.put(f"{gateway.v1}/responses/{created.id}", timeout=5)
    assert raw.status_code == 405 and raw.json()["error"]["code"] == "method_not_allowed"


def test_unknown_previous_response_is_not_found(gateway: Gateway, emulator: Emulator) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        gateway.openai().responses.create(model="gpt-4o", input="hi", previous_response_id="resp_missing")
    body = info.value.body
    assert body["code"] == "previous_response_not_found" and body["param"] == "previous_response_id"  # type: ignore
    assert not emulator.log(), "nothing went upstream"


def test_bad_request_names_the_param(gateway: Gateway, emulator: Emulator) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        gateway.openai().responses.create(model="gpt-4o", input=[{"role": "user", "content": [  # type: ignore
            {"type": "input_image", "file_id": "file-123"}]}])
    assert info.value.body["param"] == "input[0].content[0].file_id"  # type: ignore[index]


def test_mid_stream_cut_ends_in_response_failed(gateway: Gateway, emulator: Emulator) -> None:
    emulator.rules({"reply": {"chunks": ["one ", "two ", "three ", "four "]}, "cut_after": 2})
    with gateway.openai().responses.stream(model="gpt-4o", input="x") as stream:
        events = list(stream)
        with pytest.raises(RuntimeError, match="response.completed"):
            stream.get_final_response()
    assert events[-1].type == "response.failed"
    failed = events[-1].response
    assert failed.status == "failed" and failed.error is not None and failed.error.code == "server_error"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "one two "

    emulator.rules({"reply": {"chunks": ["one ", "two ", "three ", "four "]}, "cut_after": 2})
    r = httpx.post(gateway.v1 + "/responses", json={"model": "gpt-4o", "input": "x", "stream": True}, timeout=20)
    events_raw = sse_events(r.text)
    assert [e for e, _ in events_raw].count("response.failed") == 1 and events_raw[-1][0] == "response.failed"
    assert [d["sequence_number"] for _, d in events_raw] == list(range(len(events_raw)))


def test_responses_path_without_v1(gateway: Gateway, emulator: Emulator) -> None:
    r = httpx.post(gateway.url + "/responses", json={"model": "gpt-4o", "input": "no prefix"}, timeout=20)
    assert r.status_code == 200, r.text
    obj = r.json()
    assert obj["object"] == "response" and obj["output"][0]["content"][0]["text"] == ECHO + "no prefix"
    got = httpx.get(f"{gateway.url}/responses/{obj['id']}", timeout=20)
    assert got.status_code == 200 and got.json()["id"] == obj["id"]


# ---- legacy Completions -----------------------------------------------------------------------


def test_completion(gateway: Gateway, emulator: Emulator) -> None:
    resp = gateway.openai().completions.create(model="gpt-4o", prompt="Say hi")
    assert resp.object == "text_completion" and resp.id.startswith("cmpl-")
    assert resp.choices[0].text == ECHO + "Say hi" and resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None and resp.usage.prompt_tokens > 0


def test_completion_echo_and_length(gateway: Gateway, emulator: Emulator) -> None:
    # 2.5 Flash-Lite thinks only when asked: the upstream itself stops at the limit
    resp = gateway.openai().completions.create(model="gemini-2.5-flash-lite", prompt="one two three four",
                                               echo=True, max_tokens=2)
    assert resp.choices[0].text == "one two three four" + "Echo(gemini-2.5-flash-lite): one"
    assert resp.choices[0].finish_reason == "length"


def test_completion_stream_with_usage(gateway: Gateway, emulator: Emulator) -> None:
    stream = gateway.openai().completions.create(model="gpt-4o", prompt="stream me", stream=True,
                                                 stream_options={"include_usage": True})
    chunks = list(stream)
    assert len({ch.id for ch in chunks}) == 1 and all(ch.object == "text_completion" for ch in chunks)
    assert "".join(c.text for ch in chunks for c in ch.choices) == ECHO + "stream me"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    assert [c.finish_reason for ch in chunks for c in ch.choices if c.finish_reason] == ["stop"]


def test_completion_stream_without_usage(gateway: Gateway, emulator: Emulator) -> None:
    chunks = list(gateway.openai().completions.create(model="gpt-4o", prompt="plain", stream=True, echo=True))
    assert all(ch.usage is None for ch in chunks) and chunks[0].choices[0].text == "plain"
    assert "".join(c.text for ch in chunks for c in ch.choices) == "plain" + ECHO + "plain"


def test_completion_errors(gateway: Gateway, emulator: Emulator) -> None:
    client = gateway.openai()
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="gpt-4o", prompt="x", suffix="y")
    assert info.value.body["param"] == "suffix"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="gpt-4o", prompt=["a", "b"])
    assert info.value.body["param"] == "prompt"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="gpt-4o", prompt="x", stream_options={"include_usage": True})
    assert info.value.body["param"] == "stream_options"  # type: ignore[index]
    assert not emulator.log()

    emulator.rules({"reply": {"chunks": ["a ", "b ", "c "]}, "cut_after": 1})
    with pytest.raises(openai.APIError) as err:
        for _ in client.completions.create(model="gpt-4o", prompt="x", stream=True):
            pass
    assert err.value.body["code"] == "upstream_stream_error"  # type: ignore[index]


def test_completions_path_without_v1(gateway: Gateway, emulator: Emulator) -> None:
    r = httpx.post(gateway.url + "/completions", json={"model": "gpt-4o", "prompt": "bare"}, timeout=20)
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == ECHO + "bare"
