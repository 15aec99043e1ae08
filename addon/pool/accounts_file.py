"""The accounts file: what the user configures (one model per provider, the `provider:` value
picks it), read from YAML or from the environment; plus each account's credential fingerprint."""

from __future__ import annotations

import base64
import fnmatch
import functools
import hashlib
import os
from typing import Annotated, Any, Literal, Union
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from .credentials import (
    GOOGLE_TOKEN_URL,
    GoogleCredentials,
    OAuthGrant,
    application_default_credentials,
    load_credentials_file,
    read_gemini_cli_refresh_token,
)
from ..config.safety import SafetySettings, parse_safety_settings


GEMINI_BASE = "https://generativelanguage.googleapis.com"
CLOUDCODE_BASE = "https://cloudcode-pa.googleapis.com"
VERTEX_GLOBAL_BASE = "https://aiplatform.googleapis.com"  # also the express-mode endpoint


class AccountBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str | None = None  # label shown in X-Account-Email and in flows
    label: str | None = None  # alternative to email for accounts that have none
    models: list[str] | None = None  # upstream models this account serves (patterns with *); None = all
    disabled: bool = False
    weight: int = Field(default=1, ge=1, le=100)  # rough share in round-robin

    @property
    def name(self) -> str:
        return self.email or self.label or "account"

    def serves(self, model: str) -> bool:
        return self.models is None or any(fnmatch.fnmatchcase(model, p) for p in self.models)

    def secrets(self) -> list[str]:
        """Every secret this account holds (to redact them and to notice a changed credential)."""
        found = [getattr(self, k, None) for k in ("api_key", "refresh_token", "client_secret")]
        return [s for s in found if s]

    def public(self) -> dict[str, Any]:
        """What an operator may see about the account's configuration (no secrets)."""
        return {}


def _secret(value: str | None, env: str | None, what: str) -> str | None:
    if value:
        return value
    if env:
        found = os.environ.get(env)
        if not found:
            raise ValueError(f"{what}_env names ${env}, which is not set")
        return found
    return None


class GoogleAccount(AccountBase):
    """Gemini API, Vertex AI and Cloud Code accounts: all send Gemini's generateContent body."""

    safety_settings: SafetySettings | None = None  # None: the file's top-level safety_settings

    @field_validator("safety_settings", mode="before")
    @classmethod
    def _safety(cls, value: Any) -> SafetySettings | None:
        return None if value is None else parse_safety_settings(value)


class GeminiAccount(GoogleAccount):
    provider: Literal["gemini"]
    api_key: str | None = Field(default=None, repr=False)
    api_key_env: str | None = None
    base_url: str = GEMINI_BASE

    @model_validator(mode="after")
    def _key(self) -> "GeminiAccount":
        self.api_key = _secret(self.api_key, self.api_key_env, "api_key")
        if not self.api_key:
            raise ValueError("a gemini account needs api_key (or api_key_env)")
        self.base_url = self.base_url.rstrip("/")
        return self


class CloudCodeAccount(GoogleAccount):
    provider: Literal["cloudcode"]
    refresh_token: str | None = Field(default=None, repr=False)
    refresh_token_env: str | None = None
    oauth_creds: str | None = None  # gemini-cli's oauth_creds.json (or scripts/login's): read, never written
    client_id: str
    client_secret: str | None = Field(default=None, repr=False)
    client_secret_env: str | None = None
    project: str | None = None  # None: discovered with loadCodeAssist / onboardUser, as gemini-cli does
    token_url: str = GOOGLE_TOKEN_URL
    base_url: str = CLOUDCODE_BASE

    @model_validator(mode="after")
    def _secrets(self) -> "CloudCodeAccount":
        self.refresh_token = _secret(self.refresh_token, self.refresh_token_env, "refresh_token")
        self.client_secret = _secret(self.client_secret, self.client_secret_env, "client_secret")
        if self.oauth_creds:
            if self.refresh_token:
                raise ValueError("give either oauth_creds or refresh_token, not both")
            self.oauth_creds = os.path.expanduser(self.oauth_creds)
            self.refresh_token = read_gemini_cli_refresh_token(self.oauth_creds)
        if not self.refresh_token:
            raise ValueError("a cloudcode account needs refresh_token (or refresh_token_env, or oauth_creds)")
        self.base_url = self.base_url.rstrip("/")
        return self

    @property
    def grant(self) -> OAuthGrant:
        return OAuthGrant(token_url=self.token_url, refresh_token=self.refresh_token, client_id=self.client_id,
                          client_secret=self.client_secret, creds_file=self.oauth_creds)

    def public(self) -> dict[str, Any]:
        return {"project": self.project, "client_id": self.client_id,
                **({"oauth_creds": self.oauth_creds} if self.oauth_creds else {})}


class VertexAccount(GoogleAccount):
    """Vertex AI: a service-account key, Application Default Credentials, or an express-mode API key."""

    provider: Literal["vertex"]
    project: str | None = None  # default: the key's project_id (ADC user credentials: quota_project_id)
    location: str = "global"
    credentials_file: str | None = None  # service-account key or authorized_user JSON
    adc: bool = False
    api_key: str | None = Field(default=None, repr=False)  # express mode: no project, global endpoint
    api_key_env: str | None = None
    token_url: str | None = None  # default: the credentials file's token_uri, else Google's
    base_url: str | None = None  # default: https://{location}-aiplatform.googleapis.com (global: no prefix)
    _creds: GoogleCredentials | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _auth(self) -> "VertexAccount":
        self.api_key = _secret(self.api_key, self.api_key_env, "api_key")
        given = [n for n, v in (("credentials_file", self.credentials_file), ("adc", self.adc),
                                ("api_key", self.api_key)) if v]
        if len(given) != 1:
            raise ValueError("a vertex account needs exactly one of credentials_file, adc: true, or api_key "
                             f"(api_key_env){f' (got {chr(44).join(given)})' if given else ''}")
        if self.api_key:
            if self.project:
                raise ValueError("an express-mode api_key calls the global endpoint without a project; "
                                 "remove project (or use credentials_file / adc for a project)")
        else:
            self._creds = (load_credentials_file(self.credentials_file, self.token_url) if self.credentials_file
                           else application_default_credentials(self.token_url))
            self.project = self.project or self._creds.project or (os.environ.get("GOOGLE_CLOUD_PROJECT")
                                                                    if self.adc else None)
            if not self.project:
                raise ValueError("a vertex account needs project (the credentials name none)")
        if not self.base_url:
            self.base_url = (VERTEX_GLOBAL_BASE if self.api_key or self.location == "global"
                             else f"https://{self.location}-aiplatform.googleapis.com")
        self.base_url = self.base_url.rstrip("/")
        return self

    @property
    def grant(self) -> OAuthGrant | None:
        return self._creds.grant if self._creds else None

    @property
    def quota_project(self) -> str | None:
        return self._creds.quota_project if self._creds else None

    @property
    def auth(self) -> str:
        return "api_key (express)" if self.api_key else f"{'adc ' if self.adc else ''}{self._creds.kind}"

    def secrets(self) -> list[str]:
        return super().secrets() + (self._creds.grant.secrets() if self._creds else [])

    def public(self) -> dict[str, Any]:
        where = {} if self.api_key else {"project": self.project, "location": self.location}
        return {**where, "auth": self.auth,
                **({"service_account": self._creds.grant.client_email}
                   if self._creds and self._creds.grant.client_email else {})}


class OpenAIAccount(AccountBase):
    provider: Literal["openai"]
    base_url: str  # e.g. http://127.0.0.1:8000/v1 (ends before /chat/completions)
    api_key: str | None = Field(default=None, repr=False)
    api_key_env: str | None = None
    # which field carries the output-token limit; auto: see backends.openai.limit_field
    max_tokens_field: Literal["auto", "max_tokens", "max_completion_tokens"] = "auto"
    # Where api_key goes: `authorization` (as `Bearer <key>`, OpenAI's way) or the name of the
    # header the server reads the bare key from (Azure OpenAI: `api-key`).
    api_key_header: str = Field(default="authorization", pattern=r"^[A-Za-z0-9-]{1,64}$")

    _basic: str | None = PrivateAttr(default=None)  # "user:password" taken out of base_url

    @model_validator(mode="after")
    def _key(self) -> "OpenAIAccount":
        self.api_key = _secret(self.api_key, self.api_key_env, "api_key")
        self.api_key_header = self.api_key_header.lower()
        self.base_url, self._basic = _split_credentials(self.base_url.rstrip("/"))
        if self._basic is not None and self.api_key and self.api_key_header == "authorization":
            # e.g. a server behind a basic-auth proxy that reads its own key from another header
            raise ValueError("base_url carries credentials (user:password@) and api_key goes in the Authorization "
                             "header too: set api_key_header to the header the server reads its key from "
                             "(Azure: api-key), or keep one of them")
        return self

    def auth_headers(self) -> dict[str, str]:
        """The credential headers of every request: the key (Bearer, or bare in `api_key_header`)
        and the Basic credentials taken out of base_url."""
        headers: dict[str, str] = {}
        if self._basic is not None:
            headers["authorization"] = "Basic " + base64.b64encode(self._basic.encode()).decode()
        if self.api_key:
            if self.api_key_header == "authorization":
                headers["authorization"] = f"Bearer {self.api_key}"
            else:
                headers[self.api_key_header] = self.api_key
        return headers

    def secrets(self) -> list[str]:
        if self._basic is None:
            return super().secrets()
        password = self._basic.partition(":")[2]
        # and the header's base64 value: an upstream echoing the header shows it that way
        return super().secrets() + [s for s in (password, base64.b64encode(self._basic.encode()).decode()) if s]


def _split_credentials(url: str) -> tuple[str, str | None]:
    """`http://user:pass@host/v1` -> (`http://host/v1`, "user:pass"): aiohttp would send URL
    credentials as its own Authorization header, which clashes with an api_key and escapes redaction."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, sep, password = userinfo.partition(":")
    basic = unquote(user) + (":" + unquote(password) if sep else ":")
    return urlunsplit(parts._replace(netloc=host)), basic


# The one registry of account models, one per `provider:` value. A new provider adds its model
# here; its Provider goes into build_providers (addon/upstream/__init__.py) under the same name.
ACCOUNT_MODELS = (GeminiAccount, CloudCodeAccount, VertexAccount, OpenAIAccount)
Account = Union[ACCOUNT_MODELS]  # any account (built from the registry)
_TaggedAccount = Annotated[Account, Field(discriminator="provider")]


class AccountsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    accounts: list[_TaggedAccount] = Field(default_factory=list)
    sticky: bool = False  # same conversation -> same account while healthy (upstream prompt caching)
    safety_settings: SafetySettings | None = None  # Gemini safetySettings for accounts that set none

    @field_validator("safety_settings", mode="before")
    @classmethod
    def _safety(cls, value: Any) -> SafetySettings | None:
        return None if value is None else parse_safety_settings(value)

    @model_validator(mode="after")
    def _default_safety(self) -> "AccountsFile":
        for acc in self.accounts:
            if isinstance(acc, GoogleAccount) and acc.safety_settings is None:
                acc.safety_settings = self.safety_settings
        return self


def parse_accounts(data: Any) -> AccountsFile:
    if data is None:
        return AccountsFile()
    try:
        parsed = AccountsFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"accounts file: {where}: {_message(first)}") from None
    seen: set[str] = set()
    for acc in parsed.accounts:
        if acc.name in seen:
            raise ValueError(f"accounts file: two accounts are labelled {acc.name!r}; labels must be unique")
        seen.add(acc.name)
    return parsed


def _message(error: Any) -> str:
    # pydantic's message never includes the input value here, so no secret leaks into logs
    return str(error["msg"]).removeprefix("Value error, ")


def env_accounts() -> AccountsFile:
    """Start without an accounts file: GEMINI_API_KEY (and optional GEMINI_BASE_URL) gives a Gemini
    API account; GOOGLE_GENAI_USE_VERTEXAI=true (the google-genai SDK's switch) a Vertex AI one, from
    GOOGLE_API_KEY (express mode) or Application Default Credentials with GOOGLE_CLOUD_PROJECT and
    GOOGLE_CLOUD_LOCATION (default global); GOOGLE_VERTEX_BASE_URL overrides its endpoint."""
    env = os.environ
    accounts: list[Account] = []
    if env.get("GEMINI_API_KEY"):
        accounts.append(GeminiAccount(provider="gemini", label="env:GEMINI_API_KEY", api_key=env["GEMINI_API_KEY"],
                                      base_url=env.get("GEMINI_BASE_URL", GEMINI_BASE)))
    if env.get("GOOGLE_GENAI_USE_VERTEXAI", "").lower() in ("1", "true"):
        common = {"provider": "vertex", "base_url": env.get("GOOGLE_VERTEX_BASE_URL") or None}
        try:
            if env.get("GOOGLE_API_KEY"):
                vertex = VertexAccount(**common, label="env:vertex-express", api_key=env["GOOGLE_API_KEY"])
            else:
                vertex = VertexAccount(**common, label="env:vertex", adc=True, project=env.get("GOOGLE_CLOUD_PROJECT"),
                                       location=env.get("GOOGLE_CLOUD_LOCATION") or "global")
        except ValidationError as exc:
            raise ValueError(f"GOOGLE_GENAI_USE_VERTEXAI: {_message(exc.errors(include_url=False)[0])}") from None
        accounts.append(vertex)
    return AccountsFile(accounts=accounts)


def credential_id(acc: Account) -> str:
    """Which credential an account uses, without revealing it: "<provider>:<fingerprint>". Thought
    signatures are bound to it (the same key under another label is the same credential)."""
    return f"{acc.provider}:{fingerprint(acc)}"


def fingerprint(acc: Account) -> str:
    grant = getattr(acc, "grant", None)
    secret = "|".join(acc.secrets()) + (grant.owner if grant is not None else "")
    # Persisted in the state file (mode 0600) to notice a credential edited while stopped; truncated.
    return _digest(f"{acc.provider}|{acc.base_url}|{secret}")


@functools.lru_cache(maxsize=1024)  # asked on every request (thought signatures are bound to it)
def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
