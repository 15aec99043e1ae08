"""Client model name -> upstream model (and the settings the name implies): exact > wildcard > default.

`*` in a pattern matches any run of characters. Among matching wildcards the most
specific (most literal characters) wins and ties go to the earlier entry in the file,
so the result never depends on hash order. A target of null keeps the requested name
(useful for `gemini-*: ~`, i.e. "pass real upstream names through").

A target is a model name, or `{model: NAME, thinking_level: LEVEL}` when the client's name
implies a setting: Antigravity's `gemini-3-pro-high` is Gemini's `gemini-3.1-pro-preview`
thinking at level `high`. An embedding name may imply Gemini's task type the same way:
`{model: gemini-embedding-001, task_type: RETRIEVAL_QUERY}`, and the vector width OpenAI's name
has by default: `{model: gemini-embedding-001, dimensions: 1536}`. A target may also be a list of them, a *fallback chain* tried in order
(addon/pool/fallback.py decides when the next one is used); inside a list, `default` stands for the
default target's chain.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..protocol.canonical import TASK_TYPES

THINKING_LEVELS = ("minimal", "low", "medium", "high", "xhigh")
DEFAULT_KEYWORD = "default"  # a chain entry meaning "then the default target(s)"


@dataclass(frozen=True, slots=True)
class Target:
    model: str | None  # None: keep the requested name
    thinking_level: str | None = None
    task_type: str | None = None  # embeddings: Gemini's taskType, unless the request names one
    dimensions: int | None = None  # embeddings: the width, unless the request asks for one


Chain = tuple[Target, ...]  # one or more targets, tried in order
_KEEP = Target(None)


@dataclass(frozen=True, slots=True)
class _Wildcard:
    pattern: str
    regex: re.Pattern[str]
    literal_chars: int
    order: int
    chain: Chain


@dataclass(slots=True)
class ModelMap:
    exact: dict[str, Chain] = field(default_factory=dict)
    wildcards: list[_Wildcard] = field(default_factory=list)  # sorted best-first
    default: str | None = None  # the default chain's first model (None: no default)
    default_chain: Chain = (_KEEP,)

    def chain(self, model: str) -> Chain:
        """The targets for `model`, in order, with the requested name filled in where an entry
        keeps it (a name met twice is tried once)."""
        found = self.exact.get(model)
        if found is None:
            found = next((w.chain for w in self.wildcards if w.regex.fullmatch(model)), self.default_chain)
        if len(found) == 1 and found[0].model:
            return found
        seen: set[str] = set()
        out = []
        for t in found:
            name = t.model or model
            if name not in seen:
                seen.add(name)
                out.append(t if t.model else Target(model, t.thinking_level, t.task_type, t.dimensions))
        return tuple(out)

    def target(self, model: str) -> Target:
        """The first target for `model` (the one asked first)."""
        return self.chain(model)[0]

    def resolve(self, model: str) -> str:
        return self.target(model).model or model

    def matches(self, model: str) -> bool:
        """True when an explicit entry (not the default) covers this name."""
        return model in self.exact or any(w.regex.fullmatch(model) for w in self.wildcards)

    def targets(self) -> list[str]:
        """Every concrete upstream name the file maps to (no patterns, no kept names)."""
        chains = [*self.exact.values(), *(w.chain for w in self.wildcards), self.default_chain]
        names = [t.model for chain in chains for t in chain if t.model and "*" not in t.model]
        return list(dict.fromkeys(names))

    def listed_models(self) -> list[str]:
        """Names for /v1/models: exact client names and every concrete target, never a pattern."""
        return list(dict.fromkeys([*self.exact, *self.targets()]))


def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(piece) for piece in pattern.split("*")), re.DOTALL)


_SHAPES = (f"a model name, null, or {{model: NAME, thinking_level: {'|'.join(THINKING_LEVELS)}, "
           f"task_type: {'|'.join(TASK_TYPES)}, dimensions: N}}")


def _target(where: str, raw: Any) -> Target:
    if raw is None:
        return _KEEP
    if isinstance(raw, str) and raw:
        return Target(raw)
    if isinstance(raw, dict) and set(raw) <= {"model", "thinking_level", "task_type", "dimensions"}:
        model, level = raw.get("model"), raw.get("thinking_level")
        task, dims = raw.get("task_type"), raw.get("dimensions")
        if ((model is None or isinstance(model, str)) and (level is None or level in THINKING_LEVELS)
                and (task is None or task in TASK_TYPES) and (dims is None or (type(dims) is int and dims > 0))):
            return Target(model or None, level, task, dims)
    raise ValueError(f"target of {where} must be {_SHAPES}, or a list of them (a fallback chain)")


def _chain(name: str, raw: Any, default: Chain | None) -> Chain:
    """One entry's targets; `default` (None while the default itself is parsed) expands the keyword."""
    if not isinstance(raw, list):
        return (_target(repr(name), raw),)
    if not raw:
        raise ValueError(f"the fallback chain of {name!r} is empty: list at least one target")
    out: list[Target] = []
    for i, item in enumerate(raw, 1):
        if item == DEFAULT_KEYWORD:
            if default is None:
                raise ValueError(f"the fallback chain of 'default' names 'default' (entry {i}): it would loop")
            out += default
            continue
        if isinstance(item, list):
            raise ValueError(f"entry {i} of the fallback chain of {name!r} is a list; chains do not nest")
        out.append(_target(f"{name!r} (entry {i} of its fallback chain)", item))
    return tuple(out)


def parse_mappings(data: Any) -> ModelMap:
    if data is None:
        return ModelMap()
    if not isinstance(data, dict):
        raise ValueError("the mappings file must be a mapping with 'mappings' and optional 'default'")
    raw = data.get("mappings") or {}
    if not isinstance(raw, dict):
        raise ValueError("'mappings' must map client model names (or patterns with *) to upstream names")
    default = _chain("default", data.get("default"), None)
    out = ModelMap(default=default[0].model, default_chain=default)
    wildcards = []
    for order, (pattern, target) in enumerate(raw.items()):
        pattern = str(pattern)
        chain = _chain(pattern, target, default)
        if "*" in pattern:
            literal = len(pattern.replace("*", ""))
            wildcards.append(_Wildcard(pattern, _compile(pattern), literal, order, chain))
        else:
            out.exact[pattern] = chain
    out.wildcards = sorted(wildcards, key=lambda w: (-w.literal_chars, w.order))
    return out
