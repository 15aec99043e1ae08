"""What every OpenAI request model shares: the tolerant base model and one way to turn a
pydantic validation failure into the 400 a client can act on (naming the offending `param`)."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import GatewayError


class Wire(BaseModel):
    """Base of every OpenAI request model here: unknown fields pass (SDKs add extras freely)."""

    model_config = ConfigDict(extra="allow")


W = TypeVar("W", bound=BaseModel)


class StreamOptions(Wire):
    include_usage: bool | None = None


# Discriminator tags pydantic puts into error locations right after an index into
# `messages` or `content` (the tagged unions); they name the branch, not a field.
_UNION_TAGS = {
    "system", "developer", "user", "assistant", "tool", "function",
    "text", "image_url", "input_audio", "file", "refusal",
}


def param_from_loc(loc: tuple[Any, ...]) -> str:
    """('messages', 0, 'user', 'content') -> 'messages[0].content'."""
    out = ""
    last_field: str | None = None
    after_index = False
    for pos, item in enumerate(loc):
        if isinstance(item, int):
            out += f"[{item}]"
            after_index = True
            continue
        text = str(item)
        # a tag always precedes the field that failed, so a last element named like a tag ('text') is a field
        is_tag = (after_index and last_field in ("messages", "content") and text in _UNION_TAGS
                  and pos < len(loc) - 1)
        # union members show up as 'str', 'list[...]', 'literal[...]', 'NamedToolChoice', ...
        is_member = text in ("str", "int", "float", "bool") or "[" in text or text[:1].isupper()
        if not (is_tag or is_member):
            out += f".{text}" if out else text
            last_field = text
        after_index = after_index and is_member
    return out


def validation_error(exc: ValidationError, what: str = "request") -> GatewayError:
    """Turn pydantic's first (most relevant) error into one clear 400."""
    errors = exc.errors(include_url=False)
    # Union branches each report an error; the one that got deepest is the one the client meant.
    first = max(errors, key=lambda e: len(e.get("loc", ())))
    if any(e["type"] == "missing" for e in errors):
        missing = [e for e in errors if e["type"] == "missing"]
        first = max(missing, key=lambda e: len(e.get("loc", ())))
    param = param_from_loc(tuple(first.get("loc", ()))) or None
    msg = first.get("msg", "invalid value")
    missing = first["type"] in ("missing", "union_tag_not_found")
    if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
        # The tag field itself is what is wrong or absent: name it, as OpenAI does (messages[0].role).
        tag = str((first.get("ctx") or {}).get("discriminator", "")).strip("'\"")
        if tag:
            param = f"{param}.{tag}" if param else tag
    if missing:
        text = f"Missing required parameter: '{param}'."
    elif first["type"] == "union_tag_invalid":
        text = f"Invalid value for '{param}': {msg}."
    else:
        text = f"Invalid {what} parameter '{param}': {msg}." if param else f"Invalid {what}: {msg}."
    code = "missing_required_parameter" if missing else "invalid_value"
    return GatewayError(400, text, param=param, code=code)


# OpenAI's bounds on `metadata` (Responses, Chat Completions with store): at most 16 pairs, keys of
# at most 64 characters, values of at most 512 (its API reference for the field). The gateway keeps
# it with a stored Response, so the bounds also cap what a client can make the store hold.
METADATA_PAIRS, METADATA_KEY_CHARS, METADATA_VALUE_CHARS = 16, 64, 512


def check_metadata(metadata: dict[str, str] | None) -> None:
    """Refuse metadata beyond OpenAI's bounds with OpenAI's 400."""
    if not metadata:
        return
    if len(metadata) > METADATA_PAIRS:
        raise GatewayError(400, f"Invalid 'metadata': too many properties. Expected an object with at most "
                                f"{METADATA_PAIRS} properties, but got an object with {len(metadata)} properties "
                                "instead.", param="metadata", code="object_above_max_properties")
    for key, value in metadata.items():
        if len(key) > METADATA_KEY_CHARS:
            raise GatewayError(400, f"Invalid 'metadata': key too long. Expected a key with maximum length "
                                    f"{METADATA_KEY_CHARS}, but got a key with length {len(key)} instead.",
                               param="metadata", code="string_above_max_length")
        if len(value) > METADATA_VALUE_CHARS:
            raise GatewayError(400, f"Invalid 'metadata.{key}': string too long. Expected a string with maximum "
                                    f"length {METADATA_VALUE_CHARS}, but got a string with length {len(value)} "
                                    "instead.", param=f"metadata.{key}", code="string_above_max_length")


def validate_body(model: type[W], body: Any) -> W:
    """A request body as `model`, or the 400 a client can act on."""
    if not isinstance(body, dict):
        raise GatewayError(400, "The request body must be a JSON object.", code="invalid_json")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from None

