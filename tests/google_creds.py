"""Google credential files made in the test, as Google's tools write them."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def service_account_file(path: Path, token_uri: str, *, email: str = "gateway@my-project.iam.gserviceaccount.com",
                         project: str = "my-project", key: rsa.RSAPrivateKey | None = None) -> dict[str, Any]:
    """A key file like `gcloud iam service-accounts keys create` writes; returns its content plus
    `public_key` (what Google keeps to check the account's JWTs)."""
    key = key or rsa_key()
    info = {
        "type": "service_account", "project_id": project, "private_key_id": secrets.token_hex(20),
        "private_key": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()).decode(),
        "client_email": email, "client_id": "1" + "0" * 20,
        "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{email}",
        "universe_domain": "googleapis.com",
    }
    path.write_text(json.dumps(info, indent=2))
    path.chmod(0o600)
    return {**info, "public_key": public_pem(key)}


def authorized_user_file(path: Path, refresh_token: str, *, token_uri: str | None = None,
                         quota_project: str | None = "my-project") -> dict[str, Any]:
    """What `gcloud auth application-default login` writes (token_uri only when overridden)."""
    info: dict[str, Any] = {"account": "", "client_id": "000000000000-adc.apps.googleusercontent.com",
                            "client_secret": "adc-client-secret", "refresh_token": refresh_token,
                            "type": "authorized_user", "universe_domain": "googleapis.com"}
    if quota_project:
        info["quota_project_id"] = quota_project
    if token_uri:
        info["token_uri"] = token_uri
    path.write_text(json.dumps(info, indent=2))
    path.chmod(0o600)
    return info


def register(emulator_control, info: dict[str, Any]) -> None:
    """Tell the emulator (Google) the service account's public key."""
    emulator_control("service_accounts", {"client_email": info["client_email"], "public_key": info["public_key"],
                                          "key_id": info["private_key_id"]})
