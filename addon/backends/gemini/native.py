"""Gemini-native requests (google-genai, gemini-cli) on their way to one account: pure functions.

The client already speaks the upstream's language, so its body goes up as sent: nothing is
parsed into the canonical model (which would lose every field it does not know). Only what the
pool owns is changed, per attempt:
  * the model: the path's model is mapped, and the copies of it inside the body follow
    (`batchEmbedContents` requests[].model, countTokens' generateContentRequest.model), since
    Google refuses a body naming another model than the path;
  * thought signatures: Gemini refuses a signature issued to another credential ("Corrupted
    thought signature."), so one known to come from another account is replaced by the documented
    dummy `skip_thought_signature_validator`; after a refusal, every one is;
  * safety settings: the account's (or the accounts file's) fill the categories the client left
    unset; the client's own choice of a category wins.
What the answer carried (signatures to remember, usage to count) is read here too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ...protocol import canonical as c
from ...protocol.errors import bad_request
from .finish import usage_from
from .signatures import DUMMY_SIGNATURE

GENERATE, STREAM, COUNT = "generateContent", "streamGenerateContent", "countTokens"
EMBED, BATCH_EMBED = "embedContent", "batchEmbedContents"
VERBS = (GENERATE, STREAM, COUNT, EMBED, BATCH_EMBED)
SIGNATURE_KEY = "gemini-native:"  # signature store keys: this prefix + a digest of the signature


def signature_key(value: str) -> str:
    """Where a signature's origin is kept: a digest (signatures are 1 KB+; keys stay small)."""
    return SIGNATURE_KEY + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def _contents(body: Mapping[str, Any], verb: str) -> list[Any]:
    if verb == COUNT and isinstance(body.get("generateContentRequest"), dict):
        body = body["generateContentRequest"]
    contents = body.get("contents")
    return contents if isinstance(contents, list) else []


def _parts(contents: Sequence[Any]) -> Iterator[dict[str, Any]]:
    for content in contents:
        parts = content.get("parts") if isinstance(content, dict) else None
        if isinstance(parts, list):
            yield from (p for p in parts if isinstance(p, dict))


def sent_signatures(body: Mapping[str, Any], verb: str) -> list[str]:
    """The thought signatures a request carries back (model turns' parts)."""
    return [p["thoughtSignature"] for p in _parts(_contents(body, verb))
            if isinstance(p.get("thoughtSignature"), str) and p["thoughtSignature"] != DUMMY_SIGNATURE]


def answer_signatures(answer: Any) -> list[str]:
    """The thought signatures in one GenerateContentResponse (a whole answer or one stream event)."""
    if not isinstance(answer, dict) or not isinstance(answer.get("candidates"), list):
        return []
    contents = [cand.get("content") for cand in answer["candidates"] if isinstance(cand, dict)]
    return [p["thoughtSignature"] for p in _parts([x for x in contents if isinstance(x, dict)])
            if isinstance(p.get("thoughtSignature"), str) and p["thoughtSignature"]]


def _with_model(body: dict[str, Any], verb: str, model: str) -> dict[str, Any]:
    name = f"models/{model}"
    if verb == BATCH_EMBED and isinstance(body.get("requests"), list):
        body["requests"] = [{**r, "model": name} if isinstance(r, dict) else r for r in body["requests"]]
    elif verb == COUNT and isinstance(body.get("generateContentRequest"), dict):
        body["generateContentRequest"] = {**body["generateContentRequest"], "model": name}
    elif verb in (EMBED, COUNT) and "model" in body:
        body["model"] = name
    return body


def _merge_safety(settings: Any, account: Sequence[Mapping[str, str]]) -> Any:
    if not isinstance(settings, list):
        return [dict(s) for s in account] if settings is None else settings  # a wrong type: Google says so
    chosen = {s.get("category") for s in settings if isinstance(s, dict)}
    return settings + [dict(s) for s in account if s.get("category") not in chosen]


def _resign(contents: list[Any], origins: Mapping[str, str | None], origin: str, trust: bool) -> list[Any]:
    """Contents with every signature this credential cannot take replaced by the dummy (all of
    them when `trust` is off); untouched contents are shared, not copied."""
    out = []
    for content in contents:
        parts = content.get("parts") if isinstance(content, dict) else None
        if not isinstance(parts, list) or not any(isinstance(p, dict) and "thoughtSignature" in p for p in parts):
            out.append(content)
            continue
        new_parts = []
        for p in parts:
            sig = p.get("thoughtSignature") if isinstance(p, dict) else None
            if isinstance(sig, str) and sig != DUMMY_SIGNATURE:
                known = origins.get(sig)
                if not trust or (known is not None and known != origin):
                    p = {**p, "thoughtSignature": DUMMY_SIGNATURE}
            new_parts.append(p)
        out.append({**content, "parts": new_parts})
    return out


def for_account(body: Mapping[str, Any], verb: str, model: str, *, origin: str,
                origins: Mapping[str, str | None] | None = None,
                safety: Sequence[Mapping[str, str]] | None = None, trust_signatures: bool = True) -> dict[str, Any]:
    """The body one attempt sends: `origin` is the account's credential id, `origins` what is known
    of the sent signatures (signature -> the credential that issued it), `safety` the account's
    safetySettings. A shallow copy: the client's body is never changed (the next attempt starts
    from it again)."""
    out = _with_model(dict(body), verb, model)
    if verb in (GENERATE, STREAM, COUNT):
        holder = out
        if verb == COUNT and isinstance(out.get("generateContentRequest"), dict):
            holder = out["generateContentRequest"] = dict(out["generateContentRequest"])
        contents = holder.get("contents")
        if isinstance(contents, list):
            holder["contents"] = _resign(contents, origins or {}, origin, trust_signatures)
        if safety and verb != COUNT:
            holder["safetySettings"] = _merge_safety(holder.get("safetySettings"), safety)
    return out


def carried_signatures(body: Mapping[str, Any], verb: str) -> bool:
    return bool(sent_signatures(body, verb))


def usage(answer: Any) -> c.Usage | None:
    """The usage an answer (or the last stream event that had one) reports."""
    meta = answer.get("usageMetadata") if isinstance(answer, dict) else None
    return usage_from(meta) if isinstance(meta, dict) else None


def unwrap_cloudcode(answer: Any) -> Any:
    """Cloud Code wraps each answer as {"response": {...}, "traceId"}: the Gemini object inside."""
    if isinstance(answer, dict) and isinstance(answer.get("response"), dict):
        return answer["response"]
    return answer


def cloudcode_count_body(body: Mapping[str, Any], model: str) -> dict[str, Any]:
    """countTokens for Code Assist takes {"request": {"model": "models/x", "contents"}} (gemini-cli's
    code_assist converter): the contents of either Gemini API form."""
    return {"request": {"model": f"models/{model}", "contents": _contents(body, COUNT)}}


def vertex_count_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """Vertex AI's countTokens takes the generate fields at the top level (contents,
    systemInstruction, tools, generationConfig) and no `generateContentRequest` or `model`."""
    inner = body.get("generateContentRequest")
    if isinstance(inner, dict):
        return {k: v for k, v in inner.items() if k in ("contents", "systemInstruction", "tools", "generationConfig")}
    return {k: v for k, v in body.items() if k != "model"}


# ---- embeddings for accounts that do not speak Google's API (Vertex AI, OpenAI-compatible) -----
# Their provider's `embed` takes the canonical EmbedRequest: text only, one task type, title and
# dimensionality per call. So requests are grouped by those (order kept) and each part of the
# answer goes back where it came from.

def _embed_items(body: Mapping[str, Any], verb: str) -> list[Any]:
    if verb == EMBED:
        return [body]
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        raise bad_request("* BatchEmbedContentsRequest.requests: requests is required.", "requests")
    return requests


def _text(item: Any, where: str) -> str:
    content = item.get("content") if isinstance(item, dict) else None
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list) or not parts:
        raise bad_request(f"* {where}.content: content is required and must have parts.", where)
    if not all(isinstance(p, dict) and set(p) == {"text"} and isinstance(p["text"], str) for p in parts):
        raise bad_request(f"{where}.content: only text parts can be embedded by this account's upstream.", where)
    return "".join(p["text"] for p in parts)


def embed_groups(body: Mapping[str, Any], verb: str, client_model: str) -> list[tuple[list[int], c.EmbedRequest]]:
    """The canonical requests one Google embed body amounts to, each with the positions of its texts."""
    groups: dict[tuple[Any, Any, Any], tuple[list[int], c.EmbedRequest]] = {}
    for i, item in enumerate(_embed_items(body, verb)):
        where = "content" if verb == EMBED else f"requests[{i}]"
        text = _text(item, where)
        dims, task, title = item.get("outputDimensionality"), item.get("taskType"), item.get("title")
        if dims is not None and (not isinstance(dims, int) or isinstance(dims, bool) or dims <= 0):
            raise bad_request(f"{where}.outputDimensionality must be a positive integer.", where)
        if task is not None and task not in c.TASK_TYPES:
            raise bad_request(f"Invalid value at '{where}.task_type': {str(task)[:40]}", where)
        if title is not None and not isinstance(title, str):
            raise bad_request(f"{where}.title must be a string.", where)
        key = (dims, task, title)
        if key not in groups:
            groups[key] = ([], c.EmbedRequest(client_model, [], dimensions=dims, task_type=task, title=title))
        groups[key][0].append(i)
        groups[key][1].inputs.append(text)
    return list(groups.values())


def embed_answer(verb: str, count: int, parts: list[tuple[list[int], c.Embeddings]]) -> dict[str, Any]:
    """Google's answer: {"embedding": {"values"}} or {"embeddings": [{"values"}, ...]} in request order."""
    vectors: list[list[float]] = [[] for _ in range(count)]
    for positions, result in parts:
        for pos, vector in zip(positions, result.vectors):
            vectors[pos] = vector
    if verb == EMBED:
        return {"embedding": {"values": vectors[0]}}
    return {"embeddings": [{"values": v} for v in vectors]}
