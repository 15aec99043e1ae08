"""Keys out of recorded flows: mitmweb shows every flow and `-w` writes them to files."""

from __future__ import annotations

from mitmproxy import http

# Where a client may put a key: the headers the gateway reads, and those it does not (a proxy's
# credentials, Azure OpenAI's api-key, Google's ?key=) but which must not be recorded either.
_CREDENTIAL_HEADERS = frozenset({b"authorization", b"x-api-key", b"x-goog-api-key", b"proxy-authorization",
                                 b"api-key"})
_CREDENTIAL_PARAMS = ("key", "api_key", "api-key", "access_token")


def hide_credentials(request: http.Request) -> None:
    """Flows are shown in mitmweb and saved to files: keep the client's key (the gateway key, or a
    real OpenAI key from an intercepted tool) out of them once it has been checked. Names are
    matched as a lenient server would read them (`Authorization :` included)."""
    fields = request.headers.fields
    if any(name.strip().lower() in _CREDENTIAL_HEADERS for name, _ in fields):
        request.headers.fields = tuple((name, redacted(name, value)) if name.strip().lower() in _CREDENTIAL_HEADERS
                                       else (name, value) for name, value in fields)
    if b"?" in request.data.path and any(p in request.query for p in _CREDENTIAL_PARAMS):
        request.query = [(k, "[redacted]" if k in _CREDENTIAL_PARAMS else v)
                         for k, v in request.query.items(multi=True)]


def redacted(name: bytes, value: bytes) -> bytes:
    scheme = value.split(b" ", 1)[0] if name.strip().lower().endswith(b"authorization") else b""
    return scheme + b" [redacted]" if scheme.lower() in (b"bearer", b"basic") else b"[redacted]"
