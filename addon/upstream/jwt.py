"""The service-account assertion of Google's OAuth 2.0 JWT bearer flow (RFC 7523).

A service account proves itself with a JWT signed by its private key (RS256): header
{"alg": "RS256", "typ": "JWT", "kid": <private_key_id>}, claims {"iss": <client_email>,
"scope": <scopes>, "aud": <token endpoint>, "iat", "exp"} with exp at most an hour after iat,
posted as `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<jwt>`
(https://developers.google.com/identity/protocols/oauth2/service-account#httprest).

Signed with `cryptography` (already a mitmproxy dependency) rather than google-auth: google-auth's
token refresh is synchronous (requests/urllib3) and would need a thread per refresh, bring four more
packages, and bypass the one-refresh-at-a-time, state-persisting TokenManager the other Google
accounts use. One signature costs ~0.6 ms on a 2048-bit key, once an hour per account.
"""

from __future__ import annotations

import base64
import json
import time

from ..pool.credentials import OAuthGrant

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
LIFETIME = 3600  # Google refuses assertions valid for longer than an hour


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _json(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def service_account_assertion(grant: OAuthGrant, now: float | None = None) -> str:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    assert grant.private_key and grant.client_email
    issued = int(time.time() if now is None else now)
    header = {"alg": "RS256", "typ": "JWT", **({"kid": grant.private_key_id} if grant.private_key_id else {})}
    claims = {"iss": grant.client_email, "scope": grant.scope, "aud": grant.token_url,
              "iat": issued, "exp": issued + LIFETIME}
    signing_input = f"{_b64(_json(header))}.{_b64(_json(claims))}".encode()
    # Loading is microseconds without the RSA consistency check (checked when the file was read).
    key = serialization.load_pem_private_key(grant.private_key.encode(), None, unsafe_skip_rsa_key_validation=True)
    signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr, call-arg]
    return f"{signing_input.decode()}.{_b64(signature)}"
