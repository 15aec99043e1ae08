"""Tool and response schemas real clients send -> `parametersJsonSchema` / `responseJsonSchema`.

Golden fixtures (tests/fixtures/schemas/) from schemas clients really produce: pydantic
`model_json_schema()` (generated here with the installed pydantic: nested models, `$defs`,
`Optional`, enums, `dict[str, str]`, recursion), an MCP tool list (filesystem / GitHub / memory
servers, zod-to-json-schema output), and hand-written junk. Every converted schema must pass the
emulator, which enforces Google's JSON Schema rules and the google-genai oracle; a hypothesis
property does the same for arbitrary JSON-Schema-like input.

Why JSON Schema and not `parameters`: the same pydantic schema sent as the OpenAPI-subset
`parameters` is refused (checked below), as Google refuses it (LibreChat#6971, agno#2112).
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from addon.backends import gemini
from addon.backends.schema import response_schema, tool_parameters
from addon.frontends import chat
from addon.protocol.errors import GatewayError
from tests import emulator as emu
from tests.golden import golden, load

DIR = Path(__file__).parent / "fixtures" / "schemas"
MODELS = ("gemini-2.5-flash", "gemini-3.5-flash", "gemini-3.1-pro-preview")


# ---- schemas real clients produce -------------------------------------------------------------

class Unit(str, Enum):
    CELSIUS = "c"
    FAHRENHEIT = "f"


class Address(BaseModel):
    street: str
    zip: str | None = None


class Person(BaseModel):
    """A pydantic tool argument with what pydantic emits: $defs, $ref with description, anyOf-null."""

    name: str = Field(description="Full name")
    age: int | None = Field(default=None, ge=0)
    unit: Unit = Unit.CELSIUS
    home: Address = Field(description="Where they live")
    previous: list[Address] = []
    labels: dict[str, str] = {}
    scores: dict[str, float] | None = None
    kind: Literal["person", "robot"]
    extra: Any = None


class Node(BaseModel):
    """Recursive: a tree whose children are required (Google only unrolls optional recursion)."""

    value: str
    children: list[Node]


def pydantic_cases() -> dict[str, dict[str, Any]]:
    return {"pydantic_person": Person.model_json_schema(), "pydantic_tree": Node.model_json_schema()}


def mcp_tools() -> list[dict[str, Any]]:
    return load(DIR / "mcp_tools.json")["tools"]


def junk_cases() -> dict[str, dict[str, Any]]:
    return {k: v for k, v in load(DIR / "junk.json").items() if not k.startswith("_")}


def body_with(params: dict[str, Any] | None, answer: dict[str, Any] | None, name: str = "f") -> dict[str, Any]:
    body: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    if params is not None:
        body["tools"] = [{"functionDeclarations": [{"name": name, "parametersJsonSchema": params}]}]
    if answer is not None:
        body["generationConfig"] = {"responseMimeType": "application/json", "responseJsonSchema": answer}
    return body


def accepted(body: dict[str, Any], model: str) -> None:
    try:
        emu.validate_generate_request(json.loads(json.dumps(body)), model, emu.EmulatorState())
    except emu.GeminiInvalid as exc:
        pytest.fail(f"{model} refuses it: {exc.message}\n{json.dumps(body, indent=1)[:3000]}")


# ---- goldens ----------------------------------------------------------------------------------

@pytest.mark.parametrize("case", sorted([*pydantic_cases(), *junk_cases()]))
def test_schema_golden(case: str) -> None:
    schema = {**pydantic_cases(), **junk_cases()}[case]
    params = tool_parameters(json.loads(json.dumps(schema)), case)
    golden(DIR / f"{case}.golden.json", params)
    for model in ("gemini-2.5-flash", "gemini-3.5-flash"):  # 2.5 refuses tools + JSON mode: one at a time
        accepted(body_with(params, None), model)
        accepted(body_with(None, response_schema(json.loads(json.dumps(schema)))), model)


def test_mcp_tool_list_golden() -> None:
    tools = [{"type": "function", "function": {"name": t["name"], "description": t["description"],
                                               "parameters": t["inputSchema"]}} for t in mcp_tools()]
    req = chat.parse({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "tools": tools})
    for model in MODELS:
        body = gemini.build_request(req, model)
        accepted(body, model)
    golden(DIR / "mcp_tools.golden.json", body["tools"])


def test_raw_pydantic_schema_is_refused_as_openapi_parameters() -> None:
    """The reason for parametersJsonSchema: Google's `parameters` refuses what pydantic emits."""
    raw = {"contents": [{"role": "user", "parts": [{"text": "x"}]}],
           "tools": [{"functionDeclarations": [{"name": "f", "parameters": Person.model_json_schema()}]}]}
    with pytest.raises(emu.GeminiInvalid, match='Unknown name "\\$defs"'):
        emu.validate_generate_request(raw, "gemini-2.5-flash", emu.EmulatorState())
    record = {"contents": raw["contents"], "tools": [{"functionDeclarations": [{"name": "f", "parameters": {
        "type": "OBJECT", "properties": {"env": {"type": "OBJECT"}}}}]}]}
    with pytest.raises(emu.GeminiInvalid, match=r"properties\[env\]\.properties: should be non-empty for OBJECT"):
        emu.validate_generate_request(record, "gemini-2.5-flash", emu.EmulatorState())


# ---- what the conversion guarantees ------------------------------------------------------------

def test_pydantic_person_keeps_its_meaning() -> None:
    out = tool_parameters(Person.model_json_schema(), "f")
    props = out["properties"]
    assert props["home"] == {"$ref": "#/$defs/Address", "description": "Where they live"}
    assert props["labels"]["type"] == "object" and props["labels"]["additionalProperties"] == {"type": "string"}
    assert props["age"]["anyOf"] == [{"type": "integer", "minimum": 0}, {"type": "null"}]
    assert props["unit"]["$ref"] == "#/$defs/Unit" and out["$defs"]["Unit"]["enum"] == ["c", "f"]
    assert props["kind"] == {"type": "string", "enum": ["person", "robot"], "title": "Kind"} or \
        props["kind"]["enum"] == ["person", "robot"]
    assert out["required"] == ["name", "home", "kind"]
    assert set(out["$defs"]) == {"Address", "Unit"}


def test_recursion_through_a_required_property_is_made_optional() -> None:
    out = tool_parameters(Node.model_json_schema(), "f")
    node = out["$defs"]["Node"]
    assert node["required"] == ["value"], "children leads back to Node: no longer required"
    assert node["properties"]["children"]["items"] == {"$ref": "#/$defs/Node"}
    root = tool_parameters(junk_cases()["self_recursive_root"], "f")
    assert root["required"] == ["name"] and root["properties"]["children"]["items"] == {"$ref": "#/$defs/root"}
    assert root["$defs"]["root"]["required"] == ["name"]
    # and the emulator does refuse the unrelaxed form (Google: "may only be used within non-required properties")
    strict = Node.model_json_schema()
    with pytest.raises(emu.GeminiInvalid, match="non-required"):
        emu.validate_generate_request(body_with(strict, None), "gemini-2.5-flash", emu.EmulatorState())


def test_refs_resolve_and_carry_no_siblings() -> None:
    out = tool_parameters(junk_cases()["refs"], "f")
    props = out["properties"]
    assert props["a"] == {"$ref": "#/$defs/A", "description": "kept"}  # title dropped
    assert props["w"] == {"$ref": "#/$defs/Weird_Name_1"} and out["$defs"]["Weird_Name_1"] == {"type": "string"}
    assert props["gone"] == {} and props["remote"] == {}  # unresolvable: "any"
    mcp = {t["name"]: t["inputSchema"] for t in mcp_tools()}
    memory = tool_parameters(mcp["memory server: create relations"], "f")
    assert memory["properties"]["inverse"] == memory["properties"]["relations"]  # #/properties/... inlined
    assert memory["properties"]["metadata"] == {"type": "object", "additionalProperties": {"type": "string"}}
    assert "$schema" not in json.dumps(memory) and "definitions" not in memory
    for raw in (junk_cases()["refs"], Person.model_json_schema()):
        with pytest.raises(emu.GeminiInvalid, match="alongside unsupported fields|undefined schema"):
            bad = {**raw, "properties": {**raw["properties"], "z": {"$ref": "#/$defs/Nope", "title": "x"}}}
            emu.validate_generate_request(body_with(bad, None), "gemini-3.5-flash", emu.EmulatorState())


@pytest.mark.parametrize("schema", [
    {"$ref": "#", "type": "object"},
    {"type": "object", "allOf": [{"$ref": "#"}], "properties": {"a": {"allOf": [{"$ref": "#"}]}}},
    {"type": "object", "$defs": {"A": {"$ref": "#/$defs/B"}, "B": {"$ref": "#/$defs/A"}},
     "properties": {"x": {"$ref": "#/$defs/A"}}, "required": ["x"]},
    {"type": "object", "$defs": {"U": {"anyOf": [{"type": "string"}, {"$ref": "#/$defs/U"}]}},
     "properties": {"u": {"$ref": "#/$defs/U"}}, "required": ["u"]},
    {"type": "object", "$defs": {"T": {"type": "object", "additionalProperties": {"$ref": "#/$defs/T"}}},
     "properties": {"t": {"$ref": "#/$defs/T"}}, "required": ["t"]},
    {"$ref": "#/properties/a", "properties": {"a": {"$ref": "#/properties/a"}}},
])
def test_pathological_references_still_convert_to_something_google_takes(schema: dict[str, Any]) -> None:
    out = tool_parameters(schema, "f")
    accepted(body_with(out, None), "gemini-2.5-flash")
    accepted(body_with(None, response_schema(schema)), "gemini-2.5-flash")
    assert len(json.dumps(out)) < 20000


@pytest.mark.parametrize("schema", [{"type": "string"}, {"type": "array", "items": {"type": "string"}}])
def test_a_root_that_is_not_an_object_is_refused_as_openai_does(schema: dict[str, Any]) -> None:
    with pytest.raises(GatewayError) as info:
        tool_parameters(schema, "lookup")
    assert info.value.status == 400 and "'lookup'" in info.value.message and "object" in info.value.message


@pytest.mark.parametrize("schema", [{}, {"type": "object"}, {"properties": {}}, {"type": ["object", "null"]},
                                    {"anyOf": [{"type": "object", "properties": {"a": {"type": "string"}}}]}])
def test_roots_without_type_become_objects(schema: dict[str, Any]) -> None:
    out = tool_parameters(schema, "f")
    assert out["type"] == "object" and "properties" in out
    accepted(body_with(out, None), "gemini-2.5-flash")


def test_response_schema_root_may_be_any_type() -> None:
    assert response_schema({"type": "array", "items": {"type": "string"}}) == {
        "type": "array", "items": {"type": "string"}}
    assert response_schema("not a schema") is None


# ---- property: anything schema-like converts and passes ---------------------------------------

_KEYS = ["type", "properties", "items", "anyOf", "oneOf", "allOf", "$ref", "$defs", "definitions", "enum",
         "const", "required", "additionalProperties", "format", "nullable", "minimum", "exclusiveMaximum",
         "description", "title", "default", "pattern", "minItems", "prefixItems", "$schema", "not", "x-custom"]
_leaf = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False, allow_infinity=False),
                  st.sampled_from(["string", "object", "array", "integer", "null", "#/$defs/A", "#", "#/properties/a",
                                   "#/definitions/B", "date-time", "a", ""]))
_json = st.recursive(_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.sampled_from(_KEYS + ["a", "b", "A", "B"]), inner, max_size=5)), max_leaves=30)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(_KEYS), _json, max_size=6))
def test_any_schema_like_input_converts_and_passes_the_oracle(raw: dict[str, Any]) -> None:
    raw = {**raw, "type": "object"}
    params, answer = tool_parameters(raw, "f"), response_schema(raw)
    emu.validate_generate_request(body_with(params, answer), "gemini-3.5-flash", emu.EmulatorState())
