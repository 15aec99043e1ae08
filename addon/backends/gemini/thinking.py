"""Thinking and the output budget: thinkingConfig and maxOutputTokens for one request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...protocol import canonical as c
from .models import ModelRules, nearest_level, rules_for

# ---- thinking and the output budget ----------------------------------------------------------
# Gemini counts thought tokens against maxOutputTokens (python-genai#2062 on Gemini 3; a 2.5-flash
# call with maxOutputTokens 50 ends MAX_TOKENS with no text, ha-llmvision#609), and 2.5 Flash,
# 2.5 Pro and every 3.x model think by default. The policy:
#   * the client asked for no reasoning (reasoning_effort "none", or no effort with a visible limit
#     of at most SMALL_ANSWER tokens, e.g. a 30-token title or legacy completions' default 16):
#     thinking off where the model allows it (budget 0), else its minimum (2.5 Pro budget 128,
#     the lowest thinkingLevel);
#   * otherwise the thinking the client asked for (or the model's default, bounded on 2.5 by an
#     explicit budget), and maxOutputTokens = the client's limit + that thinking's headroom, so the
#     answer can still reach the client's limit; visible text beyond the limit is then cut here
#     (finish_reason "length") from the upstream's own token counts.
# A thinkingLevel implied by the model mapping (e.g. gemini-3-pro-high) wins over reasoning_effort
# for the level; reasoning_effort (other than "none") still asks for the thoughts to be shown.

SMALL_ANSWER = 1024
_BUDGETS = {"none": 0, "minimal": 512, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 32768}
_DEFAULT_BUDGET = 8192  # 2.5's dynamic thinking, bounded when a visible limit needs headroom
_EFFORT_LEVEL = {"minimal": "minimal", "low": "low", "medium": "medium", "high": "high", "xhigh": "xhigh"}
_LEVEL_BUDGET = {"minimal": 512, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 32768}
# thought tokens to allow for
_LEVEL_HEADROOM = {"minimal": 1024, "low": 4096, "medium": 12288, "high": 24576, "xhigh": 32768}


@dataclass(slots=True)
class OutputPlan:
    thinking: dict[str, Any] | None = None
    max_output_tokens: int | None = None
    visible_limit: int | None = None  # cut visible text to this (headroom was added for thoughts)


def _budget_effort(budget: int) -> str:
    """An explicit thinking budget as the effort it amounts to (for models that take levels)."""
    return "low" if budget <= 1024 else "medium" if budget <= 8192 else "high"


def _legacy_thinking(req: c.ChatRequest, model: str) -> dict[str, Any] | None:
    """A model the table does not know: the effort mapped as for 2.5 (budgets) or 3 (levels)."""
    effort = req.reasoning_effort
    if effort is None and req.thinking_budget is not None:
        if not model.startswith("gemini-3"):
            return {"thinkingBudget": req.thinking_budget, "includeThoughts": req.show_reasoning is not False}
        effort = _budget_effort(req.thinking_budget)
    if effort is None:
        return {"includeThoughts": True} if req.show_reasoning else None
    if model.startswith("gemini-3"):
        if effort == "none":
            return {"thinkingLevel": "low"}
        return {"thinkingLevel": "low" if effort in ("minimal", "low") else "high", "includeThoughts": True}
    budget = _BUDGETS.get(effort, 8192)
    return {"thinkingBudget": budget, "includeThoughts": True} if budget else {"thinkingBudget": 0}


def output_plan(req: c.ChatRequest, model: str, rules: ModelRules | None = None) -> OutputPlan:
    rules = rules or rules_for(model)
    effort, level_hint, limit = req.reasoning_effort, req.thinking_level, req.max_tokens
    asked_budget = req.thinking_budget if effort != "none" else None  # Anthropic's budget_tokens
    if not rules.known:
        return OutputPlan(_legacy_thinking(req, model), limit)
    # Whether thoughts are shown: what the client said (Anthropic's thinking), else any effort but none
    show = effort not in (None, "none") if req.show_reasoning is None else req.show_reasoning and effort != "none"
    quiet = effort == "none" or (effort is None and level_hint is None and asked_budget is None
                                 and limit is not None and limit <= SMALL_ANSWER)
    if effort is None and asked_budget is not None and rules.levels:
        effort = _budget_effort(asked_budget)
    thinking: dict[str, Any] | None = None
    headroom = 0
    if rules.levels:
        level = (nearest_level(rules, level_hint) if level_hint else rules.levels[0] if quiet
                 else nearest_level(rules, _EFFORT_LEVEL[effort]) if effort else None)
        if level:
            thinking = {"thinkingLevel": level}
        if show:
            thinking = {**(thinking or {}), "includeThoughts": True}
        headroom = _LEVEL_HEADROOM.get(level or rules.default_level or "high", _LEVEL_HEADROOM["high"])
    elif rules.budget is not None:
        low, high = rules.budget
        budget: int | None = None
        if level_hint:
            budget = _LEVEL_BUDGET.get(level_hint, _DEFAULT_BUDGET)
        elif quiet:
            budget = 0 if rules.budget_zero else low
            if effort is None and not rules.thinks_by_default:
                budget = None  # already off: nothing to say
        elif asked_budget is not None:
            budget = asked_budget
        elif effort:
            budget = _BUDGETS.get(effort, _DEFAULT_BUDGET)
        elif limit is not None and rules.thinks_by_default:
            budget = _DEFAULT_BUDGET
        if budget is not None:
            budget = 0 if budget == 0 and rules.budget_zero else min(max(budget, low), high)
            thinking = {"thinkingBudget": budget}
        if show and (budget or (budget is None and rules.thinks_by_default)):
            thinking = {**(thinking or {}), "includeThoughts": True}
        headroom = budget or 0
    if limit is None:
        return OutputPlan(thinking)
    if not headroom:
        return OutputPlan(thinking, limit)
    return OutputPlan(thinking, min(limit + headroom, rules.output_limit), limit)
