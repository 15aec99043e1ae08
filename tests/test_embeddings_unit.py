"""Pure tests of the embeddings translation: OpenAI's request -> each upstream's body, each
upstream's answer -> OpenAI's `list` object (float and base64), and the chunking that survives a
failed account.

Fixtures in tests/fixtures/embeddings/: `request_*.json` -> `.golden.json` (the Gemini API, Vertex
and OpenAI-compatible bodies), `response_*.json` ({upstream, request, body}) -> `.golden.json` (what
the client gets). `UPDATE_GOLDEN=1 pytest tests/test_embeddings_unit.py` regenerates them (review the
diff). Every Gemini body is also checked against google-genai's types (Content, EmbedContentConfig).
"""

from __future__ import annotations

import asyncio
import base64
import struct
from pathlib import Path
from typing import Any

import pytest
from google.genai import types

from addon.backends import embeddings as emb
from addon.frontends import embeddings as front
from addon.protocol import batching, jsonfast
from addon.protocol import canonical as c
from addon.protocol.errors import GatewayError, UpstreamError
from tests.golden import cases, golden, load

DIR = Path(__file__).parent / "fixtures" / "embeddings"


def check_gemini(body: dict[str, Any]) -> None:
    """google-genai's request types accept every piece of a BatchEmbedContentsRequest."""
    assert set(body) == {"requests"}
    for one in body["requests"]:
        types.Content.model_validate(one["content"])
        types.EmbedContentConfig.model_validate({k: v for k, v in one.items() if k not in ("model", "content")})
        assert one["model"].startswith("models/")


@pytest.mark.parametrize("case", cases(DIR, "request_"))
def test_requests(case: str) -> None:
    req, as_base64 = front.parse(load(DIR / f"request_{case}.json"))
    gemini = emb.gemini_batch_body(req, "gemini-embedding-001")
    check_gemini(gemini)
    first = c.EmbedRequest(req.model, req.inputs[:1], req.dimensions, req.task_type, req.title)
    vertex_content = emb.vertex_embed_content_body(first)
    types.Content.model_validate(vertex_content["content"])
    types.EmbedContentConfig.model_validate(vertex_content.get("embedContentConfig", {}))
    golden(DIR / f"request_{case}.golden.json", {
        "base64": as_base64,
        "gemini": gemini,
        "vertex_predict": emb.vertex_predict_body(req),
        "vertex_embed_content": vertex_content,
        "openai": emb.openai_body(req, "upstream-embedder"),
    })


def _decode(upstream: str, raw: bytes, req: c.EmbedRequest) -> c.Embeddings:
    n, shortened = len(req.inputs), req.dimensions is not None
    if upstream == "gemini":
        return emb.gemini_embeddings_from(raw, n, shortened)
    if upstream == "vertex":
        return emb.vertex_embeddings_from(raw, n, shortened)
    return emb.openai_embeddings_from(raw, n)


@pytest.mark.parametrize("case", cases(DIR, "response_"))
def test_responses(case: str) -> None:
    fixture = load(DIR / f"response_{case}.json")
    req, as_base64 = front.parse(fixture["request"])
    result = _decode(fixture["upstream"], jsonfast.dumps(fixture["body"]), req)
    rendered = front.render(req, result, as_base64, front.usage_tokens(req, result))
    golden(DIR / f"response_{case}.golden.json", rendered)


def test_base64_is_little_endian_float32() -> None:
    req = c.EmbedRequest("m", ["a"])
    out = front.render(req, c.Embeddings([[1.0, -2.5, 0.1]]), True, 1)
    raw = base64.b64decode(out["data"][0]["embedding"])
    assert raw == b"\x00\x00\x80\x3f" + b"\x00\x00\x20\xc0" + struct.pack("<f", 0.1)
    assert list(struct.unpack("<3f", raw))[:2] == [1.0, -2.5]


def test_shortened_vectors_get_unit_length_and_full_ones_stay() -> None:
    raw = jsonfast.dumps({"embeddings": [{"values": [3.0, 4.0]}]})
    assert emb.gemini_embeddings_from(raw, 1, shortened=True).vectors == [[0.6, 0.8]]
    assert emb.gemini_embeddings_from(raw, 1).vectors == [[3.0, 4.0]]


@pytest.mark.parametrize("body", [
    b"not json", b"[]", b'{"embeddings": {}}', b'{"embeddings": [{"values": [1]}, {"values": [2]}]}',
    b'{"embeddings": [{"values": []}]}', b'{"embeddings": [{"values": ["x"]}]}', b'{"embeddings": [{}]}',
])
def test_malformed_answers_are_502(body: bytes) -> None:
    with pytest.raises(UpstreamError) as exc:
        emb.gemini_embeddings_from(body, 1)
    assert exc.value.status == 502


def test_token_estimate_and_upstream_counts() -> None:
    assert batching.estimate_tokens(["abcd", "abcde", "x"]) == 1 + 2 + 1
    req = c.EmbedRequest("m", ["abcdefgh"])
    assert front.usage_tokens(req, c.Embeddings([[1.0]], None)) == 2
    assert front.usage_tokens(req, c.Embeddings([[1.0]], 9)) == 9
    missing = jsonfast.dumps({"predictions": [{"embeddings": {"values": [1.0]}}]})
    assert emb.vertex_embeddings_from(missing, 1).input_tokens is None


def test_vertex_limits_per_model() -> None:
    assert emb.vertex_method("text-embedding-005") == "predict" and emb.vertex_batch_size("text-embedding-005") == 250
    assert emb.vertex_method("gemini-embedding-001") == "predict" and emb.vertex_batch_size("gemini-embedding-001") == 1
    assert emb.vertex_method("gemini-embedding-2") == "embedContent" and emb.vertex_batch_size("gemini-embedding-2") == 1


@pytest.mark.parametrize("body,param", [
    ({"model": "m", "input": [[1, 2]]}, "input"),
    ({"model": "m", "input": ["a"] * (front.MAX_INPUTS + 1)}, "input"),
    ({"model": "m", "input": "a", "dimensions": -1}, "dimensions"),
    ({"model": "m", "input": "a", "task_type": "nonsense"}, "task_type"),
    ({"model": "m"}, "input"),
    ({"input": "a"}, "model"),
])
def test_parse_refuses(body: dict[str, Any], param: str) -> None:
    with pytest.raises(GatewayError) as exc:
        front.parse(body)
    assert exc.value.status == 400 and exc.value.param == param


class FlakyProvider:
    """Fails one chunk on its first account; records what each account was asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    async def embed(self, acc: str, req: c.EmbedRequest, model: str) -> c.Embeddings:
        self.asked.append((acc, req.inputs[0]))
        if acc == "first" and req.inputs[0] == "t100":
            raise UpstreamError(429, "quota")
        await asyncio.sleep(0)
        return c.Embeddings([[float(t[1:])] for t in req.inputs], len(req.inputs))


def test_chunks_done_on_a_failed_account_are_not_asked_again() -> None:
    provider = FlakyProvider()
    req = c.EmbedRequest("m", [f"t{i}" for i in range(350)])

    async def run(model: str, op: front.Op) -> c.Embeddings:  # the pool's retry loop, reduced to its order
        for acc in ("first", "second"):
            try:
                return await op(provider, acc, "upstream-model")
            except UpstreamError:
                continue
        raise AssertionError("no account left")

    result = asyncio.run(front.embed_all(req, run))
    assert [v[0] for v in result.vectors] == [float(i) for i in range(350)] and result.input_tokens == 350
    second = [first for acc, first in provider.asked if acc == "second"]
    assert "t100" in second and "t0" not in second  # the first chunk came from the first account


def test_large_answers_decode_off_the_event_loop() -> None:
    body = {"embeddings": [{"values": [0.5] * 3072} for _ in range(100)]}
    raw = jsonfast.dumps(body)
    assert len(raw) > batching.OFF_LOOP_BYTES

    async def main() -> tuple[c.Embeddings, bool]:
        loop_thread = []

        def spy(data: bytes, n: int) -> c.Embeddings:
            import threading
            loop_thread.append(threading.current_thread() is threading.main_thread())
            return emb.gemini_embeddings_from(data, n)

        result = await batching.decode(spy, raw, 100)
        return result, loop_thread[0]

    result, on_loop = asyncio.run(main())
    assert len(result.vectors) == 100 and not on_loop
