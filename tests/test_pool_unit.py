"""Account pool, accounts file and retry policy, without processes or sockets.

The pool gets a fake clock, so cooldowns are exact and nothing sleeps. The retry policy
(`addon.policy.RetryPolicy`) runs against a fake attempt function that answers from a script.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from addon.pool.pool import MAX_BACKOFF, AccountPool, NoAccount
from addon.pool.accounts_file import AccountsFile, parse_accounts
from addon.backends.gemini import error_from as google_error
from addon.pool.policy import Attempt, RetryPolicy, Verdict, judge
from addon.protocol import canonical as c
from addon.protocol.errors import GatewayError, StaleCredentials, UpstreamError
from addon.ops.redact import Redactor
from addon.stores.shared.local import FileAccountRecords, FileTokenStore
from addon.pool.state import StateStore
from addon.upstream.http import HttpClient
from addon.upstream.oauth import TokenManager

ROOT = Path(__file__).resolve().parent.parent
FLASH = "gemini-2.5-flash"


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def gem(name: str, key: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"provider": "gemini", "email": name, "api_key": key or f"AIza-{name}-secret", **extra}


def config(*accounts: dict[str, Any], sticky: bool = False) -> AccountsFile:
    return parse_accounts({"accounts": list(accounts), "sticky": sticky})


def make_pool(*accounts: dict[str, Any], sticky: bool = False, clock: Clock | None = None,
              store: StateStore | None = None) -> AccountPool:
    pool = AccountPool(FileAccountRecords(store) if store else None, clock=clock or Clock())
    pool.update(config(*accounts, sticky=sticky))
    return pool


def picks(pool: AccountPool, n: int, model: str = FLASH, **kw: Any) -> list[str]:
    return [pool.pick(model, set(), **kw).name for _ in range(n)]


# ---- selection -------------------------------------------------------------------------------

def test_round_robin_is_fair_and_alternates() -> None:
    pool = make_pool(gem("a"), gem("b"), gem("c"))
    seq = picks(pool, 300)
    assert Counter(seq) == {"a": 100, "b": 100, "c": 100}
    # strictly cyclic: every window of three holds each account once
    assert all(len(set(seq[i:i + 3])) == 3 for i in range(len(seq) - 2))


def test_weights_set_the_share() -> None:
    pool = make_pool(gem("heavy", weight=3), gem("light"))
    assert Counter(picks(pool, 400)) == {"heavy": 300, "light": 100}


def test_exclude_skips_accounts_already_tried() -> None:
    pool = make_pool(gem("a"), gem("b"), gem("c"))
    for _ in range(10):
        assert pool.pick(FLASH, {"a", "c"}).name == "b"


def test_model_restriction_with_patterns() -> None:
    pool = make_pool(gem("pro", models=["gemini-2.5-pro"]), gem("flash", models=["gemini-2.5-flash*"]),
                     gem("any"))
    assert set(picks(pool, 20, "gemini-2.5-pro")) == {"pro", "any"}
    assert set(picks(pool, 20, "gemini-2.5-flash-lite")) == {"flash", "any"}
    assert pool.eligible_count("gemini-2.5-flash") == 2

    only = make_pool(gem("pro", models=["gemini-2.5-pro"]))
    with pytest.raises(NoAccount) as exc:
        only.pick("gemini-2.5-flash", set())
    assert exc.value.status == 503 and "gemini-2.5-flash" in str(exc.value)


def test_disabled_in_file_is_never_picked() -> None:
    pool = make_pool(gem("on"), gem("off", disabled=True))
    assert set(picks(pool, 10)) == {"on"}
    assert pool.describe()[1]["status"] == "disabled in file"
    with pytest.raises(NoAccount) as exc:
        make_pool(gem("off", disabled=True)).pick(FLASH, set())
    assert exc.value.status == 503 and exc.value.retry_after is None


def test_no_account_configured_is_a_503_that_says_what_to_do() -> None:
    with pytest.raises(NoAccount) as exc:
        AccountPool(clock=Clock()).pick(FLASH, set())
    assert exc.value.status == 503
    assert "accounts.example.yaml" in str(exc.value) and "GEMINI_API_KEY" in str(exc.value)


# ---- cooldowns -------------------------------------------------------------------------------

def test_cooling_account_is_skipped_until_its_time() -> None:
    clock = Clock()
    pool = make_pool(gem("a"), gem("b"), clock=clock)
    a = pool.accounts[0]
    assert pool.cool_down(a, 429, 5.0) == 5.0
    assert set(picks(pool, 10)) == {"b"}
    clock.advance(4.99)
    assert set(picks(pool, 10)) == {"b"}
    clock.advance(0.01)
    assert set(picks(pool, 10)) == {"a", "b"}
    assert pool.describe()[0]["status"] == "ready"


def test_backoff_grows_without_retry_info_and_resets_on_success() -> None:
    clock = Clock()
    pool = make_pool(gem("a"), clock=clock)
    a = pool.accounts[0]
    delays = [pool.cool_down(a, 503, None) for _ in range(12)]
    assert delays[:5] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert delays == sorted(delays) and max(delays) == MAX_BACKOFF
    assert pool.state(a).cooldown_until == clock.now + MAX_BACKOFF
    pool.succeeded(a, FLASH)
    assert pool.state(a).failures == 0 and pool.cool_down(a, 503, None) == 1.0
    # upstream retry info wins over the backoff
    assert pool.cool_down(a, 429, 42.0) == 42.0


def test_all_cooling_is_a_429_with_the_shortest_wait() -> None:
    clock = Clock()
    pool = make_pool(gem("a"), gem("b"), gem("c"), clock=clock)
    a, b, c_ = pool.accounts
    pool.cool_down(a, 429, 7.0)
    pool.cool_down(b, 429, 3.0)
    pool.cool_down(c_, 429, 30.0)
    with pytest.raises(NoAccount) as exc:
        pool.pick(FLASH, set())
    assert exc.value.status == 429 and exc.value.retry_after == pytest.approx(3.0)
    assert pool.shortest_wait(FLASH) == pytest.approx(3.0)
    # accounts already tried in this request do not count towards the wait
    with pytest.raises(NoAccount) as exc:
        pool.pick(FLASH, {"b"})
    assert exc.value.retry_after == pytest.approx(7.0)
    clock.advance(3.0)
    assert pool.pick(FLASH, set()).name == "b"


def test_disabled_at_runtime_then_enabled() -> None:
    pool = make_pool(gem("a"), gem("b"))
    a = pool.accounts[0]
    pool.disable(a, 401, "401: API key not valid")
    assert set(picks(pool, 6)) == {"b"}
    assert pool.describe()[0]["status"] == "disabled: 401: API key not valid"
    assert pool.enable("a") and not pool.enable("nobody")
    assert set(picks(pool, 6)) == {"a", "b"}


# ---- sticky ----------------------------------------------------------------------------------

def test_sticky_keeps_a_conversation_on_one_account_while_healthy() -> None:
    clock = Clock()
    pool = make_pool(gem("a"), gem("b"), gem("c"), sticky=True, clock=clock)
    home = pool.pick(FLASH, set(), sticky_key="conversation-1").name
    assert set(picks(pool, 20, sticky_key="conversation-1")) == {home}
    # different conversations spread over the accounts
    homes = {pool.pick(FLASH, set(), sticky_key=f"conversation-{i}").name for i in range(40)}
    assert homes == {"a", "b", "c"}
    # the home account cools: the conversation moves, and comes back afterwards
    acc = next(a for a in pool.accounts if a.name == home)
    pool.cool_down(acc, 429, 10.0)
    moved = set(picks(pool, 10, sticky_key="conversation-1"))
    assert home not in moved and moved
    clock.advance(10.0)
    assert set(picks(pool, 5, sticky_key="conversation-1")) == {home}
    # excluded (already failed in this request) also moves it
    assert pool.pick(FLASH, {home}, sticky_key="conversation-1").name != home


def test_without_sticky_the_key_is_ignored() -> None:
    pool = make_pool(gem("a"), gem("b"))
    assert set(picks(pool, 4, sticky_key="conversation-1")) == {"a", "b"}


# ---- reloading the file ----------------------------------------------------------------------

def test_update_keeps_state_of_unchanged_accounts_and_resets_changed_credentials() -> None:
    clock = Clock()
    pool = make_pool(gem("a"), gem("b"), gem("c"), clock=clock)
    a, b, c_ = pool.accounts
    pool.cool_down(a, 429, 60.0)
    pool.disable(b, 401, "401: bad key")
    pool.disable(c_, 403, "403: forbidden")
    pool.succeeded(a, FLASH)
    pool.cool_down(a, 429, 60.0)

    # same file re-read (new objects): everything is kept
    pool.update(config(gem("a"), gem("b"), gem("c")))
    assert pool.state(pool.accounts[0]).cooldown_until == clock.now + 60
    assert pool.state(pool.accounts[1]).disabled_reason == "401: bad key"
    assert pool.state(pool.accounts[0]).requests == 1

    # b gets a new key, c a new base URL: both get a fresh start; a keeps cooling
    pool.update(config(gem("a"), gem("b", key="AIza-b-new-key"), gem("c", base_url="http://127.0.0.1:1")))
    st = [pool.state(x) for x in pool.accounts]
    assert st[0].cooldown_until == clock.now + 60
    assert st[1].disabled_reason is None and st[2].disabled_reason is None
    assert set(picks(pool, 4)) == {"b", "c"}

    # accounts can be added and removed
    pool.update(config(gem("b", key="AIza-b-new-key"), gem("d")))
    assert [x.name for x in pool.accounts] == ["b", "d"]
    assert set(picks(pool, 4)) == {"b", "d"}
    pool.update(config(gem("a"), gem("b", key="AIza-b-new-key")))
    assert pool.state(pool.accounts[0]).cooldown_until == clock.now + 60  # a's state was remembered


def test_sticky_flag_follows_the_file() -> None:
    pool = make_pool(gem("a"), gem("b"), gem("c"), sticky=True)
    assert len(set(picks(pool, 6, sticky_key="k"))) == 1
    pool.update(config(gem("a"), gem("b"), gem("c"), sticky=False))
    assert len(set(picks(pool, 6, sticky_key="k"))) == 3


# ---- persistence -----------------------------------------------------------------------------

def _persisting_pool(path: Path, clock: Clock, *accounts: dict[str, Any]) -> tuple[AccountPool, StateStore]:
    store = StateStore(path)
    pool = AccountPool(FileAccountRecords(store), clock=clock)
    pool.update(config(*accounts))
    return pool, store


def test_state_survives_a_restart(tmp_path: Path) -> None:
    clock, path = Clock(), tmp_path / "state" / "gateway.json"
    pool, store = _persisting_pool(path, clock, gem("a"), gem("b"), gem("c"))
    a, b, _ = pool.accounts
    pool.cool_down(a, 429, 30.0)
    pool.disable(b, 401, "401: API key not valid")
    pool.succeeded(pool.accounts[2], FLASH, c.Usage(input_tokens=5, output_tokens=7))
    store.flush_if_dirty()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    text = path.read_text()
    assert "AIza-" not in text  # no api key in the state file

    clock.advance(10.0)
    pool2, _ = _persisting_pool(path, clock, gem("a"), gem("b"), gem("c"))
    assert set(picks(pool2, 6)) == {"c"}
    rows = {r["account"]: r for r in pool2.describe()}
    assert rows["a"]["status"] == "cooling 20.0s"
    assert rows["b"]["status"] == "disabled: 401: API key not valid"
    assert rows["c"]["usage"][FLASH] == {"requests": 1, "input_tokens": 5, "output_tokens": 7}


def test_a_credential_changed_while_stopped_gets_a_fresh_start(tmp_path: Path) -> None:
    clock, path = Clock(), tmp_path / "state.json"
    pool, store = _persisting_pool(path, clock, gem("a"), gem("b"))
    pool.disable(pool.accounts[0], 401, "401: API key not valid")
    pool.disable(pool.accounts[1], 401, "401: API key not valid")
    store.flush()
    pool2, _ = _persisting_pool(path, clock, gem("a", key="AIza-a-rotated"), gem("b"))
    assert [pool2.state(x).disabled_reason for x in pool2.accounts] == [None, "401: API key not valid"]


@pytest.mark.parametrize("content", [
    b'{"version": 1, "accounts": {"a": {"cooldown_until": 99999999',  # torn write
    b"\x00\x00\x00garbage",
    b"[1, 2, 3]",
    b'{"accounts": [1, 2]}',
    b'{"accounts": {"a": "junk", "b": {"cooldown_until": "soon", "failures": "x", "disabled_reason": 7, '
    b'"usage": {"m": {"requests": "x"}}}}}',
    b"",
])
def test_a_corrupt_state_file_is_ignored_not_fatal(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    pool, store = _persisting_pool(path, Clock(), gem("a"), gem("b"))
    assert set(picks(pool, 4)) == {"a", "b"}
    pool.cool_down(pool.accounts[0], 429, 5.0)
    store.flush()  # and the next save replaces it with a good file
    assert json.loads(path.read_text())["accounts"]["a"]["failures"] == 1


def test_token_manager_ignores_a_corrupt_tokens_section(tmp_path: Path) -> None:
    for doc in ({"tokens": [1]}, {"tokens": {"x": {"access_token": "t", "expires_at": "later"}}},
                {"tokens": {"x": "junk"}}):
        path = tmp_path / "state.json"
        path.write_text(json.dumps(doc))
        TokenManager(HttpClient(), FileTokenStore(StateStore(path)))  # must not raise


def test_state_writes_are_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state.json"
    store = StateStore(path)
    store.add_source(lambda doc: doc.__setitem__("n", 1))
    store.flush()
    good = path.read_bytes()

    def crash(*args: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    store.add_source(lambda doc: doc.__setitem__("n", 2))
    with pytest.raises(OSError):
        store.flush()
    assert path.read_bytes() == good  # the old version is intact
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temp file left behind


# ---- the accounts file -----------------------------------------------------------------------

SECRET = "AIza-TOP-SECRET-VALUE-123456"


@pytest.mark.parametrize("bad, expect", [
    ({"accounts": [{"provider": "gemini", "email": "a"}]}, "needs api_key"),
    ({"accounts": [{"provider": "gemini", "email": "a", "api_key": SECRET, "apikey": SECRET}]}, "apikey"),
    ({"accounts": [{"provider": "gemini", "email": "a", "api_key": SECRET, "weight": 0}]}, "weight"),
    ({"accounts": [{"provider": "gemini", "email": "a", "api_key": SECRET, "weight": SECRET}]}, "weight"),
    ({"accounts": [{"provider": "gemini", "email": "a", "api_key": [SECRET]}]}, "api_key"),
    ({"accounts": [{"provider": "gemini", "email": "a", "api_key": SECRET, "models": SECRET}]}, "models"),
    ({"accounts": [{"provider": "gemini", "email": "a", "api_key": SECRET, "disabled": SECRET}]}, "disabled"),
    ({"accounts": [{"provider": "gemlni", "email": "a", "api_key": SECRET}]}, "provider"),
    ({"accounts": [{"email": "a", "api_key": SECRET}]}, "provider"),
    # `project` is optional for cloudcode since it can be discovered (loadCodeAssist)
    ({"accounts": [{"provider": "cloudcode", "email": "a", "refresh_token": SECRET, "client_id": "c",
                    "oauth_creds": "/nonexistent/oauth_creds.json"}]}, "either oauth_creds or refresh_token"),
    ({"accounts": [{"provider": "cloudcode", "email": "a", "client_id": "c",
                    "oauth_creds": "/nonexistent/oauth_creds.json"}]}, "does not exist"),
    ({"accounts": [{"provider": "vertex", "email": "a", "project": "p"}]}, "exactly one of"),
    ({"accounts": [{"provider": "vertex", "email": "a", "api_key": SECRET, "adc": True}]}, "exactly one of"),
    ({"accounts": [{"provider": "vertex", "email": "a", "api_key": SECRET, "project": "p"}]}, "express"),
    ({"accounts": [{"provider": "vertex", "email": "a", "credentials_file": "/nonexistent/key.json"}]},
     "does not exist"),
    ({"accounts": [{"provider": "cloudcode", "email": "a", "refresh_token": SECRET, "client_secret": SECRET,
                    "project": "p"}]}, "client_id"),
    ({"accounts": [{"provider": "openai", "email": "a", "api_key": SECRET}]}, "base_url"),
    ({"accounts": [{"provider": "openai", "base_url": "http://x/v1", "api_key": SECRET, "token": SECRET}]},
     "token"),
    ({"accounts": {"provider": "gemini", "api_key": SECRET}}, "accounts"),
    ({"accounts": [], "api_key": SECRET}, "api_key"),
    ({"accounts": [], "sticky": SECRET}, "sticky"),
    ([SECRET], "accounts file"),
])
def test_parse_errors_are_clear_and_never_show_the_secret(bad: Any, expect: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_accounts(bad)
    msg = str(exc.value)
    assert msg.startswith("accounts file") and expect in msg, msg
    assert SECRET not in msg
    # not hidden in a chained exception either (tracebacks print those)
    assert exc.value.__cause__ is None and exc.value.__suppress_context__


def test_duplicate_labels_are_rejected() -> None:
    with pytest.raises(ValueError, match="two accounts are labelled 'a@example.com'"):
        parse_accounts({"accounts": [gem("a@example.com"), gem("a@example.com", key="AIza-other")]})
    with pytest.raises(ValueError, match="labelled 'same'"):
        parse_accounts({"accounts": [gem("same"), {"provider": "openai", "label": "same", "base_url": "http://x/v1"}]})


def test_api_key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POOL_TEST_KEY", "AIza-from-env")
    acc = parse_accounts({"accounts": [{"provider": "gemini", "email": "a", "api_key_env": "POOL_TEST_KEY"}]})
    assert acc.accounts[0].api_key == "AIza-from-env"
    assert "AIza-from-env" not in repr(acc)  # secrets are hidden from reprs
    monkeypatch.delenv("POOL_TEST_KEY")
    with pytest.raises(ValueError, match=r"api_key_env names \$POOL_TEST_KEY, which is not set"):
        parse_accounts({"accounts": [{"provider": "gemini", "email": "a", "api_key_env": "POOL_TEST_KEY"}]})
    # an inline value wins over the variable
    acc = parse_accounts({"accounts": [{"provider": "gemini", "email": "a", "api_key": "inline",
                                        "api_key_env": "POOL_TEST_KEY"}]})
    assert acc.accounts[0].api_key == "inline"


def test_cloudcode_secrets_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POOL_TEST_RT", "1//refresh")
    monkeypatch.setenv("POOL_TEST_CS", "GOCSPX-secret")
    acc = parse_accounts({"accounts": [{"provider": "cloudcode", "email": "a", "refresh_token_env": "POOL_TEST_RT",
                                        "client_id": "cid", "client_secret_env": "POOL_TEST_CS",
                                        "project": "p"}]}).accounts[0]
    assert (acc.refresh_token, acc.client_secret) == ("1//refresh", "GOCSPX-secret")
    assert acc.base_url == "https://cloudcode-pa.googleapis.com" and acc.token_url.endswith("/token")


def test_example_file_parses_and_shows_every_provider(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from tests.google_creds import authorized_user_file, service_account_file

    data = yaml.safe_load((ROOT / "accounts.example.yaml").read_text())
    with pytest.raises(ValueError, match=r"\$GEMINI_API_KEY_BOB"):
        parse_accounts(data)
    monkeypatch.setenv("GEMINI_API_KEY_BOB", "x" * 10)
    monkeypatch.setenv("CLOUDCODE_CLIENT_SECRET", "y" * 10)
    monkeypatch.setenv("VERTEX_EXPRESS_KEY", "z" * 10)
    # the credential files the example names, where a user would have them
    monkeypatch.setenv("HOME", str(tmp_path))
    for folder in ("keys", "accounts", ".gemini"):
        (tmp_path / folder).mkdir()
    service_account_file(tmp_path / "keys" / "gateway-sa.json", "https://oauth2.googleapis.com/token")
    authorized_user_file(tmp_path / "adc.json", "1//adc")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "adc.json"))
    for creds in (tmp_path / "accounts" / "carol@example.com.oauth_creds.json", tmp_path / ".gemini" / "oauth_creds.json"):
        creds.write_text(json.dumps({"refresh_token": "1//from-a-file"}))
    parsed = parse_accounts(data)
    assert {a.provider for a in parsed.accounts} == {"gemini", "vertex", "cloudcode", "openai"}
    assert any(a.disabled for a in parsed.accounts) and any(a.weight > 1 for a in parsed.accounts)
    assert any(a.models and any("*" in m for m in a.models) for a in parsed.accounts)
    assert any(a.label and not a.email for a in parsed.accounts)
    assert "sticky" in data
    text = (ROOT / "accounts.example.yaml").read_text()
    for word in ("api_key_env", "refresh_token", "client_id", "client_secret", "project", "token_url", "base_url"):
        assert word in text


def test_empty_file_means_no_accounts() -> None:
    assert parse_accounts(None).accounts == [] and parse_accounts({}).accounts == []


# ---- upstream error classification ----------------------------------------------------------

def test_google_error_classification() -> None:
    def err(status: int, body: Any) -> UpstreamError:
        return google_error(status, json.dumps(body).encode(), {})

    rl = err(429, {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "quota", "details": [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"}]}})
    assert judge(rl) is Verdict.COOL_DOWN and rl.retry_after == 1.5
    # Cloud Code wraps errors in an array
    cc = err(503, [{"error": {"code": 503, "status": "UNAVAILABLE", "message": "overloaded"}}])
    assert judge(cc) is Verdict.COOL_DOWN and cc.message == "overloaded"
    # The real Gemini API answers a wrong key with 400 + API_KEY_INVALID: an account fault, not the client's
    bad_key = err(400, {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "API key not valid.",
                                  "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                               "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]}})
    assert judge(bad_key) is Verdict.DISABLE
    plain_400 = err(400, {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "bad schema"}})
    assert judge(plain_400) is Verdict.FAIL
    assert judge(err(403, {"error": {"code": 403, "status": "PERMISSION_DENIED"}})) is Verdict.DISABLE
    assert judge(StaleCredentials(401, "token refused twice")) is Verdict.ROTATE
    header = google_error(429, b"not json", {"retry-after": "4"})
    assert header.retry_after == 4.0 and header.message == "not json"


# ---- the retry policy with a scripted attempt function ---------------------------------------

class Script:
    """Answers per account from `script[name]`: an exception to raise, or anything else to return."""

    def __init__(self, script: dict[str, Any]) -> None:
        self.script = script
        self.calls: list[str] = []

    async def __call__(self, acc: Any) -> Any:
        self.calls.append(acc.name)
        outcome = self.script[acc.name]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


class Policy:
    """A RetryPolicy over a pool of test accounts, calling a Script."""

    def __init__(self, script: dict[str, Any], *accounts: dict[str, Any], clock: Clock | None = None,
                 max_attempts: int = 3) -> None:
        self.pool = make_pool(*accounts, clock=clock)
        self.redact = Redactor([getattr(a, "api_key", None) for a in self.pool.accounts])
        # the credential probe (a request without client input) is refused as well, unless a test says otherwise
        self.probe_answer: UpstreamError | None = UpstreamError(401, "API key not valid")
        self.probes: list[str] = []
        self.policy = RetryPolicy(self.pool, max_attempts=max_attempts, redact=self.redact, probe=self._probe)
        self.provider = Script(script)

    async def _probe(self, acc: Any) -> UpstreamError | None:
        self.probes.append(acc.name)
        return self.probe_answer

    async def run(self, attempts: list[Attempt] | None = None) -> tuple[Any, Any]:
        return await self.policy.run(FLASH, self.provider, attempts=attempts)


async def test_policy_rotates_on_rate_limits_and_reports_every_attempt() -> None:
    script = {"a": UpstreamError(429, "quota", retry_after=7.0), "b": UpstreamError(503, "overloaded"), "c": "ok"}
    policy = Policy(script, gem("a"), gem("b"), gem("c"))
    for _ in range(3):  # whatever the order, a and b fail and c answers
        policy.pool.enable("a"), policy.pool.enable("b")
        attempts: list[Attempt] = []
        acc, result = await policy.run(attempts)
        assert (acc.name, result) == ("c", "ok")
        assert attempts[-1] == Attempt("c", 200) and {a.status for a in attempts[:-1]} <= {429, 503}
    st = {a.name: policy.pool.state(a) for a in policy.pool.accounts}
    assert st["c"].requests == 3 and st["a"].last_status == 429


async def test_policy_all_rate_limited_gives_429_with_the_shortest_wait() -> None:
    script = {"a": UpstreamError(429, "quota a", retry_after=7.0), "b": UpstreamError(429, "quota b",
                                                                                      retry_after=3.0)}
    policy = Policy(script, gem("a"), gem("b"))
    with pytest.raises(GatewayError) as exc:
        await policy.run()
    assert exc.value.status == 429 and exc.value.code == "rate_limit_exceeded"
    assert exc.value.headers == {"retry-after": "3"}
    # the next request does not even reach the upstream
    with pytest.raises(GatewayError) as exc:
        await policy.run()
    assert exc.value.status == 429 and exc.value.headers == {"retry-after": "3"}


async def test_policy_disables_on_auth_failure_and_returns_client_errors_at_once() -> None:
    script = {"a": UpstreamError(401, f"key {SECRET} not valid"), "b": "ok"}
    policy = Policy(script, gem("a", key=SECRET), gem("b"))
    provider = policy.provider
    for _ in range(3):
        acc, _ = await policy.run()
        assert acc.name == "b"
    reason = policy.pool.state(policy.pool.accounts[0]).disabled_reason
    assert reason and reason.startswith("401") and SECRET not in reason  # redacted
    assert provider.calls.count("a") == 1

    provider.script["b"] = UpstreamError(400, "Request contains an invalid argument.")
    provider.calls.clear()
    with pytest.raises(GatewayError) as exc:
        await policy.run()
    assert exc.value.status == 400 and provider.calls == ["b"]


async def test_policy_makes_at_most_max_attempts() -> None:
    script = {n: UpstreamError(503, "overloaded") for n in "abcde"}
    policy = Policy(script, *(gem(n) for n in "abcde"))
    provider = policy.provider
    with pytest.raises(GatewayError) as exc:
        await policy.run()
    assert exc.value.status == 503 and len(provider.calls) == 3 == len(set(provider.calls))


async def test_policy_connection_failures_rotate_and_end_in_502() -> None:
    script = {"a": UpstreamError(0, "connection failed"), "b": UpstreamError(0, "connection failed")}
    policy = Policy(script, gem("a"), gem("b"))
    provider = policy.provider
    with pytest.raises(GatewayError) as exc:
        await policy.run()
    assert exc.value.status == 502 and exc.value.code == "upstream_unreachable"
    assert sorted(provider.calls) == ["a", "b"]


async def test_policy_upstream_credential_failures_are_not_the_clients_401() -> None:
    """An upstream 401/403 means *our* account is bad: the client's key is fine, so no 401/403 to it."""
    for status in (401, 403):
        policy = Policy({"a": UpstreamError(status, "API key not valid")}, gem("a"))
        provider = policy.provider
        with pytest.raises(GatewayError) as exc:
            await policy.run()
        assert exc.value.status == 503 and exc.value.code == "no_account_available", exc.value.message
        assert "API key not valid" in exc.value.message
        with pytest.raises(GatewayError) as exc:  # and the next request says the same without calling out
            await policy.run()
        assert exc.value.status == 503 and provider.calls == ["a"]
        assert "was disabled" in exc.value.message and "API key not valid" in exc.value.message
        assert "gateway.enable" in exc.value.message


async def test_state_store_writes_itself_a_second_after_a_change_off_the_event_loop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio
    import threading

    from addon.pool import state as state_module

    path = tmp_path / "state.json"
    store = StateStore(path)
    writers: list[str] = []
    real_replace = os.replace

    def spy(src: Any, dst: Any) -> None:  # the rename that publishes each write
        writers.append(threading.current_thread().name)
        real_replace(src, dst)

    monkeypatch.setattr(state_module.os, "replace", spy)
    n = [0]
    store.add_source(lambda doc: doc.__setitem__("n", n[0]))
    for n[0] in range(1, 50):  # many changes ...
        store.mark_dirty()
    await asyncio.sleep(state_module.FLUSH_DELAY + 0.5)
    assert json.loads(path.read_text())["n"] == 49  # ... one write, with the latest state
    assert len(writers) == 1 and writers[0] != threading.current_thread().name
    n[0] = 50
    store.mark_dirty()
    store.close()  # shutdown writes what is pending at once
    assert json.loads(path.read_text())["n"] == 50
