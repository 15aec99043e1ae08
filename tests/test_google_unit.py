"""Google accounts without mitmdump: credential files, the service-account JWT, access tokens,
Code Assist project discovery, Vertex URLs, and the login helpers, against the in-process emulator."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from addon.ops import login
from addon.pool.pool import AccountPool
from addon.pool.accounts_file import VertexAccount, env_accounts, parse_accounts
from addon.pool.credentials import CredentialsError, application_default_credentials, load_credentials_file
from addon.pool.policy import RetryPolicy, why
from addon.protocol.errors import CredentialsRejected, UpstreamError
from addon.stores.shared.local import FileTokenStore
from addon.pool.state import StateStore
from addon.upstream.codeassist import AccountUnusable, CodeAssistClient, ProjectDirectory
from addon.upstream.http import HttpClient
from addon.upstream.jwt import service_account_assertion
from addon.upstream.oauth import TokenManager
from tests.emulator import EmulatorState, start
from tests.google_creds import authorized_user_file, rsa_key, service_account_file


def b64json(part: str) -> dict[str, Any]:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


@pytest_asyncio.fixture
async def emu() -> AsyncIterator[tuple[str, EmulatorState]]:
    state = EmulatorState()
    runner, url = await start(state=state)
    yield url, state
    await runner.cleanup()


@pytest_asyncio.fixture
async def http() -> AsyncIterator[HttpClient]:
    client = HttpClient()
    yield client
    await client.aclose()


def vertex(path: Path, **extra: Any) -> VertexAccount:
    acc = parse_accounts({"accounts": [{"provider": "vertex", "label": "v", "credentials_file": str(path),
                                        **extra}]}).accounts[0]
    assert isinstance(acc, VertexAccount)
    return acc


def register(state: EmulatorState, info: dict[str, Any]) -> None:
    state.service_accounts[info["client_email"]] = {"public_key": info["public_key"], "key_id": info["private_key_id"]}


# ---- credential files ------------------------------------------------------------------------

def test_service_account_key_gives_a_jwt_grant_and_the_project(tmp_path: Path) -> None:
    info = service_account_file(tmp_path / "sa.json", "https://oauth2.googleapis.com/token", project="proj-1")
    creds = load_credentials_file(str(tmp_path / "sa.json"))
    assert creds.kind == "service_account" and creds.project == "proj-1" and creds.quota_project is None
    assert creds.grant.client_email == info["client_email"] and creds.grant.private_key_id == info["private_key_id"]
    assert info["private_key"] not in repr(creds.grant)  # never in logs or tracebacks


def test_assertion_is_an_rs256_jwt_the_public_key_verifies(tmp_path: Path) -> None:
    key = rsa_key()
    service_account_file(tmp_path / "sa.json", "https://oauth2.googleapis.com/token", key=key)
    grant = load_credentials_file(str(tmp_path / "sa.json")).grant
    jwt = service_account_assertion(grant, now=1_700_000_000)
    head, claims, sig = jwt.split(".")
    assert b64json(head) == {"alg": "RS256", "typ": "JWT", "kid": grant.private_key_id}
    assert b64json(claims) == {"iss": grant.client_email, "aud": "https://oauth2.googleapis.com/token",
                               "scope": "https://www.googleapis.com/auth/cloud-platform",
                               "iat": 1_700_000_000, "exp": 1_700_003_600}
    key.public_key().verify(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)), f"{head}.{claims}".encode(),
                            padding.PKCS1v15(), hashes.SHA256())


@pytest.mark.parametrize("content, expect", [
    ("not json", "cannot be read as JSON"),
    ('{"type": "external_account"}', "'external_account' are not supported"),
    ('{"type": "service_account", "client_email": "a@b", "private_key": "nope"}', "not PEM"),
    ('{"type": "service_account", "client_email": "a@b", "private_key": "-----BEGIN PRIVATE KEY-----\\nAAAA\\n'
     '-----END PRIVATE KEY-----\\n"}', "cannot be loaded"),
    ('{"type": "authorized_user", "client_id": "c", "refresh_token": "1//SECRET-RT"}', "need client_secret"),
])
def test_unusable_credential_files_say_why_without_their_secrets(tmp_path: Path, content: str, expect: str) -> None:
    (tmp_path / "c.json").write_text(content)
    with pytest.raises(CredentialsError) as exc:
        load_credentials_file(str(tmp_path / "c.json"))
    assert expect in str(exc.value) and "SECRET" not in str(exc.value)


def test_adc_follows_google_application_credentials_then_gcloud(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    with pytest.raises(CredentialsError, match="gcloud auth application-default login"):
        application_default_credentials()
    (tmp_path / "gcloud").mkdir()
    authorized_user_file(tmp_path / "gcloud" / "application_default_credentials.json", "1//adc", quota_project="q")
    creds = application_default_credentials()
    assert creds.kind == "authorized_user" and creds.grant.refresh_token == "1//adc" and creds.quota_project == "q"
    assert creds.grant.token_url == "https://oauth2.googleapis.com/token"
    service_account_file(tmp_path / "sa.json", "https://example.test/token")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "sa.json"))
    assert application_default_credentials().kind == "service_account"


def test_vertex_endpoints_follow_location_and_auth(tmp_path: Path) -> None:
    service_account_file(tmp_path / "sa.json", "https://oauth2.googleapis.com/token", project="p1")
    assert vertex(tmp_path / "sa.json").base_url == "https://aiplatform.googleapis.com"  # location global
    regional = vertex(tmp_path / "sa.json", location="europe-west4", project="p2")
    assert regional.base_url == "https://europe-west4-aiplatform.googleapis.com" and regional.project == "p2"
    express = parse_accounts({"accounts": [{"provider": "vertex", "label": "x", "api_key": "AQ.key"}]}).accounts[0]
    assert express.base_url == "https://aiplatform.googleapis.com" and express.grant is None
    assert express.public() == {"auth": "api_key (express)"}
    assert regional.public() == {"project": "p2", "location": "europe-west4", "auth": "service_account",
                                 "service_account": "gateway@my-project.iam.gserviceaccount.com"}


def test_vertex_from_the_environment(tmp_path: Path, monkeypatch) -> None:
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_CLOUD_LOCATION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GOOGLE_GENAI_USE_VERTEXAI", "true")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "adc.json"))
    authorized_user_file(tmp_path / "adc.json", "1//adc", quota_project=None)
    with pytest.raises(ValueError, match="needs project"):
        env_accounts()
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "env-proj")
    (acc,) = env_accounts().accounts
    assert isinstance(acc, VertexAccount) and acc.adc and acc.project == "env-proj" and acc.location == "global"
    monkeypatch.setenv("GOOGLE_API_KEY", "AQ.express")
    (acc,) = env_accounts().accounts
    assert acc.api_key == "AQ.express" and acc.project is None


def test_a_rewritten_key_file_is_a_new_credential(tmp_path: Path) -> None:
    """The pool gives an account whose credential changed a fresh start; a new key file is one."""
    service_account_file(tmp_path / "sa.json", "https://oauth2.googleapis.com/token")
    pool = AccountPool()
    pool.update(parse_accounts({"accounts": [{"provider": "vertex", "label": "v",
                                              "credentials_file": str(tmp_path / "sa.json")}]}))
    pool.disable(pool.accounts[0], 401, "401: Invalid JWT Signature.")
    service_account_file(tmp_path / "sa.json", "https://oauth2.googleapis.com/token")  # a new key
    pool.update(parse_accounts({"accounts": [{"provider": "vertex", "label": "v",
                                              "credentials_file": str(tmp_path / "sa.json")}]}))
    assert pool.describe()[0]["state"] == "ready"


# ---- access tokens ---------------------------------------------------------------------------

async def test_service_account_exchange_once_under_concurrency(tmp_path: Path, emu, http: HttpClient) -> None:
    url, state = emu
    info = service_account_file(tmp_path / "sa.json", f"{url}/token")
    register(state, info)
    acc = vertex(tmp_path / "sa.json")
    tokens = TokenManager(http)
    got = await asyncio.gather(*(tokens.token(acc) for _ in range(8)))
    assert len(set(got)) == 1 and state.user_of(got[0]) == info["client_email"]
    grants = [e["body"]["grant_type"] for e in state.log if e["path"] == "/token"]
    assert grants == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]


async def test_a_credential_probe_asks_for_a_fresh_token(tmp_path: Path, emu, http: HttpClient) -> None:
    """The policy's probe must check the credentials themselves, not reuse a cached access token."""
    from addon.upstream.vertex import VertexProvider

    url, state = emu
    info = service_account_file(tmp_path / "sa.json", f"{url}/token")
    register(state, info)
    acc = vertex(tmp_path / "sa.json")
    tokens = TokenManager(http)
    await tokens.token(acc)
    assert await VertexProvider(http, tokens).probe(acc) is None
    assert sum(1 for e in state.log if e["path"] == "/token") == 2  # the probe exchanged the key again


async def test_a_key_google_does_not_know_is_rejected_for_good(tmp_path: Path, emu, http: HttpClient) -> None:
    url, state = emu
    info = service_account_file(tmp_path / "sa.json", f"{url}/token")
    register(state, {**info, "public_key": service_account_file(tmp_path / "other.json", "x")["public_key"]})
    with pytest.raises(CredentialsRejected) as exc:
        await TokenManager(http).token(vertex(tmp_path / "sa.json"))
    assert exc.value.reason == "invalid_grant" and "Invalid JWT Signature." in exc.value.message
    assert why(exc.value) == "credentials"


async def test_the_emulator_refuses_long_lived_or_misaddressed_assertions(tmp_path: Path, emu,
                                                                          http: HttpClient) -> None:
    url, state = emu
    info = service_account_file(tmp_path / "sa.json", f"{url}/token")
    register(state, info)
    grant = load_credentials_file(str(tmp_path / "sa.json")).grant
    old = service_account_assertion(grant, now=1_000_000)  # expired long ago
    status, _, body = await http.post_form(f"{url}/token", {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                                                            "assertion": old})
    assert status == 400 and "Check your iat and exp values" in json.loads(body)["error_description"]
    elsewhere = load_credentials_file(str(tmp_path / "sa.json"), token_url="https://oauth2.googleapis.com/token").grant
    status, _, body = await http.post_form(f"{url}/token", {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                                                            "assertion": service_account_assertion(elsewhere)})
    assert status == 400 and "audience" in json.loads(body)["error_description"]


async def test_gemini_cli_credentials_are_read_and_never_written(tmp_path: Path, emu, http: HttpClient) -> None:
    url, state = emu
    creds = tmp_path / "oauth_creds.json"
    creds.write_text(json.dumps({"access_token": "ya29.old", "refresh_token": "1//from-gemini-cli",
                                 "scope": "x", "token_type": "Bearer", "expiry_date": 1}))
    creds.chmod(0o600)
    before = (creds.read_bytes(), creds.stat().st_mtime_ns)
    acc = parse_accounts({"accounts": [{"provider": "cloudcode", "email": "me@corp.example", "oauth_creds": str(creds),
                                        "client_id": "cid", "token_url": f"{url}/token", "base_url": url}]}).accounts[0]
    assert acc.refresh_token == "1//from-gemini-cli"
    token = await TokenManager(http).token(acc)
    assert state.user_of(token) == "1//from-gemini-cli"
    # gemini-cli signs in again: the next refresh follows its file, still without writing to it
    creds.write_text(json.dumps({"refresh_token": "1//signed-in-again"}))
    before = (creds.read_bytes(), creds.stat().st_mtime_ns)
    tokens = TokenManager(http)
    assert state.user_of(await tokens.token(acc)) == "1//signed-in-again"
    assert (creds.read_bytes(), creds.stat().st_mtime_ns) == before


# ---- Code Assist setup -----------------------------------------------------------------------

async def _client(url: str, state: EmulatorState, user: str, http: HttpClient) -> CodeAssistClient:
    token = state.issue_token(user)

    async def authorized(send):
        return await send(token)

    return CodeAssistClient(http, url, authorized, poll_interval=0.01)


@pytest.mark.parametrize("user, project, tier", [
    ("licensed@corp.example", "emulated-project", "standard-tier"),
    ("onboard@corp.example", "onboarded-", "standard-tier"),
])
async def test_setup_finds_the_project(emu, http: HttpClient, user: str, project: str, tier: str) -> None:
    url, state = emu
    found = await (await _client(url, state, user, http)).setup_user(None)
    assert found.project.startswith(project) and found.tier == tier
    calls = [(e["method"], e["path"]) for e in state.log]
    if user.startswith("onboard"):
        assert calls == [("POST", "/v1internal:loadCodeAssist"), ("POST", "/v1internal:onboardUser"),
                         ("GET", calls[2][1])] and calls[2][1].startswith("/v1internal/operations/")
        onboard = state.log[1]["body"]
        assert onboard["tierId"] == "standard-tier" and onboard["metadata"]["pluginType"] == "GEMINI"
    else:
        assert calls == [("POST", "/v1internal:loadCodeAssist")]
    assert state.log[0]["body"]["metadata"] == {"ideType": "IDE_UNSPECIFIED", "platform": "PLATFORM_UNSPECIFIED",
                                                "pluginType": "GEMINI"}


@pytest.mark.parametrize("user, reason, words", [
    ("individual@gmail.com", "UNSUPPORTED_CLIENT", "use a Gemini API key (provider: gemini) or Vertex AI"),
    ("validate@corp.example", "VALIDATION_REQUIRED", "open https://accounts.google.com/signin/continue"),
    ("noproject@corp.example", "PROJECT_REQUIRED", "set `project:`"),
])
async def test_setup_says_why_an_account_cannot_be_used(emu, http: HttpClient, user: str, reason: str,
                                                        words: str) -> None:
    url, state = emu
    with pytest.raises(AccountUnusable) as exc:
        await (await _client(url, state, user, http)).setup_user(None)
    assert exc.value.reason == reason and words in exc.value.message
    assert why(exc.value) == {"UNSUPPORTED_CLIENT": "unsupported account", "VALIDATION_REQUIRED": "validation required",
                              "PROJECT_REQUIRED": "no project"}[reason]


async def test_a_configured_project_is_used_as_is(emu, http: HttpClient) -> None:
    url, state = emu
    found = await (await _client(url, state, "noproject@corp.example", http)).setup_user("my-licensed-project")
    assert found.project == "my-licensed-project"
    assert state.log[0]["body"]["cloudaicompanionProject"] == "my-licensed-project"


async def test_discovered_projects_are_remembered_per_credential(tmp_path: Path, emu, http: HttpClient) -> None:
    url, state = emu

    def account(refresh: str):
        return parse_accounts({"accounts": [{"provider": "cloudcode", "email": "me@corp.example", "refresh_token": refresh,
                                             "client_id": "c", "token_url": f"{url}/token",
                                             "base_url": url}]}).accounts[0]

    store = StateStore(tmp_path / "state.json")
    directory = ProjectDirectory(http, TokenManager(http, FileTokenStore(store)), store)
    acc = account("onboard-1")
    assert (await asyncio.gather(*(directory.project(acc) for _ in range(5)))) == [state.onboarded["onboard-1"]] * 5
    assert sum(e["path"] == "/v1internal:onboardUser" for e in state.log) == 1  # one discovery at a time
    store.flush()
    again = ProjectDirectory(http, TokenManager(http, FileTokenStore(StateStore(tmp_path / "state.json"))),
                             StateStore(tmp_path / "state.json"))
    state.log.clear()
    assert await again.project(acc) == state.onboarded["onboard-1"] and not state.log  # from the state file
    assert again.describe(acc) == {"project": state.onboarded["onboard-1"], "project_discovered": True,
                                   "tier": "standard-tier"}
    assert await again.project(account("1//another-sign-in")) == "emulated-project"  # new credential: asks again


def test_disabling_errors_are_named_for_the_operator() -> None:
    assert why(UpstreamError(429, "slow down")) == "rate limit"
    assert why(UpstreamError(0, "connection failed")) == "unreachable"
    assert why(UpstreamError(403, "lack a licence", reason="SUBSCRIPTION_REQUIRED")) == "no licence"
    assert why(UpstreamError(400, "API key not valid", reason="API_KEY_INVALID")) == "credentials"


async def test_the_policy_records_why_and_the_last_error() -> None:
    pool = AccountPool()
    pool.update(parse_accounts({"accounts": [{"provider": "gemini", "email": "a", "api_key": "AIza-a"},
                                             {"provider": "gemini", "email": "b", "api_key": "AIza-b"}]}))
    answers = {"a": UpstreamError(429, "Quota exceeded for AIza-a", retry_after=30), "b": AccountUnusable(
        403, "individual Google account ...", reason="UNSUPPORTED_CLIENT")}

    async def call(acc):
        raise answers[acc.name]

    with pytest.raises(Exception):
        await RetryPolicy(pool, redact=lambda t: t.replace("AIza-a", "[redacted]")).run("m", call)
    rows = {r["account"]: r for r in pool.describe()}
    # a 429 rests the model on the account (quotas are per model); the account serves other models
    assert rows["a"]["state"] == "ready" and rows["a"]["models"]["m"]["why"] == "rate limit"
    assert rows["a"]["models"]["m"]["cooldown_seconds"] > 29
    assert rows["a"]["last_error"] == "Quota exceeded for [redacted]"
    assert rows["b"]["state"] == "disabled" and rows["b"]["why"] == "unsupported account"
    assert rows["b"]["last_error"].startswith("403: individual Google account")


# ---- login helpers ---------------------------------------------------------------------------

def test_pasted_redirects_are_checked() -> None:
    assert login.parse_redirect("http://127.0.0.1:5/oauth2callback?state=s1&code=4/abc&scope=x", "s1") == "4/abc"
    assert login.parse_redirect("  4/bare-code \n", "s1") == "4/bare-code"
    with pytest.raises(login.LoginError, match="not from this sign-in"):
        login.parse_redirect("http://127.0.0.1:5/oauth2callback?state=other&code=4/abc", "s1")
    with pytest.raises(login.LoginError, match="access_denied"):
        login.parse_redirect("http://127.0.0.1:5/oauth2callback?state=s1&error=access_denied", "s1")
    verifier, challenge = login.pkce_pair()
    assert 43 <= len(verifier) <= 128 and len(challenge) == 43


def test_the_accounts_file_keeps_its_comments_and_updates_in_place(tmp_path: Path) -> None:
    path = tmp_path / "accounts.yaml"
    path.write_text("# my pool\nsticky: true\naccounts:\n  - provider: gemini  # the old key\n"
                    "    email: a@example.com\n    api_key: AIza-x\n")
    entry = {"provider": "cloudcode", "email": "b@corp.example", "oauth_creds": "/x/b.json", "client_id": "c"}
    assert login.write_account(path, entry) == "added"
    text = path.read_text()
    assert "# my pool" in text and "# the old key" in text
    assert login.write_account(path, {**entry, "oauth_creds": "/x/b2.json", "project": "p"}) == "updated"
    accounts = parse_accounts_yaml(path)
    assert [a["email"] for a in accounts] == ["a@example.com", "b@corp.example"]
    assert accounts[1]["oauth_creds"] == "/x/b2.json" and accounts[1]["project"] == "p"
    new = tmp_path / "new.yaml"
    login.write_account(new, entry)
    assert new.stat().st_mode & 0o777 == 0o600


def test_the_token_file_is_private_from_the_start(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text("{}")
    path.chmod(0o644)
    login.write_creds_file(path, {"refresh_token": "1//r", "access_token": "ya29.a", "expires_in": 60})
    assert path.stat().st_mode & 0o777 == 0o600
    assert json.loads(path.read_text())["refresh_token"] == "1//r"


def parse_accounts_yaml(path: Path) -> list[dict[str, Any]]:
    import yaml

    return yaml.safe_load(path.read_text())["accounts"]


def test_the_private_key_loads_fast_enough_for_the_event_loop(tmp_path: Path) -> None:
    """A reload of the accounts file parses key files on the event loop: it must stay cheap."""
    import time

    service_account_file(tmp_path / "sa.json", "https://oauth2.googleapis.com/token")
    start_ = time.perf_counter()
    for _ in range(20):
        load_credentials_file(str(tmp_path / "sa.json"))
    assert (time.perf_counter() - start_) / 20 < 0.01
