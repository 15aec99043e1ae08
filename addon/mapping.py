"""Client model name -> upstream model name: exact > wildcard > default.

`*` in a pattern matches any run of characters. Among matching wildcards the most
specific (most literal characters) wins and ties go to the earlier entry in the file,
so the result never depends on hash order. A target of null keeps the requested name
(useful for `gemini-*: ~`, i.e. "pass real upstream names through").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class _Wildcard:
    pattern: str
    regex: re.Pattern[str]
    literal_chars: int
    order: int
    target: str | None


@dataclass(slots=True)
class ModelMap:
    exact: dict[str, str | None] = field(default_factory=dict)
    wildcards: list[_Wildcard] = field(default_factory=list)  # sorted best-first
    default: str | None = None

    def resolve(self, model: str) -> str:
        if model in self.exact:
            return self.exact[model] or model
        for w in self.wildcards:
            if w.regex.fullmatch(model):
                return w.target or model
        return self.default or model

    def matches(self, model: str) -> bool:
        """True when an explicit entry (not the default) covers this name."""
        return model in self.exact or any(w.regex.fullmatch(model) for w in self.wildcards)

    def listed_models(self) -> list[str]:
        """Names for /v1/models: exact client names and every concrete target, never a pattern."""
        names = list(self.exact)
        names += [t for t in self.exact.values() if t]
        names += [w.target for w in self.wildcards if w.target and "*" not in w.target]
        if self.default:
            names.append(self.default)
        return list(dict.fromkeys(names))


def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(piece) for piece in pattern.split("*")), re.DOTALL)


def parse_mappings(data: Any) -> ModelMap:
    if data is None:
        return ModelMap()
    if not isinstance(data, dict):
        raise ValueError("the mappings file must be a mapping with 'mappings' and optional 'default'")
    raw = data.get("mappings") or {}
    if not isinstance(raw, dict):
        raise ValueError("'mappings' must map client model names (or patterns with *) to upstream names")
    default = data.get("default")
    if default is not None and not isinstance(default, str):
        raise ValueError("'default' must be a model name")
    out = ModelMap(default=default or None)
    wildcards = []
    for order, (pattern, target) in enumerate(raw.items()):
        pattern = str(pattern)
        if target is not None and not isinstance(target, str):
            raise ValueError(f"target of {pattern!r} must be a model name or null")
        if "*" in pattern:
            literal = len(pattern.replace("*", ""))
            wildcards.append(_Wildcard(pattern, _compile(pattern), literal, order, target))
        else:
            out.exact[pattern] = target
    out.wildcards = sorted(wildcards, key=lambda w: (-w.literal_chars, w.order))
    return out
