"""Embedding endpoints: the Gemini API's ``:embedContent`` / ``:batchEmbedContents``, Vertex AI's
``:predict`` (text embeddings API) and ``:embedContent``, and the OpenAI-compatible ``/embeddings``.

Vectors are deterministic: ``fake_vector(text, width)`` (tests compute what to expect with it), unit
length at the model's full width and cut (not rescaled) by ``outputDimensionality``, as Google's are.
Tokens are whitespace-separated words; the Gemini API reports them (top-level ``usageMetadata``) for
gemini-embedding-2 only, as seen in maximhq/bifrost PR 7295 and pydantic/pydantic-ai issue 6781 (001
answers vectors alone). Refused as Google refuses, with its texts:
  * more than 100 requests in one batchEmbedContents: "* BatchEmbedContentsRequest.requests: at most
    100 requests can be in one batch" (the Gemini API's limit, quoted in the gateway's issue 19);
  * a request ``model`` that is not ``models/...``: "* BatchEmbedContentsRequest.requests[0].model:
    unexpected model name format" (seen in agent0ai/agent-zero issue 372);
  * unknown fields ("Invalid JSON payload received. Unknown name ..."), task types that are not
    TaskType values (Google's enum parse error), bodies google-genai's ``types.Content`` /
    ``types.EmbedContentConfig`` refuse (oracle);
  * models that do not embed, and text-embedding-004 (shut down on 14 January 2026): the Gemini
    API's 404 "models/... is not found for API version v1beta, or is not supported for ...";
  * Vertex: more than one instance for gemini-embedding-001 ("Unable to submit request because
    batchSize must be 1 but the entered value was N.", quoted in GoogleCloudPlatform/
    python-docs-samples PR 13388), more than 250 instances (Vertex documents that limit).
Where Google's exact words are not known (an empty batch, a Vertex instance without text, more than
250 instances), the refusal is Google's generic INVALID_ARGUMENT text.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from typing import Any

from aiohttp import web

from .wire import Call, error_response

try:
    from google.genai import types
    from pydantic import ValidationError
except ImportError:  # pragma: no cover - the test extra installs it
    types = None

# Models that embed, with their full width (ai.google.dev/gemini-api/docs/models/gemini-embedding-001
# and .../gemini-embedding-2: 128 to 3072 dimensions, 3072 by default).
GEMINI_EMBEDDERS = {"gemini-embedding-001": 3072, "gemini-embedding-2": 3072}
VERTEX_EMBEDDERS = {**GEMINI_EMBEDDERS, "text-embedding-005": 768, "text-multilingual-embedding-002": 768}
VERTEX_SINGLE = ("gemini-embedding-001",)  # :predict with one instance only
VERTEX_EMBED_CONTENT = ("gemini-embedding-2",)  # served at :embedContent only, one content per call
OPENAI_EMBEDDERS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "emulator-embed": 64}
GEMINI_BATCH, VERTEX_BATCH = 100, 250
REPORTS_USAGE = ("gemini-embedding-2",)  # Gemini API models whose embed answers carry usageMetadata
TASK_TYPES = frozenset({"TASK_TYPE_UNSPECIFIED", "RETRIEVAL_QUERY", "RETRIEVAL_DOCUMENT", "SEMANTIC_SIMILARITY",
                        "CLASSIFICATION", "CLUSTERING", "QUESTION_ANSWERING", "FACT_VERIFICATION",
                        "CODE_RETRIEVAL_QUERY"})
GENERIC = "Request contains an invalid argument."
EMBED_KEYS = frozenset({"model", "content", "taskType", "title", "outputDimensionality"})
CONFIG_KEYS = frozenset({"taskType", "title", "outputDimensionality", "autoTruncate"})


def fake_vector(text: str, width: int) -> list[float]:
    """A deterministic unit vector for `text` (values from SHAKE-256 of it)."""
    raw = hashlib.shake_256(text.encode()).digest(2 * width)
    values = [(v - 32767.5) / 32767.5 for v in struct.unpack(f"<{width}H", raw)]
    norm = math.hypot(*values)
    return [v / norm for v in values]


def embedding(text: str, width: int, dims: int | None) -> list[float]:
    vector = fake_vector(text, width)
    return vector[:dims] if dims else vector


def words(text: str) -> int:
    return len(text.split())


def not_found(model: str, method: str) -> web.Response:
    return error_response("gemini", 404, f"models/{model} is not found for API version v1beta, or is not supported "
                                         f"for {method}. Call ListModels to see the list of available models and "
                                         "their supported methods.")


def _bad(message: str) -> web.Response:
    return error_response("gemini", 400, message)


def _unknown(keys: Any, allowed: frozenset[str], where: str) -> web.Response | None:
    extra = sorted(set(keys) - allowed)
    if extra:
        at = f" at '{where}'" if where else ""
        return _bad(f'Invalid JSON payload received. Unknown name "{extra[0]}"{at}: Cannot find field.')
    return None


def _oracle(value: Any, model: Any, where: str) -> web.Response | None:
    """google-genai's pydantic type of this piece must accept it too (it forbids unknown fields)."""
    if types is None:
        return None
    try:
        model.model_validate(value)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        return _bad(f"{where} is not a valid types.{model.__name__}: {err['msg']}")
    return None


def _text_of(content: Any, where: str) -> tuple[str | None, web.Response | None]:
    if not isinstance(content, dict):
        return None, _bad(f"Invalid JSON payload received. '{where}' must be a Content object.")
    problem = _oracle(content, types.Content, where) if types is not None else None
    if problem:
        return None, problem
    parts = content.get("parts") or []
    texts = [p.get("text") for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)]
    if not texts or len(texts) != len(parts):
        return None, _bad(f"* {where}.parts: contents.parts must not be empty.")
    return "".join(texts), None


def _config(cfg: dict[str, Any], where: str) -> web.Response | None:
    problem = _unknown(cfg, CONFIG_KEYS, where)
    if problem:
        return problem
    task = cfg.get("taskType")
    if task is not None and task not in TASK_TYPES:
        return _bad(f"Invalid value at '{where}.task_type' (type.googleapis.com/google.ai.generativelanguage.v1beta"
                    f".TaskType), \"{task}\"")
    dims = cfg.get("outputDimensionality")
    if dims is not None and (type(dims) is not int or dims < 1):
        return _bad(GENERIC)
    if types is not None:
        return _oracle(cfg, types.EmbedContentConfig, where)
    return None


def _one_request(req: Any, where: str, model: str) -> tuple[tuple[str, int | None] | None, web.Response | None]:
    """An EmbedContentRequest -> (text, outputDimensionality), or Google's refusal."""
    if not isinstance(req, dict):
        return None, _bad(f"Invalid JSON payload received. '{where}' must be an object.")
    problem = _unknown(req, EMBED_KEYS, where)
    if problem:
        return None, problem
    name = req.get("model")
    if name is not None and (not isinstance(name, str) or not name.startswith("models/")):
        field = f"BatchEmbedContentsRequest.{where}" if where else "EmbedContentRequest"
        return None, _bad(f"* {field}.model: unexpected model name format")
    problem = _config({k: v for k, v in req.items() if k in CONFIG_KEYS}, where)
    if problem:
        return None, problem
    text, problem = _text_of(req.get("content"), f"{where}.content")
    if problem:
        return None, problem
    return (text or "", req.get("outputDimensionality")), None


async def gemini_embed(call: Call, body: Any, model: str, method: str) -> web.Response:
    """``/v1beta/models/{model}:embedContent`` and ``:batchEmbedContents``."""
    width = GEMINI_EMBEDDERS.get(model)
    if width is None:
        return not_found(model, method)
    if not isinstance(body, dict):
        return _bad("Invalid JSON payload received. Expected an object.")
    if method == "embedContent":
        one, problem = _one_request(body, "", model)
        if problem or one is None:
            return problem or _bad(GENERIC)
        return web.json_response(_usage({"embedding": {"values": embedding(one[0], width, one[1])}}, model,
                                        words(one[0])))
    problem = _unknown(body, frozenset({"requests", "model"}), "")
    if problem:
        return problem
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        return _bad(GENERIC)
    if len(requests) > GEMINI_BATCH:
        return _bad(f"* BatchEmbedContentsRequest.requests: at most {GEMINI_BATCH} requests can be in one batch")
    out, tokens = [], 0
    for i, req in enumerate(requests):
        one, problem = _one_request(req, f"requests[{i}]", model)
        if problem or one is None:
            return problem or _bad(GENERIC)
        out.append({"values": embedding(one[0], width, one[1])})
        tokens += words(one[0])
    return web.json_response(_usage({"embeddings": out}, model, tokens))


def _usage(answer: dict[str, Any], model: str, tokens: int) -> dict[str, Any]:
    if model in REPORTS_USAGE:
        answer["usageMetadata"] = {"promptTokenCount": tokens,
                                   "promptTokenDetails": [{"modality": "TEXT", "tokenCount": tokens}]}
    return answer


async def vertex_embed(call: Call, body: Any, model: str, method: str, resource: str) -> web.Response:
    """Vertex AI's ``:predict`` (text embeddings API) and ``:embedContent`` (gemini-embedding-2)."""
    width = VERTEX_EMBEDDERS.get(model)
    if width is None or (method == "embedContent") != (model in VERTEX_EMBED_CONTENT):
        return error_response("gemini", 404, f"Publisher Model `{resource}{model}` was not found or your project "
                                             "does not have access to it. Please ensure you are using a valid model "
                                             "version.")
    if not isinstance(body, dict):
        return _bad("Invalid JSON payload received. Expected an object.")
    if method == "embedContent":
        problem = _unknown(body, frozenset({"content", "embedContentConfig", "model"}), "")
        cfg = body.get("embedContentConfig") or {}
        problem = problem or (_config(cfg, "embed_content_config") if isinstance(cfg, dict) else _bad(
            "Invalid JSON payload received. 'embedContentConfig' must be an object."))
        text, bad_text = _text_of(body.get("content"), "content")
        if problem or bad_text:
            return problem or bad_text  # type: ignore[return-value]
        values = embedding(text or "", width, cfg.get("outputDimensionality"))
        return web.json_response({"embedding": {"values": values},
                                  "usageMetadata": {"promptTokenCount": words(text or "")}})
    problem = _unknown(body, frozenset({"instances", "parameters"}), "")
    if problem:
        return problem
    instances, params = body.get("instances"), body.get("parameters") or {}
    if not isinstance(instances, list) or not instances or not isinstance(params, dict):
        return _bad(GENERIC)
    if model in VERTEX_SINGLE and len(instances) > 1:
        return _bad(f"Unable to submit request because batchSize must be 1 but the entered value was {len(instances)}.")
    if len(instances) > VERTEX_BATCH:
        return _bad(GENERIC)
    problem = _unknown(params, frozenset({"outputDimensionality", "autoTruncate"}), "parameters")
    if problem:
        return problem
    predictions = []
    for i, inst in enumerate(instances):
        if not isinstance(inst, dict) or not isinstance(inst.get("content"), str) or not inst["content"]:
            return _bad(GENERIC)
        problem = _unknown(inst, frozenset({"content", "task_type", "title"}), f"instances[{i}]")
        if problem:
            return problem
        if inst.get("task_type") is not None and inst["task_type"] not in TASK_TYPES:
            return _bad(GENERIC)
        values = embedding(inst["content"], width, params.get("outputDimensionality"))
        predictions.append({"embeddings": {"values": values, "statistics": {"token_count": words(inst["content"]),
                                                                           "truncated": False}}})
    return web.json_response({"predictions": predictions})


def _openai_error(message: str, param: str | None = None) -> web.Response:
    return error_response("openai", 400, message, param=param)


async def openai_embed(call: Call, body: Any) -> web.Response:
    """``/openai/v1/embeddings`` in OpenAI's shape (its limits: 2048 inputs, no empty strings)."""
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return _openai_error("you must provide a model parameter")
    width = OPENAI_EMBEDDERS.get(body["model"])
    if width is None:
        return error_response("openai", 404, f"The model `{body['model']}` does not exist or you do not have access "
                                             "to it.")
    inputs = body.get("input")
    inputs = [inputs] if isinstance(inputs, str) else inputs
    if not isinstance(inputs, list) or not inputs or len(inputs) > 2048 or not all(
            isinstance(t, str) and t for t in inputs):
        return _openai_error("'$.input' is invalid. Please check the API reference: "
                             "https://platform.openai.com/docs/api-reference.", "input")
    dims = body.get("dimensions")
    b64 = body.get("encoding_format") == "base64"
    data = []
    for i, text in enumerate(inputs):
        values = embedding(text, width, dims)
        vector: Any = base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode() if b64 else values
        data.append({"object": "embedding", "index": i, "embedding": vector})
    tokens = sum(words(t) for t in inputs)
    return web.json_response({"object": "list", "data": data, "model": body["model"],
                              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
