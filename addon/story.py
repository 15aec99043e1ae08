"""What happened to one request, told in one line (mitmweb's comment column, the log)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .policy import Attempt


@dataclass(slots=True)
class Story:
    route: str = ""
    client_model: str | None = None
    mapped_model: str | None = None
    account: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    status: int | None = None
    stream_error: str | None = None

    def mark(self) -> str:
        """mitmweb mark: failures and rotations stand out in the flow list ("" = none)."""
        if self.stream_error or (self.status or 0) >= 500 or self.status == 429:
            return ":x:"
        if len(self.attempts) > 1:
            return ":warning:"  # answered, but only after rotating away from failing accounts
        return ""

    def line(self) -> str:
        if self.client_model is None:
            return f"{self.route} → {self.status}"
        parts = [f"{self.client_model} → {self.mapped_model or '?'}"]
        if self.account:
            parts.append(self.account)
        parts.append(f"status {self.status}")
        if self.attempts:
            tries = ", ".join(f"{a.account}:{a.status or 'conn'}" for a in self.attempts)
            parts.append(f"{len(self.attempts)} attempt{'s' if len(self.attempts) > 1 else ''} [{tries}]")
        if self.stream_error:
            parts.append(f"stream failed: {self.stream_error}")
        return " · ".join(parts)
