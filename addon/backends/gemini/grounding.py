"""Google Search grounding (groundingMetadata) -> canonical citations and sources."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...protocol import canonical as c


def _char_span(encoded: bytes, text: str, segment: dict[str, Any], base: int) -> tuple[int, int] | None:
    """A groundingSupport segment -> character offsets into `text`.

    Google measures segments in UTF-8 bytes from the start of their part (Segment.startIndex /
    endIndex in the API reference; startIndex 0 is left out of the JSON); OpenAI's url_citation
    indexes characters. When the bytes do not land on the segment's own `text` (e.g. parts
    counted differently in a stream), the text itself is looked up."""
    seg_text = segment.get("text") if isinstance(segment.get("text"), str) else None
    start, end = segment.get("startIndex") or 0, segment.get("endIndex")
    if isinstance(start, int) and isinstance(end, int) and 0 <= base + start < base + end <= len(encoded):
        s = len(encoded[:base + start].decode("utf-8", "ignore"))
        e = s + len(encoded[base + start:base + end].decode("utf-8", "ignore"))
        if seg_text is None or text[s:e] == seg_text:
            return s, e
    if seg_text:
        found = text.find(seg_text)
        if found >= 0:
            return found, found + len(seg_text)
    return None


def _title(uri: str, title: Any) -> str:
    if isinstance(title, str) and title:
        return title
    return uri.split("://", 1)[-1].split("/", 1)[0]


def grounding_from(meta: Any, text: str, part_bases: Mapping[int, int] | None = None) -> c.Grounding | None:
    """A candidate's groundingMetadata -> canonical Grounding; `text` is the candidate's visible
    text, `part_bases` the byte offset where each part (by index) starts in it."""
    if not isinstance(meta, dict):
        return None
    chunks: list[tuple[str, str] | None] = []
    for chunk in meta.get("groundingChunks") or []:
        web = chunk.get("web") if isinstance(chunk, dict) else None
        uri = web.get("uri") if isinstance(web, dict) else None
        chunks.append((uri, _title(uri, web.get("title"))) if isinstance(uri, str) and uri else None)
    queries = [q for q in meta.get("webSearchQueries") or [] if isinstance(q, str) and q]
    encoded = text.encode()
    citations: list[c.Citation] = []
    for support in meta.get("groundingSupports") or []:
        if not isinstance(support, dict) or not isinstance(support.get("segment"), dict):
            continue
        segment = support["segment"]
        base = (part_bases or {}).get(segment.get("partIndex") or 0, 0)
        span = _char_span(encoded, text, segment, base)
        if span is None:
            continue
        for i in dict.fromkeys(support.get("groundingChunkIndices") or []):
            source = chunks[i] if isinstance(i, int) and 0 <= i < len(chunks) else None
            if source is not None:
                citations.append(c.Citation(span[0], span[1], source[0], source[1]))
    sources = list(dict.fromkeys(s for s in chunks if s is not None))
    if not (queries or sources or citations):
        return None
    return c.Grounding(queries, sources, citations)
