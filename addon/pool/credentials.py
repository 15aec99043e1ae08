"""Google credentials an account can point at, read once when the accounts file is loaded.

* a service-account key (``"type": "service_account"``, as `gcloud iam service-accounts keys create`
  or the Cloud console writes it): access tokens come from an RS256-signed JWT sent to the key's
  ``token_uri`` with the ``urn:ietf:params:oauth:grant-type:jwt-bearer`` grant;
* user credentials (``"type": "authorized_user"``, what `gcloud auth application-default login`
  writes): a refresh token with its OAuth client;
* Application Default Credentials: the file named by ``$GOOGLE_APPLICATION_CREDENTIALS``, else
  gcloud's ``application_default_credentials.json`` (in ``$CLOUDSDK_CONFIG`` or ``~/.config/gcloud``;
  ``%APPDATA%\\gcloud`` on Windows), the order Google's auth libraries use. The metadata server of
  Google Compute Engine is not consulted;
* gemini-cli's ``~/.gemini/oauth_creds.json``: read, never written (gemini-cli owns it).

An `OAuthGrant` says how to obtain an access token; addon/upstream/oauth.py does it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"


@dataclass(frozen=True, slots=True)
class OAuthGrant:
    """How to get an access token: exactly one of a refresh token (with its OAuth client) or a
    service-account key. Secrets are kept out of repr."""

    token_url: str
    refresh_token: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    creds_file: str | None = None  # gemini-cli file to re-read the refresh token from at each refresh
    client_email: str | None = None  # service account
    private_key: str | None = None  # PEM
    private_key_id: str | None = None
    scope: str = CLOUD_PLATFORM_SCOPE

    def __repr__(self) -> str:
        kind = "service_account" if self.private_key else "refresh_token"
        return f"OAuthGrant({kind}, {self.client_email or self.client_id}, {self.token_url})"

    @property
    def owner(self) -> str:
        """Fingerprint of the credential: an access token belongs to the credential that got it."""
        parts = (self.token_url, self.client_id, self.refresh_token, self.client_email, self.private_key_id,
                 self.private_key)
        return hashlib.sha256("|".join(p or "" for p in parts).encode()).hexdigest()[:16]

    def secrets(self) -> list[str]:
        return [s for s in (self.refresh_token, self.client_secret) if s]


class CredentialsError(ValueError):
    """A credentials file that cannot be used; the message never contains its secrets."""


def _read_json(path: str, what: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise CredentialsError(f"{what} {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise CredentialsError(f"{what} {path} cannot be read as JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise CredentialsError(f"{what} {path} is not a JSON object")
    return data


def _check_private_key(pem: Any, path: str) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    if not isinstance(pem, str) or "PRIVATE KEY" not in pem:
        raise CredentialsError(f"{path}: private_key is missing or not PEM")
    try:
        # Skipping the RSA consistency check keeps this at microseconds instead of ~100 ms per load;
        # a broken key still fails at Google ("Invalid JWT Signature.", which disables the account).
        key = serialization.load_pem_private_key(pem.encode(), None, unsafe_skip_rsa_key_validation=True)
    except (ValueError, TypeError):
        raise CredentialsError(f"{path}: private_key cannot be loaded (not an unencrypted PEM key)") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CredentialsError(f"{path}: private_key is not an RSA key (RS256 needs one)")
    return pem


@dataclass(frozen=True, slots=True)
class GoogleCredentials:
    """A parsed credentials file: the grant plus what it says about the project."""

    kind: str  # "service_account" | "authorized_user"
    grant: OAuthGrant
    project: str | None  # project_id of a service account, quota_project_id of user credentials
    quota_project: str | None  # user credentials bill API calls to this project (x-goog-user-project)


def load_credentials_file(path: str, token_url: str | None = None) -> GoogleCredentials:
    """A service-account key or authorized_user file; `token_url` overrides the file's token_uri."""
    path = os.path.expanduser(path)
    data = _read_json(path, "credentials file")
    kind = data.get("type")
    if kind == "service_account":
        email = data.get("client_email")
        if not isinstance(email, str) or not email:
            raise CredentialsError(f"{path}: a service-account key needs client_email")
        grant = OAuthGrant(token_url=token_url or _str(data.get("token_uri")) or GOOGLE_TOKEN_URL,
                           client_email=email, private_key=_check_private_key(data.get("private_key"), path),
                           private_key_id=_str(data.get("private_key_id")))
        return GoogleCredentials(kind, grant, _str(data.get("project_id")), None)
    if kind == "authorized_user":
        missing = [k for k in ("client_id", "client_secret", "refresh_token") if not _str(data.get(k))]
        if missing:
            raise CredentialsError(f"{path}: authorized_user credentials need {', '.join(missing)}")
        grant = OAuthGrant(token_url=token_url or _str(data.get("token_uri")) or GOOGLE_TOKEN_URL,
                           refresh_token=data["refresh_token"], client_id=data["client_id"],
                           client_secret=data["client_secret"])
        quota = _str(data.get("quota_project_id"))
        return GoogleCredentials(kind, grant, quota, quota)
    raise CredentialsError(f"{path}: credentials of type {kind!r} are not supported "
                           "(use a service_account key or authorized_user credentials)")


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def gcloud_adc_path() -> Path:
    """Where `gcloud auth application-default login` writes its credentials."""
    config = os.environ.get("CLOUDSDK_CONFIG")
    if config:
        base = Path(config)
    elif os.name == "nt" and os.environ.get("APPDATA"):
        base = Path(os.environ["APPDATA"]) / "gcloud"
    else:
        base = Path.home() / ".config" / "gcloud"
    return base / "application_default_credentials.json"


def application_default_credentials(token_url: str | None = None) -> GoogleCredentials:
    explicit = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if explicit:
        return load_credentials_file(explicit, token_url)
    path = gcloud_adc_path()
    if not path.exists():
        raise CredentialsError("no Application Default Credentials: set GOOGLE_APPLICATION_CREDENTIALS to a "
                               "service-account key, or run `gcloud auth application-default login` "
                               f"(which writes {path})")
    return load_credentials_file(str(path), token_url)


def read_gemini_cli_refresh_token(path: str) -> str:
    """The refresh token in gemini-cli's oauth_creds.json (also what `scripts/login` writes)."""
    data = _read_json(os.path.expanduser(path), "oauth_creds file")
    token = _str(data.get("refresh_token"))
    if not token:
        raise CredentialsError(f"oauth_creds file {path} holds no refresh_token (sign in again)")
    return token
