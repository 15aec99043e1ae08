"""Tools with a hard-coded https://api.openai.com: mitmproxy in regular (explicit proxy) mode.

The client keeps OpenAI's real base URL, goes through the proxy and trusts mitmproxy's CA, as
README describes (HTTPS_PROXY + SSL_CERT_FILE). The addon answers api.openai.com itself, streams
included; no request leaves this machine (the emulator is the upstream).
"""

from __future__ import annotations

import ssl

import httpx
import openai

from tests.conftest import Emulator, GatewayFactory, free_port, gemini_accounts


def test_hard_coded_openai_url_through_the_proxy(gateways: GatewayFactory, emulator: Emulator) -> None:
    gw = gateways.start(gemini_accounts(emulator.url, "alice"), regular=True)
    ca = gw.workdir / "confdir" / "mitmproxy-ca-cert.pem"
    assert ca.exists()
    http_client = httpx.Client(proxy=gw.url, verify=ssl.create_default_context(cafile=str(ca)), timeout=20)
    client = openai.OpenAI(api_key="sk-anything", http_client=http_client, max_retries=0)
    assert str(client.base_url).startswith("https://api.openai.com/v1")

    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hello over TLS"}])
    assert raw.headers["x-mapped-model"] == "gemini-3.8-flash"
    assert raw.parse().choices[0].message.content == "Echo(gemini-3.8-flash): hello over TLS"

    text = "".join(chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(
        model="gpt-4o", stream=True, messages=[{"role": "user", "content": "stream over TLS"}]) if chunk.choices)
    assert text == "Echo(gemini-3.8-flash): stream over TLS"

    final = client.responses.create(model="gpt-4o", input="responses over TLS")
    assert final.output_text == "Echo(gemini-3.8-flash): responses over TLS"

    # other hosts are not the gateway's business: they pass through untouched (to a closed
    # loopback port here, so mitmproxy itself answers 502)
    other = httpx.get(f"http://127.0.0.1:{free_port()}/v1/models", proxy=gw.url, timeout=10)
    assert other.status_code == 502 and "x-mapped-model" not in other.headers
