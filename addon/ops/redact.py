"""Keeping secrets out of what clients and logs see."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable
from urllib.parse import quote, quote_plus


def _forms(secret: str) -> set[str]:
    """The secret as an upstream may echo it back: verbatim, URL-encoded (a key sent as ?key=),
    JSON-escaped, base64."""
    raw = secret.encode()
    return {secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1],
            base64.b64encode(raw).decode().rstrip("="), base64.urlsafe_b64encode(raw).decode().rstrip("=")}


class Redactor:
    """Removes every configured secret, and every live OAuth access token, from text that may
    reach a client or a log, in each encoded form an upstream might echo it in."""

    def __init__(self, secrets: Iterable[str | None], dynamic: Callable[[], Iterable[str]] = tuple) -> None:
        forms = {form for s in secrets if s and len(s) >= 6 for form in _forms(s)}
        self._secrets = sorted(forms, key=len, reverse=True)
        self._dynamic = dynamic

    def __call__(self, text: str) -> str:
        for s in self._secrets:
            if s in text:
                text = text.replace(s, "[redacted]")
        for token in self._dynamic():
            for s in _forms(token) if token else ():
                if s in text:
                    text = text.replace(s, "[redacted]")
        return text
