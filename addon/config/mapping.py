"""Client model name -> upstream model (and the settings the name implies): exact > wildcard > default.

`*` in a pattern matches any run of characters. Among matching wildcards the most
specific (most literal characters) wins and ties go to the earlier entry in the file,
so the result never depends on hash order. A target of null keeps the requested name
(useful for `gemini-*: ~`, i.e. "pass real upstream names through").

A target is a model name, or `{model: NAME, thinking_level: LEVEL}` when the client's name
implies a setting: Antigravity's `gemini-3-pro-high` is Gemini's `gemini-3.1-pro-preview`
thinking at level `high`. An embedding name may imply Gemini's task type the same way:
`{model: gemini-embedding-001, task_type: RETRIEVAL_QUERY}`, and the vector width OpenAI's name
has by default: `{model: gemini-embedding-001, dimensions: 1536}`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..protocol.canonical import TASK_TYPES

THINKING_LEVELS = ("minimal", "low", "medium", "high")


@dataclass(frozen=True, slots=True)
class Target:
    model: str | None  # None: keep the requested name
    thinking_level: str | None = None
    task_type: str | None = None  # embeddings: Gemini's taskType, unless the request names one
    dimensions: int | None = None  # embeddings: the width, unless the request asks for one


_KEEP = Target(None)


@dataclass(frozen=True, slots=True)
class _Wildcard:
    pattern: str
    regex: re.Pattern[str]
    literal_chars: int
    order: int
    target: Target


@dataclass(slots=True)
class ModelMap:
    exact: dict[str, Target] = field(default_factory=dict)
    wildcards: list[_Wildcard] = field(default_factory=list)  # sorted best-first
    default: str | None = None
    default_target: Target = _KEEP

    def target(self, model: str) -> Target:
        """The target for `model`, with the requested name filled in where the entry keeps it."""
        found = self.exact.get(model)
        if found is None:
            found = next((w.target for w in self.wildcards if w.regex.fullmatch(model)), self.default_target)
        return found if found.model else Target(model, found.thinking_level, found.task_type, found.dimensions)

    def resolve(self, model: str) -> str:
        return self.target(model).model or model

    def matches(self, model: str) -> bool:
        """True when an explicit entry (not the default) covers this name."""
        return model in self.exact or any(w.regex.fullmatch(model) for w in self.wildcards)

    def targets(self) -> list[str]:
        """Every concrete upstream name the file maps to (no patterns, no kept names)."""
        names = [t.model for t in self.exact.values() if t.model]
        names += [w.target.model for w in self.wildcards if w.target.model and "*" not in w.target.model]
        if self.default:
            names.append(self.default)
        return list(dict.fromkeys(names))

    def listed_models(self) -> list[str]:
        """Names for /v1/models: exact client names and every concrete target, never a pattern."""
        return list(dict.fromkeys([*self.exact, *self.targets()]))


def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(piece) for piece in pattern.split("*")), re.DOTALL)


def _target(pattern: str, raw: Any) -> Target:
    if raw is None:
        return _KEEP
    if isinstance(raw, str):
        return Target(raw)
    if isinstance(raw, dict) and set(raw) <= {"model", "thinking_level", "task_type", "dimensions"}:
        model, level = raw.get("model"), raw.get("thinking_level")
        task, dims = raw.get("task_type"), raw.get("dimensions")
        if ((model is None or isinstance(model, str)) and (level is None or level in THINKING_LEVELS)
                and (task is None or task in TASK_TYPES) and (dims is None or (type(dims) is int and dims > 0))):
            return Target(model or None, level, task, dims)
    raise ValueError(f"target of {pattern!r} must be a model name, null, or {{model: NAME, thinking_level: "
                     f"{'|'.join(THINKING_LEVELS)}, task_type: {'|'.join(TASK_TYPES)}, dimensions: N}}")


def parse_mappings(data: Any) -> ModelMap:
    if data is None:
        return ModelMap()
    if not isinstance(data, dict):
        raise ValueError("the mappings file must be a mapping with 'mappings' and optional 'default'")
    raw = data.get("mappings") or {}
    if not isinstance(raw, dict):
        raise ValueError("'mappings' must map client model names (or patterns with *) to upstream names")
    default = _target("default", data.get("default"))
    out = ModelMap(default=default.model, default_target=default)
    wildcards = []
    for order, (pattern, target) in enumerate(raw.items()):
        pattern = str(pattern)
        parsed = _target(pattern, target)
        if "*" in pattern:
            literal = len(pattern.replace("*", ""))
            wildcards.append(_Wildcard(pattern, _compile(pattern), literal, order, parsed))
        else:
            out.exact[pattern] = parsed
    out.wildcards = sorted(wildcards, key=lambda w: (-w.literal_chars, w.order))
    return out
