"""The Gemini-native surface's pure parts: what one attempt sends (golden JSON in
tests/fixtures/gemini_native/), Google's error envelope and the two stream framings."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from addon.backends.gemini import native as gn
from addon.frontends.gemini_wire import ArrayFraming, SSEFraming, error_object, framed, models_page
from addon.protocol import canonical as c
from addon.protocol.errors import GatewayError, UpstreamError
from tests.golden import cases, golden, load

DIR = Path(__file__).parent / "fixtures" / "gemini_native"


@pytest.mark.parametrize("case", cases(DIR, "attempt_"))
def test_what_one_attempt_sends(case: str) -> None:
    spec = load(DIR / f"attempt_{case}.json")
    before = json.dumps(spec["body"], sort_keys=True)
    sent = gn.for_account(spec["body"], spec["verb"], spec["model"], origin=spec["origin"],
                          origins=spec.get("origins"), safety=spec.get("safety"),
                          trust_signatures=spec.get("trust", True))
    assert json.dumps(spec["body"], sort_keys=True) == before, "the client's body is never changed"
    out: dict[str, Any] = {"sent": sent, "signatures_sent": gn.sent_signatures(spec["body"], spec["verb"])}
    if spec["verb"] == gn.COUNT:
        out["vertex"] = gn.vertex_count_body(sent)
        out["cloudcode"] = gn.cloudcode_count_body(sent, spec["model"])
    if spec["verb"] in (gn.EMBED, gn.BATCH_EMBED):
        out["embed_groups"] = [{"positions": pos, "inputs": req.inputs, "task_type": req.task_type,
                                "dimensions": req.dimensions, "title": req.title}
                               for pos, req in gn.embed_groups(sent, spec["verb"], "client-model")]
    golden(DIR / f"attempt_{case}.golden.json", out)


def test_embeddings_come_back_in_request_order() -> None:
    body = {"requests": [{"content": {"parts": [{"text": t}]}, **extra}
                         for t, extra in (("a", {"taskType": "CLUSTERING"}), ("b", {}), ("c", {"taskType": "CLUSTERING"}))]}
    groups = gn.embed_groups(body, gn.BATCH_EMBED, "m")
    assert [pos for pos, _ in groups] == [[0, 2], [1]]
    parts = [(pos, c.Embeddings([[float(ord(t))] for t in req.inputs])) for pos, req in groups]
    assert gn.embed_answer(gn.BATCH_EMBED, 3, parts) == {"embeddings": [{"values": [97.0]}, {"values": [98.0]},
                                                                        {"values": [99.0]}]}
    assert gn.embed_answer(gn.EMBED, 1, [([0], c.Embeddings([[1.0]]))]) == {"embedding": {"values": [1.0]}}


@pytest.mark.parametrize("body, words", [
    ({"requests": []}, "requests is required"),
    ({"requests": [{"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": "AA=="}}]}}]},
     "only text parts"),
    ({"requests": [{"content": {"parts": [{"text": "a"}]}, "outputDimensionality": -1}]}, "positive integer"),
    ({"requests": [{"content": {"parts": [{"text": "a"}]}, "taskType": "GUESSING"}]}, "task_type"),
])
def test_embed_bodies_other_upstreams_cannot_take_are_a_clear_400(body: dict[str, Any], words: str) -> None:
    with pytest.raises(GatewayError) as exc:
        gn.embed_groups(body, gn.BATCH_EMBED, "m")
    assert exc.value.status == 400 and words in exc.value.message


def test_answers_are_read_for_signatures_and_usage() -> None:
    answer = {"candidates": [{"content": {"role": "model", "parts": [
        {"text": "thinking", "thought": True}, {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "S1"}]}}],
        "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 2, "thoughtsTokenCount": 3,
                          "totalTokenCount": 10}}
    assert gn.answer_signatures(answer) == ["S1"]
    usage = gn.usage(answer)
    assert (usage.input_tokens, usage.reasoning_tokens) == (5, 3)
    assert gn.unwrap_cloudcode({"response": answer, "traceId": "t"}) is answer
    assert gn.signature_key("S1") == gn.signature_key("S1") != gn.signature_key("S2")


@pytest.mark.parametrize("status, name", [(400, "INVALID_ARGUMENT"), (401, "UNAUTHENTICATED"),
                                          (403, "PERMISSION_DENIED"), (404, "NOT_FOUND"),
                                          (413, "INVALID_ARGUMENT"), (429, "RESOURCE_EXHAUSTED"),
                                          (500, "INTERNAL"), (502, "UNAVAILABLE"), (503, "UNAVAILABLE")])
def test_errors_take_googles_envelope_and_status_names(status: int, name: str) -> None:
    err = GatewayError(status, "why", code="x", headers={"retry-after": "7"} if status == 429 else {})
    body = error_object(err)["error"]
    assert (body["code"], body["message"], body["status"]) == (status, "why", name)
    if status == 429:
        assert body["details"] == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]
    else:
        assert "details" not in body


async def _collect(batches: list[list[Any]], framing: Any, fail: UpstreamError | None = None) -> bytes:
    async def source():
        for batch in batches:
            yield batch
        if fail is not None:
            raise fail

    failures: list[str] = []
    out = b"".join([chunk async for chunk in framed(source(), framing, on_event=lambda ev: None,
                                                   on_failure=failures.append, redact=lambda t: t.replace("k3y", "[r]"))])
    assert bool(failures) == (fail is not None)
    return out


def test_sse_framing_is_googles_and_ends_with_its_error_object() -> None:
    ok = asyncio.run(_collect([[{"a": 1}], [{"b": 2}]], SSEFraming()))
    assert ok == b'data: {"a":1}\r\n\r\ndata: {"b":2}\r\n\r\n'
    cut = asyncio.run(_collect([[{"a": 1}]], SSEFraming(), UpstreamError(0, "gone with k3y")))
    last = cut.split(b"\r\n\r\n")[-2].removeprefix(b"data: ")
    assert json.loads(last) == {"error": {"code": 502, "message": "Upstream stream failed: gone with [r]",
                                          "status": "UNAVAILABLE"}}


def test_json_array_framing_is_one_array_even_when_cut() -> None:
    assert json.loads(asyncio.run(_collect([[{"a": 1}, {"b": 2}], [{"c": 3}]], ArrayFraming()))) == \
        [{"a": 1}, {"b": 2}, {"c": 3}]
    assert asyncio.run(_collect([], ArrayFraming())) == b"[]"
    cut = json.loads(asyncio.run(_collect([[{"a": 1}]], ArrayFraming(), UpstreamError(503, "overloaded"))))
    assert cut[0] == {"a": 1} and cut[1]["error"]["status"] == "UNAVAILABLE"


def test_models_are_paged_like_googles_list() -> None:
    names = [f"m{i}" for i in range(5)]
    first = models_page(names, lambda n: "gemini-x", {"pageSize": "2"})
    assert [m["name"] for m in first["models"]] == ["models/m0", "models/m1"] and first["nextPageToken"] == "2"
    last = models_page(names, lambda n: "gemini-embedding-001", {"pageSize": "2", "pageToken": "4"})
    assert "nextPageToken" not in last and last["models"][0]["supportedGenerationMethods"][0] == "embedContent"
    with pytest.raises(GatewayError):
        models_page(names, str, {"pageToken": "x"})
