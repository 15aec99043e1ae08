"""The gateway's mitmproxy options (`--set name=value`), declared for the adapter's `load` hook;
`scripts/run --help` prints them from here too (through the adapter)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from mitmproxy.proxy.mode_specs import LocalMode, ProxyMode

from ..ops.story import LOG_FORMATS
from ..upstream.http import DEFAULT_CONNECTIONS_PER_HOST

log = logging.getLogger("gateway")
DEFAULT_MAPPINGS = str(Path(__file__).resolve().parent.parent.parent / "mappings.yaml")


def declare_options(loader) -> None:
    loader.add_option("accounts", str, "", "Accounts YAML file (gemini / vertex / cloudcode / openai). "
                      "Empty: one Gemini account from $GEMINI_API_KEY.")
    loader.add_option("mappings", str, DEFAULT_MAPPINGS, "Model mapping YAML file (reloaded on change).")
    loader.add_option("auth_mode", str, "auto", "Client auth: off | strict | all_except_health | auto "
                      "(auto = all_except_health with LAN access or a key configured, else off).")
    loader.add_option("api_key", str, "", "Key clients must present when auth is on "
                      "(default: $GATEWAY_API_KEY). Accepted as Bearer, x-api-key or x-goog-api-key.")
    loader.add_option("clients", str, "", "Clients YAML file (scripts/clients add NAME writes it): per-client "
                      "keys (their SHA-256), model allow-lists, rpm, tokens_per_day, max_concurrent. Every route "
                      "but /healthz then needs a client key, or api_key as the operator's (no limits). The file "
                      "is reloaded on change; the option is read at start-up.")
    loader.add_option("allow_lan_access", bool, False, "Serve clients that are not on this machine.")
    loader.add_option("gateway_hosts", Sequence[str], ["api.openai.com"], "Outside reverse mode: hosts "
                      "whose requests the gateway answers (others pass through untouched).")
    loader.add_option("state_file", str, "", "Where cooldowns, disabled flags, tokens and usage persist "
                      "(default: next to the accounts file, or in mitmproxy's confdir).")
    loader.add_option("state", str, "", "Where pool state lives: empty = this process (state_file, memory); "
                      "redis://host:port/db = shared by every gateway instance using that Redis (cooldowns, "
                      "disabled flags, usage, OAuth tokens, stored Responses). Read at start-up.")
    loader.add_option("seal_key", str, "", "Secret that seals reasoning state handed to stateless clients "
                      "(Responses encrypted_content); several comma-separated = rotation, the first seals. "
                      "Default: a random key generated once and kept with the state. Read at start-up.")
    loader.add_option("keepalive_seconds", int, 15, "Send an SSE comment (Anthropic streams: a ping event) after "
                      "this much upstream silence.")
    loader.add_option("max_attempts", int, 3, "Upstream attempts per request (bounded by the pool size).")
    loader.add_option("check_models", bool, True, "At start and hourly, in the background, fetch each Gemini "
                      "API / OpenAI-compatible account's model list (unlisted targets are not asked there) and "
                      "warn once about mapping targets an upstream does not serve.")
    loader.add_option("max_body_size", str, "32m", "Largest request body the gateway accepts (after "
                      "decompression), e.g. 32m; larger ones get 413.")
    loader.add_option("allowed_hosts", Sequence[str], [], "Host names (and web page origins) accepted besides "
                      "IP addresses, localhost and the listen host; '*' accepts any (no DNS rebinding protection).")
    loader.add_option("upstream_headers_timeout", int, 300, "Seconds to wait for an upstream's response headers "
                      "before trying the next account (a non-streamed answer's headers come when it is complete).")
    loader.add_option("log_format", str, "logfmt", "One log line per request when it ends (route, models, "
                      "account, attempts, status, latency, tokens): logfmt | json | off.", choices=LOG_FORMATS)
    loader.add_option("upstream_connections", int, DEFAULT_CONNECTIONS_PER_HOST, "Open connections per "
                      "upstream host (all Gemini API keys share one host), i.e. concurrent upstream calls; "
                      "more wait locally for a free one. 0 = no limit. Read at start-up.")
    loader.add_option("shutdown_grace_seconds", int, 5, "On Ctrl-C or SIGTERM: stop accepting connections, "
                      "let open requests and streams finish for this long, then end each remaining stream "
                      "with its protocol's error event.")
    loader.add_option("upstream_connect_timeout", int, 10, "Seconds to open a connection to an upstream "
                      "(a timeout cools the account down; waiting for a free local connection does not "
                      "count). Read at start-up.")


def own_options(opts) -> None:
    """mitmproxy options the gateway cannot work without, set once the rest is valid (setting
    one re-enters configure)."""
    if "connection_strategy" in opts and opts.connection_strategy != "lazy":
        # eager would connect to the reverse target (a placeholder) before every request the addon
        # answers itself, and answer with an empty reply when nothing listens there
        log.info("connection_strategy set to lazy: the gateway answers requests itself")
        opts.connection_strategy = "lazy"
    if "keep_host_header" in opts and not opts.keep_host_header:
        # In reverse mode mitmproxy replaces the client's Host header with the (never contacted)
        # placeholder target before any hook runs; the DNS-rebinding check needs the original.
        opts.keep_host_header = True


def check_listen_host(opts) -> None:
    host = opts.listen_host
    try:
        modes = [ProxyMode.parse(m) for m in opts.mode]
    except ValueError:
        modes = []  # mitmproxy itself reports a bad mode
    if all(isinstance(m, LocalMode) for m in modes):
        return  # local mode intercepts processes on this machine; it listens on no interface
    if not opts.allow_lan_access and host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s without allow_lan_access: requests from other machines get 403; "
                    "use --listen-host 127.0.0.1 to not accept them at all", host or "all interfaces")
