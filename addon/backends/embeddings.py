"""Embedding requests in each upstream's wire format, and their answers back. Pure, no I/O.

* Gemini API, `POST /v1beta/models/{model}:batchEmbedContents`: `{"requests": [{"model":
  "models/{model}", "content": {"parts": [{"text"}]}, "taskType", "title", "outputDimensionality"},
  ...]}`, at most GEMINI_BATCH requests per call; the answer is `{"embeddings": [{"values"}], ...}`
  in the same order, with `usageMetadata.promptTokenCount` when Google reports it.
* Vertex AI, `POST .../publishers/google/models/{model}:predict` (Vertex's text embeddings API):
  `{"instances": [{"content", "task_type", "title"}], "parameters": {"outputDimensionality"}}`,
  at most VERTEX_BATCH instances per call, and `gemini-embedding-001` only one (Vertex answers more
  with "batchSize must be 1"); the answer is
  `{"predictions": [{"embeddings": {"values", "statistics": {"token_count", "truncated"}}}]}`.
  Vertex serves its newer Gemini embedding models (gemini-embedding-2) only at `:embedContent`,
  one text per call: `{"content", "embedContentConfig": {"taskType", "title", "outputDimensionality"}}`
  -> `{"embedding": {"values"}, "usageMetadata": {"promptTokenCount"}}` (as google-genai sends them).
* Google's vectors are unit length only at the model's full width; a shorter one (`outputDimensionality`)
  is rescaled to unit length here, as OpenAI's always are (clients compare them by dot product).
* OpenAI-compatible servers, `POST {base}/embeddings`: OpenAI's own shape; vectors asked as floats
  (the front end encodes base64 itself, so every upstream's answer is handled alike).
"""

from __future__ import annotations

import math
from typing import Any

from ..protocol import canonical as c
from ..protocol import jsonfast
from ..protocol.errors import UpstreamError

GEMINI_BATCH = 100  # Google: "BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch"
VERTEX_BATCH = 250  # Vertex's text embeddings API: at most 250 input texts per request
VERTEX_SINGLE = ("gemini-embedding-001",)  # Vertex serves these one instance per request
MAX_DIMENSIONS = 65536  # what a sane vector holds; checks the upstream's answer, not the client


def is_embedding_model(model: str | None) -> bool:
    """Google's embedding models (gemini-embedding-001, text-embedding-005, text-multilingual-embedding-002)
    all say so in their names; they serve only the embedding methods."""
    return model is not None and "embedding" in model


def vertex_method(model: str) -> str:
    """`predict` (the text embeddings API) or `embedContent` (Vertex's newer Gemini embedding models)."""
    return "embedContent" if "gemini" in model and model not in VERTEX_SINGLE else "predict"


def vertex_batch_size(model: str) -> int:
    return VERTEX_BATCH if vertex_method(model) == "predict" and model not in VERTEX_SINGLE else 1


# ---- Gemini API --------------------------------------------------------------------------

def _config(req: c.EmbedRequest) -> dict[str, Any]:
    """The options of a Gemini embedContent request (the Gemini API's and Vertex's spell them alike)."""
    config: dict[str, Any] = {}
    if req.task_type:
        config["taskType"] = req.task_type
    if req.title:
        config["title"] = req.title
    if req.dimensions is not None:
        config["outputDimensionality"] = req.dimensions
    return config


def gemini_batch_body(req: c.EmbedRequest, model: str) -> dict[str, Any]:
    """A BatchEmbedContentsRequest for all of `req.inputs` (the caller keeps it to GEMINI_BATCH)."""
    one: dict[str, Any] = {"model": f"models/{model}", **_config(req)}
    return {"requests": [{**one, "content": {"parts": [{"text": text}]}} for text in req.inputs]}


def unit_length(vectors: list[list[float]]) -> list[list[float]]:
    out = []
    for v in vectors:
        norm = math.hypot(*v)
        out.append([x / norm for x in v] if norm > 0 else v)
    return out


def gemini_embeddings_from(raw: bytes, expected: int, shortened: bool = False) -> c.Embeddings:
    """A BatchEmbedContentsResponse (or an EmbedContentResponse) -> canonical embeddings;
    `shortened`: outputDimensionality was asked for (the vectors are rescaled to unit length)."""
    body = _object(raw)
    items = body.get("embeddings")
    if items is None and "embedding" in body:
        items = [body["embedding"]]
    vectors = [_values(item) for item in _list(items, expected)]
    usage = body.get("usageMetadata")
    tokens = usage.get("promptTokenCount") if isinstance(usage, dict) else None
    return c.Embeddings(unit_length(vectors) if shortened else vectors, tokens if _count(tokens) else None)


# ---- Vertex AI ---------------------------------------------------------------------------

def vertex_predict_body(req: c.EmbedRequest) -> dict[str, Any]:
    """A text embeddings `:predict` request for all of `req.inputs` (the caller keeps it within
    vertex_batch_size)."""
    extra: dict[str, Any] = {}
    if req.task_type:
        extra["task_type"] = req.task_type
    if req.title:
        extra["title"] = req.title
    body: dict[str, Any] = {"instances": [{"content": text, **extra} for text in req.inputs]}
    if req.dimensions is not None:
        body["parameters"] = {"outputDimensionality": req.dimensions}
    return body


def vertex_embed_content_body(req: c.EmbedRequest) -> dict[str, Any]:
    """Vertex's `:embedContent` for the one text of `req`."""
    config = _config(req)
    body: dict[str, Any] = {"content": {"role": "user", "parts": [{"text": req.inputs[0]}]}}
    if config:
        body["embedContentConfig"] = config
    return body


def vertex_embeddings_from(raw: bytes, expected: int, shortened: bool = False) -> c.Embeddings:
    predictions = _list(_object(raw).get("predictions"), expected)
    vectors, tokens = [], 0
    for p in predictions:
        emb = p.get("embeddings") if isinstance(p, dict) else None
        if not isinstance(emb, dict):
            raise _malformed("prediction")
        vectors.append(_values(emb))
        stats = emb.get("statistics")
        count = stats.get("token_count") if isinstance(stats, dict) else None
        tokens = tokens + int(count) if tokens is not None and _count(count) else None
    return c.Embeddings(unit_length(vectors) if shortened else vectors, tokens)


# ---- OpenAI-compatible -------------------------------------------------------------------

def openai_body(req: c.EmbedRequest, model: str) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "input": list(req.inputs), "encoding_format": "float"}
    if req.dimensions is not None:
        body["dimensions"] = req.dimensions
    return body


def openai_embeddings_from(raw: bytes, expected: int) -> c.Embeddings:
    body = _object(raw)
    data = _list(body.get("data"), expected)
    if all(isinstance(d, dict) and type(d.get("index")) is int for d in data):
        data = sorted(data, key=lambda d: d["index"])  # OpenAI gives indexes; order by them
    vectors = [_values({"values": d.get("embedding")} if isinstance(d, dict) else None) for d in data]
    usage = body.get("usage")
    tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return c.Embeddings(vectors, tokens if _count(tokens) else None)


# ---- checking what came back ---------------------------------------------------------------

def _malformed(what: str) -> UpstreamError:
    return UpstreamError(502, f"Upstream answered with a malformed embeddings body ({what}).")


def _object(raw: bytes) -> dict[str, Any]:
    try:
        body = jsonfast.loads(raw)
    except ValueError:
        raise _malformed("not JSON") from None
    if not isinstance(body, dict):
        raise _malformed("not an object")
    return body


def _list(items: Any, expected: int) -> list[Any]:
    if not isinstance(items, list):
        raise _malformed("no embeddings")
    if len(items) != expected:
        raise _malformed(f"{len(items)} embeddings for {expected} inputs")
    return items


def _values(item: Any) -> list[float]:
    values = item.get("values") if isinstance(item, dict) else None
    if (not isinstance(values, list) or not 0 < len(values) <= MAX_DIMENSIONS
            or not all(type(v) in (float, int) and math.isfinite(v) for v in values)):
        raise _malformed("values")
    return values


def _count(value: Any) -> bool:
    return type(value) is int and 0 <= value < 10**12
