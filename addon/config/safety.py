"""Gemini `safetySettings` as the accounts file states them, checked when the file is loaded.

Only what the Gemini API accepts passes (https://ai.google.dev/gemini-api/docs/safety-settings and
the HarmCategory / HarmBlockThreshold references): the four adjustable categories plus the
deprecated civic-integrity one; IMAGE_* and JAILBREAK categories are Vertex-only and the PaLM
ones (DEROGATORY, TOXICITY, ...) are refused by Gemini models, so a typo or one of those fails at
startup instead of turning every request into a 400.
"""

from __future__ import annotations

from typing import Any

CATEGORIES = (
    "HARM_CATEGORY_HARASSMENT",
    "HARM_CATEGORY_HATE_SPEECH",
    "HARM_CATEGORY_SEXUALLY_EXPLICIT",
    "HARM_CATEGORY_DANGEROUS_CONTENT",
    "HARM_CATEGORY_CIVIC_INTEGRITY",  # deprecated by Google, still accepted
)
ADJUSTABLE = CATEGORIES[:4]  # what a bare threshold (`safety_settings: BLOCK_NONE`) applies to
THRESHOLDS = (
    "HARM_BLOCK_THRESHOLD_UNSPECIFIED",
    "BLOCK_LOW_AND_ABOVE",
    "BLOCK_MEDIUM_AND_ABOVE",
    "BLOCK_ONLY_HIGH",
    "BLOCK_NONE",
    "OFF",
)

SafetySettings = tuple[dict[str, str], ...]


def parse_safety_settings(value: Any) -> SafetySettings:
    """A list of {category, threshold} (or one threshold for every adjustable category) ->
    the safetySettings list Gemini takes. Raises ValueError naming what is wrong."""
    if value is False:  # YAML 1.1 reads a bare OFF as false
        value = "OFF"
    if isinstance(value, str):
        value = [{"category": cat, "threshold": value} for cat in ADJUSTABLE]
    if not isinstance(value, list):
        raise ValueError("safety_settings must be a list of {category, threshold} or one threshold "
                         f"({', '.join(THRESHOLDS)})")
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        if not isinstance(item, dict) or set(item) != {"category", "threshold"}:
            raise ValueError(f"safety_settings[{i}] must have exactly the keys category and threshold")
        category, threshold = item["category"], "OFF" if item["threshold"] is False else item["threshold"]
        if category not in CATEGORIES:
            raise ValueError(f"safety_settings[{i}].category {category!r} is not one Gemini accepts "
                             f"({', '.join(CATEGORIES)})")
        if threshold not in THRESHOLDS:
            raise ValueError(f"safety_settings[{i}].threshold {threshold!r} is not one of {', '.join(THRESHOLDS)}")
        if category in seen:
            raise ValueError(f"safety_settings names {category} twice")
        seen.add(category)
        out.append({"category": category, "threshold": threshold})
    return tuple(out)
