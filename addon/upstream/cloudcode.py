"""Google Cloud Code provider (OAuth accounts): `{base}/v1internal:generateContent` and
`:streamGenerateContent?alt=sse` with a bearer access token. The request is the Gemini one wrapped
as {"model", "project", "request"}; each answer comes wrapped as {"response": ...} (the Gemini
back end unwraps it)."""

from __future__ import annotations

import json
import logging

from ..accounts import CloudCodeAccount
from ..backends import gemini
from ..protocol import canonical as c
from ..protocol.errors import StaleCredentials, UpstreamError
from .gemini import JSON, GeminiProvider, verb
from .http import HttpClient, UpstreamResponse
from .oauth import TokenManager

log = logging.getLogger(__name__)


class CloudCodeProvider(GeminiProvider):
    name = "cloudcode"

    def __init__(self, http: HttpClient, tokens: TokenManager) -> None:
        super().__init__(http)
        self.tokens = tokens

    async def _send(self, acc: CloudCodeAccount, req: c.ChatRequest, model: str,  # type: ignore[override]
                    stream: bool) -> UpstreamResponse:
        inner = gemini.build_request(req, model, safety=acc.safety_settings)
        wrapped = {"model": model, "project": acc.project, "request": inner}
        body = json.dumps(wrapped, ensure_ascii=False).encode()
        url = f"{acc.base_url}/v1internal:{verb(stream)}"
        for attempt in (1, 2):
            token = await self.tokens.token(acc)
            try:
                return await self._post(url, {**JSON, "authorization": f"Bearer {token}"}, body)
            except UpstreamError as err:
                if err.status != 401:
                    raise
                # A token we believed valid was refused (expired early, revoked): forget it (only
                # if no concurrent refresh replaced it already), refresh once, retry here. A second
                # refusal rotates without disabling; a refresh refused with invalid_grant disables.
                self.tokens.invalidate(acc, token)
                if attempt == 2:
                    raise StaleCredentials(401, err.message, reason=err.reason) from None
                log.info("access token of %s was refused; refreshing and retrying", acc.name)
        raise AssertionError("unreachable")
