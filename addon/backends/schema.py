"""JSON Schema -> the OpenAPI 3.0 subset Gemini accepts in `parameters` / `responseSchema`.

Gemini rejects the whole request (400 "Unknown name ...") on keywords outside its subset,
and clients such as Codex CLI, MCP servers and pydantic-generated tools send them freely
(`$schema`, `additionalProperties`, `$ref`/`$defs`, `const`, type lists, `oneOf`...).
This keeps the meaning where the subset can express it and drops the rest.
"""

from __future__ import annotations

from typing import Any


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# Keywords Gemini's Schema has, each with the value type it accepts (a wrong type is a 400 too).
_KEEP = {
    "title": lambda v: isinstance(v, str), "description": lambda v: isinstance(v, str),
    "pattern": lambda v: isinstance(v, str), "nullable": lambda v: isinstance(v, bool),
    "minItems": _is_int, "maxItems": _is_int, "minProperties": _is_int, "maxProperties": _is_int,
    "minLength": _is_int, "maxLength": _is_int, "minimum": _is_num, "maximum": _is_num,
    "example": lambda v: True, "default": lambda v: True,
    "propertyOrdering": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
}
_TYPES = {"string", "number", "integer", "boolean", "array", "object"}
_FORMATS = {"string": {"enum", "date-time"}, "integer": {"int32", "int64"}, "number": {"float", "double"}}
_MAX_DEPTH = 24  # recursive $ref chains are cut here


def to_gemini_schema(schema: Any, *, top_level: bool = True) -> dict[str, Any] | None:
    """Returns None when nothing is left to send (e.g. an object without properties at top level)."""
    if not isinstance(schema, dict):
        return None
    defs = {k: v for key in ("definitions", "$defs") if isinstance(schema.get(key), dict)
            for k, v in schema[key].items()}
    out = _convert(schema, defs, 0)
    if top_level and (out.get("type") != "OBJECT" or not out.get("properties")):
        # Gemini: parameters must be an OBJECT, and "properties: should be non-empty for OBJECT type"
        return None
    return out


def _resolve(ref: Any, defs: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(ref, str):
        return {}
    for prefix in ("#/$defs/", "#/definitions/"):
        if ref.startswith(prefix):
            found = defs.get(ref[len(prefix):])
            if isinstance(found, dict):
                return found
    return {}


def _merge_all_of(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    for sub in schema["allOf"]:
        if isinstance(sub, dict) and "$ref" in sub:
            sub = _resolve(sub["$ref"], defs)
        if not isinstance(sub, dict):
            continue
        for key, value in sub.items():
            if key == "properties":
                merged.setdefault("properties", {}).update(value)
            elif key == "required":
                merged["required"] = list(dict.fromkeys([*merged.get("required", []), *value]))
            else:
                merged.setdefault(key, value)
    return merged


def _convert(schema: dict[str, Any], defs: dict[str, Any], depth: int) -> dict[str, Any]:
    if depth > _MAX_DEPTH:
        return {"type": "OBJECT", "description": "(recursive structure truncated)"}
    if isinstance(schema.get("$ref"), str):
        target = _resolve(schema["$ref"], defs)
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    if "allOf" in schema and isinstance(schema["allOf"], list):
        schema = _merge_all_of(schema, defs)

    out: dict[str, Any] = {k: v for k, v in schema.items() if k in _KEEP and _KEEP[k](v)}
    if _is_num(schema.get("exclusiveMinimum")):
        out.setdefault("minimum", schema["exclusiveMinimum"])
    if _is_num(schema.get("exclusiveMaximum")):
        out.setdefault("maximum", schema["exclusiveMaximum"])

    variants = schema.get("anyOf") or schema.get("oneOf")
    raw_type = schema.get("type")
    types = raw_type if isinstance(raw_type, list) else ([raw_type] if raw_type else [])
    if any(t == "null" for t in types):
        out["nullable"] = True
    types = [t for t in types if isinstance(t, str) and t in _TYPES]  # junk such as {"type": {}} is dropped

    if isinstance(variants, list):
        subs = [v for v in variants if isinstance(v, dict)]
        non_null = [v for v in subs if v.get("type") != "null"]
        if len(non_null) < len(subs):
            out["nullable"] = True
        if len(non_null) == 1:  # Optional[X]: no need for anyOf
            inner = _convert(non_null[0], defs, depth + 1)
            return {**inner, **{k: v for k, v in out.items() if k not in inner}}
        out["anyOf"] = [_convert(v, defs, depth + 1) for v in non_null]
        return out

    if len(types) > 1:
        out["anyOf"] = [_convert({**schema, "type": t}, defs, depth + 1) for t in types]
        return out

    kind = types[0] if types else _infer_type(schema)
    if kind:
        out["type"] = kind.upper()
        fmt = schema.get("format")
        if isinstance(fmt, str) and fmt in _FORMATS.get(kind, ()):
            out["format"] = fmt

    enum = schema.get("enum")
    if "const" in schema:
        enum = [schema["const"]]
    if isinstance(enum, list) and enum:
        if all(isinstance(v, str) for v in enum):
            out["enum"] = enum
            out["type"] = "STRING"
            out.pop("format", None)
        else:  # Gemini only has string enums: keep the constraint as prose
            allowed = ", ".join(map(str, enum))
            out["description"] = (out.get("description", "") + f" (one of: {allowed})").strip()

    if kind == "object":
        props = schema.get("properties")
        if isinstance(props, dict) and props:
            out["properties"] = {name: _convert(sub if isinstance(sub, dict) else {}, defs, depth + 1)
                                 for name, sub in props.items()}
            required = schema.get("required")
            required = [r for r in required if isinstance(r, str) and r in props] if isinstance(required, list) else []
            if required:
                out["required"] = required
    elif kind == "array":
        items = schema.get("items")
        if isinstance(items, list):  # tuple form
            items = {"anyOf": items} if len(items) > 1 else (items[0] if items else {})
        out["items"] = _convert(items if isinstance(items, dict) else {}, defs, depth + 1)
        if "type" not in out["items"] and "anyOf" not in out["items"]:
            out["items"]["type"] = "STRING"
    return out


def _infer_type(schema: dict[str, Any]) -> str | None:
    if "properties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    values = schema.get("enum") or ([schema["const"]] if "const" in schema else [])
    if values:
        if all(isinstance(v, bool) for v in values):
            return "boolean"
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return "integer"
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            return "number"
        return "string"
    return None
