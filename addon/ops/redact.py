"""Keeping secrets out of what clients and logs see."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable
from urllib.parse import quote, quote_plus

from ..protocol.errors import CUT

REDACTED = "[redacted]"
MIN_SECRET = 6  # shorter values are not masked: masking them would garble ordinary text
# A text cut before redaction (marked with CUT) may end in a secret's first characters; any such
# beginning of at least this many characters is masked too, so no longer fragment survives.
MIN_CUT_PREFIX = 4


def _forms(secret: str) -> set[str]:
    """The secret as an upstream may echo it back: verbatim, URL-encoded (a key sent as ?key=),
    JSON-escaped, base64."""
    raw = secret.encode()
    return {secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1],
            base64.b64encode(raw).decode().rstrip("="), base64.urlsafe_b64encode(raw).decode().rstrip("=")}


class Redactor:
    """Removes every configured secret, and every live OAuth access token, from text that may
    reach a client or a log, in each encoded form an upstream might echo it in. Where a text was
    cut before it got here (addon/protocol/errors.clip marks the cut), the start of a secret left
    right before the mark is removed as well."""

    def __init__(self, secrets: Iterable[str | None], dynamic: Callable[[], Iterable[str]] = tuple) -> None:
        forms = {form for s in secrets if s and len(s) >= MIN_SECRET for form in _forms(s)}
        self._secrets = sorted(forms, key=len, reverse=True)
        self._dynamic = dynamic

    def __call__(self, text: str) -> str:
        for s in self._secrets:
            if s in text:
                text = text.replace(s, REDACTED)
        dynamic = [form for token in self._dynamic() if token for form in _forms(token)]
        for s in dynamic:
            if s in text:
                text = text.replace(s, REDACTED)
        if CUT in text:
            text = _cut_prefixes(text, self._secrets + dynamic)
        return text


def _cut_prefixes(text: str, forms: list[str]) -> str:
    """Mask the longest beginning of any secret form that ends right at a cut mark."""
    parts = text.split(CUT)
    for i, part in enumerate(parts[:-1]):  # every part but the last ends at a mark
        longest = 0
        for form in forms:
            for n in range(min(len(form) - 1, len(part)), max(MIN_CUT_PREFIX, longest + 1) - 1, -1):
                if part.endswith(form[:n]):
                    longest = n
                    break
        if longest:
            parts[i] = part[:-longest] + REDACTED
    return CUT.join(parts)
