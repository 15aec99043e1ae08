"""Gemini 3 tool loops through a real mitmdump with the openai SDK, across accounts.

Gemini 3 rules the emulator enforces like the real API (ai.google.dev/gemini-api/docs/
thought-signatures): the first functionCall of each model step in the current turn needs its
thought signature, a signature issued to another credential is refused ("Corrupted thought
signature.", google-gemini/gemini-cli#13467), the dummy "skip_thought_signature_validator" passes.
A three-step loop whose second step lands on the other account must still succeed, with short
OpenAI-style ids (clients cap them at 40: microsoft/autogen#6377).
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import httpx
import pytest

from tests.conftest import Emulator, Gateway, GatewayFactory
from tests.test_pool_e2e import accounts, cloudcode, email, gemini, key

pytestmark = pytest.mark.e2e

GEM3 = "gemini-3.1-pro-preview"
DUMMY = "skip_thought_signature_validator"
TOOLS: list[Any] = [{"type": "function", "function": {
    "name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]
RESPONSES_TOOLS: list[Any] = [{"type": "function", "name": "lookup",
                               "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}]
OPENAI_ID = re.compile(r"call_[0-9a-f]{24}")


def scripted_loop(emulator: Emulator, first: str, second: dict[str, Any]) -> None:
    """Step 1 answers on `first` with a call; `first` then rate-limits; the other account
    (`second`: a rule match) answers step 2 with another call and step 3 with text."""
    emulator.rules(
        {"match": {"key": first}, "times": 1, "reply": {"function_calls": [{"name": "lookup", "args": {"q": "one"}}]}},
        {"match": {"key": first}, "status": 429, "retry_delay": "60s"},
        {"match": second, "times": 1, "reply": {"function_calls": [{"name": "lookup", "args": {"q": "two"}}]}},
        {"match": second, "times": 1, "reply": {"text": "All done."}},
    )


def accepted_requests(emulator: Emulator, refusing: str | None = None) -> list[dict[str, Any]]:
    """Bodies of the generate calls the emulator answered: with `refusing` (the key whose 429 rule
    follows its first answer, see scripted_loop), its later requests are left out."""
    out, seen_refusing = [], False
    for entry in emulator.log():
        if "generatecontent" not in entry["path"].lower():
            continue
        if refusing is not None and entry["key"] == refusing:
            if seen_refusing:
                continue
            seen_refusing = True
        body = entry["body"].get("request", entry["body"])  # Cloud Code wraps it
        out.append({"key": entry["key"], "path": entry["path"], "body": body})
    return out


def signatures(body: dict[str, Any]) -> list[str | None]:
    return [p.get("thoughtSignature") for c in body["contents"] for p in c["parts"] if "functionCall" in p]


def chat_step(gw: Gateway, messages: list[Any], stream: bool) -> tuple[str, Any]:
    """One request; returns the account that served it and the assistant message as a dict."""
    client = gw.openai()
    if not stream:
        raw = client.chat.completions.with_raw_response.create(model=GEM3, messages=messages, tools=TOOLS)
        msg = raw.parse().choices[0].message
        return raw.headers["x-account-email"], msg.model_dump(exclude_none=True)
    raw = client.chat.completions.with_raw_response.create(model=GEM3, messages=messages, tools=TOOLS, stream=True)
    text, calls = "", {}
    for chunk in raw.parse():
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        text += delta.content or ""
        for tc in delta.tool_calls or []:
            entry = calls.setdefault(tc.index, {"id": tc.id, "type": "function",
                                                "function": {"name": tc.function.name, "arguments": ""}})
            entry["function"]["arguments"] += tc.function.arguments or ""
    msg: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        msg["tool_calls"] = [calls[i] for i in sorted(calls)]
    return raw.headers["x-account-email"], msg


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("other", ["gemini", "cloudcode"])
def test_chat_loop_continues_on_another_account(gateways: GatewayFactory, emulator: Emulator, other: str,
                                                stream: bool) -> None:
    a = key("siga")
    second = (gemini(emulator, "sigb") if other == "gemini" else cloudcode(emulator, "sigc"))
    gw = gateways.start(accounts(gemini(emulator, "siga"), second))
    scripted_loop(emulator, a, {"key": key("sigb")} if other == "gemini" else {"path_contains": "v1internal"})
    b_name = email("sigb" if other == "gemini" else "sigc")

    messages: list[Any] = [{"role": "user", "content": "Look it up twice."}]
    served, msg = chat_step(gw, messages, stream)
    assert served == email("siga") and msg["tool_calls"][0]["function"]["name"] == "lookup"
    for k in (1, 2):
        call = msg["tool_calls"][0]
        assert OPENAI_ID.fullmatch(call["id"]) and len(call["id"]) <= 40
        messages += [msg, {"role": "tool", "tool_call_id": call["id"], "content": f'{{"hits": {k}}}'}]
        served, msg = chat_step(gw, messages, stream)
        assert served == b_name, f"step {k + 1} must land on the other account"
    assert msg["content"] == "All done."

    step1, step2, step3 = accepted_requests(emulator, refusing=a)
    assert signatures(step1["body"]) == []
    assert signatures(step2["body"]) == [DUMMY], "the first account's signature never goes to the second"
    s3 = signatures(step3["body"])
    assert s3[0] == DUMMY and s3[1] not in (None, DUMMY), "the second account gets its own signature back"


@pytest.mark.parametrize("mode", ["full input", "previous_response_id"])
def test_responses_loop_continues_on_another_account(gateways: GatewayFactory, emulator: Emulator,
                                                     mode: str) -> None:
    """Codex-style (store: false, the whole input every time), or chained by previous_response_id."""
    gw = gateways.start(accounts(gemini(emulator, "rsa"), gemini(emulator, "rsb")))
    scripted_loop(emulator, key("rsa"), {"key": key("rsb")})
    client = gw.openai()
    history: list[Any] = [{"role": "user", "content": "Look it up twice."}]
    raw = client.responses.with_raw_response.create(model=GEM3, tools=RESPONSES_TOOLS, input=history,
                                                    store=mode != "full input")
    assert raw.headers["x-account-email"] == email("rsa")
    resp = raw.parse()
    for k in (1, 2):
        [call] = [item for item in resp.output if item.type == "function_call"]
        assert OPENAI_ID.fullmatch(call.call_id) and len(call.call_id) <= 40
        output = {"type": "function_call_output", "call_id": call.call_id, "output": f'{{"hits": {k}}}'}
        if mode == "full input":
            history += [item.model_dump(exclude_none=True) for item in resp.output] + [output]
            raw = client.responses.with_raw_response.create(model=GEM3, tools=RESPONSES_TOOLS, input=history,
                                                            store=False)
        else:
            raw = client.responses.with_raw_response.create(model=GEM3, tools=RESPONSES_TOOLS, input=[output],
                                                            previous_response_id=resp.id)
        assert raw.headers["x-account-email"] == email("rsb"), f"step {k + 1} must land on the other account"
        resp = raw.parse()
    assert resp.output_text == "All done."
    step1, step2, step3 = accepted_requests(emulator, refusing=key("rsa"))
    assert signatures(step2["body"]) == [DUMMY]
    assert signatures(step3["body"])[0] == DUMMY and signatures(step3["body"])[1] not in (None, DUMMY)


def test_a_client_that_rewrites_ids_still_succeeds(gateway: Gateway, emulator: Emulator) -> None:
    """Some clients replace tool-call ids with their own; the store misses, the dummy goes instead."""
    client = gateway.openai()
    messages: list[Any] = [{"role": "user", "content": '[[tool:lookup {"q": "x"}]]'}]
    first = client.chat.completions.create(model=GEM3, messages=messages, tools=TOOLS)
    call = first.choices[0].message.tool_calls[0]
    messages += [{"role": "assistant", "content": None, "tool_calls": [
                     {"id": "tool_1", "type": "function",
                      "function": {"name": call.function.name, "arguments": call.function.arguments}}]},
                 {"role": "tool", "tool_call_id": "tool_1", "content": '{"hits": 3}'}]
    second = client.chat.completions.create(model=GEM3, messages=messages, tools=TOOLS)
    assert second.choices[0].message.content == 'Tool lookup returned: {"hits":3}'
    assert signatures(accepted_requests(emulator)[-1]["body"]) == [DUMMY]


def test_old_ids_and_googles_extra_content_are_understood(gateways: GatewayFactory, emulator: Emulator) -> None:
    """A conversation from before the upgrade carries the signature inside the id
    ("call_<16 hex>.sig.<base64url>"); a client written for Google's OpenAI-compatible API echoes
    `extra_content.google.thought_signature`. Neither tells whose signature it is: it is sent, and
    if Gemini refuses it the gateway resends once with the dummy."""
    gw = gateways.start(accounts(gemini(emulator, "olda")))
    # a signature issued to this very account, as the old gateway would have put it in the id
    issued = httpx.post(f"{emulator.url}/v1beta/models/{GEM3}:generateContent", headers={"x-goog-api-key": key("olda")},
                        json={"contents": [{"role": "user", "parts": [{"text": "[[tool:lookup {}]]"}]}],
                              "tools": [{"functionDeclarations": [{"name": "lookup"}]}]}, timeout=5).json()
    own = issued["candidates"][0]["content"]["parts"][0]["thoughtSignature"]
    foreign = httpx.post(f"{emulator.url}/v1beta/models/{GEM3}:generateContent", headers={"x-goog-api-key": "other"},
                         json={"contents": [{"role": "user", "parts": [{"text": "[[tool:lookup {}]]"}]}],
                               "tools": [{"functionDeclarations": [{"name": "lookup"}]}]}, timeout=5).json()
    theirs = foreign["candidates"][0]["content"]["parts"][0]["thoughtSignature"]

    def history(call: dict[str, Any]) -> list[Any]:
        return [{"role": "user", "content": "Look it up."},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": call["id"], "content": "{}"}]

    def legacy_id(sig: str) -> str:
        return "call_0123456789abcdef.sig." + base64.urlsafe_b64encode(sig.encode()).decode().rstrip("=")

    fn = {"name": "lookup", "arguments": "{}"}
    cases = [({"id": legacy_id(own), "type": "function", "function": fn}, [own]),
             ({"id": "call_google", "type": "function", "function": fn,
               "extra_content": {"google": {"thought_signature": own}}}, [own]),
             ({"id": legacy_id(theirs), "type": "function", "function": fn}, [theirs, DUMMY])]
    for call, sent in cases:
        before = len(accepted_requests(emulator))  # no reset: it would forget the issued signatures
        answer = gw.openai().chat.completions.create(model=GEM3, messages=history(call), tools=TOOLS)
        assert answer.choices[0].message.content == "Tool lookup returned: {}"
        assert [signatures(r["body"])[0] for r in accepted_requests(emulator)[before:]] == sent, call["id"]


def test_cloud_code_tokens_are_one_credential(gateways: GatewayFactory, emulator: Emulator) -> None:
    """Cloud Code signatures belong to the account, not to one access token: after a token
    refresh the stored signature still goes back as it is."""
    gw = gateways.start(accounts(cloudcode(emulator, "ccsig")))
    client = gw.openai()
    messages: list[Any] = [{"role": "user", "content": '[[tool:lookup {"q": "x"}]]'}]
    first = client.chat.completions.create(model=GEM3, messages=messages, tools=TOOLS)
    call = first.choices[0].message.tool_calls[0]
    emulator.control("expire_tokens", {})
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "{}"}]
    second = client.chat.completions.create(model=GEM3, messages=messages, tools=TOOLS)
    assert second.choices[0].message.content == "Tool lookup returned: {}"
    # the first request of step 2 met the expired token (401), the retry after the refresh was answered
    sent = [signatures(r["body"]) for r in accepted_requests(emulator)]
    assert sent[0] == [] and sent[1] == sent[-1] and sent[-1][0] not in (None, DUMMY)
    assert all(json.dumps(r["body"]).count(DUMMY) == 0 for r in accepted_requests(emulator))


def test_stateless_responses_keep_the_real_signature_across_a_restart(gateways: GatewayFactory,
                                                                       emulator: Emulator) -> None:
    """`store: false` + `include: ["reasoning.encrypted_content"]` (what Codex sends): the step's
    signature rides sealed in the reasoning item; after a restart (memory gone, the generated key
    kept in the state file) the next step still sends Gemini 3 its real signature."""
    emulator.rules(
        {"times": 1, "reply": {"function_calls": [{"name": "lookup", "args": {"q": "one"}}]}},
        {"times": 1, "reply": {"text": "All done."}},
    )
    rows = accounts(gemini(emulator, "stateless-restart"))
    gw = gateways.start(rows)
    state_file = gw.options["state_file"]
    stateless = {"model": GEM3, "tools": RESPONSES_TOOLS, "store": False, "include": ["reasoning.encrypted_content"]}
    first = gw.openai().responses.create(input="look it up", **stateless)
    items = [i.model_dump(exclude_none=True) for i in first.output]
    assert [i["type"] for i in items] == ["reasoning", "function_call"]
    assert items[0]["encrypted_content"].startswith("gws1.")
    saved = json.loads(open(state_file).read())["secrets"]["seal_key"]
    gateways.stop(gw)

    again = gateways.start(rows, state_file=state_file)
    assert json.loads(open(state_file).read())["secrets"]["seal_key"] == saved, "the same key after the restart"
    history = [{"role": "user", "content": "look it up"}, *items,
               {"type": "function_call_output", "call_id": items[1]["call_id"], "output": "found"}]
    final = again.openai().responses.create(input=history, **stateless)
    assert final.output_text == "All done."
    second = accepted_requests(emulator)[1]["body"]
    [call] = [p for p in second["contents"][1]["parts"] if "functionCall" in p]
    assert call["thoughtSignature"] != DUMMY, "the real signature, from the sealed item alone"
    gateways.stop(again)
