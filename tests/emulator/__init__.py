"""Loopback emulator of the gateway's upstreams, with fault injection.

Emulates, on one aiohttp server:
  * the Gemini API (``/v1beta/models/{model}:generateContent`` / ``:streamGenerateContent`` /
    ``:countTokens``, ``:embedContent`` / ``:batchEmbedContents`` for the embedding models,
    ``GET /v1beta/models[/{model}]`` with the late-2026 model list, paged by
    ``pageSize``/``pageToken``; API key in ``x-goog-api-key`` or ``?key=``),
  * Google Cloud Code (``/v1internal:generateContent`` / ``:streamGenerateContent`` / ``:countTokens`` /
    ``:loadCodeAssist`` / ``:onboardUser``, ``GET /v1internal/operations/{id}``; bearer access
    tokens issued by ``/token``; who signed in picks the answer, see cloudcode.py),
  * Vertex AI (``/v1/projects/{p}/locations/{l}/publishers/google/models/{model}:...`` with a
    bearer token, express mode ``/v1/publishers/google/models/{model}:...`` with an API key;
    ``:countTokens``; ``:predict`` and ``:embedContent`` for the embedding models),
  * Google's OAuth endpoints: consent ``GET /o/oauth2/v2/auth`` (scripted: consents at once for
    ``login_hint`` and redirects to the loopback ``redirect_uri``), token ``/token`` (refresh_token,
    authorization_code with PKCE, service-account JWT bearer checked with the registered public
    key) and ``GET /oauth2/v2/userinfo``,
  * an OpenAI-compatible server (``/openai/v1/chat/completions``, ``/openai/v1/embeddings``,
    ``/openai/v1/models``),
and a JSON control API under ``/__control/`` for fault rules and inspection.

The point is to be *strict where the real services are strict* (request validation,
function-call pairing, Gemini 3 thought signatures, SSE framing) so end-to-end tests
catch translation bugs, while staying cheap enough to serve benchmarks: no per-request
work beyond a single walk of the request JSON and the google-genai oracle (oracle.py: every
GenerateContentRequest must also validate against google-genai's pydantic types). What each
model accepts (thinking budgets and levels, penalties, candidateCount, tools with JSON mode)
follows addon/backends/gemini/models.py, refused with Google's texts (gemini_request.py).

Thought signatures (Gemini 3 models): each answer carries one, bound to the credential that asked
(the API key; for Cloud Code the account behind the access token), on the first functionCall, or
with no call on the last part (a stream sends it in a final part with empty text). A signature
issued to another credential is refused anywhere with ``Corrupted thought signature.``; in the
current turn the first functionCall of each model step must carry one of its own or a documented
dummy, else Google's "Function call is missing a thought_signature ..." 400 (config
``signature_scope: "all"`` checks every turn).

The emulated model is deterministic: it answers ``Echo(<model>): <last user text>``; a
``[[tool:NAME {"json": "args"}]]`` directive in the last user message calls that declared
tool; tool results come back as ``Tool NAME returned: {...}``; JSON mode (or ``[[json]]``)
answers ``{"echo": ...}``; with a ``googleSearch`` tool a text answer comes back grounded
(``groundingMetadata`` citing one source for the whole text). Tokens are counted as
whitespace-separated words. Embeddings are deterministic too (embeddings.py: ``fake_vector``). Thinking models think first, and those thought tokens count against
``maxOutputTokens`` as on the real API (2.5 Flash/Pro by default and ``thinkingBudget``: 64,
capped by the budget; levels minimal 8, low 32, medium 64, high 128): a small limit ends
``MAX_TOKENS`` with no content. API keys that start with ``bad`` are rejected with 401, refresh
tokens that start with ``revoked`` with ``invalid_grant``.

Control API:
  ``POST /__control/rules``  ``{"rules": [rule, ...]}`` appends fault rules (``GET`` lists them)
  ``POST /__control/reset``  clears rules, log, counters and issued tokens/signatures
  ``GET  /__control/log``    ``{"requests": [{time, path, query, method, headers, body, key}, ...]}``
  ``GET  /__control/stats``  refreshes per refresh token, requests, aborted_streams, rules, tokens_issued
  ``POST /__control/config`` ``{token_ttl, refresh_delay_ms, signature_scope: "turn" | "all"}``
  ``POST /__control/expire_tokens``  expires every issued access token now
  ``POST /__control/service_accounts``  ``{client_email, public_key (PEM), key_id}``: a service
                             account Google knows (kept across resets)

A rule applies to the first request it matches (rules are tried in the order added); every
field is optional and unknown fields are refused with 400:
  ``match``           ``{"key", "path_contains", "model"}``, all given must hold: ``key`` is the
                      API key, bearer token or refresh token the request carried; ``path_contains``
                      a substring of the path and query; ``model`` the model the request names
  ``times``           how many requests it applies to before it is removed (default: every one)
  ``status``          answer with this HTTP status, in the error format of the endpoint called
  ``message``         ...with this error message instead of the endpoint's default one
  ``details``         ...with these Google error ``details`` (each an object with ``@type``), e.g.
                      a ``QuotaFailure`` naming the quota that ran out, as the real API sends it::

                        {"status": 429, "message": "You exceeded your current quota, ...",
                         "details": [{"@type": "type.googleapis.com/google.rpc.QuotaFailure",
                                      "violations": [{"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                                                      "quotaDimensions": {"location": "global",
                                                                          "model": "gemini-2.5-pro"}}]}],
                         "retry_delay": "47s"}

                      or Cloud Code's ``{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                      "reason": "QUOTA_EXHAUSTED", "domain": "cloudcode-pa.googleapis.com",
                      "metadata": {"quotaResetDelay": "161h39m41s", "model": ...}}``
  ``retry_delay``     ...with a Google ``RetryInfo`` detail, e.g. ``"30s"`` (Gemini, Cloud Code),
                      after any ``details``
  ``retry_after``     ...with a ``Retry-After`` header
  ``reply``           answer with this instead of the emulated model (not with ``status``; the
                      embedding endpoints ignore it):
                      ``{"text", "chunks": [stream pieces], "function_calls": [{"name", "args"}],
                      "finish_reason" (Gemini or OpenAI vocabulary), "thought", "grounding"}``;
                      token limits and stop sequences do not shorten it. ``grounding``
                      (``{"queries", "sources": [{"uri", "title"}], "supports": [{"text", "sources":
                      [chunk indexes]}]}``) becomes ``groundingMetadata`` with byte offsets of each
                      support's text, when the request offers ``googleSearch``
  ``delay_ms``        wait this long before answering
  ``chunk_delay_ms``  wait this long between streamed events
  ``cut_after``       close a stream abruptly after this many events (no finish, no terminator)
  ``drop``            close the connection without any response

Scripting one tool call, then the final answer::

    POST /__control/rules
    {"rules": [
      {"times": 1, "reply": {"function_calls": [{"name": "get_weather", "args": {"city": "Paris"}}]}},
      {"times": 1, "reply": {"text": "It is sunny in Paris."}}
    ]}

CLI:    ``python -m tests.emulator --host 127.0.0.1 --port 0 [--port-file PATH]`` from the
        repository root; prints ``EMULATOR_READY http://127.0.0.1:<port>`` once listening.
Import: ``make_app(state)`` / ``await start(host, port)`` -> (runner, base_url).

Only stdlib + aiohttp (and ``cryptography``, a mitmproxy dependency, to check JWT signatures).
"""

from __future__ import annotations

from .app import make_app, serve, start
from .gemini_request import SCHEMA_KEYS, SCHEMA_TYPES, GeminiInvalid, GenRequest, validate_generate_request
from .gemini_response import gemini_answer, gemini_events
from .state import EmulatorState

__all__ = [
    "SCHEMA_KEYS", "SCHEMA_TYPES", "EmulatorState", "GeminiInvalid", "GenRequest", "gemini_answer",
    "gemini_events", "make_app", "serve", "start", "validate_generate_request",
]
