"""POST /v1/embeddings through a real mitmdump, with the official openai SDK as the client.

The emulator's vectors are deterministic (tests.emulator.embeddings.fake_vector), so every answer is
checked value by value: the SDK's default base64 (little-endian float32) to the last bit, floats,
`dimensions` (Google's shortened vectors rescaled to unit length, as OpenAI's are), order across
split batches, rotation, and every refusal in OpenAI's error shape.
"""

from __future__ import annotations

import base64
import math
import struct

import httpx
import openai
import pytest

from tests.conftest import Emulator, Gateway, GatewayFactory, gemini_accounts, wait_for
from tests.emulator.embeddings import fake_vector

pytestmark = pytest.mark.e2e

WIDE = 3072  # gemini-embedding-001's full width


def f32(values: list[float]) -> list[float]:
    """What little-endian float32 makes of `values` (what base64 carries)."""
    return list(struct.unpack(f"<{len(values)}f", struct.pack(f"<{len(values)}f", *values)))


def unit(values: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in values))
    return [v / norm for v in values]


def close(a: list[float], b: list[float], tol: float = 1e-6) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= tol for x, y in zip(a, b))


def sample(metrics: str, name: str, **labels: str) -> float:
    """The value of the one sample of `name` whose labels include `labels`."""
    found = [float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith(name + "{")
             and all(f'{k}="{v}"' in line.split("}")[0] for k, v in labels.items())]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def embed_calls(emu: Emulator, verb: str = ":batchEmbedContents") -> list[dict]:
    return [e for e in emu.log() if e["path"].endswith(verb)]


@pytest.fixture(scope="module")
def pair(gateways: GatewayFactory, emulator_proc: Emulator) -> Gateway:
    """Two Gemini API keys, for rotation."""
    return gateways.start(gemini_accounts(emulator_proc.url, "emb-alice", "emb-bob"))


def test_default_base64_is_little_endian_float32(gateway: Gateway, emulator: Emulator) -> None:
    raw = httpx.post(f"{gateway.v1}/embeddings", json={"model": "gemini-embedding-001", "input": "hello world",
                                                       "encoding_format": "base64"}, timeout=20)
    assert raw.status_code == 200, raw.text
    packed = base64.b64decode(raw.json()["data"][0]["embedding"])
    assert packed == struct.pack(f"<{WIDE}f", *fake_vector("hello world", WIDE))  # byte for byte

    res = gateway.openai().embeddings.create(model="gemini-embedding-001", input="hello world")  # SDK: base64
    assert res.object == "list" and res.model == "gemini-embedding-001"
    assert res.data[0].object == "embedding" and res.data[0].index == 0
    assert res.data[0].embedding == f32(fake_vector("hello world", WIDE))
    assert res.usage.prompt_tokens == res.usage.total_tokens == 3  # estimate: 11 characters / 4, rounded up
    calls = embed_calls(emulator)
    assert calls[-1]["body"] == {"requests": [{"model": "models/gemini-embedding-001",
                                               "content": {"parts": [{"text": "hello world"}]}}]}
    assert calls[-1]["key"] == "alice"  # the pool's key, never the client's


def test_float_dimensions_mapping_and_task_type(gateway: Gateway, emulator: Emulator) -> None:
    client = gateway.openai()
    raw = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input=["a b", "c"],
                                                     encoding_format="float", dimensions=256,
                                                     extra_body={"task_type": "retrieval_query"}, user="u-1")
    assert raw.headers["x-mapped-model"] == "gemini-embedding-001"
    res = raw.parse()
    assert [d.index for d in res.data] == [0, 1] and res.model == "text-embedding-3-small"
    for d, text in zip(res.data, ["a b", "c"]):
        assert close(d.embedding, unit(fake_vector(text, WIDE)[:256]))
        assert abs(math.sqrt(sum(v * v for v in d.embedding)) - 1) < 1e-9  # unit length, as OpenAI's
    (call,) = embed_calls(emulator)
    assert [r["outputDimensionality"] for r in call["body"]["requests"]] == [256, 256]
    assert {r["taskType"] for r in call["body"]["requests"]} == {"RETRIEVAL_QUERY"}
    assert "u-1" not in str(call["body"])  # `user` is not sent upstream

    # The shipped mapping gives text-embedding-3-small OpenAI's default width.
    res = client.embeddings.create(model="text-embedding-3-small", input="x", encoding_format="float")
    assert len(res.data[0].embedding) == 1536


def test_600_inputs_come_back_whole_and_in_order(gateway: Gateway, emulator: Emulator) -> None:
    texts = [f"text number {i}" for i in range(600)]
    res = gateway.openai().embeddings.create(model="gemini-embedding-001", input=texts, dimensions=8)
    assert [d.index for d in res.data] == list(range(600))
    for d, text in zip(res.data, texts):
        assert close(d.embedding, unit(fake_vector(text, WIDE)[:8]))
    calls = embed_calls(emulator)
    assert sorted(len(c["body"]["requests"]) for c in calls) == [100] * 6  # Google's limit per call
    sent = [r["content"]["parts"][0]["text"] for c in calls for r in c["body"]["requests"]]
    assert sorted(sent) == sorted(texts)
    assert res.usage.prompt_tokens == sum(math.ceil(len(t) / 4) for t in texts)


def test_rotation_on_429_from_the_first_account(pair: Gateway, emulator: Emulator) -> None:
    emulator.rules({"match": {"key": "emb-alice"}, "times": 1, "status": 429, "retry_delay": "30s"})
    emulator.rules({"match": {"key": "emb-alice"}, "status": 500})  # alice stays out of this test
    raw = pair.openai().embeddings.with_raw_response.create(model="gemini-embedding-001", input=["one", "two"])
    assert raw.headers["x-account-email"] == "emb-bob@example.com"
    assert [d.embedding for d in raw.parse().data] == [f32(fake_vector(t, WIDE)) for t in ("one", "two")]
    assert [c["key"] for c in embed_calls(emulator)] == ["emb-alice", "emb-bob"]
    log = pair.log()
    assert "outcome=rotated" in log and "attempts=emb-alice@example.com:429,emb-bob@example.com:200" in log
    assert "route=/v1/embeddings" in log and "mapped_model=gemini-embedding-001" in log
    metrics = httpx.get(f"{pair.url}/metrics", timeout=5).text
    assert sample(metrics, "gateway_requests_total", route="/v1/embeddings", outcome="rotated", status="200",
                  client_model="gemini-embedding-001", mapped_model="gemini-embedding-001",
                  account="emb-bob@example.com") == 1
    assert sample(metrics, "gateway_tokens_total", direction="in", mapped_model="gemini-embedding-001",
                  account="emb-bob@example.com") == 2  # "one", "two": estimated, a token each


def test_a_failure_mid_way_resends_only_the_missing_batches(gateways: GatewayFactory, emulator: Emulator) -> None:
    gw = gateways.start(gemini_accounts(emulator.url, "mid-alice", "mid-bob"))
    emulator.rules({"match": {"key": "mid-alice", "path_contains": "batchEmbedContents"}, "times": 1,
                    "status": 503, "delay_ms": 300},
                   {"match": {"key": "mid-alice"}, "status": 503})
    texts = [f"t{i}" for i in range(250)]
    res = gw.openai().embeddings.create(model="gemini-embedding-001", input=texts, dimensions=4)
    assert [d.embedding for d in res.data] == [f32(unit(fake_vector(t, WIDE)[:4])) for t in texts]
    bob = [c for c in embed_calls(emulator) if c["key"] == "mid-bob"]
    assert 1 <= len(bob) <= 3 and sum(len(c["body"]["requests"]) for c in bob) <= 250


def test_refusals_are_openai_shaped(gateway: Gateway, emulator: Emulator) -> None:
    client = gateway.openai()
    cases = [
        ({"input": [[1, 2, 3]]}, "input", "Token-id inputs are not supported"),
        ({"input": [1, 2, 3]}, "input", "Token-id inputs are not supported"),
        ({"input": []}, "input", "must not be empty"),
        ({"input": ["a", ""]}, "input[1]", "must not be an empty string"),
        ({"input": ""}, "input", "must not be an empty string"),
        ({"input": ["a"] * 2049}, "input", "at most 2048"),
        ({"input": "a", "dimensions": 0}, "dimensions", "between 1 and"),
        ({"input": "a", "dimensions": 10**9}, "dimensions", "between 1 and"),
        ({"input": "a", "task_type": "SUMMARIZE"}, "task_type", "must be one of"),
        ({"input": "a", "encoding_format": "int8"}, "encoding_format", "Invalid"),
        ({}, "input", "Missing required parameter"),
    ]
    for body, param, words in cases:
        r = httpx.post(f"{gateway.v1}/embeddings", json={"model": "gemini-embedding-001", **body}, timeout=20)
        err = r.json()["error"]
        assert r.status_code == 400 and err["param"] == param and words in err["message"], (body, err)
        assert err["type"] == "invalid_request_error" and set(err) == {"message", "type", "param", "code"}
    with pytest.raises(openai.BadRequestError) as exc:  # the SDK raises its usual class
        client.embeddings.create(model="gemini-embedding-001", input=[[1, 2]])
    assert exc.value.body["code"] == "unsupported_parameter"
    assert embed_calls(emulator) == []  # none reached an upstream

    with pytest.raises(openai.NotFoundError) as nf:  # Google shut text-embedding-004 down on 2026-01-14
        client.embeddings.create(model="text-embedding-004", input="x")
    assert "models/text-embedding-004 is not found" in nf.value.message
    r = httpx.get(f"{gateway.v1}/embeddings", timeout=5)
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    r = httpx.post(f"{gateway.url}/embeddings", json={"model": "gemini-embedding-2", "input": "no v1 prefix"},
                   timeout=20)
    assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == WIDE  # floats by default
    assert r.json()["usage"]["prompt_tokens"] == 3  # gemini-embedding-2 reports usageMetadata (3 words)


def test_cloud_code_accounts_do_not_embed(gateways: GatewayFactory, emulator: Emulator) -> None:
    cloudcode = f"""
  - provider: cloudcode
    email: cc@example.com
    refresh_token: 1//rt-cc
    client_id: cc.apps.googleusercontent.com
    client_secret: GOCSPX-cc
    project: project-cc
    token_url: {emulator.url}/token
    base_url: {emulator.url}"""
    alone = gateways.start("accounts:" + cloudcode)
    with pytest.raises(openai.BadRequestError) as exc:
        alone.openai().embeddings.create(model="gemini-embedding-001", input="x")
    assert "Embeddings are not served by 'cloudcode' accounts" in exc.value.message
    assert exc.value.body["code"] == "unsupported_operation"
    mixed = gateways.start(gemini_accounts(emulator.url, "mixed-gem") + cloudcode)
    for _ in range(3):  # round robin would reach the Cloud Code account: it is skipped
        raw = mixed.openai().embeddings.with_raw_response.create(model="gemini-embedding-001", input="x")
        assert raw.headers["x-account-email"] == "mixed-gem@example.com"
    assert not [e for e in emulator.log() if e["path"].startswith("/v1internal")]


def test_vertex_predict_and_embed_content(gateways: GatewayFactory, emulator: Emulator) -> None:
    gw = gateways.start(f"""
accounts:
  - provider: vertex
    label: vertex-express
    api_key: AQ.vertex-emb
    base_url: {emulator.url}
""")
    client = gw.openai()
    res = client.embeddings.create(model="text-embedding-005", input=["one two", "three"], dimensions=16)
    assert [d.embedding for d in res.data] == [f32(unit(fake_vector(t, 768)[:16])) for t in ("one two", "three")]
    assert res.usage.prompt_tokens == 3  # Vertex's statistics.token_count, added up
    (call,) = embed_calls(emulator, ":predict")
    assert call["body"] == {"instances": [{"content": "one two"}, {"content": "three"}],
                            "parameters": {"outputDimensionality": 16}}
    res = client.embeddings.create(model="gemini-embedding-001", input=["a", "b", "c"])  # one instance per call
    assert [d.embedding for d in res.data] == [f32(fake_vector(t, WIDE)) for t in "abc"]
    assert len(embed_calls(emulator, ":predict")) == 4
    res = client.embeddings.create(model="gemini-embedding-2", input=["x y", "z"])  # :embedContent, one each
    assert [d.embedding for d in res.data] == [f32(fake_vector(t, WIDE)) for t in ("x y", "z")]
    assert len(embed_calls(emulator, ":embedContent")) == 2 and res.usage.prompt_tokens == 3


def test_openai_compatible_upstream_is_passed_through(gateways: GatewayFactory, emulator: Emulator) -> None:
    gw = gateways.start(f"""
accounts:
  - provider: openai
    label: oai-emb
    base_url: {emulator.url}/openai/v1
    api_key: sk-oai-emb
""", mappings_yaml='mappings:\n  "*": ~\n')
    res = gw.openai().embeddings.create(model="text-embedding-3-large", input=["p q r", "s"], dimensions=32)
    assert [d.embedding for d in res.data] == [f32(fake_vector(t, 3072)[:32]) for t in ("p q r", "s")]
    assert res.usage.prompt_tokens == 4  # the upstream's count
    (call,) = [e for e in emulator.log() if e["path"] == "/openai/v1/embeddings"]
    assert call["body"] == {"model": "text-embedding-3-large", "input": ["p q r", "s"], "encoding_format": "float",
                            "dimensions": 32}


def test_model_lists_know_embedding_models(gateways: GatewayFactory, emulator: Emulator) -> None:
    """With the model lists on (the default), each embedding model goes to the account whose upstream
    lists it: the Gemini API lists its embedders with embedContent, an OpenAI-compatible server its own
    in GET /models (either account would otherwise be asked, and the other's 404 returned)."""
    gw = gateways.start(gemini_accounts(emulator.url, "lists-gem") + f"""
  - provider: openai
    label: lists-oai
    base_url: {emulator.url}/openai/v1
    api_key: sk-lists
""", mappings_yaml='mappings:\n  "*": ~\n', check_models="true")
    client = gw.openai()

    def account(model: str) -> str | None:
        try:
            raw = client.embeddings.with_raw_response.create(model=model, input="listed", encoding_format="float")
        except openai.APIStatusError:
            return None
        return raw.headers["x-account-email"]

    wait_for(lambda: "lists-oai" == account("text-embedding-3-small") and "lists-oai" == account(
        "text-embedding-3-small"), what="the upstreams' model lists")
    assert {account("text-embedding-3-small") for _ in range(4)} == {"lists-oai"}
    assert {account("gemini-embedding-001") for _ in range(4)} == {"lists-gem@example.com"}


def test_chat_on_an_embedding_model_is_a_clear_400(gateway: Gateway, emulator: Emulator) -> None:
    """Refused before any upstream call (whose 404 would also rest the embedding model on the account)."""
    client = gateway.openai()
    for call in (lambda: client.chat.completions.create(model="text-embedding-3-small",
                                                        messages=[{"role": "user", "content": "hi"}]),
                 lambda: client.responses.create(model="gemini-embedding-001", input="hi")):
        with pytest.raises(openai.BadRequestError) as exc:
            call()
        assert exc.value.body["code"] == "model_not_supported" and "POST /v1/embeddings" in exc.value.message
    assert emulator.log() == []
    res = client.embeddings.create(model="gemini-embedding-001", input="still served")
    assert res.data[0].embedding == f32(fake_vector("still served", WIDE))
