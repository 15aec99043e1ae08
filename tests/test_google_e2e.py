"""Google accounts end to end: Vertex AI (service-account key, Application Default Credentials,
express-mode key), Cloud Code without a project (discovered as gemini-cli does), accounts Google
will not serve, the `scripts/login` sign-in with a scripted browser, and GET /gateway/accounts.

A real mitmdump, the official openai SDK, and the emulator standing in for Google (its OAuth
consent and token endpoints too; the service-account keys are made here and their JWTs checked
with the public key).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import ROOT, Emulator, Gateway, GatewayFactory, wait_for
from tests.google_creds import authorized_user_file, register, service_account_file

pytestmark = pytest.mark.e2e

SALT = secrets.token_hex(6)
FLASH = "gemini-2.5-flash"
SECRETS: set[str] = set()
STARTED: list[Gateway] = []
SEEN: list[str] = []


def start(gateways: GatewayFactory, yaml_text: str | None, **kw: Any) -> Gateway:
    gw = gateways.start(yaml_text, **kw)
    STARTED.append(gw)
    return gw


def ask(gw: Gateway, text: str = "hello", **kw: Any) -> tuple[httpx.Headers, Any]:
    raw = gw.openai().chat.completions.with_raw_response.create(
        model=FLASH, messages=[{"role": "user", "content": text}], **kw)
    SEEN.append(str(raw.headers) + raw.text)
    return raw.headers, raw.parse()


def stream_text(gw: Gateway, text: str) -> str:
    chunks = gw.openai().chat.completions.create(model=FLASH, stream=True,
                                                 messages=[{"role": "user", "content": text}])
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)



def accounts_view(gw: Gateway, key: str | None = None) -> dict[str, dict[str, Any]]:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    r = httpx.get(gw.url + "/gateway/accounts", headers=headers, timeout=5)
    assert r.status_code == 200, r.text
    SEEN.append(r.text)
    return {row["account"]: row for row in r.json()["data"]}


def gemini_row(emu: Emulator, name: str) -> str:
    key = f"AIzaSy-{name}-{SALT}"
    SECRETS.add(key)
    return f"""
  - provider: gemini
    email: {name}@example.com
    api_key: {key}
    base_url: {emu.url}"""


def cloudcode_row(emu: Emulator, name: str, refresh: str, extra: str = "") -> str:
    SECRETS.add(refresh)
    return f"""
  - provider: cloudcode
    email: {name}
    refresh_token: {refresh}
    client_id: gateway-test.apps.googleusercontent.com
    token_url: {emu.url}/token
    base_url: {emu.url}{extra}"""


def generate_calls(emu: Emulator, prefix: str) -> list[dict[str, Any]]:
    return [e for e in emu.log() if e["path"].startswith(prefix)]


# ---- Vertex AI -------------------------------------------------------------------------------

def test_vertex_with_a_service_account_key(gateways: GatewayFactory, emulator: Emulator, tmp_path: Path) -> None:
    info = service_account_file(tmp_path / "sa.json", f"{emulator.url}/token", project="sa-project")
    register(emulator.control, info)
    SECRETS.add(info["private_key"].splitlines()[5])
    gw = start(gateways, f"""accounts:
  - provider: vertex
    label: vertex-sa
    credentials_file: {tmp_path / 'sa.json'}
    location: europe-west4
    base_url: {emulator.url}
""")
    headers, completion = ask(gw, "hi vertex")
    assert headers["x-account-email"] == "vertex-sa"
    assert completion.choices[0].message.content == f"Echo({FLASH}): hi vertex"
    assert stream_text(gw, "streamed") == f"Echo({FLASH}): streamed"
    calls = generate_calls(emulator, "/v1/projects/")
    assert [c["path"] for c in calls] == [
        f"/v1/projects/sa-project/locations/europe-west4/publishers/google/models/{FLASH}:generateContent",
        f"/v1/projects/sa-project/locations/europe-west4/publishers/google/models/{FLASH}:streamGenerateContent"]
    assert calls[1]["query"] == {"alt": "sse"}
    token_calls = [e for e in emulator.log() if e["path"] == "/token"]
    assert len(token_calls) == 1 and token_calls[0]["body"]["grant_type"] == \
        "urn:ietf:params:oauth:grant-type:jwt-bearer"
    SECRETS.add(calls[0]["key"])  # the access token


def test_vertex_refuses_a_key_google_does_not_know(gateways: GatewayFactory, emulator: Emulator,
                                                   tmp_path: Path) -> None:
    info = service_account_file(tmp_path / "sa.json", f"{emulator.url}/token")
    other = service_account_file(tmp_path / "other.json", f"{emulator.url}/token")
    register(emulator.control, {**info, "public_key": other["public_key"]})  # Google holds another key
    gw = start(gateways, f"""accounts:
  - provider: vertex
    label: vertex-badkey
    credentials_file: {tmp_path / 'sa.json'}
    base_url: {emulator.url}
""")
    with pytest.raises(openai.APIStatusError) as exc:
        ask(gw)
    SEEN.append(exc.value.response.text)
    assert exc.value.status_code == 503 and "Invalid JWT Signature." in exc.value.message
    row = accounts_view(gw)["vertex-badkey"]
    assert row["state"] == "disabled" and row["why"] == "credentials" and row["auth"] == "service_account"
    assert not generate_calls(emulator, "/v1/projects/")


def test_vertex_with_application_default_credentials_from_the_environment(
        gateways: GatewayFactory, emulator: Emulator, tmp_path: Path) -> None:
    """No accounts file at all: gcloud's ADC file, GOOGLE_CLOUD_PROJECT and the google-genai switch."""
    gcloud = tmp_path / "gcloud"
    gcloud.mkdir()
    refresh = f"1//adc-{SALT}"
    SECRETS.add(refresh)
    authorized_user_file(gcloud / "application_default_credentials.json", refresh, token_uri=f"{emulator.url}/token",
                         quota_project="billing-project")
    gw = start(gateways, None, env={"GOOGLE_GENAI_USE_VERTEXAI": "true", "GOOGLE_CLOUD_PROJECT": "adc-project",
                                    "GOOGLE_CLOUD_LOCATION": "us-central1", "CLOUDSDK_CONFIG": str(gcloud),
                                    "GOOGLE_VERTEX_BASE_URL": emulator.url})
    headers, completion = ask(gw, "adc")
    assert headers["x-account-email"] == "env:vertex" and completion.choices[0].message.content.endswith("adc")
    (call,) = generate_calls(emulator, "/v1/projects/")
    assert call["path"].startswith("/v1/projects/adc-project/locations/us-central1/")
    assert call["headers"]["x-goog-user-project"] == "billing-project"
    assert emulator.control("stats")["refreshes"] == {refresh: 1}
    SECRETS.add(call["key"])


def test_vertex_express_mode_key(gateways: GatewayFactory, emulator: Emulator) -> None:
    key = f"AQ.express-{SALT}"
    SECRETS.add(key)
    gw = start(gateways, f"""accounts:
  - provider: vertex
    label: vertex-express
    api_key: {key}
    base_url: {emulator.url}
""")
    assert ask(gw, "express")[1].choices[0].message.content == f"Echo({FLASH}): express"
    (call,) = generate_calls(emulator, "/v1/publishers/")
    assert call["path"] == f"/v1/publishers/google/models/{FLASH}:generateContent" and call["key"] == key
    assert call["headers"]["x-goog-api-key"] == key and "authorization" not in call["headers"]


# ---- Cloud Code: project discovery, envelope, accounts Google will not serve -----------------

def test_cloudcode_without_project_discovers_it_once(gateways: GatewayFactory, emulator: Emulator,
                                                    tmp_path: Path) -> None:
    yaml_text = "accounts:" + cloudcode_row(emulator, "std@corp.example", f"1//std-{SALT}") + "\n"
    state_file = tmp_path / "state.json"
    gw = start(gateways, yaml_text, state_file=state_file)
    assert ask(gw, "first")[1].choices[0].message.content == f"Echo({FLASH}): first"
    client = gw.openai()
    convo = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "q1"}]
    client.chat.completions.create(model=FLASH, messages=convo)
    client.chat.completions.create(model=FLASH, messages=convo + [{"role": "assistant", "content": "a1"},
                                                                  {"role": "user", "content": "q2"}])
    loads = generate_calls(emulator, "/v1internal:loadCodeAssist")
    assert len(loads) == 1
    gens = generate_calls(emulator, "/v1internal:generateContent")
    assert [g["body"]["project"] for g in gens] == ["emulated-project"] * 3
    # gemini-cli's envelope: a prompt id per request, one session id per conversation
    assert set(gens[0]["body"]) == {"model", "project", "user_prompt_id", "request"}
    assert len({g["body"]["user_prompt_id"] for g in gens}) == 3
    sessions = [g["body"]["request"]["session_id"] for g in gens]
    assert sessions[1] == sessions[2] != sessions[0]
    assert accounts_view(gw)["std@corp.example"]["project"] == "emulated-project"
    SECRETS.update(g["key"] for g in gens)

    gateways.stop(gw)  # the discovered project is in the state file: a restart does not ask again
    assert json.loads(state_file.read_text())["code_assist"]["std@corp.example"]["project"] == "emulated-project"
    emulator.reset()
    gw2 = start(gateways, yaml_text, state_file=state_file)
    ask(gw2, "after restart")
    assert not generate_calls(emulator, "/v1internal:loadCodeAssist")
    SECRETS.update(g["key"] for g in generate_calls(emulator, "/v1internal:"))


def test_cloudcode_onboards_a_new_user(gateways: GatewayFactory, emulator: Emulator) -> None:
    gw = start(gateways, "accounts:" + cloudcode_row(emulator, "new@corp.example", f"onboard-{SALT}") + "\n")
    assert stream_text(gw, "new user") == f"Echo({FLASH}): new user"
    paths = [e["path"] for e in emulator.log() if e["path"].startswith("/v1internal")]
    assert paths[:2] == ["/v1internal:loadCodeAssist", "/v1internal:onboardUser"]
    assert paths[2].startswith("/v1internal/operations/") and paths[3] == "/v1internal:streamGenerateContent"
    (gen,) = generate_calls(emulator, "/v1internal:streamGenerateContent")
    assert gen["body"]["project"].startswith("onboarded-")
    SECRETS.add(gen["key"])


@pytest.mark.parametrize("user, why, words", [
    ("individual", "unsupported account", "use a Gemini API key (provider: gemini) or Vertex AI (provider: vertex)"),
    ("validate", "validation required", "https://accounts.google.com/signin/continue"),
    ("nolicense", "no licence", "lack a Gemini Code Assist license"),
])
def test_accounts_google_will_not_serve_get_a_clear_status(gateways: GatewayFactory, emulator: Emulator,
                                                           user: str, why: str, words: str) -> None:
    key = f"gw-key-{SALT}"
    SECRETS.add(key)
    gw = start(gateways, "accounts:" + cloudcode_row(emulator, f"{user}@example.com", f"{user}-{SALT}")
               + gemini_row(emulator, f"backup-{user}") + "\n", auth_mode="strict", api_key=key)
    raw = gw.openai(api_key=key).chat.completions.with_raw_response.create(
        model=FLASH, messages=[{"role": "user", "content": "x"}])
    SEEN.append(raw.text)
    view = wait_for(lambda: accounts_view(gw, key)[f"{user}@example.com"]["state"] == "disabled"
                    and accounts_view(gw, key), what="the account to be tried")
    row = view[f"{user}@example.com"]
    assert row["why"] == why and words in row["status"] and words in row["last_error"]
    assert f"{user}@example.com" in gw.log() and words in gw.log()
    # the other account keeps answering
    for _ in range(3):
        assert gw.openai(api_key=key).chat.completions.with_raw_response.create(
            model=FLASH, messages=[{"role": "user", "content": "y"}]).headers["x-account-email"] == \
            f"backup-{user}@example.com"


def test_an_individual_account_alone_tells_the_client_what_to_use(gateways: GatewayFactory,
                                                                   emulator: Emulator) -> None:
    gw = start(gateways, "accounts:" + cloudcode_row(emulator, "solo@gmail.com", f"individual-solo-{SALT}",
                                                   "\n    project: my-own-project") + "\n")
    with pytest.raises(openai.APIStatusError) as exc:
        ask(gw)
    SEEN.append(exc.value.response.text)
    assert exc.value.status_code == 503
    assert "use a Gemini API key (provider: gemini) or Vertex AI (provider: vertex)" in exc.value.message
    assert not generate_calls(emulator, "/v1internal:loadCodeAssist")  # project given: no discovery


# ---- GET /gateway/accounts -------------------------------------------------------------------

def test_gateway_accounts_shows_the_pool_without_secrets(gateways: GatewayFactory, emulator: Emulator) -> None:
    key = f"gw-key-{SALT}"
    SECRETS.add(key)
    gw = start(gateways, "accounts:" + gemini_row(emulator, "busy") + gemini_row(emulator, "calm") + "\n",
               auth_mode="strict", api_key=key)
    assert httpx.get(gw.url + "/gateway/accounts", timeout=5).status_code == 401
    assert httpx.post(gw.url + "/gateway/accounts", headers={"x-api-key": key}, timeout=5).status_code == 405
    emulator.rules({"match": {"key": f"AIzaSy-busy-{SALT}"}, "status": 429, "retry_delay": "40s",
                    "message": f"Quota exceeded for AIzaSy-busy-{SALT}"})
    client = gw.openai(api_key=key)
    for i in range(3):
        client.chat.completions.create(model=FLASH, messages=[{"role": "user", "content": f"count {i}"}])
    client.chat.completions.create(model="gemini-2.5-pro", messages=[{"role": "user", "content": "pro"}])
    view = accounts_view(gw, key)
    busy, calm = view["busy@example.com"], view["calm@example.com"]
    # quotas are per model: the model rests on the account, which stays ready for other models
    assert busy["state"] == "ready" and busy["models"][FLASH]["why"] == "rate limit"
    assert 30 < busy["models"][FLASH]["cooldown_seconds"] <= 40
    assert busy["last_status"] == 429 and busy["last_error"].startswith("Quota exceeded for [redacted]")
    assert calm["state"] == "ready" and calm["requests"] == 4
    assert calm["usage"][FLASH]["requests"] == 3 and calm["usage"][FLASH]["output_tokens"] > 0
    assert calm["usage"]["gemini-2.5-pro"]["requests"] == 1
    text = httpx.get(gw.url + "/gateway/accounts", headers={"x-api-key": key}, timeout=5).text
    assert f"AIzaSy-busy-{SALT}" not in text and key not in text


# ---- scripts/login: the installed-app sign-in ------------------------------------------------

class Login:
    """`python -m addon.ops.login cloudcode` against the emulator, reading its output as a user would."""

    def __init__(self, emu: Emulator, accounts: Path, *extra: str) -> None:
        cmd = [sys.executable, "-m", "addon.ops.login", "cloudcode", "--client-id", "desktop-client.apps.example",
               "--client-secret-env", "LOGIN_TEST_SECRET", "--accounts", str(accounts),
               "--authorize-url", f"{emu.url}/o/oauth2/v2/auth", "--token-url", f"{emu.url}/token",
               "--userinfo-url", f"{emu.url}/oauth2/v2/userinfo", "--base-url", emu.url, *extra]
        env = {**os.environ, "LOGIN_TEST_SECRET": f"GOCSPX-desktop-{SALT}"}
        SECRETS.add(env["LOGIN_TEST_SECRET"])
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)

    def url(self) -> str:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip().startswith("http"):
                return line.strip()
        raise AssertionError(f"no URL printed; stderr: {self.proc.stderr.read() if self.proc.stderr else ''}")

    def finish(self, stdin: str = "") -> tuple[int, str, str]:
        out, err = self.proc.communicate(stdin, timeout=30)
        SEEN.extend((out, err))
        return self.proc.returncode, out, err


def test_login_with_a_browser_then_chat(gateways: GatewayFactory, emulator: Emulator, tmp_path: Path) -> None:
    accounts = tmp_path / "accounts.yaml"
    accounts.write_text("# my pool\naccounts:" + gemini_row(emulator, "existing") + "\n")
    login = Login(emulator, accounts, "--login-hint", "dev@corp.example")
    url = login.url()
    assert "code_challenge_method=S256" in url and "access_type=offline" in url
    # the scripted browser: Google's consent page redirects to the loopback listener with a code
    page = httpx.get(url, follow_redirects=True, timeout=10)
    assert page.status_code == 200 and "Signed in" in page.text
    code, out, err = login.finish()
    assert code == 0, err
    assert "Signed in as dev@corp.example." in out and "project emulated-project" in out
    text = accounts.read_text()
    assert text.startswith("# my pool") and "existing@example.com" in text
    entry = [a for a in __import__("yaml").safe_load(text)["accounts"] if a.get("email") == "dev@corp.example"][0]
    assert entry["client_secret_env"] == "LOGIN_TEST_SECRET" and "refresh_token" not in entry
    creds = Path(entry["oauth_creds"])
    assert creds.stat().st_mode & 0o777 == 0o600
    refresh = json.loads(creds.read_text())["refresh_token"]
    SECRETS.add(refresh)
    assert refresh not in out + err and refresh not in text
    # the PKCE exchange the emulator checked
    (exchange,) = [e for e in emulator.log() if e["path"] == "/token" and e["body"]["grant_type"] ==
                   "authorization_code"]
    assert exchange["body"]["code_verifier"] and exchange["body"]["redirect_uri"].startswith("http://127.0.0.1:")

    gw = start(gateways, None, accounts=str(accounts), env={"LOGIN_TEST_SECRET": f"GOCSPX-desktop-{SALT}"})
    headers, completion = ask(gw, "signed in")
    assert completion.choices[0].message.content == f"Echo({FLASH}): signed in"
    wait_for(lambda: ask(gw)[0]["x-account-email"] == "dev@corp.example", what="the new account's turn")
    assert json.loads(creds.read_text())["refresh_token"] == refresh  # read, never rewritten


def test_login_headless_by_pasting_the_redirect(emulator: Emulator, tmp_path: Path) -> None:
    accounts = tmp_path / "accounts.yaml"
    login = Login(emulator, accounts, "--label", "headless", "--refresh-token-env", "MY_REFRESH")
    url = login.url()
    # the browser runs elsewhere: its last address cannot load here, the user pastes it
    redirect = httpx.get(url + "&login_hint=far@corp.example", follow_redirects=False, timeout=10)
    assert redirect.status_code == 302
    code, out, err = login.finish("not the address\n" + redirect.headers["location"] + "\n")
    assert code == 0, err
    assert "that is not the address the browser ended on; paste the whole address again" in err
    entry = __import__("yaml").safe_load(accounts.read_text())["accounts"][0]
    assert entry["label"] == "headless" and entry["refresh_token_env"] == "MY_REFRESH"
    assert "oauth_creds" not in entry and accounts.stat().st_mode & 0o777 == 0o600
    shown = re.search(r"export MY_REFRESH='([^']+)'", out)  # shown once, by request: not a leak
    assert shown and shown.group(1).startswith("1//emu-") and shown.group(1) not in accounts.read_text()


def test_login_of_an_individual_account_writes_nothing(emulator: Emulator, tmp_path: Path) -> None:
    accounts = tmp_path / "accounts.yaml"
    login = Login(emulator, accounts, "--login-hint", "individual.person@gmail.com")
    httpx.get(login.url(), follow_redirects=True, timeout=10)
    code, out, err = login.finish()
    assert code == 2
    assert "use a Gemini API key (provider: gemini) or Vertex AI (provider: vertex)" in err
    assert "Nothing was written" in err and not accounts.exists()
    assert not list(tmp_path.glob("*.oauth_creds.json"))


def test_no_secret_in_any_log_or_answer() -> None:
    """Runs last: every gateway of this module and everything its clients saw."""
    assert STARTED and len(SECRETS) > 8
    for where, text in [(gw.workdir.name, gw.log()) for gw in STARTED] + [("client", t) for t in SEEN]:
        leaked = [s for s in SECRETS if s in text]
        assert not leaked, f"{where} contains {leaked}"
        assert "ya29." not in text, where
