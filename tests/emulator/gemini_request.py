"""Gemini ``GenerateContentRequest`` validation, strict where the real API is strict: unknown
fields, wrong types, the Schema subset and JSON Schema rules, function names, what each model
accepts (thinking, penalties, candidates, tools with JSON mode), function-call turn pairing and
Gemini 3 thought signatures, with the real API's error texts (each rule names its source), and
finally the google-genai request oracle (tests/emulator/oracle.py).

What each model accepts comes from the gateway's own table (addon/backends/gemini/models.py, with
its sources): one list of facts, enforced here with Google's wording."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from addon.backends.gemini.models import rules_for
from addon.backends.schema import json_pointer

from .oracle import oracle_problem
from .state import EmulatorState
from .wire import compact

# Documented dummy values that pass validation where the real signature cannot be sent
# (ai.google.dev/gemini-api/docs/thought-signatures#faqs; Vertex AI documents the first).
MAGIC_SIGNATURES = frozenset({"skip_thought_signature_validator", "context_engineering_is_the_way_to_go"})

TOP_KEYS = frozenset({"contents", "systemInstruction", "tools", "toolConfig", "generationConfig",
                      "safetySettings", "cachedContent", "labels", "model"})
CONTENT_KEYS = frozenset({"role", "parts"})
PART_DATA = ("text", "inlineData", "fileData", "functionCall", "functionResponse",
             "executableCode", "codeExecutionResult", "toolCall", "toolResponse")
PART_KEYS = frozenset(PART_DATA + ("thought", "thoughtSignature", "videoMetadata", "partMetadata"))
TOOL_KEYS = frozenset({"functionDeclarations", "googleSearch", "googleSearchRetrieval", "codeExecution",
                       "urlContext", "computerUse", "fileSearch", "googleMaps"})
FDECL_KEYS = frozenset({"name", "description", "parameters", "parametersJsonSchema", "response",
                        "responseJsonSchema", "behavior"})
SCHEMA_KEYS = frozenset({"type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems",
                         "properties", "required", "minProperties", "maxProperties", "minLength", "maxLength",
                         "pattern", "example", "anyOf", "propertyOrdering", "default", "items", "minimum",
                         "maximum"})
SCHEMA_TYPES = frozenset({"STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT"})
# Vertex AI's Schema (google.cloud.aiplatform.v1.Schema) has more than the Gemini API's: additionalProperties,
# ref/defs and type NULL (GoogleCloudAiplatformV1Schema in the aiplatform v1 discovery document, e.g.
# https://googleapis.dev/dotnet/Google.Apis.Aiplatform.v1/latest/api/Google.Apis.Aiplatform.v1.Data.GoogleCloudAiplatformV1Schema.html).
VERTEX_SCHEMA_KEYS = SCHEMA_KEYS | {"additionalProperties", "ref", "defs"}
VERTEX_SCHEMA_TYPES = SCHEMA_TYPES | {"NULL"}
GEN_KEYS = frozenset({"temperature", "topP", "topK", "maxOutputTokens", "stopSequences", "candidateCount", "seed",
                      "presencePenalty", "frequencyPenalty", "responseMimeType", "responseSchema",
                      "responseJsonSchema", "thinkingConfig", "responseModalities",
                      # real fields a gateway might legitimately forward
                      "responseLogprobs", "logprobs", "mediaResolution", "speechConfig", "imageConfig"})
THINKING_KEYS = frozenset({"thinkingBudget", "includeThoughts", "thinkingLevel"})
# HarmCategory / HarmBlockThreshold (ai.google.dev API reference, "Safety settings"); legacy PaLM
# categories are still enum values, so they parse.
HARM_CATEGORIES = frozenset({"HARM_CATEGORY_UNSPECIFIED", "HARM_CATEGORY_DEROGATORY", "HARM_CATEGORY_TOXICITY",
                             "HARM_CATEGORY_VIOLENCE", "HARM_CATEGORY_SEXUAL", "HARM_CATEGORY_MEDICAL",
                             "HARM_CATEGORY_DANGEROUS", "HARM_CATEGORY_HARASSMENT", "HARM_CATEGORY_HATE_SPEECH",
                             "HARM_CATEGORY_SEXUALLY_EXPLICIT", "HARM_CATEGORY_DANGEROUS_CONTENT",
                             "HARM_CATEGORY_CIVIC_INTEGRITY"})
HARM_THRESHOLDS = frozenset({"HARM_BLOCK_THRESHOLD_UNSPECIFIED", "BLOCK_LOW_AND_ABOVE", "BLOCK_MEDIUM_AND_ABOVE",
                             "BLOCK_ONLY_HIGH", "BLOCK_NONE", "OFF"})
FC_MODES = frozenset({"AUTO", "ANY", "NONE", "VALIDATED", "MODE_UNSPECIFIED"})
MIME_TYPES = frozenset({"text/plain", "application/json", "application/xml", "application/yaml", "text/x.enum"})
FUNC_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$")
PROTO = "type.googleapis.com/google.ai.generativelanguage.v1beta."


def _b64_ok(value: str) -> bool:
    """Proto JSON accepts standard and URL-safe base64, with or without padding."""
    padded = (value + "=" * (-len(value) % 4)).replace("-", "+").replace("_", "/")
    try:
        base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _camel(key: str) -> str:
    """Proto JSON accepts snake_case field names too; normalise to camelCase."""
    if "_" not in key:
        return key
    head, *rest = key.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


class GeminiInvalid(Exception):
    """A 400 INVALID_ARGUMENT with a Google-style message (and optional BadRequest details)."""

    def __init__(self, message: str, violations: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = ([{"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": violations}]
                        if violations else None)


@dataclass
class GenRequest:
    """The validated, camelCase-normalised parts of a GenerateContentRequest we act on."""

    contents: list[dict[str, Any]]
    system_text: str
    declared: set[str]
    fc_mode: str
    config: dict[str, Any]
    thinking: dict[str, Any]
    google_search: bool = False  # a googleSearch tool was offered
    server_side_tools: bool = False  # toolConfig.includeServerSideToolInvocations


class _Validator:
    """Collects errors like the real API: JSON-shape errors (unknown names, wrong types)
    are reported together and win over semantic errors ("* GenerateContentRequest.x: ...")."""

    def __init__(self, vertex: bool = False) -> None:
        self.schema_keys = VERTEX_SCHEMA_KEYS if vertex else SCHEMA_KEYS
        self.schema_types = VERTEX_SCHEMA_TYPES if vertex else SCHEMA_TYPES
        self.parse_errors: list[tuple[str, str]] = []
        self.errors: list[str] = []

    def known(self, obj: dict[str, Any], allowed: frozenset[str], where: str) -> dict[str, Any]:
        out = {}
        for key, value in obj.items():
            ck = _camel(key)
            if ck in allowed:
                out[ck] = value
            else:
                at = f" at '{where}'" if where else ""
                self.parse_errors.append(
                    (where, f'Invalid JSON payload received. Unknown name "{key}"{at}: Cannot find field.'))
        return out

    def bad_value(self, where: str, typename: str, value: Any) -> None:
        self.parse_errors.append(
            (where, f"Invalid JSON payload received. Invalid value at '{where}' ({typename}), {compact(value)}"))

    def fail(self, where: str, desc: str) -> None:
        self.errors.append(f"* GenerateContentRequest.{where}: {desc}\n")

    def plain(self, message: str) -> None:
        self.errors.append(message)

    def dict_at(self, value: Any, where: str, typename: str) -> dict[str, Any] | None:
        if isinstance(value, dict):
            return value
        self.bad_value(where, typename, value)
        return None

    def list_at(self, value: Any, where: str, typename: str) -> list[Any] | None:
        if isinstance(value, list):
            return value
        self.bad_value(where, typename, value)
        return None

    def raise_if_any(self) -> None:
        if self.parse_errors:
            raise GeminiInvalid("\n".join(d for _, d in self.parse_errors),
                                [{"field": f, "description": d} for f, d in self.parse_errors])
        if self.errors:
            plain = [e for e in self.errors if not e.startswith("* ")]
            raise GeminiInvalid(plain[0] if plain else "".join(self.errors))


def _validate_part(v: _Validator, raw: Any, where: str) -> dict[str, Any] | None:
    part = v.dict_at(raw, where, PROTO + "Part")
    if part is None:
        return None
    p = v.known(part, PART_KEYS, where)
    data = [k for k in PART_DATA if k in p]
    if not data:
        v.fail(f"{where}.data", "required oneof field 'data' must have one initialized field")
    elif len(data) > 1:
        v.parse_errors.append((where, f"Invalid JSON payload received. Invalid value at '{where}' (oneof), "
                                      f"oneof field 'data' is already set. Cannot set '{data[1]}'"))
    if "text" in p and not isinstance(p["text"], str):
        v.bad_value(f"{where}.text", "TYPE_STRING", p["text"])
    if "thought" in p and not isinstance(p["thought"], bool):
        v.bad_value(f"{where}.thought", "TYPE_BOOL", p["thought"])
    if "thoughtSignature" in p and not (isinstance(p["thoughtSignature"], str) and _b64_ok(p["thoughtSignature"])):
        v.parse_errors.append((f"{where}.thought_signature", "Invalid JSON payload received. Invalid value at "
                               f"'{where}.thought_signature' (TYPE_BYTES), Base64 decoding failed for "
                               f"{compact(p['thoughtSignature'])}"))
    for key, check in (("inlineData", _check_inline), ("fileData", _check_file),
                       ("functionCall", _check_function_call), ("functionResponse", _check_function_response)):
        if key in p:
            p[key] = check(v, p[key], f"{where}.{_snake(key)}")
    return p


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower()


def _check_inline(v: _Validator, raw: Any, where: str) -> Any:
    d = v.dict_at(raw, where, PROTO + "Blob")
    if d is None:
        return raw
    d = v.known(d, frozenset({"mimeType", "data"}), where)
    if not d.get("mimeType"):
        v.fail(f"{where}.mime_type", "mime_type must not be empty")
    if not isinstance(d.get("data"), str) or not _b64_ok(d["data"]):
        v.parse_errors.append((f"{where}.data", f"Invalid JSON payload received. Invalid value at "
                                                f"'{where}.data' (TYPE_BYTES), Base64 decoding failed"))
    return d


def _check_file(v: _Validator, raw: Any, where: str) -> Any:
    d = v.dict_at(raw, where, PROTO + "FileData")
    if d is None:
        return raw
    d = v.known(d, frozenset({"mimeType", "fileUri"}), where)
    if not d.get("fileUri"):
        v.fail(f"{where}.file_uri", "file_uri must not be empty")
    return d


def _check_function_call(v: _Validator, raw: Any, where: str) -> Any:
    d = v.dict_at(raw, where, PROTO + "FunctionCall")
    if d is None:
        return raw
    d = v.known(d, frozenset({"id", "name", "args"}), where)
    if not isinstance(d.get("name"), str) or not d["name"]:
        v.fail(f"{where}.name", "Name cannot be empty.")
    if "args" in d and not isinstance(d["args"], dict):
        v.bad_value(f"{where}.args", "type.googleapis.com/google.protobuf.Struct", d["args"])
    return d


def _check_function_response(v: _Validator, raw: Any, where: str) -> Any:
    d = v.dict_at(raw, where, PROTO + "FunctionResponse")
    if d is None:
        return raw
    d = v.known(d, frozenset({"id", "name", "response", "willContinue", "scheduling", "parts"}), where)
    if not isinstance(d.get("name"), str) or not d["name"]:
        v.fail(f"{where}.name", "Name cannot be empty.")
    if "response" not in d:
        v.fail(f"{where}.response", "response must be specified")
    elif isinstance(d["response"], list):  # LibreChat#5525, vercel/ai#3589
        v.parse_errors.append((where, f'Invalid JSON payload received. Unknown name "response" at \'{where}\': '
                                      "Proto field is not repeating, cannot start list."))
    elif not isinstance(d["response"], dict):
        v.bad_value(f"{where}.response", "type.googleapis.com/google.protobuf.Struct", d["response"])
    if "parts" in d and v.list_at(d["parts"], f"{where}.parts", PROTO + "FunctionResponsePart") is not None:
        for k, raw_part in enumerate(d["parts"]):  # FunctionResponsePart: inline_data or file_data
            at = f"{where}.parts[{k}]"
            fp = v.dict_at(raw_part, at, PROTO + "FunctionResponsePart")
            if fp is None:
                continue
            fp = v.known(fp, frozenset({"inlineData", "fileData"}), at)
            if len(fp) != 1:
                v.fail(f"{at}.data", "required oneof field 'data' must have one initialized field")
            if "inlineData" in fp:
                _check_inline(v, fp["inlineData"], f"{at}.inline_data")
            if "fileData" in fp:
                _check_file(v, fp["fileData"], f"{at}.file_data")
    return d


def _validate_content(v: _Validator, raw: Any, where: str, system: bool = False) -> dict[str, Any] | None:
    c = v.dict_at(raw, where, PROTO + "Content")
    if c is None:
        return None
    c = v.known(c, CONTENT_KEYS, where)
    role = c.get("role", "" if system else "user")
    if not system and role not in ("user", "model"):
        v.plain("Please use a valid role: user, model.")
    parts_raw = c.get("parts")
    parts: list[dict[str, Any]] = []
    if parts_raw is None or parts_raw == []:
        v.fail(f"{where}.parts", "contents.parts must not be empty.")
    elif v.list_at(parts_raw, f"{where}.parts", PROTO + "Part") is not None:
        for j, part in enumerate(parts_raw):
            norm = _validate_part(v, part, f"{where}.parts[{j}]")
            if norm is not None:
                parts.append(norm)
    return {"role": role, "parts": parts}


def _validate_schema(v: _Validator, raw: Any, where: str, sem: str | None = None) -> None:
    """The OpenAPI-subset ``Schema`` proto (`parameters`, `responseSchema`). Unknown keys are
    proto parse errors (path `properties[i].value`); the semantic rules below are reported with
    the property names (`properties[city]`), as Google does. Sources, all quoting live 400s:
    untyped node OpenAgentsInc/openagents#857, LibreChat#6971; empty OBJECT agno-agi/agno#2112,
    langchain-google#416; ARRAY without items cline#7926; items on a non-array opencode#49392;
    properties on a non-object opencode#11888; enum on a non-string and STRING formats: client
    test comments quoting the API; required without property CLIProxyAPI's sanitizer tests."""
    sem = sem or where
    s = v.dict_at(raw, where, PROTO + "Schema")
    if s is None:
        return
    s = v.known(s, v.schema_keys, where)
    t = s.get("type")
    kind = t.upper() if isinstance(t, str) else None
    if t is not None and kind not in v.schema_types:
        v.bad_value(f"{where}.type", PROTO + "Type", t)
    elif t is None and "anyOf" not in s:
        v.fail(f"{sem}.type", "must be specified when not using one_of, any_of or all_of fields")
    props = s.get("properties")
    if props is not None and v.dict_at(props, f"{where}.properties", PROTO + "Schema") is not None:
        if kind not in (None, "OBJECT"):
            v.fail(f"{sem}.properties", "only allowed for OBJECT type")
        for i, (name, sub) in enumerate(props.items()):
            _validate_schema(v, sub, f"{where}.properties[{i}].value", f"{sem}.properties[{name}]")
    if kind == "OBJECT" and not props and not s.get("additionalProperties"):  # Vertex has maps
        v.fail(f"{sem}.properties", "should be non-empty for OBJECT type")
    if "items" in s:
        if kind != "ARRAY":
            v.fail(f"{sem}.items", "field predicate failed: $type == Type.ARRAY")
        _validate_schema(v, s["items"], f"{where}.items", f"{sem}.items")
    elif kind == "ARRAY":
        v.fail(f"{sem}.items", "missing field.")
    if "anyOf" in s and v.list_at(s["anyOf"], f"{where}.any_of", PROTO + "Schema") is not None:
        for i, sub in enumerate(s["anyOf"]):
            _validate_schema(v, sub, f"{where}.any_of[{i}]", f"{sem}.any_of[{i}]")
    if "enum" in s and v.list_at(s["enum"], f"{where}.enum", "TYPE_STRING") is not None:
        for i, item in enumerate(s["enum"]):
            if not isinstance(item, str):
                v.bad_value(f"{where}.enum[{i}]", "TYPE_STRING", item)
        if kind not in (None, "STRING"):
            v.fail(f"{sem}.enum", "only allowed for STRING type")
    fmt = s.get("format")
    if kind == "STRING" and fmt is not None and fmt not in ("enum", "date-time"):
        v.fail(f"{sem}.format", "only 'enum' and 'date-time' are supported for STRING type")
    if "required" in s and v.list_at(s["required"], f"{where}.required", "TYPE_STRING") is not None:
        names = props if isinstance(props, dict) else {}
        for i, name in enumerate(s["required"]):
            if name not in names:
                v.fail(f"{sem}.required[{i}]", "property is not defined")


_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties")
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMA_ONE = ("items", "additionalProperties", "not", "contains")


def _json_schema_refs(node: Any, path: str, optional: bool, out: list[tuple[str, str, bool, dict]]) -> None:
    """Every `$ref` node: (ref, dotted path, behind a non-required property?, the node)."""
    if not isinstance(node, dict):
        return
    if isinstance(node.get("$ref"), str):
        out.append((node["$ref"], path, optional, node))
    required = node.get("required") if isinstance(node.get("required"), list) else []
    for key in _SUBSCHEMA_MAPS:
        if isinstance(node.get(key), dict):
            for name, sub in node[key].items():
                behind = optional or (key == "properties" and name not in required)
                _json_schema_refs(sub, f"{path}.{key}.{name}".lstrip("."), behind if key != "$defs" else False, out)
    for key in _SUBSCHEMA_LISTS:
        if isinstance(node.get(key), list):
            for i, sub in enumerate(node[key]):
                _json_schema_refs(sub, f"{path}.{key}.{i}".lstrip("."), optional, out)
    for key in _SUBSCHEMA_ONE:  # a map's values are optional too
        _json_schema_refs(node.get(key), f"{path}.{key}".lstrip("."), optional or key == "additionalProperties", out)
    if isinstance(node.get("items"), list):
        for i, sub in enumerate(node["items"]):
            _json_schema_refs(sub, f"{path}.items.{i}".lstrip("."), optional, out)


def _validate_json_schema(v: _Validator, raw: Any, where: str, root_object: bool) -> None:
    """`parametersJsonSchema` / `responseJsonSchema`: JSON Schema, free-form for the proto, with
    the restrictions Google documents or was seen enforcing:
      * a `$ref` node carries only `$` keys, description and default (text from opencode#12295);
      * a `$ref` resolves (text from gemini-cli#13326);
      * "Cyclic references ... may only be used within non-required properties" (the proto comment
        of GenerationConfig.response_json_schema; wording of the error not captured anywhere);
      * `parametersJsonSchema` "must describe an object" (FunctionDeclaration docs; wording not
        captured)."""
    if not isinstance(raw, dict):
        v.fail(where, "must be a JSON object (a JSON Schema).")
        return
    if root_object:
        kind = raw.get("type")
        kinds = kind if isinstance(kind, list) else [kind]
        if "object" not in kinds:
            v.fail(where, "The schema must describe an object whose properties are the parameters of the function.")
    refs: list[tuple[str, str, bool, dict]] = []
    _json_schema_refs(raw, "", False, refs)
    for ref, path, _, node in refs:
        extra = [k for k in node if k != "$ref" and not k.startswith("$") and k not in ("description", "default")]
        if extra:
            v.fail(where, f"$ref '{ref.rsplit('/', 1)[-1]}' was set alongside unsupported fields. If a schema node "
                          "has $ref set, then only description and default can be set alongside it")
        if not isinstance(json_pointer(raw, ref), (dict, bool)):
            v.fail(where, f"reference to undefined schema at {path or '$ref'}")
    # a reference that leads back to the definition (or root) it sits in must be behind a
    # non-required property
    for ref, path, optional, _ in refs:
        if optional:
            continue
        parts = path.split(".")
        home = f"#/{parts[0]}/{parts[1]}" if len(parts) >= 2 and parts[0] in ("$defs", "definitions") else "#"
        if ref == home or _reaches(raw, ref, home):
            v.fail(where, f"Cyclic reference at {path} is only allowed within non-required properties.")


def _reaches(doc: dict[str, Any], start: str, goal: str) -> bool:
    """Does the schema at `start` lead (through `$ref`s) back to `goal`?"""
    seen: set[str] = set()
    stack = [start]
    while stack:
        ref = stack.pop()
        if ref in seen:
            continue
        seen.add(ref)
        refs: list[tuple[str, str, bool, dict]] = []
        target = json_pointer(doc, ref)
        _json_schema_refs(target if ref != "#" else {k: v for k, v in doc.items() if k != "$defs"}, "", False, refs)
        for nxt, _, _, _ in refs:
            if nxt == goal:
                return True
            stack.append(nxt)
    return False


def _validate_tools(v: _Validator, raw: Any) -> tuple[set[str], bool]:
    """(declared function names, whether googleSearch is offered)."""
    declared: set[str] = set()
    search = False
    if v.list_at(raw, "tools", PROTO + "Tool") is None:
        return declared, search
    for i, tool in enumerate(raw):
        where = f"tools[{i}]"
        if v.dict_at(tool, where, PROTO + "Tool") is None:
            continue
        t = v.known(tool, TOOL_KEYS, where)
        if "googleSearch" in t and v.dict_at(t["googleSearch"], f"{where}.google_search",
                                             PROTO + "Tool.GoogleSearch") is not None:
            v.known(t["googleSearch"], frozenset({"timeRangeFilter"}), f"{where}.google_search")
            search = True
        decls = t.get("functionDeclarations")
        if decls is None or v.list_at(decls, f"{where}.function_declarations", PROTO + "FunctionDeclaration") is None:
            continue
        for j, decl in enumerate(decls):
            _validate_declaration(v, decl, f"{where}.function_declarations[{j}]", declared)
    return declared, search


def _validate_declaration(v: _Validator, raw: Any, where: str, declared: set[str]) -> None:
    if v.dict_at(raw, where, PROTO + "FunctionDeclaration") is None:
        return
    d = v.known(raw, FDECL_KEYS, where)
    name = d.get("name")
    if not isinstance(name, str) or not FUNC_NAME.match(name):
        v.fail(f"{where}.name", "Invalid function name. Must start with a letter or an underscore. Must be "
                                "alphameric (a-z, A-Z, 0-9), underscores (_), dots (.), colons (:), or dashes (-), "
                                "with a maximum length of 64.")
    elif name in declared:
        v.fail(f"{where}.name", f"Duplicate function declaration found: {name}")
    else:
        declared.add(name)
    if "parameters" in d and "parametersJsonSchema" in d:  # "mutually exclusive" (docs); wording not captured
        v.fail(f"{where}.parameters", "parameters and parameters_json_schema cannot both be set.")
    if "parameters" in d:
        _validate_schema(v, d["parameters"], f"{where}.parameters")
    if "parametersJsonSchema" in d:
        _validate_json_schema(v, d["parametersJsonSchema"], f"{where}.parameters_json_schema", root_object=True)
    if "response" in d:
        _validate_schema(v, d["response"], f"{where}.response")
    if "responseJsonSchema" in d:
        _validate_json_schema(v, d["responseJsonSchema"], f"{where}.response_json_schema", root_object=False)


def _validate_tool_config(v: _Validator, raw: Any) -> tuple[str, bool]:
    """(function calling mode, includeServerSideToolInvocations)."""
    if v.dict_at(raw, "tool_config", PROTO + "ToolConfig") is None:
        return "AUTO", False
    tc = v.known(raw, frozenset({"functionCallingConfig", "retrievalConfig", "includeServerSideToolInvocations"}),
                 "tool_config")
    server_side = tc.get("includeServerSideToolInvocations", False)
    if not isinstance(server_side, bool):
        v.bad_value("tool_config.include_server_side_tool_invocations", "TYPE_BOOL", server_side)
    fcc = tc.get("functionCallingConfig")
    where = "tool_config.function_calling_config"
    if fcc is None or v.dict_at(fcc, where, PROTO + "FunctionCallingConfig") is None:
        return "AUTO", server_side is True
    fcc = v.known(fcc, frozenset({"mode", "allowedFunctionNames"}), where)
    mode = fcc.get("mode", "AUTO")
    if mode not in FC_MODES:
        v.bad_value(f"{where}.mode", PROTO + "FunctionCallingConfig.Mode", mode)
    if fcc.get("allowedFunctionNames") and mode not in ("ANY", "VALIDATED"):
        v.fail(f"{where}.allowed_function_names", "allowed_function_names should only be set when the mode is ANY.")
    return (mode if isinstance(mode, str) else "AUTO"), server_side is True


def _validate_safety(v: _Validator, raw: Any) -> None:
    if v.list_at(raw, "safety_settings", PROTO + "SafetySetting") is None:
        return
    for i, item in enumerate(raw):
        where = f"safety_settings[{i}]"
        if v.dict_at(item, where, PROTO + "SafetySetting") is None:
            continue
        setting = v.known(item, frozenset({"category", "threshold"}), where)
        if setting.get("category") not in HARM_CATEGORIES:
            v.bad_value(f"{where}.category", PROTO + "HarmCategory", setting.get("category"))
        if setting.get("threshold") not in HARM_THRESHOLDS:
            v.bad_value(f"{where}.threshold", PROTO + "SafetySetting.HarmBlockThreshold", setting.get("threshold"))


def _validate_generation_config(v: _Validator, raw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    where = "generation_config"
    if v.dict_at(raw, where, PROTO + "GenerationConfig") is None:
        return {}, {}
    g = v.known(raw, GEN_KEYS, where)
    for key in ("temperature", "topP", "presencePenalty", "frequencyPenalty"):
        if key in g and (isinstance(g[key], bool) or not isinstance(g[key], (int, float))):
            v.bad_value(f"{where}.{_snake(key)}", "TYPE_FLOAT", g[key])
    for key in ("topK", "maxOutputTokens", "candidateCount", "seed"):
        if key in g and (isinstance(g[key], bool) or not isinstance(g[key], int)):
            v.bad_value(f"{where}.{_snake(key)}", "TYPE_INT32", g[key])
    if "stopSequences" in g and v.list_at(g["stopSequences"], f"{where}.stop_sequences", "TYPE_STRING") is not None:
        if not all(isinstance(s, str) for s in g["stopSequences"]):
            v.bad_value(f"{where}.stop_sequences", "TYPE_STRING", g["stopSequences"])
    if "responseMimeType" in g and g["responseMimeType"] not in MIME_TYPES:
        v.fail(f"{where}.response_mime_type", "allowed mimetypes are `text/plain`, `application/json`, "
                                              "`application/xml`, `application/yaml` and `text/x.enum`.")
    if "responseSchema" in g:
        if "responseJsonSchema" in g:
            v.fail(f"{where}.response_schema", "response_schema and response_json_schema cannot both be set.")
        _validate_schema(v, g["responseSchema"], f"{where}.response_schema")
    if "responseJsonSchema" in g:
        # "If set, response_schema must be omitted, but response_mime_type is required." (proto comment)
        if g.get("responseMimeType") != "application/json":
            v.fail(f"{where}.response_mime_type", "response_mime_type must be application/json when "
                                                  "response_json_schema is set.")
        _validate_json_schema(v, g["responseJsonSchema"], f"{where}.response_json_schema", root_object=False)
    thinking: dict[str, Any] = {}
    if "thinkingConfig" in g and v.dict_at(g["thinkingConfig"], f"{where}.thinking_config",
                                           PROTO + "ThinkingConfig") is not None:
        thinking = v.known(g["thinkingConfig"], THINKING_KEYS, f"{where}.thinking_config")
        level = thinking.get("thinkingLevel")
        if level is not None and (not isinstance(level, str)
                                  or level.upper() not in {"LOW", "MEDIUM", "HIGH", "MINIMAL", "XHIGH",
                                                           "THINKING_LEVEL_UNSPECIFIED"}):
            v.bad_value(f"{where}.thinking_config.thinking_level", PROTO + "ThinkingConfig.ThinkingLevel", level)
    cc = g.get("candidateCount")
    if isinstance(cc, int) and not isinstance(cc, bool) and not 1 <= cc <= 8:
        v.fail(f"{where}.candidate_count", "candidate_count must be between 1 and 8.")
    return g, thinking


def _fc_count(content: dict[str, Any]) -> int:
    return sum(1 for p in content["parts"] if "functionCall" in p)


def _fr_count(content: dict[str, Any]) -> int:
    return sum(1 for p in content["parts"] if "functionResponse" in p)


def _check_turns(contents: list[dict[str, Any]]) -> None:
    """Gemini's function-calling turn rules (checked after the shape is known-good)."""
    for i, content in enumerate(contents):
        prev = contents[i - 1] if i else None
        calls = _fc_count(content)
        if content["role"] == "model" and calls:
            if prev is None or prev["role"] != "user":
                raise GeminiInvalid("Please ensure that function call turn comes immediately after a user turn "
                                    "or after a function response turn.")
            nxt = contents[i + 1] if i + 1 < len(contents) else None
            if nxt is not None and nxt["role"] == "user" and _fr_count(nxt) != calls:
                raise GeminiInvalid("Please ensure that the number of function response parts is equal to the "
                                    "number of function call parts of the function call turn.")
        if content["role"] == "user" and _fr_count(content):
            if prev is None or prev["role"] != "model" or not _fc_count(prev):
                raise GeminiInvalid("Please ensure that function response turn comes immediately after a "
                                    "function call turn.")


# Thought-signature errors, verbatim. Missing: reported in manthanabc/paws#103, niki914/zafiro#100,
# lbjlaq/Antigravity-Manager#2157 (note the space before the comma). Foreign or made-up:
# google-gemini/gemini-cli#13467 (Code Assist -> API key in one conversation), zerogravity#98 (a
# synthetic value).
CORRUPTED_SIGNATURE = "Corrupted thought signature."


def _check_signatures(contents: list[dict[str, Any]], model: str, state: EmulatorState,
                      credential: str | None) -> None:
    """Gemini's thought-signature rules (ai.google.dev/gemini-api/docs/thought-signatures):

    * a signature is bound to the credential it was issued to: one issued to another key or
      account is refused wherever it appears, on any model (the gateway must never send one);
    * Gemini 3: in the current turn (the model contents after the last user content with text),
      the first functionCall part of each model step must carry a signature this credential was
      issued, or a documented dummy; later parallel calls need none, earlier turns are not checked.
    """
    for content in contents:
        for part in content["parts"]:
            sig = part.get("thoughtSignature")
            if sig and sig not in MAGIC_SIGNATURES and not state.signature_from(sig, credential, issued_only=False):
                raise GeminiInvalid(CORRUPTED_SIGNATURE)
    if not gemini3_or_later(model):
        return
    start = 0
    if state.signature_scope == "turn":
        for i, content in enumerate(contents):
            if content["role"] == "user" and any(p.get("text") for p in content["parts"]):
                start = i
    for pos, content in enumerate(contents[start:], start=start):
        if content["role"] != "model":
            continue
        first = next((p for p in content["parts"] if "functionCall" in p), None)
        if first is None:
            continue
        sig = first.get("thoughtSignature")
        name = first["functionCall"].get("name")
        if not sig:
            raise GeminiInvalid(
                "Function call is missing a thought_signature in functionCall parts. This is required for tools "
                "to work correctly, and missing thought_signature may lead to degraded model performance. "
                f"Additional data, function call `default_api:{name}` , position {pos + 1}. Please refer to "
                "https://ai.google.dev/gemini-api/docs/thought-signatures for more details.")
        if sig not in MAGIC_SIGNATURES and not state.signature_from(sig, credential, issued_only=True):
            raise GeminiInvalid(CORRUPTED_SIGNATURE)


_LEARN_MORE = "Learn more: https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/gemini"


def _check_model_rules(model: str, config: dict[str, Any], thinking: dict[str, Any], declared: set[str],
                       fc_mode: str, flavor: str) -> None:
    """What this model accepts (addon/backends/gemini/models.py has the table and its sources);
    the texts are Google's, as quoted in the issues named here."""
    rules = rules_for(model)
    if not rules.known:
        return
    cloud = flavor in ("cloudcode", "vertex")
    level, budget = thinking.get("thinkingLevel"), thinking.get("thinkingBudget")
    if level is not None and budget is not None:  # sterlp/eclipse-peon-ai#115
        raise GeminiInvalid("You can only set only one of thinking budget and thinking level.")
    if level is not None and str(level).upper() != "THINKING_LEVEL_UNSPECIFIED":
        if not rules.levels:  # Roo-Code#10700 (Gemini API), gemini-cli#14025 (Cloud Code / Vertex)
            raise GeminiInvalid(f"Unable to submit request because thinking_level is not supported by this model.. "
                                f"{_LEARN_MORE}" if cloud else "Thinking level is not supported for this model.")
        if str(level).lower() not in rules.levels:  # chatwise-releases#1206, vellum-ai#32687
            raise GeminiInvalid(f"Thinking level {str(level).upper()} is not supported for this model. Please retry "
                                "with other thinking level.")
    if isinstance(budget, int) and budget != -1:
        if budget == 0 and not rules.budget_zero:  # chatluna#519 (Gemini API), gemini-cli-openai#23 (Cloud Code)
            raise GeminiInvalid("The model does not support setting thinking_budget to 0." if cloud
                                else "Budget 0 is invalid. This model only works in thinking mode.")
        if budget != 0 and rules.budget is not None and not rules.budget[0] <= budget <= rules.budget[1]:
            raise GeminiInvalid(f"The thinking budget ({budget}) is invalid.")  # Roo-Code#4399
    if not rules.penalties and ("presencePenalty" in config or "frequencyPenalty" in config):
        raise GeminiInvalid(f"Penalty is not enabled for models/{model}")  # openai-gemini#63, litellm#16907
    if not rules.multi_candidates and (config.get("candidateCount") or 1) > 1:
        raise GeminiInvalid("Multiple candidates is not enabled for this model")  # js-genai#1609
    if (not rules.json_with_tools and declared and fc_mode != "NONE"
            and config.get("responseMimeType") == "application/json"):  # python-genai#867, symfony/ai#1777
        raise GeminiInvalid("Function calling with a response mime type: 'application/json' is unsupported")


def validate_generate_request(body: Any, model: str, state: EmulatorState, flavor: str = "gemini", *,
                              vertex: bool = False, credential: str | None = None) -> GenRequest:
    """Validate a GenerateContentRequest like the real API; raise GeminiInvalid on the first problem set.
    `flavor` "cloudcode" is the inner request of /v1internal, `vertex` a Vertex AI request (a few
    texts and the Schema keys differ there). `credential` is who sends it (Call.credential); None
    checks signatures only for having been issued at all (unit tests that call this directly)."""
    v = _Validator(vertex)
    flavor = "vertex" if vertex else flavor
    if not isinstance(body, dict):
        raise GeminiInvalid("Invalid JSON payload received. Expected an object.")
    top = v.known(body, TOP_KEYS, "")
    contents: list[dict[str, Any]] = []
    raw_contents = top.get("contents")
    if not raw_contents:
        v.fail("contents", "contents is not specified")
    elif v.list_at(raw_contents, "contents", PROTO + "Content") is not None:
        for i, c in enumerate(raw_contents):
            norm = _validate_content(v, c, f"contents[{i}]")
            if norm is not None:
                contents.append(norm)
    system_text = ""
    if top.get("systemInstruction") is not None:
        si = _validate_content(v, top["systemInstruction"], "system_instruction", system=True)
        system_text = " ".join(p["text"] for p in (si or {}).get("parts", []) if isinstance(p.get("text"), str))
    declared, search = _validate_tools(v, top["tools"]) if top.get("tools") is not None else (set(), False)
    fc_mode, server_side = (_validate_tool_config(v, top["toolConfig"]) if top.get("toolConfig") is not None
                            else ("AUTO", False))
    config, thinking = (_validate_generation_config(v, top["generationConfig"])
                        if top.get("generationConfig") is not None else ({}, {}))
    if top.get("safetySettings") is not None:
        _validate_safety(v, top["safetySettings"])
    v.raise_if_any()
    _check_model_rules(model, config, thinking, declared, fc_mode, flavor)
    _check_turns(contents)
    gemini3 = gemini3_or_later(model)
    _check_signatures(contents, model, state, credential)
    _check_tool_mix(declared, search, server_side, gemini3)
    if not gemini3:
        _check_no_response_parts(contents)
    problem = oracle_problem(body, flavor)
    if problem:
        raise GeminiInvalid(f"Request refused by the google-genai oracle (the test emulator's schema check): {problem}")
    return GenRequest(contents, system_text, declared, fc_mode, config, thinking, search, server_side)


def gemini3_or_later(model: str) -> bool:
    """Gemini 3 and 4 share what this emulator checks (signatures, tool mixes, response parts)."""
    m = re.match(r"gemini-(\d+)", model)
    return m is not None and int(m.group(1)) >= 3


def _check_tool_mix(declared: set[str], search: bool, server_side: bool, gemini3: bool) -> None:
    """Google Search next to function declarations: refused before Gemini 3 (googleapis/go-genai#323,
    vercel/ai#8258); on Gemini 3 only with includeServerSideToolInvocations
    (https://ai.google.dev/gemini-api/docs/tool-combination; js-genai#1768 has the text)."""
    if not (search and declared):
        return
    if not gemini3:
        raise GeminiInvalid("Tool use with function calling is unsupported")
    if not server_side:
        raise GeminiInvalid("Please enable tool_config.include_server_side_tool_invocations to use Built-in tools "
                            "with Function calling.")


def _check_no_response_parts(contents: list[dict[str, Any]]) -> None:
    """Multimodal function responses are Gemini 3 only; the text is gemini-cli#19436's (Gemini 2.5)."""
    for content in contents:
        for part in content["parts"]:
            if isinstance(part.get("functionResponse"), dict) and "parts" in part["functionResponse"]:
                raise GeminiInvalid("Unable to submit request because `function_response.parts` is not supported "
                                    "for this model. Learn more: "
                                    "https://cloud.google.com/vertex-ai/generative-ai/docs/multimodal/function-calling")
