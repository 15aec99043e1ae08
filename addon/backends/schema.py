"""Client JSON Schemas -> what Gemini takes in `parametersJsonSchema` and `responseJsonSchema`.

Decision: tools go up as `functionDeclarations[].parametersJsonSchema` and structured output as
`generationConfig.responseJsonSchema`, never as `parameters` / `responseSchema`.
  * `parameters` / `responseSchema` are the proto `Schema`, an OpenAPI 3.0 subset: every node
    needs a `type` ("type: must be specified when not using one_of, any_of or all_of fields"),
    an OBJECT needs properties ("properties: should be non-empty for OBJECT type"), so a free-form
    map (`additionalProperties`, zod `record`, pydantic `dict[str, str]`) cannot be said at all,
    and `$ref`/`$defs`/`additionalProperties`/`const`/type lists are unknown fields (400
    "Invalid JSON payload received. Unknown name ..."). Converting loses meaning.
  * `parametersJsonSchema` / `responseJsonSchema` take JSON Schema: `$defs`/`$ref`, `anyOf`,
    `oneOf`, `additionalProperties`, type lists, `prefixItems` (the list in the proto comment of
    `GenerationConfig.response_json_schema`, copied into every Google SDK). gemini-cli sends
    `parametersJsonSchema` for every tool on the Gemini API and on Cloud Code
    (packages/core/src/tools/tools.ts), and `responseJsonSchema` for its JSON calls; CLIProxyAPI
    renames OpenAI `parameters` to `parametersJsonSchema` (translator/gemini/openai/chat-completions).
    Google documents `responseJsonSchema` for the 2.5 and 3.x models.
What is still refused there, and what this module therefore guarantees:
  * a `$ref` node may carry only `$` keys, `description` and `default` ("$ref 'X' was set alongside
    unsupported fields", anomalyco/opencode#12295): other siblings are dropped;
  * every `$ref` must resolve ("reference to undefined schema at ...", gemini-cli#13326): refs go
    to root `$defs` (draft-07 `definitions` are moved there), other local JSON pointers are
    inlined, unresolvable ones are removed;
  * "Cyclic references are unrolled to a limited degree and, as such, may only be used within
    non-required properties" (proto comment): a property through which a definition reaches
    itself is taken out of `required`;
  * the root of `parametersJsonSchema` "must describe an object" (FunctionDeclaration docs): an
    untyped root becomes `type: object`; another type is refused as OpenAI refuses it.
Keywords outside Google's list are dropped (`$schema`, `pattern`, `not`, `if`, `examples`...),
`const` becomes a one-value `enum`, `allOf` is merged, exclusive bounds become inclusive ones.
Pure and bounded: recursion depth and the number of nodes produced are capped.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

from ..protocol.errors import bad_request

_TYPES = ("string", "number", "integer", "boolean", "array", "object", "null")
_FORMATS = {"string": {"date-time", "date", "time"}, "integer": {"int32", "int64"},
            "number": {"float", "double"}}
_MAX_DEPTH = 32  # deeper nodes (or inlined pointer chains) become {} ("any")
_LEAF_KEYS = frozenset({"type", "title", "description", "default"})
_SCALARS = frozenset({"string", "number", "integer", "boolean"})
_MAX_NODES = 20000  # a schema that would grow past this many nodes stops inlining


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def tool_parameters(schema: Any, tool: str) -> dict[str, Any] | None:
    """`parametersJsonSchema` for one tool; None when the tool takes no parameters."""
    if not isinstance(schema, dict):
        return None
    out = _Converter(schema).root()
    kind = out.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind else []
    if kinds and "object" not in kinds:
        raise bad_request(f"Invalid schema for function '{tool}': schema must be a JSON Schema of 'type: "
                          f"\"object\"', got 'type: \"{kinds[0]}\"'.", "tools", code="invalid_function_parameters")
    out["type"] = "object"
    out.setdefault("properties", {})
    return out


def response_schema(schema: Any) -> dict[str, Any] | None:
    """`responseJsonSchema` for a json_schema response format."""
    if not isinstance(schema, dict):
        return None
    return _Converter(schema).root()


def json_pointer(doc: Any, ref: str) -> Any:
    """What a local JSON pointer (`#`, `#/a/b`) points at in `doc`, or None."""
    if ref == "#":
        return doc
    if not ref.startswith("#/"):
        return None
    node = doc
    for raw in ref[2:].split("/"):
        key = unquote(raw).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return None
    return node


class _Converter:
    """One document: converts nodes, collects the `$defs` they reference, then applies the
    recursion rule."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.raw_defs: dict[str, Any] = {}
        for key in ("definitions", "$defs"):  # $defs wins a name clash
            if isinstance(doc.get(key), dict):
                self.raw_defs.update(doc[key])
        self.names: dict[str, str] = {}  # client def name -> output def name
        self.defs: dict[str, dict[str, Any]] = {}  # output name -> converted body
        self.root_name: str | None = None  # set when the root refers to itself ("$ref": "#")
        self.nodes = 0

    def root(self) -> dict[str, Any]:
        doc = self.doc
        for _ in range(8):  # a root that is a ref (pydantic's recursive models): inline it
            ref = doc.get("$ref")
            if not isinstance(ref, str):
                break
            rest = {k: v for k, v in doc.items() if k != "$ref"}
            target = self._target(ref) if ref != "#" else None
            doc = {**target, **rest} if isinstance(target, dict) else rest
        out = self.node({k: v for k, v in doc.items() if k != "$ref"}, 0)
        if self.root_name is not None:
            self.defs[self.root_name] = dict(out)
        if self.defs:
            _relax_cycles(out, self.defs, self.root_name)
            out["$defs"] = self.defs
        return out

    # -- references
    def _target(self, ref: str) -> Any:
        for prefix in ("#/$defs/", "#/definitions/"):
            if ref.startswith(prefix) and "/" not in ref[len(prefix):]:
                name = unquote(ref[len(prefix):]).replace("~1", "/").replace("~0", "~")
                if name in self.raw_defs:
                    return self.raw_defs[name]
        return json_pointer(self.doc, ref)

    def _def_ref(self, ref: str) -> str | None:
        """The output name of a root definition `ref` points at (converting it once), or None."""
        for prefix in ("#/$defs/", "#/definitions/"):
            if not ref.startswith(prefix) or "/" in ref[len(prefix):]:
                continue
            name = unquote(ref[len(prefix):]).replace("~1", "/").replace("~0", "~")
            raw = self.raw_defs.get(name)
            if not isinstance(raw, dict):
                return None
            if name not in self.names:
                out_name = re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "_"
                while out_name in self.defs or out_name in self.names.values():
                    out_name += "_"
                self.names[name] = out_name
                self.defs[out_name] = {}  # placeholder: recursion finds the name
                self.defs[out_name] = self.node(raw, 1)
            return self.names[name]
        return None

    def _ref(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        ref = schema["$ref"]
        extras = {k: schema[k] for k in ("description",) if isinstance(schema.get(k), str)}
        if "default" in schema:
            extras["default"] = schema["default"]
        if ref == "#":
            if self.root_name is None:
                self.root_name = "root" if "root" not in self.raw_defs else "root_"
                while self.root_name in self.raw_defs:
                    self.root_name += "_"
            return {"$ref": f"#/$defs/{self.root_name}", **extras}
        name = self._def_ref(ref)
        if name is not None:
            return {"$ref": f"#/$defs/{name}", **extras}
        target = json_pointer(self.doc, ref)
        if isinstance(target, dict):  # another local pointer: inline it (depth-capped)
            inlined = self.node(target, depth + 4)
            return {**inlined, **extras}
        return extras  # unresolvable (remote or dangling): "any"

    # -- nodes
    def node(self, schema: Any, depth: int) -> dict[str, Any]:
        self.nodes += 1
        if not isinstance(schema, dict) or depth > _MAX_DEPTH or self.nodes > _MAX_NODES:
            return {}
        kind = schema.get("type")
        if schema.keys() <= _LEAF_KEYS and isinstance(kind, str) and kind in _SCALARS and all(
                isinstance(schema.get(k, ""), str) for k in ("title", "description")):
            return dict(schema)  # the common leaf ({"type": "string", "description": ...}): nothing to rework
        if isinstance(schema.get("$ref"), str):
            return self._ref(schema, depth)
        if isinstance(schema.get("allOf"), list):
            schema = self._merge_all_of(schema)
        out: dict[str, Any] = {}
        for key in ("title", "description"):
            if isinstance(schema.get(key), str):
                out[key] = schema[key]

        types = self._types(schema)
        variants = schema.get("anyOf") if isinstance(schema.get("anyOf"), list) else schema.get("oneOf")
        if isinstance(variants, list):
            subs = [self.node(v, depth + 1) for v in variants if isinstance(v, (dict, bool))]
            if subs:
                out["anyOf"] = subs
        if types:
            out["type"] = types[0] if len(types) == 1 else types
        self._enum(schema, out, types)
        if "object" in types:
            self._object(schema, out, depth)
        if "array" in types:
            self._array(schema, out, depth)
        if any(t in types for t in ("number", "integer")):
            for key, strict in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
                if _is_num(schema.get(key)):
                    out[key] = schema[key]
                elif _is_num(schema.get(strict)):
                    out[key] = schema[strict]
        fmt = schema.get("format")
        if isinstance(fmt, str) and len(types) == 1 and fmt in _FORMATS.get(types[0], ()):
            out["format"] = fmt
        if "default" in schema:
            out["default"] = schema["default"]
        return out

    def _types(self, schema: dict[str, Any]) -> list[str]:
        raw = schema.get("type")
        listed = raw if isinstance(raw, list) else [raw] if raw is not None else []
        types = [t for t in dict.fromkeys(x for x in listed if isinstance(x, str)) if t in _TYPES]
        if not types:
            if isinstance(schema.get("properties"), dict) or isinstance(schema.get("additionalProperties"), dict):
                types = ["object"]
            elif "items" in schema or "prefixItems" in schema:
                types = ["array"]
            else:
                values = schema.get("enum") if isinstance(schema.get("enum"), list) else (
                    [schema["const"]] if "const" in schema else [])
                if values and all(isinstance(v, bool) for v in values):
                    types = ["boolean"]
                elif values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                    types = ["integer"]
                elif values and all(_is_num(v) for v in values):
                    types = ["number"]
                elif values and all(isinstance(v, str) for v in values):
                    types = ["string"]
        if schema.get("nullable") is True and types and "null" not in types:
            types.append("null")
        return types

    @staticmethod
    def _enum(schema: dict[str, Any], out: dict[str, Any], types: list[str]) -> None:
        values = schema.get("enum") if isinstance(schema.get("enum"), list) else (
            [schema["const"]] if "const" in schema else None)
        if not values or all(isinstance(v, bool) for v in values):  # booleans: `type` says it all
            return
        kept = [v for v in values if isinstance(v, str) or _is_num(v)]
        if kept and len(kept) == len([v for v in values if v is not None]):
            out["enum"] = kept  # strings and numbers only (Google's list); null rides in `type`
            if None in values and types and "null" not in types:
                out["type"] = [*types, "null"]
        else:  # booleans, objects: keep the constraint as prose
            allowed = ", ".join(map(str, values))
            out["description"] = (out.get("description", "") + f" (one of: {allowed})").strip()

    def _object(self, schema: dict[str, Any], out: dict[str, Any], depth: int) -> None:
        props = schema.get("properties")
        if isinstance(props, dict):
            out["properties"] = {str(name): self.node(sub if isinstance(sub, dict) else {}, depth + 1)
                                 for name, sub in props.items()}
            required = schema.get("required")
            if isinstance(required, list):
                kept = list(dict.fromkeys(r for r in required if isinstance(r, str) and r in props))
                if kept:
                    out["required"] = kept
            order = schema.get("propertyOrdering")
            if isinstance(order, list) and all(isinstance(x, str) and x in props for x in order):
                out["propertyOrdering"] = order
        extra = schema.get("additionalProperties")
        if isinstance(extra, bool):
            out["additionalProperties"] = extra
        elif isinstance(extra, dict):
            out["additionalProperties"] = self.node(extra, depth + 1)

    def _array(self, schema: dict[str, Any], out: dict[str, Any], depth: int) -> None:
        items, prefix = schema.get("items"), schema.get("prefixItems")
        if isinstance(items, list):  # draft-07 tuple form
            prefix, items = items, schema.get("additionalItems")
        if isinstance(prefix, list):
            out["prefixItems"] = [self.node(p, depth + 1) for p in prefix]
        if isinstance(items, dict):
            out["items"] = self.node(items, depth + 1)
        for key in ("minItems", "maxItems"):
            if _is_count(schema.get(key)):
                out[key] = schema[key]

    def _merge_all_of(self, schema: dict[str, Any], depth: int = 0) -> dict[str, Any]:
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        if depth > 8:  # allOf reaching itself through refs
            return merged
        for sub in schema["allOf"]:
            for _ in range(8):  # follow a short chain of refs
                if not (isinstance(sub, dict) and isinstance(sub.get("$ref"), str)):
                    break
                sub = {**(self._target(sub["$ref"]) or {}), **{k: v for k, v in sub.items() if k != "$ref"}}
            if not isinstance(sub, dict):
                continue
            if isinstance(sub.get("allOf"), list):
                sub = self._merge_all_of(sub, depth + 1)
            for key, value in sub.items():
                if key == "properties" and isinstance(value, dict):
                    merged["properties"] = {**(merged.get("properties") or {}), **value}
                elif key == "required" and isinstance(value, list):
                    merged["required"] = [*(merged.get("required") or []), *value]
                else:
                    merged.setdefault(key, value)
        return merged


# ---- "cyclic references may only be used within non-required properties" -------------------

def _refs(node: Any) -> set[str]:
    found: set[str] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, dict):
            ref = n.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                found.add(ref[len("#/$defs/"):])
            stack.extend(v for k, v in n.items() if k != "$defs")
        elif isinstance(n, list):
            stack.extend(n)
    return found


def _reach(defs: dict[str, dict[str, Any]]) -> dict[str, set[str]]:
    direct = {name: _refs(body) for name, body in defs.items()}
    reach: dict[str, set[str]] = {}
    for name in defs:
        seen: set[str] = set()
        stack = list(direct[name])
        while stack:
            d = stack.pop()
            if d not in seen:
                seen.add(d)
                stack.extend(direct.get(d, ()))
        reach[name] = seen
    return reach


def _relax_cycles(root: dict[str, Any], defs: dict[str, dict[str, Any]], root_name: str | None) -> None:
    reach = _reach(defs)
    bodies = [(name, body) for name, body in defs.items() if name in reach[name]]
    if root_name is not None:
        bodies.append((root_name, root))
    for name, body in bodies:
        _relax(body, name, reach)


def _relax(node: Any, home: str, reach: dict[str, set[str]], behind: bool = False) -> None:
    """In the body of definition `home`: take out of `required` every property through which a
    reference leads back to `home` (map values count as optional too); a reference back that is
    under no such property (an alias loop, a union of itself) is dropped."""
    if isinstance(node, list):
        for sub in node:
            _relax(sub, home, reach, behind)
        return
    if not isinstance(node, dict):
        return
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        name = ref[len("#/$defs/"):]
        if not behind and (name == home or home in reach.get(name, ())):
            node.clear()
        return
    props = node.get("properties")
    looping: set[str] = set()
    if isinstance(props, dict):
        looping = {p for p, sub in props.items() if any(r == home or home in reach.get(r, ()) for r in _refs(sub))}
        if isinstance(node.get("required"), list):
            node["required"] = [r for r in node["required"] if r not in looping]
            if not node["required"]:
                del node["required"]
        for name, sub in props.items():
            _relax(sub, home, reach, behind or name in looping)
    for key, value in node.items():
        if key not in ("$defs", "properties"):
            _relax(value, home, reach, behind or key == "additionalProperties")
