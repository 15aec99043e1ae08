"""Hypothesis strategies for families of hostile client input (tests/test_hardening_*.py)."""

from __future__ import annotations

import json
import string
from typing import Any

from hypothesis import strategies as st

_names = st.sampled_from(["A", "B", "C", "D"])


@st.composite
def recursive_schemas(draw: st.DrawFn) -> dict[str, Any]:
    """$defs whose members refer to each other (and themselves) from several places: the family
    of schemas that used to expand exponentially."""
    def node(depth: int) -> Any:
        kind = draw(st.sampled_from(["ref", "object", "array", "anyOf", "leaf"] if depth < 3 else ["ref", "leaf"]))
        if kind == "ref":
            return {"$ref": f"#/$defs/{draw(_names)}"}
        if kind == "object":
            keys = draw(st.lists(st.text(string.ascii_lowercase, min_size=1, max_size=3), min_size=1, max_size=4,
                                 unique=True))
            return {"type": "object", "properties": {k: node(depth + 1) for k in keys}}
        if kind == "array":
            return {"type": "array", "items": node(depth + 1)}
        if kind == "anyOf":
            return {"anyOf": [node(depth + 1) for _ in range(draw(st.integers(2, 3)))]}
        return {"type": draw(st.sampled_from(["string", "integer", "boolean"]))}
    defs = {name: node(0) for name in "ABCD"}
    return {"type": "object", "properties": {"root": {"$ref": "#/$defs/A"}, "other": node(1)}, "$defs": defs}


_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text())
_json = st.recursive(_json_leaf, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                        st.dictionaries(st.text(max_size=8), kids, max_size=4)),
                     max_leaves=30)


def hostile_bodies() -> st.SearchStrategy[bytes]:
    """Raw bodies a client might send by mistake or malice: not UTF-8, NaN/Infinity, lone
    surrogate escapes, wrong JSON types inside tool schemas and messages, random JSON."""
    chat = st.fixed_dictionaries({"model": st.sampled_from(["gpt-4o", "gemini-2.5-flash"]),
                                  "messages": st.just([{"role": "user", "content": "hi"}])})
    schema = _json.map(lambda s: {"type": "object", "properties": {"a": s}, "required": s, "allOf": [s]})
    with_tools = st.tuples(chat, schema).map(lambda t: {**t[0], "tools": [
        {"type": "function", "function": {"name": "f", "parameters": t[1]}}]})
    structured = st.one_of(chat, with_tools, _json).map(lambda v: json.dumps(v).encode())
    return st.one_of(
        structured,
        st.binary(max_size=64),
        structured.map(lambda b: b.replace(b'"hi"', b'"\\ud800"')),
        structured.map(lambda b: b.replace(b'"hi"', b'"\xff\xfe"')),
        with_tools.map(lambda v: json.dumps(v).encode().replace(b'"object"', b'"object", "minimum": NaN', 1)),
        with_tools.map(lambda v: json.dumps(v).encode().replace(b'"object"', b'"object", "maximum": Infinity', 1)),
    )
