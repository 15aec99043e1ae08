"""Small stand-ins shared by the unit tests."""

from __future__ import annotations

from typing import Any


class Static:
    """A fixed value behind the ``current()`` interface the engine reads hot-reloaded configuration
    through (mappings, accounts), for tests that build an engine without files."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def current(self) -> Any:
        return self.value
