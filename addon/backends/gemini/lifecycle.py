"""Where each Gemini API model stands in Google's lifecycle: current, re-routed to a successor, or
shut down. One table, read by the gateway (start-up warnings, the story of a re-routed answer) and
by the test emulator (what `models.list` lists, which `modelVersion` answers, which names 404).

Google deprecates a model in two steps. First its requests are *re-routed*: the old name still
answers, from the successor, billed at the successor's rates, and the answer's `modelVersion`
names the successor. Then it is *shut down*: "completely turned off, and the endpoint is no longer
available" (ai.google.dev/gemini-api/docs/deprecations) -- a 404 NOT_FOUND.

Every row says where its fact comes from (all public; dates as Google published them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Stage = Literal["current", "rerouted", "shut down"]


@dataclass(frozen=True, slots=True)
class Lifecycle:
    stage: Stage
    since: str | None = None  # ISO date: release (current), routing start, or shutdown
    successor: str | None = None  # re-routed: who answers; shut down: Google's recommended replacement
    source: str = ""


_DEPRECATIONS = "ai.google.dev/gemini-api/docs/deprecations"
_CHANGELOG = "ai.google.dev/gemini-api/docs/changelog"

LIFECYCLE: dict[str, Lifecycle] = {
    # ---- current ----------------------------------------------------------------------------
    "gemini-4-neon": Lifecycle("current", "2026-11-18", source="Gemini 4 Neon developer guide (docs.cloud.google."
                               "com/gemini-enterprise-agent-platform/models/guides/gemini-4-neon); GA 2026-11-18"),
    "gemini-4-hydrogen": Lifecycle("current", "2026-11-12", source="Gemini 4 Hydrogen developer guide (GA 2026-11-12,"
                                   " a short GA lifecycle with at least 45 days' deprecation notice)"),
    "gemini-4-carbon": Lifecycle("current", source="Gemini 4 Neon developer guide (Carbon: the family's deepest "
                                 "model for the hardest, long-horizon projects)"),
    "gemini-4-argon": Lifecycle("current", "2026-10-13", source="ai.google.dev/gemini-api/docs/generate-content/"
                                "latest-model (GA in the changelog on 2026-10-13)"),
    "gemini-3.8-flash": Lifecycle("current", "2026-09-02", source="Gemini 3.8 Flash developer guide; Google's "
                                  "OpenAI-compatibility page uses it in its examples"),
    "gemini-3.6-flash": Lifecycle("current", "2026-07-21", source="ai.google.dev/gemini-api/docs/whats-new-gemini-3.6"
                                  " (previous generation, still available for production)"),
    "gemini-3.5-flash-lite": Lifecycle("current", "2026-07-21", source="ai.google.dev/gemini-api/docs/"
                                       "whats-new-gemini-3.6"),
    "gemini-3.1-flash-lite": Lifecycle("current", "2026-05-07", source=f"{_CHANGELOG} (2026-05-07); {_DEPRECATIONS}:"
                                       " shutdown announced for 2027-05-07"),
    "gemini-3.1-pro-preview": Lifecycle("current", "2026-02-19", source=f"{_DEPRECATIONS} (no shutdown date "
                                        "announced)"),
    "gemini-3.1-pro-preview-customtools": Lifecycle("current", "2026-02-19", source=f"{_DEPRECATIONS} (the "
                                                    "-customtools variant of 3.1 Pro Preview)"),
    "gemini-2.5-flash-lite": Lifecycle("current", "2025-07-22", source=f"{_DEPRECATIONS}: \"not deprecated and "
                                       "remains available through the API until further notice\""),
    "gemini-embedding-2": Lifecycle("current", "2026-04-22", source=f"{_CHANGELOG} (2026-04-22)"),
    "gemini-embedding-001": Lifecycle("current", source="ai.google.dev/gemini-api/docs/embeddings"),
    # ---- re-routed: the name answers from the successor ---------------------------------------
    "gemini-2.5-pro": Lifecycle("rerouted", "2026-12-01", "gemini-3.8-flash", f"{_DEPRECATIONS} (earlier copies of "
                                "the page said 2026-06-17): requests are routed to gemini-3.8-flash"),
    "gemini-2.5-flash": Lifecycle("rerouted", "2026-12-01", "gemini-3.5-flash-lite", f"{_DEPRECATIONS} (earlier "
                                  "copies said 2026-06-17): requests are routed to gemini-3.5-flash-lite"),
    "gemini-3.5-flash": Lifecycle("rerouted", "2026-10-08", "gemini-3.6-flash", f"{_DEPRECATIONS}: deprecated "
                                  "2026-10-08, replaced by gemini-3.6-flash"),
    "gemini-3.7-flash": Lifecycle("rerouted", "2026-10-08", "gemini-3.8-flash", "ai.google.dev/gemini-api/docs/"
                                  "models/gemini-3.7-flash: \"All requests to gemini-3.7-flash are automatically "
                                  "routed to gemini-3.8-flash\""),
    # ---- shut down: 404 --------------------------------------------------------------------
    "gemini-3-pro-preview": Lifecycle("shut down", "2026-03-09", "gemini-3.1-pro-preview", _DEPRECATIONS),
    "gemini-3.1-flash-lite-preview": Lifecycle("shut down", "2026-05-25", "gemini-3.1-flash-lite",
                                               f"{_CHANGELOG} (2026-05-07)"),
    "gemini-2.0-flash": Lifecycle("shut down", "2026-06-01", "gemini-3.5-flash", f"{_CHANGELOG} (2026-06-01)"),
    "gemini-2.0-flash-001": Lifecycle("shut down", "2026-06-01", "gemini-3.5-flash", f"{_CHANGELOG} (2026-06-01)"),
    "gemini-2.0-flash-lite": Lifecycle("shut down", "2026-06-01", "gemini-3.1-flash-lite",
                                       f"{_CHANGELOG} (2026-06-01)"),
    "gemini-2.0-flash-lite-001": Lifecycle("shut down", "2026-06-01", "gemini-3.1-flash-lite",
                                           f"{_CHANGELOG} (2026-06-01)"),
    "text-embedding-004": Lifecycle("shut down", "2026-01-14", "gemini-embedding-001", f"{_CHANGELOG} (2026-01-14)"),
}

CURRENT = tuple(name for name, row in LIFECYCLE.items() if row.stage == "current")


def lifecycle(model: str) -> Lifecycle | None:
    return LIFECYCLE.get(model.removeprefix("models/"))


def rerouted_to(model: str) -> str | None:
    """The model Google answers a re-routed name from (None: the name is served as itself)."""
    row = lifecycle(model)
    return row.successor if row is not None and row.stage == "rerouted" else None


def is_shut_down(model: str) -> bool:
    row = lifecycle(model)
    return row is not None and row.stage == "shut down"


def advice(model: str) -> str | None:
    """For an operator: what Google does with a name that is no longer current, in a few words."""
    row = lifecycle(model)
    if row is None or row.stage == "current":
        return None
    if row.stage == "rerouted":
        return f"deprecated: Google answers it from {row.successor} since {row.since}"
    return f"shut down on {row.since}" + (f" (Google's replacement: {row.successor})" if row.successor else "")
