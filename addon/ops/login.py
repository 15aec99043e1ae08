"""`scripts/login cloudcode`: sign a Google account in for Cloud Code and write it to the accounts file.

Google's installed-app flow (https://developers.google.com/identity/protocols/oauth2/native-app):
a loopback redirect `http://127.0.0.1:<free port>/oauth2callback`, PKCE (S256) and a random
`state`, `access_type=offline` + `prompt=consent` so Google returns a refresh token. The URL is
printed; on a machine without a browser, open it elsewhere and paste the address the browser ends
on (the failed loopback page) back into the terminal.

Which OAuth client signs in is a choice the user makes, never a silent default:
  --client gemini-cli      the installed-app client gemini-cli publishes in its source
                           (packages/core/src/code_assist/oauth2.ts), the one Google's Code Assist
                           backend serves; its "secret" is public by design (installed apps cannot
                           keep one)
  --client-id ID ...       your own OAuth client of type "Desktop app" (Google Cloud console)

After sign-in the account is checked against Code Assist (loadCodeAssist / onboardUser, as the
gateway does) so an account Google will not serve (an individual account since 2026-06-18, one
that needs verification, no licence) is reported at once and nothing is written.

The refresh token goes to a file of its own (mode 0600, gemini-cli's oauth_creds.json format)
that the account entry names with `oauth_creds:`, or, with --refresh-token-env VAR, nowhere: the
entry says `refresh_token_env: VAR` and the token is printed once for you to store.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import re
import secrets
import sys
import threading
import time
import webbrowser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from aiohttp import web

from ..pool.accounts_file import CLOUDCODE_BASE
from ..pool.credentials import GOOGLE_TOKEN_URL
from ..protocol.errors import UpstreamError
from ..upstream.codeassist import AccountUnusable, CodeAssistClient
from ..upstream.http import HttpClient

AUTHORIZE_URL = "https://accounts.google.com/o/oauth2/v2/auth"
USERINFO_URL = "https://www.googleapis.com/oauth2/v2/userinfo"
# gemini-cli's scopes (oauth2.ts): Cloud Code needs cloud-platform; the e-mail labels the account.
SCOPES = ("https://www.googleapis.com/auth/cloud-platform https://www.googleapis.com/auth/userinfo.email "
          "https://www.googleapis.com/auth/userinfo.profile")
# Published in gemini-cli's source for its installed-app sign-in (not a secret, see the module doc).
CLIENTS = {
    "gemini-cli": ("681255809395-oo8ft2oprdrnp9e3aqf6av3hmdib135j.apps.googleusercontent.com",
                   "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"),
}
WAIT = 300.0  # seconds to wait for the browser


class LoginError(Exception):
    pass


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)  # 64 characters from the unreserved set (RFC 7636: 43-128)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


def parse_redirect(text: str, state: str, google: bool = False) -> str:
    """The code from a pasted redirect address (or a bare code). `google`: the code comes from
    Google's own endpoint, whose authorization codes start with "4/"."""
    text = text.strip()
    if "?" not in text and "=" not in text:
        if not text or any(ch.isspace() for ch in text) or (google and not text.startswith("4/")):
            raise LoginError("that is not the address the browser ended on")
        return text  # a bare authorization code
    query = parse_qs(urlsplit(text).query if "?" in text else text)
    if "error" in query:
        raise LoginError(f"Google answered {query['error'][0]}: the sign-in was not granted")
    if query.get("state", [None])[0] != state:
        raise LoginError("the pasted address is not from this sign-in (its state does not match)")
    if not query.get("code"):
        raise LoginError("the pasted address holds no code")
    return query["code"][0]


class Callback:
    """The loopback listener that receives Google's redirect."""

    def __init__(self, state: str) -> None:
        self.state = state
        self.result: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/oauth2callback", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _handle(self, request: web.Request) -> web.Response:
        try:
            code = parse_redirect(str(request.rel_url), self.state)
        except LoginError as exc:
            if not self.result.done() and "state" not in str(exc):
                self.result.set_exception(exc)
            return web.Response(status=400, text=f"Sign-in failed: {exc}. Back to the terminal.")
        if not self.result.done():
            self.result.set_result(code)
        return web.Response(text="Signed in. You can close this tab and go back to the terminal.")

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def _read_pasted(loop: asyncio.AbstractEventLoop, state: str, into: asyncio.Future[str], google: bool) -> None:
    """A daemon thread: a blocked readline must not keep the process alive once the browser answered."""
    def run() -> None:
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                code = parse_redirect(line, state, google)
            except LoginError as exc:
                print(f"login: {exc}; paste the whole address again", file=sys.stderr, flush=True)
                continue
            loop.call_soon_threadsafe(lambda: into.done() or into.set_result(code))
            return
        # end of input (Ctrl-D) before an address: the user gave up, unless the browser already answered
        gave_up = LoginError("no address was pasted (end of input); nothing was written")
        loop.call_soon_threadsafe(lambda: into.done() or into.set_exception(gave_up))

    threading.Thread(target=run, daemon=True).start()


async def _json(resp) -> dict[str, Any]:
    raw = await resp.read()
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    return data if isinstance(data, dict) else {}


async def sign_in(args: argparse.Namespace, client_id: str, client_secret: str | None,
                  http: HttpClient) -> dict[str, Any]:
    """The whole browser round trip; returns Google's token response."""
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(24)
    callback = Callback(state)
    await callback.start()
    redirect_uri = f"http://127.0.0.1:{callback.port}/oauth2callback"
    params = {"client_id": client_id, "redirect_uri": redirect_uri, "response_type": "code", "scope": SCOPES,
              "access_type": "offline", "prompt": "consent", "state": state,
              "code_challenge": challenge, "code_challenge_method": "S256"}
    if args.login_hint:
        params["login_hint"] = args.login_hint
    url = f"{args.authorize_url}?{urlencode(params)}"
    print(f"Open this address in a browser and sign in with the Google account to add:\n\n  {url}\n\n"
          "On a machine without a browser, open it on another one; the last page will fail to load: paste "
          "its address (http://127.0.0.1:.../oauth2callback?...) here and press Enter.", flush=True)
    if args.open:
        webbrowser.open(url)
    _read_pasted(asyncio.get_running_loop(), state, callback.result, args.token_url == GOOGLE_TOKEN_URL)
    try:
        code = await asyncio.wait_for(callback.result, WAIT)
    except asyncio.TimeoutError:
        raise LoginError(f"no sign-in within {WAIT / 60:.0f} minutes") from None
    finally:
        await callback.close()
    form = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier,
            "redirect_uri": redirect_uri, "client_id": client_id}
    if client_secret:
        form["client_secret"] = client_secret
    try:
        status, _, body = await http.post_form(args.token_url, form)
    except UpstreamError as exc:
        raise LoginError(f"could not reach the token endpoint {args.token_url} ({exc.message})") from None
    try:
        tokens = json.loads(body)
    except ValueError:
        tokens = {}
    if status != 200 or not isinstance(tokens, dict) or not tokens.get("access_token"):
        detail = tokens.get("error_description") or tokens.get("error") if isinstance(tokens, dict) else None
        raise LoginError(f"the token exchange failed ({status}: {detail or 'no access token'})")
    if not tokens.get("refresh_token"):
        raise LoginError("Google returned no refresh token; remove the app's access at "
                         "https://myaccount.google.com/permissions and sign in again")
    return tokens


async def account_email(http: HttpClient, url: str, access_token: str) -> str | None:
    try:
        resp = await http.get(url, {"authorization": f"Bearer {access_token}"})
    except UpstreamError:
        return None
    if resp.status != 200:
        await resp.read()
        return None
    email = (await _json(resp)).get("email")
    return email if isinstance(email, str) and email else None


def write_creds_file(path: Path, tokens: dict[str, Any]) -> None:
    """gemini-cli's oauth_creds.json shape, created with mode 0600 (never readable by others, not even briefly)."""
    data = {"refresh_token": tokens["refresh_token"], "access_token": tokens.get("access_token"),
            "token_type": tokens.get("token_type", "Bearer"), "scope": tokens.get("scope"),
            "expiry_date": int((time.time() + float(tokens.get("expires_in", 3600))) * 1000)}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(f.fileno(), 0o600)  # an existing file keeps its mode on O_CREAT
        json.dump(data, f, indent=1)


def write_account(accounts_path: Path, entry: dict[str, Any]) -> str:
    """Add the entry to the accounts file, or update the entry with the same label; comments stay."""
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096  # never fold a long client id or path
    doc: Any = yaml.load(accounts_path.read_text(encoding="utf-8")) if accounts_path.exists() else None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise LoginError(f"{accounts_path} is not an accounts file (its top level is not a mapping)")
    rows = doc.setdefault("accounts", [])
    if rows is None:
        rows = doc["accounts"] = []
    name = entry.get("email") or entry.get("label")
    for row in rows:
        if isinstance(row, dict) and (row.get("email") or row.get("label")) == name:
            for key in ("refresh_token", "refresh_token_env", "oauth_creds", "client_secret", "client_secret_env"):
                row.pop(key, None)
            row.update(entry)
            verb = "updated"
            break
    else:
        rows.append(entry)
        verb = "added"
    new = not accounts_path.exists()
    with open(accounts_path, "w", encoding="utf-8") as f:
        yaml.dump(doc, f)
    if new:
        os.chmod(accounts_path, 0o600)  # it may hold a client secret
    return verb


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9@._-]+", "_", name)


async def login_cloudcode(args: argparse.Namespace) -> int:
    if args.client:
        client_id, client_secret = CLIENTS[args.client]
    else:
        client_id = args.client_id
        client_secret = args.client_secret or (os.environ.get(args.client_secret_env) if args.client_secret_env
                                               else None)
        if args.client_secret_env and not client_secret:
            raise LoginError(f"--client-secret-env names ${args.client_secret_env}, which is not set")
    http = HttpClient(read_timeout=60.0)
    try:
        tokens = await sign_in(args, client_id, client_secret, http)
        email = await account_email(http, args.userinfo_url, tokens["access_token"])
        name = args.label or email
        if not name:
            raise LoginError("could not read the account's e-mail; give it a name with --label")
        print(f"Signed in as {email or name}.", flush=True)

        async def authorized(send):
            return await send(tokens["access_token"])

        try:
            user = await CodeAssistClient(http, args.base_url, authorized).setup_user(args.project)
            print(f"Code Assist: project {user.project} (tier {user.tier_name or user.tier}).", flush=True)
        except AccountUnusable as exc:
            print(f"login: Google will not serve this account through Code Assist: {exc.message}\n"
                  "Nothing was written.", file=sys.stderr, flush=True)
            return 2
        except UpstreamError as exc:
            print(f"login: could not check the account with Code Assist ({exc.status}: {exc.message}); writing it "
                  "anyway: the gateway checks again at its first request.", file=sys.stderr, flush=True)
    finally:
        await http.aclose()

    entry: dict[str, Any] = {"provider": "cloudcode", ("email" if email and not args.label else "label"): name}
    accounts_path = Path(args.accounts).expanduser().resolve()
    if args.refresh_token_env:
        entry["refresh_token_env"] = args.refresh_token_env
    else:
        creds = Path(args.token_file).expanduser() if args.token_file else \
            accounts_path.parent / f"{_slug(name)}.oauth_creds.json"
        write_creds_file(creds.resolve(), tokens)
        entry["oauth_creds"] = str(creds.resolve())
    entry["client_id"] = client_id
    if args.client_secret_env and not args.client:
        entry["client_secret_env"] = args.client_secret_env
    elif client_secret:
        entry["client_secret"] = client_secret
    if args.project:
        entry["project"] = args.project
    for key, default in (("token_url", GOOGLE_TOKEN_URL), ("base_url", CLOUDCODE_BASE)):
        if getattr(args, key) != default:
            entry[key] = getattr(args, key)
    verb = write_account(accounts_path, entry)
    print(f"{verb.capitalize()} {name} in {accounts_path}"
          + (f" (refresh token in {entry['oauth_creds']}, mode 0600)." if "oauth_creds" in entry else "."), flush=True)
    if args.refresh_token_env:
        print(f"Set this before starting the gateway (shown once; keep it secret):\n"
              f"  export {args.refresh_token_env}='{tokens['refresh_token']}'", flush=True)
    print(f"Start the gateway with: scripts/run --set accounts={accounts_path}", flush=True)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scripts/login", description="Sign a Google account in and add it to the "
                                "accounts file.")
    sub = p.add_subparsers(dest="what", required=True)
    cc = sub.add_parser("cloudcode", help="a Gemini Code Assist Standard/Enterprise (or Workspace) account, "
                                          "for provider: cloudcode")
    who = cc.add_mutually_exclusive_group(required=True)
    who.add_argument("--client", choices=sorted(CLIENTS), help="a known installed-app OAuth client "
                     "(gemini-cli: the one gemini-cli publishes and Code Assist serves)")
    who.add_argument("--client-id", help="your own OAuth client of type 'Desktop app'")
    secret = cc.add_mutually_exclusive_group()
    secret.add_argument("--client-secret", help="its client secret (written into the accounts file)")
    secret.add_argument("--client-secret-env", metavar="VAR", help="read the client secret from $VAR; the "
                        "account entry names VAR instead of holding the secret")
    cc.add_argument("--accounts", default="accounts.yaml", help="accounts file to add to (default: %(default)s)")
    cc.add_argument("--label", help="name of the account (default: its e-mail)")
    cc.add_argument("--project", help="Google Cloud project with the Code Assist licence (default: discovered)")
    store = cc.add_mutually_exclusive_group()
    store.add_argument("--token-file", help="where the refresh token goes (default: <label>.oauth_creds.json "
                       "next to the accounts file)")
    store.add_argument("--refresh-token-env", metavar="VAR", help="write `refresh_token_env: VAR` and print "
                       "the token once instead of storing it")
    cc.add_argument("--login-hint", metavar="EMAIL", help="preselect this Google account on the consent page")
    cc.add_argument("--open", action="store_true", help="also try to open the address in a local browser")
    for flag, default in (("--authorize-url", AUTHORIZE_URL), ("--token-url", GOOGLE_TOKEN_URL),
                          ("--userinfo-url", USERINFO_URL), ("--base-url", CLOUDCODE_BASE)):
        cc.add_argument(flag, default=default, help=argparse.SUPPRESS)  # other endpoints (tests, proxies)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.client and (args.client_secret or args.client_secret_env):
        parser().error("--client brings its own secret; --client-secret is for --client-id")
    try:
        return asyncio.run(login_cloudcode(args))
    except (LoginError, UpstreamError) as exc:
        print(f"login: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
