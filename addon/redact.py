"""Keeping secrets out of what clients and logs see."""

from __future__ import annotations

from collections.abc import Callable, Iterable


class Redactor:
    """Removes every configured secret, and every live OAuth access token, from text that may
    reach a client or a log."""

    def __init__(self, secrets: Iterable[str | None], dynamic: Callable[[], Iterable[str]] = tuple) -> None:
        self._secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)
        self._dynamic = dynamic

    def __call__(self, text: str) -> str:
        for s in (*self._secrets, *self._dynamic()):
            if s and s in text:
                text = text.replace(s, "[redacted]")
        return text
