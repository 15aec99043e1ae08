"""Pure tests of the legacy Completions front end (`/v1/completions`).

Fixtures in tests/fixtures/completions/: `request_*.json` -> `.golden.json` (the Gemini request),
`response_*.json` -> `.golden.json` (the text_completion object), `stream_*.json` -> `.golden.json` (the
client's SSE payloads, `[DONE]` kept as a string). Ids and timestamps are normalised;
`UPDATE_GOLDEN=1 pytest tests/test_completions_unit.py` regenerates the goldens (review the diff).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from openai.types import Completion

from addon.backends import gemini
from addon.frontends import completions
from addon.frontends.completions import CompletionsFrontend
from addon.protocol import canonical as c
from addon.protocol.errors import GatewayError
from tests import emulator as emu
from tests.golden import cases as golden_cases
from tests.golden import golden, normalise
from tests.golden import load as golden_load

DIR = Path(__file__).parent / "fixtures" / "completions"
def load(name: str) -> Any:
    return golden_load(DIR / name)


def cases(prefix: str) -> list[str]:
    return golden_cases(DIR, prefix)


def encode(body: dict[str, Any], upstream_events: list[dict[str, Any]]) -> bytes:
    front = CompletionsFrontend()
    req, ctx = completions.parse(body)
    enc = front.encoder(req, ctx)
    decoder = gemini.GeminiStreamDecoder(req.n)
    out = enc.start()
    for data in upstream_events:
        out += b"".join(enc.feed(ev) for ev in decoder.feed(json.dumps(data)))
    out += b"".join(enc.feed(ev) for ev in decoder.finish())
    return out + enc.close()


def parse_sse(raw: bytes) -> list[Any]:
    text = raw.decode()
    assert text.endswith("\n\n")
    out: list[Any] = []
    for block in text.split("\n\n")[:-1]:
        assert block.startswith("data: ") and "\n" not in block
        payload = block[len("data: "):]
        out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def check_chunks(events: list[Any], include_usage: bool) -> None:
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
    chunks = events[:-1]
    assert len({ch["id"] for ch in chunks}) == 1 and len({ch["created"] for ch in chunks}) == 1
    for ch in chunks:
        assert ch["object"] == "text_completion" and ch["id"].startswith("cmpl-")
        assert ("usage" in ch) == include_usage
        for choice in ch["choices"]:
            assert set(choice) == {"text", "index", "logprobs", "finish_reason"} and choice["logprobs"] is None
    if include_usage:
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
        assert all(ch["usage"] is None for ch in chunks[:-1])


def texts(events: list[Any]) -> dict[int, str]:
    out: dict[int, str] = {}
    for ch in events[:-1]:
        for choice in ch["choices"]:
            out[choice["index"]] = out.get(choice["index"], "") + choice["text"]
    return out


def err_of(body: Any) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        completions.parse(body)
    return info.value


# ---- goldens ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases("request_"))
def test_request_golden(case: str) -> None:
    spec = load(f"request_{case}.json")
    req, _ = completions.parse(spec["request"])
    body = gemini.build_request(req, spec["upstream_model"])
    emu.validate_generate_request(json.loads(json.dumps(body)), spec["upstream_model"], emu.EmulatorState())
    golden(DIR / f"request_{case}.golden.json", body)


@pytest.mark.parametrize("case", cases("response_"))
def test_response_golden(case: str) -> None:
    spec = load(f"response_{case}.json")
    front = CompletionsFrontend()
    req, ctx = completions.parse(spec["request"])
    obj = front.render(gemini.completion_from(spec["upstream"], req.n), req, ctx)
    assert Completion.model_validate(obj).model_dump(mode="json", exclude_unset=True) == obj
    golden(DIR / f"response_{case}.golden.json", normalise(obj))


@pytest.mark.parametrize("case", cases("stream_"))
def test_stream_golden(case: str) -> None:
    spec = load(f"stream_{case}.json")
    events = parse_sse(encode(spec["request"], spec["events"]))
    check_chunks(events, bool((spec["request"].get("stream_options") or {}).get("include_usage")))
    golden(DIR / f"stream_{case}.golden.json", normalise(events))


# ---- behaviour --------------------------------------------------------------------------------


def test_defaults_and_echo() -> None:
    front = CompletionsFrontend()
    req, echo = completions.parse({"model": "m", "prompt": "Hi:", "echo": True})
    assert req.max_tokens == 16 and req.n == 1 and [m.text() for m in req.messages] == ["Hi:"]
    obj = front.render(c.Completion([c.Choice(text=" there", finish_reason="length")], c.Usage(2, 1)), req, echo)
    assert obj["object"] == "text_completion" and obj["id"].startswith("cmpl-")
    assert obj["choices"] == [{"text": "Hi: there", "index": 0, "logprobs": None, "finish_reason": "length"}]
    assert obj["usage"]["prompt_tokens"] == 2 and obj["usage"]["total_tokens"] == 3


def test_stream_echo_comes_first_for_each_choice() -> None:
    events = parse_sse(encode(load("stream_two_choices.json")["request"] | {"echo": True},
                              load("stream_two_choices.json")["events"]))
    assert [ch["choices"][0]["text"] for ch in events[:2]] == ["Go", "Go"]
    assert texts(events) == {0: "GoAa", 1: "GoBb"}


def test_stream_failure_is_an_error_payload() -> None:
    front = CompletionsFrontend()
    req, ctx = completions.parse({"model": "m", "prompt": "x", "stream": True})
    enc = front.encoder(req, ctx)
    raw = enc.start() + enc.feed(c.TextDelta(0, "par")) + enc.fail(GatewayError(502, "boom", code="upstream_error"))
    events = parse_sse(raw)
    assert "[DONE]" not in events and events[-1] == {"error": {"message": "boom", "type": "server_error",
                                                               "param": None, "code": "upstream_error"}}


def test_tool_calls_finish_is_reported_as_stop() -> None:
    front = CompletionsFrontend()
    req, ctx = completions.parse({"model": "m", "prompt": "x"})
    obj = front.render(c.Completion([c.Choice(text="t", finish_reason="tool_calls")]), req, ctx)
    assert obj["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("body, param", [
    ({"prompt": "x"}, "model"),
    ({"model": "m"}, "prompt"),
    ({"model": "m", "prompt": ""}, "prompt"),
    ({"model": "m", "prompt": ["a", "b"]}, "prompt"),
    ({"model": "m", "prompt": []}, "prompt"),
    ({"model": "m", "prompt": [1, 2, 3]}, "prompt"),
    ({"model": "m", "prompt": [[1, 2]]}, "prompt"),
    ({"model": "m", "prompt": "x", "suffix": "end"}, "suffix"),
    ({"model": "m", "prompt": "x", "logprobs": 2}, "logprobs"),
    ({"model": "m", "prompt": "x", "logprobs": 9}, "logprobs"),
    ({"model": "m", "prompt": "x", "best_of": 3}, "best_of"),
    ({"model": "m", "prompt": "x", "n": 2, "best_of": 1}, "best_of"),
    ({"model": "m", "prompt": "x", "stream_options": {"include_usage": True}}, "stream_options"),
    ({"model": "m", "prompt": "x", "max_tokens": 0}, "max_tokens"),
    ({"model": "m", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"model": "m", "prompt": "x", "n": 9}, "n"),
    ({"model": "m", "prompt": "x", "temperature": -1}, "temperature"),
])
def test_bad_requests_name_the_param(body: dict[str, Any], param: str) -> None:
    err = err_of(body)
    assert (err.status, err.param, err.type) == (400, param, "invalid_request_error")


def test_token_prompts_and_suffix_say_why() -> None:
    assert "Token-array" in err_of({"model": "m", "prompt": [1, 2]}).message
    assert err_of({"model": "m", "prompt": "x", "suffix": "y"}).code == "unsupported_parameter"
    assert err_of(["x"]).code == "invalid_json"
