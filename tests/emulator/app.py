"""The aiohttp application (every route in one table) and starting/serving it."""

from __future__ import annotations

import asyncio
import signal

from aiohttp import web

from .cloudcode import cloudcode_count, cloudcode_generate, cloudcode_load, cloudcode_onboard, cloudcode_operation
from .control import (
    control_config,
    control_expire,
    control_log,
    control_reset,
    control_rules,
    control_service_accounts,
    control_stats,
)
from .gemini import gemini_generate, gemini_model_get, gemini_models
from .oauth import oauth_authorize, oauth_token, oauth_userinfo
from .openai_compat import openai_chat, openai_embeddings, openai_models
from .state import STATE, EmulatorState
from .vertex import vertex_express_generate, vertex_generate


def make_app(state: EmulatorState | None = None) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)  # inline images can be large
    app[STATE] = state or EmulatorState()
    r = app.router
    r.add_get("/v1beta/models", gemini_models)
    r.add_get(r"/v1beta/models/{target:[^/:]+}", gemini_model_get)
    r.add_post(r"/v1beta/models/{target:[^/]+}", gemini_generate)
    r.add_post("/v1internal:generateContent", cloudcode_generate)
    r.add_post("/v1internal:streamGenerateContent", cloudcode_generate)
    r.add_post("/v1internal:countTokens", cloudcode_count)
    r.add_post("/v1internal:loadCodeAssist", cloudcode_load)
    r.add_post("/v1internal:onboardUser", cloudcode_onboard)
    r.add_get("/v1internal/operations/{op}", cloudcode_operation)
    r.add_post(r"/v1/projects/{project}/locations/{location}/publishers/google/models/{target:[^/]+}",
               vertex_generate)
    r.add_post(r"/v1/publishers/google/models/{target:[^/]+}", vertex_express_generate)
    r.add_get("/o/oauth2/v2/auth", oauth_authorize)
    r.add_post("/token", oauth_token)
    r.add_get("/oauth2/v2/userinfo", oauth_userinfo)
    r.add_post("/openai/v1/chat/completions", openai_chat)
    r.add_post("/openai/v1/embeddings", openai_embeddings)
    r.add_get("/openai/v1/models", openai_models)
    r.add_route("*", "/__control/rules", control_rules)
    r.add_post("/__control/reset", control_reset)
    r.add_get("/__control/log", control_log)
    r.add_get("/__control/stats", control_stats)
    r.add_post("/__control/config", control_config)
    r.add_post("/__control/expire_tokens", control_expire)
    r.add_post("/__control/service_accounts", control_service_accounts)
    return app


async def start(host: str = "127.0.0.1", port: int = 0,
                state: EmulatorState | None = None) -> tuple[web.AppRunner, str]:
    """Start serving in the current loop; returns (runner, base URL). Stop with ``runner.cleanup()``."""
    runner = web.AppRunner(make_app(state), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096)  # bursts of 1,000 streams (scale tests)
    await site.start()
    bound_port = runner.addresses[0][1]
    return runner, f"http://{host}:{bound_port}"


async def serve(host: str, port: int, port_file: str | None) -> None:
    """Serve until SIGINT/SIGTERM, announcing the base URL on stdout (and in ``port_file``)."""
    runner, url = await start(host, port)
    if port_file:
        with open(port_file, "w") as fh:
            fh.write(url + "\n")
    print(f"EMULATOR_READY {url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
