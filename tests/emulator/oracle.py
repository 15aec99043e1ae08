"""The request oracle: every GenerateContentRequest the emulator receives is also checked against
google-genai's pydantic request types, which forbid unknown fields at every level
(`extra='forbid'`), so a misspelt or invented field the emulator's own rules miss still fails the
test that sent it.

google-genai has no type for the whole REST body (its `GenerateContentConfig` is SDK-shaped), so
the top-level keys are checked here and each piece with its own type: `types.Content` (each of
`contents`, and `systemInstruction`), `types.Tool`, `types.ToolConfig`, `types.SafetySetting`,
`types.GenerationConfig`. Known gaps, handled by the emulator's own rules instead: enum values
only warn, roles and one-data-field-per-part are not checked, free-form JSON (`args`, `response`,
`parametersJsonSchema`, `responseJsonSchema`) is not looked into. REST fields newer than the SDK
(`generationConfig.imageConfig`) are allowed here explicitly.

Test-only: without google-genai installed (a runtime-only `.venv`) the oracle is skipped.
"""

from __future__ import annotations

from typing import Any

try:
    from google.genai import types
    from pydantic import ValidationError
except ImportError:  # pragma: no cover - the test extra installs it
    types = None

REST_TOP = frozenset({"contents", "systemInstruction", "tools", "toolConfig", "safetySettings", "generationConfig",
                      "cachedContent", "model"})  # `model` is a body field of the proto too (countTokens sends it)
CLOUDCODE_TOP = REST_TOP | {"labels", "sessionId"}  # Code Assist's inner request also has these
VERTEX_TOP = REST_TOP | {"labels"}
NEWER_THAN_SDK = {"generationConfig": frozenset({"imageConfig"})}


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(x) for x in err["loc"])
    return f"{loc}: {err['msg']}" if loc else err["msg"]


def oracle_problem(body: Any, flavor: str = "gemini") -> str | None:
    """None when google-genai's types accept the body, else what they refuse (named)."""
    if types is None or not isinstance(body, dict):
        return None
    allowed = CLOUDCODE_TOP if flavor == "cloudcode" else VERTEX_TOP if flavor == "vertex" else REST_TOP
    pieces: list[tuple[str, Any, Any]] = []
    for key, value in body.items():
        name = _camel(key)
        if name not in allowed:
            return f"unknown top-level field {key!r}"
        if value is None:
            continue
        if name == "contents" and isinstance(value, list):
            pieces += [(f"contents[{i}]", types.Content, c) for i, c in enumerate(value)]
        elif name == "systemInstruction":
            pieces.append(("systemInstruction", types.Content, value))
        elif name == "tools" and isinstance(value, list):
            pieces += [(f"tools[{i}]", types.Tool, t) for i, t in enumerate(value)]
        elif name == "safetySettings" and isinstance(value, list):
            pieces += [(f"safetySettings[{i}]", types.SafetySetting, s) for i, s in enumerate(value)]
        elif name == "toolConfig":
            pieces.append(("toolConfig", types.ToolConfig, value))
        elif name == "generationConfig":
            if isinstance(value, dict):
                value = {k: v for k, v in value.items() if _camel(k) not in NEWER_THAN_SDK["generationConfig"]}
            pieces.append(("generationConfig", types.GenerationConfig, value))
    for where, model, value in pieces:
        try:
            model.model_validate(value)
        except ValidationError as exc:
            return f"{where} is not a valid types.{model.__name__}: {_first_error(exc)}"
    return None
