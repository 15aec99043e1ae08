"""What each Gemini model accepts, in one table: thinking controls, penalties, several candidates,
function calling together with JSON mode, the output limit.

The request translator (request.py, thinking.py) reads it to send only what a model accepts; the
test emulator reads it to refuse what Google refuses. Rows are matched by name prefix, the longest
prefix first; a name that no row matches gets `UNKNOWN` (send what the client asked, unchanged).

Sources (all public):
  * thinking budgets and levels per model: ai.google.dev/gemini-api/docs/thinking (as quoted in
    snailyp/gemini-balance#195 and juspay/neurolink#1707: 2.5 Pro 128-32768 and cannot turn
    thinking off, 2.5 Flash 0-24576, 2.5 Flash-Lite 512-24576 and off by default); Gemini 3 Pro
    levels low/high (big-AGI#893), 3.1 Pro adds medium (LiteLLM's Gemini 3.1 Pro notes);
    3 Flash minimal..high (flachesis/gemini-rust#61); 3.5 Flash-Lite, 3.6, 3.7 and 3.8 Flash from
    docs.cloud.google.com/gemini-enterprise-agent-platform/models/thinking (3.7/3.8: no MINIMAL);
    3.5 Flash-Lite refuses thinkingBudget 0 (googleapis/python-genai#2936); Gemini 4: Argon
    low/medium/high, default medium (ai.google.dev/gemini-api/docs/generate-content/latest-model),
    Hydrogen and Neon low/medium/high/xhigh, default high (their developer guides on
    docs.cloud.google.com/gemini-enterprise-agent-platform/models/guides/), Carbon low/medium/high,
    default medium; no Gemini 4 model takes MINIMAL (Google's thinking-levels table, as quoted by
    the adk-model crate's ThinkingLevel docs). 3.6 Flash onwards refuse frequency and presence
    penalties and ignore temperature/topP/topK (Gemini 3.6 Flash model page, Vertex AI);
  * penalties: "Penalty is not enabled for models/<id>" on 2.5 and every 3.x model
    (BerriAI/litellm#16907, PublicAffairs/openai-gemini#63);
  * candidateCount > 1: "Multiple candidates is not enabled for this model" on Gemini 3.x
    (googleapis/js-genai#1609, python-genai#1723); 2.5 serves up to 8;
  * function declarations with responseMimeType application/json: refused before Gemini 3
    (python-genai#867, symfony/ai#1777), allowed on Gemini 3 (ai.google.dev/gemini-api/docs/
    structured-output#structured-outputs-with-tools).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LEVELS = ("minimal", "low", "medium", "high", "xhigh")  # thinkingLevel values, weakest first


@dataclass(frozen=True, slots=True)
class ModelRules:
    # thinkingBudget range while thinking is on; None: the model has no budget control we know of
    budget: tuple[int, int] | None = None
    budget_zero: bool = True  # thinkingBudget 0 (thinking off) is accepted
    levels: tuple[str, ...] = ()  # thinkingLevel values accepted; () -> thinkingLevel is refused
    default_level: str | None = None  # the level a level model thinks at when told nothing
    thinks_by_default: bool = False
    penalties: bool = True  # presencePenalty / frequencyPenalty accepted
    multi_candidates: bool = True  # candidateCount > 1 accepted
    json_with_tools: bool = True  # functionDeclarations together with responseMimeType application/json
    output_limit: int = 65536  # maxOutputTokens ceiling
    known: bool = True


UNKNOWN = ModelRules(known=False)

_25 = dict(penalties=False, json_with_tools=False)
_3 = dict(budget_zero=False, thinks_by_default=True, penalties=False, multi_candidates=False)
_FLASH3 = ("minimal", "low", "medium", "high")
_LMH = ("low", "medium", "high")
_LMHX = ("low", "medium", "high", "xhigh")

_RULES: dict[str, ModelRules] = {
    "gemini-2.5-pro": ModelRules(budget=(128, 32768), budget_zero=False, thinks_by_default=True, **_25),
    "gemini-2.5-flash": ModelRules(budget=(1, 24576), thinks_by_default=True, **_25),
    "gemini-2.5-flash-lite": ModelRules(budget=(512, 24576), **_25),
    "gemini-3": ModelRules(levels=("low", "high"), default_level="high", **_3),  # a 3.x we have no row for
    "gemini-3-pro": ModelRules(levels=("low", "high"), default_level="high", **_3),
    "gemini-3.1-pro": ModelRules(levels=("low", "medium", "high"), default_level="high", **_3),
    "gemini-3-flash": ModelRules(levels=_FLASH3, default_level="high", **_3),
    "gemini-3.1-flash-lite": ModelRules(levels=_FLASH3, default_level="minimal", **_3),
    "gemini-3.5-flash": ModelRules(levels=_FLASH3, default_level="medium", **_3),
    "gemini-3.5-flash-lite": ModelRules(levels=_FLASH3, default_level="minimal", **_3),
    "gemini-3.6-flash": ModelRules(levels=_FLASH3, default_level="medium", **_3),
    "gemini-3.7-flash": ModelRules(levels=_LMH, default_level="medium", **_3),
    "gemini-3.8-flash": ModelRules(levels=_LMH, default_level="medium", **_3),
    "gemini-4": ModelRules(levels=_LMH, default_level="medium", **_3),  # a 4.x we have no row for
    "gemini-4-argon": ModelRules(levels=_LMH, default_level="medium", **_3),
    "gemini-4-carbon": ModelRules(levels=_LMH, default_level="medium", **_3),
    "gemini-4-hydrogen": ModelRules(levels=_LMHX, default_level="high", **_3),
    "gemini-4-neon": ModelRules(levels=_LMHX, default_level="high", **_3),
    # Google's moving aliases point at current 3.x models
    "gemini-flash-latest": ModelRules(levels=("low", "medium", "high"), default_level="medium", **_3),
    "gemini-flash-lite-latest": ModelRules(levels=_FLASH3, default_level="minimal", **_3),
    "gemini-pro-latest": ModelRules(levels=("low", "medium", "high"), default_level="high", **_3),
}
_PREFIXES = sorted(_RULES, key=len, reverse=True)


def rules_for(model: str) -> ModelRules:
    name = model.removeprefix("models/")
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            return _RULES[prefix]
    return UNKNOWN


def nearest_level(rules: ModelRules, wanted: str) -> str:
    """The accepted level closest to `wanted` (ties go to the stronger one)."""
    if not rules.levels or wanted in rules.levels:
        return wanted
    want = LEVELS.index(wanted) if wanted in LEVELS else len(LEVELS) - 1
    return min(rules.levels, key=lambda lv: (abs(LEVELS.index(lv) - want), -LEVELS.index(lv)))


_MAJOR = re.compile(r"^gemini-(\d+)")


def gemini_major(model: str) -> int:
    """2 for gemini-2.5-pro, 3 for gemini-3-pro-preview / gemini-3.1-flash; 0 when unknown."""
    m = _MAJOR.match(model)
    return int(m.group(1)) if m else 0
