"""Prometheus metrics for GET /metrics, on a private registry (no process-wide globals, so two
gateways in one process, or the tests, never share counters).

Counters and histograms are fed one finished Story at a time (`observe`); the pool's gauges
(cooling, disabled) are computed when Prometheus scrapes, from the pool itself. Every label is
bounded: routes are templates, statuses and outcomes are few, accounts come from the accounts
file, and model names, which clients choose, go through `LabelBudget`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

from ..backends.gemini.lifecycle import CURRENT
from ..pool.pool import AccountPool
from .story import Story

OTHER = "other"
UNKNOWN_MODEL_BUDGET = 20  # distinct names outside the mapping/accounts files that keep their own label
# LLM answers take from a fraction of a second to minutes.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320)

# The `*_created` timestamp series double every counter's output and no dashboard here uses them.
disable_created_metrics()


class LabelBudget:
    """Bounds a label's values: known names keep theirs, the first `limit` unknown ones too, any
    later unknown name becomes "other" (a client looping over random model names must not make
    the gateway's memory, or Prometheus', grow without end)."""

    def __init__(self, limit: int = UNKNOWN_MODEL_BUDGET) -> None:
        self.limit = limit
        self._admitted: set[str] = set()

    def __call__(self, value: str | None, known: bool) -> str:
        if not value:
            return ""
        if known or value in self._admitted:
            return value
        if len(self._admitted) < self.limit:
            self._admitted.add(value)
            return value
        return OTHER


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, pool: AccountPool, known_model: Callable[[str], bool] = lambda name: False) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._known_model = known_model  # names the mapping file or an account names
        self._client_models = LabelBudget()
        self._mapped_models = LabelBudget()
        r = self.registry
        # `client`: a name from the clients file ("" for the operator key or without a clients file): bounded
        self.requests = Counter("gateway_requests", "Requests by route, status, outcome, models, account and client.",
                                ["route", "status", "outcome", "client_model", "mapped_model", "account", "client"],
                                registry=r)
        self.duration = Histogram("gateway_request_duration_seconds", "From the request's arrival to its last "
                                  "answer byte (a stream: to its end).", ["route", "stream"],
                                  buckets=LATENCY_BUCKETS, registry=r)
        self.ttfb = Histogram("gateway_time_to_first_byte_seconds", "From the request's arrival to the first "
                              "answer byte (not streamed: the whole answer).", ["route", "stream"],
                              buckets=LATENCY_BUCKETS, registry=r)
        self.upstream = Histogram("gateway_upstream_latency_seconds", "One upstream attempt, until the upstream "
                                  "answered (a stream: until it accepted the request).", ["account", "status"],
                                  buckets=LATENCY_BUCKETS, registry=r)
        self.attempts = Counter("gateway_upstream_attempts", "Upstream attempts by account and upstream status "
                                "(0 = no answer).", ["account", "status"], registry=r)
        self.rotations = Counter("gateway_rotations", "Times a request moved on to another account after a "
                                 "failed attempt.", ["mapped_model"], registry=r)
        self.rerouted = Counter("gateway_rerouted_answers", "Answers the upstream served from another model than "
                                "the one asked for (Google re-routes a deprecated name to its successor).",
                                ["mapped_model", "served_model"], registry=r)
        self.fallbacks = Counter("gateway_fallbacks", "Targets of a fallback chain passed over, by model and why "
                                 "(not_found, resting, absent).", ["skipped_model", "reason"], registry=r)
        self.tokens = Counter("gateway_tokens", "Tokens reported by the upstream.",
                              ["direction", "mapped_model", "account", "client"], registry=r)
        self.client_refusals = Counter("gateway_client_refusals", "Requests refused by a client's own limits "
                                       "(rpm, max_concurrent, tokens_per_day) or model allow-list (model).",
                                       ["client", "limit"], registry=r)
        self.open_streams = Gauge("gateway_open_streams", "Streamed answers in progress.", registry=r)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        r.register(_PoolCollector(pool))

    def stream_opened(self) -> None:
        self.open_streams.inc()

    def fallback(self, model: str, why: str) -> None:
        """A fallback chain passed over `model` (why: see addon/pool/fallback.py)."""
        self.fallbacks.labels(self._mapped_models(model, self._known_model(model)), why).inc()

    def observe(self, story: Story) -> None:
        """Count one finished request."""
        mapped = self._mapped_models(story.mapped_model, story.mapped_model is not None
                                     and self._known_model(story.mapped_model))
        if story.served_model:  # Google's name for a model it lists as current, else "other"
            self.rerouted.labels(mapped, story.served_model if story.served_model in CURRENT else OTHER).inc()
        client = self._client_models(story.client_model, story.client_model is not None
                                     and self._known_model(story.client_model))
        account = story.account or ""
        who = story.client or ""
        self._child(self.requests, story.route, str(story.status or 0), story.outcome(), client, mapped, account, who).inc()
        if story.limit and who:
            self._child(self.client_refusals, who, story.limit).inc()
        stream = "true" if story.stream else "false"
        if story.latency is not None:
            self._child(self.duration, story.route, stream).observe(story.latency)
        if story.ttfb is not None:
            self._child(self.ttfb, story.route, stream).observe(story.ttfb)
        for attempt in story.attempts:
            self._child(self.attempts, attempt.account, str(attempt.status)).inc()
            self._child(self.upstream, attempt.account, str(attempt.status)).observe(attempt.seconds)
        if len(story.attempts) > 1:
            self._child(self.rotations, mapped).inc(len(story.attempts) - 1)
        if story.tokens_in:
            self._child(self.tokens, "in", mapped, account, who).inc(story.tokens_in)
        if story.tokens_out:
            self._child(self.tokens, "out", mapped, account, who).inc(story.tokens_out)
        if story.stream and story.status == 200:
            self.open_streams.dec()

    def _child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, looked up once: prometheus_client's own lookup (a lock, label
        checks) was most of the cost of counting a request. Bounded as the labels are."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _PoolCollector:
    """The pool's state at scrape time: which accounts are cooling (and for how long), disabled, and
    which models rest on which account."""

    def __init__(self, pool: AccountPool) -> None:
        self.pool = pool

    def describe(self):
        return []  # collected only on scrape; nothing to pre-describe

    def collect(self):
        now = time.time()
        cooling = GaugeMetricFamily("gateway_account_cooldown_seconds", "Seconds until a cooling account is "
                                    "tried again (0 = ready).", labels=["account", "provider"])
        disabled = GaugeMetricFamily("gateway_account_disabled", "1 when the account is disabled (in the file, "
                                     "or after the upstream rejected its credentials).", labels=["account", "provider"])
        resting = GaugeMetricFamily("gateway_model_cooldown_seconds", "Seconds until a model resting on an "
                                    "account (quotas are per model) is tried there again; only resting models.",
                                    labels=["account", "provider", "model", "why"])
        for acc in self.pool.accounts:
            st = self.pool.state(acc)
            cooling.add_metric([acc.name, acc.provider], max(0.0, st.cooldown_until - now))
            disabled.add_metric([acc.name, acc.provider], 1.0 if acc.disabled or st.disabled_reason else 0.0)
            for model, mc in st.models.items():  # at most MAX_USAGE_MODELS per account
                if mc.until > now:
                    resting.add_metric([acc.name, acc.provider, model, mc.why], mc.until - now)
        yield cooling
        yield disabled
        yield resting
