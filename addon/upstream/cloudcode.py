"""Google Cloud Code provider (OAuth accounts): `{base}/v1internal:generateContent` and
`:streamGenerateContent?alt=sse` with a bearer access token. The request is the Gemini one in
gemini-cli's envelope (packages/core/src/code_assist/converter.ts): {"model", "project",
"user_prompt_id", "request": {...GenerateContentRequest, "session_id"}}; each answer comes wrapped
as {"response": ...} (the Gemini back end unwraps it). An account without `project` has it
discovered first (codeassist.py)."""

from __future__ import annotations

from typing import Any

from ..pool.accounts_file import CloudCodeAccount
from ..backends.gemini import native as gn
from ..protocol import canonical as c
from ..protocol import jsonfast
from ..protocol.errors import UpstreamError
from ..protocol.ids import new_id
from .codeassist import INDIVIDUALS_ENDED, AccountUnusable, ProjectDirectory
from .gemini import JSON, GeminiFormat, verb
from ..stores.signature_store import SignatureStore
from .http import HttpClient, UpstreamResponse
from .oauth import TokenManager

# Names Code Assist spells its own way: gemini-cli sends these models under another name when it
# talks to Code Assist (packages/core/src/config/models.ts, CCPA_AI_MODEL_MAPPINGS), and only there.
CODE_ASSIST_NAMES = {"gemini-3.5-flash": "gemini-3-flash"}


class CloudCodeProvider(GeminiFormat[CloudCodeAccount]):
    name = "cloudcode"
    # Code Assist has no embedding method: gemini-cli's CodeAssistServer.embedContent only throws
    # (packages/core/src/code_assist/server.ts). No `embed` capability, so embeddings skip these accounts.
    embed = None

    def __init__(self, http: HttpClient, tokens: TokenManager, projects: ProjectDirectory | None = None, *,
                 signatures: SignatureStore | None = None) -> None:
        super().__init__(http, signatures)
        self.tokens = tokens
        self.projects = projects or ProjectDirectory(http, tokens)

    async def probe(self, acc: CloudCodeAccount) -> UpstreamError | None:
        """A fresh access token (a refused refresh raises CredentialsRejected), then the project."""
        await self.tokens.invalidate(acc)
        try:
            await self.tokens.token(acc)
            await self.projects.project(acc)
        except UpstreamError as err:
            return err
        return None

    async def _send(self, acc: CloudCodeAccount, req: c.ChatRequest, body: dict[str, Any],
                    model: str, stream: bool) -> UpstreamResponse:
        project = await self.projects.project(acc)
        inner = dict(body)
        # gemini-cli keeps one session id per conversation and a fresh prompt id per user turn.
        inner["session_id"] = c.conversation_key(req)
        wrapped = {"model": CODE_ASSIST_NAMES.get(model, model), "project": project,
                   "user_prompt_id": new_id("", 16), "request": inner}
        return await self._call(acc, f"{acc.base_url}/v1internal:{verb(stream)}", jsonfast.dumps(wrapped))

    unwraps = True
    counts_contents_only = True
    native_embed = None  # Code Assist has no embeddings (gemini-cli's CodeAssistServer.embedContent throws)

    async def _native_send(self, acc: CloudCodeAccount, body: dict[str, Any], model: str,
                           verb_name: str, stream: bool) -> UpstreamResponse:
        if verb_name == gn.COUNT:
            wrapped = gn.cloudcode_count_body(body, model)
        else:
            project = await self.projects.project(acc)
            wrapped = {"model": CODE_ASSIST_NAMES.get(model, model), "project": project,
                       "user_prompt_id": new_id("", 16), "request": body}
        url = f"{acc.base_url}/v1internal:{verb_name}" + ("?alt=sse" if stream else "")
        return await self._call(acc, url, jsonfast.dumps(wrapped))

    async def _call(self, acc: CloudCodeAccount, url: str, data: bytes) -> UpstreamResponse:
        try:
            return await self.tokens.call_with_token(
                acc, lambda token: self._post(url, {**JSON, "authorization": f"Bearer {token}"}, data))
        except UpstreamError as err:
            # An account with `project:` set skips loadCodeAssist; Google then refuses the generate call
            # itself with the same words (gemini-cli issues #28229, #29279).
            if err.status == 403 and "no longer supported for Gemini Code Assist for individuals" in err.message:
                raise AccountUnusable(403, INDIVIDUALS_ENDED, reason="UNSUPPORTED_CLIENT") from None
            raise

    def describe(self, acc: CloudCodeAccount) -> dict[str, Any]:
        return self.projects.describe(acc)
