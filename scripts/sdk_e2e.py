#!/usr/bin/env python3
"""End to end through a relay-guard nginx with the official `anthropic` Python SDK.

Run with the project's venv (target/venv, made by scripts/setup), against a relay whose location
has `relay_guard any;`, injects the upstream key and proxies to scripts/mock_upstream.py:

    target/venv/bin/python scripts/sdk_e2e.py --base-url http://127.0.0.1:PORT [--report F]

For each credential style the SDK is used exactly as an application would use it:

  sign-httpx2    RelayGuardAuth2 on an httpx2.Client (anthropic >= 1.0 is built on httpx2)
  sign-httpx     RelayGuardAuth on an httpx.Client (anthropic < 1.0; skipped when the SDK
                 refuses httpx objects, as 1.x/2.x do)
  sign-async     RelayGuardAuth2 on an httpx2.AsyncClient with AsyncAnthropic
  static-api-key      the static token as api_key=
  static-auth-token   the static token as auth_token= (Claude Code's ANTHROPIC_AUTH_TOKEN)
  static-x-api-key    the static token in x-api-key only (Claude Code's ANTHROPIC_API_KEY)
  minted-*       a short-lived rgt1 token from mint_token(), as api_key= and in x-api-key only

and each makes one non-streaming messages.create() and one messages.stream() that must deliver
the whole text and message_stop. sign-retry: an upstream 500 that the SDK retries (max_retries=1)
must be re-signed, so the retry is not a REPLAY. Negative checks: a wrong secret, an unknown static token and an
expired minted token must raise anthropic.AuthenticationError (401, authentication_error,
x-should-retry: false) after exactly one request although max_retries=2.

Those are --cases auth (the default; t/006-sdk.t). --cases usage (t/054-usage-clients.t) makes
non-streaming and streaming calls under three keys (signed, static token, short-lived token in
x-api-key, async) and three models while the mock sends exact usage objects (x-mock-usage for
the JSON body or message_start, x-mock-usage-delta for message_delta: cache writes with and
without the TTL split, cache reads, web search, counts past 32 bits, usage only in
message_delta, a response naming another model, SSE split into 7-byte pieces), and checks that
the SDK reported them. --cases all runs both.

Every request carries x-rg-e2e-run (this run) and x-rg-e2e-req (one id per SDK call); the SDK's
request hooks record what left the client. --report writes that as JSON, so the caller can
compare it with what reached the upstream (the mock's record); each successful call also gets
the model and usage the SDK reported (`usage` in the relay's token types, scripts/usage_types.py),
for comparison with the relay's counters.

Output: one "ok - ..." / "not ok - ..." line per check (TAP-like, "# SKIP" for a skipped
variant), then "# N checks, M failed"; exit status 1 if any check failed.
Environment variables that steer the SDK (ANTHROPIC_*) are ignored: they are removed at start,
and every client gets an explicit base_url, so nothing here can reach api.anthropic.com.
"""

import argparse
import asyncio
import hashlib
import json
import os
import sys
import tempfile
import time
import traceback
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

# Before importing the SDK: no key, base URL, profile or custom header from the environment.
for _name in list(os.environ):
    if _name.startswith("ANTHROPIC_"):
        del os.environ[_name]
# An empty config dir, so credential auto-discovery (never expected to run: every client gets an
# explicit credential) could not find a profile on disk either.
os.environ["ANTHROPIC_CONFIG_DIR"] = tempfile.mkdtemp(prefix="rg-sdk-e2e-")

import anthropic  # noqa: E402
import httpx2  # noqa: E402

import relay_guard_client as rgc  # noqa: E402
from usage_types import counts, from_usage  # noqa: E402

MOCK_TEXT = "Hello from the relay-guard mock upstream."  # scripts/mock_upstream.py
# Listed by the mock and not in the SDK's DEPRECATED_MODELS (a deprecated one warns on stderr).
MODEL = "claude-haiku-4-5"
CREDENTIAL_HEADERS = ("authorization", "x-api-key", "x-key-id", "x-timestamp", "x-nonce",
                      "x-signature")
STREAM_EVENTS = ["message_start", "content_block_start", "content_block_delta",
                 "content_block_stop", "message_delta", "message_stop"]


class Run:
    def __init__(self, args):
        self.args = args
        self.run_id = args.run_id or uuid.uuid4().hex[:12]
        self.seq = 0
        self.failed = 0
        self.checks = 0
        self.sent = []        # every request that left the SDK: see hook()
        self.calls = {}       # call id -> {"case", "kind", "expect", "status"}

    # --- output

    def ok(self, cond, name, detail=""):
        self.checks += 1
        if not cond:
            self.failed += 1
        print(("ok" if cond else "not ok") + f" {self.checks} - {name}"
              + (f"  # {detail}" if detail and not cond else ""), flush=True)
        return cond

    def skip(self, name, why):
        self.checks += 1
        print(f"ok {self.checks} - {name} # SKIP {why}", flush=True)

    def note(self, text):
        print(f"# {text}", flush=True)

    # --- request bookkeeping

    def call_headers(self, case, kind, expect):
        """extra_headers for one SDK call, and the call's id."""
        self.seq += 1
        call_id = f"{self.run_id}-{self.seq}"
        self.calls[call_id] = {"case": case, "kind": kind, "expect": expect}
        return call_id, {"x-rg-e2e-req": call_id}

    def hook(self, request):
        """httpx2 request hook: runs after the auth flow, just before the request is sent."""
        h = request.headers
        self.sent.append({
            "call": h.get("x-rg-e2e-req"),
            "method": request.method,
            "target": request.url.raw_path.decode("ascii"),
            "body_sha256": hashlib.sha256(request.content or b"").hexdigest(),
            "retry_count": h.get("x-stainless-retry-count"),
            "nonce": h.get("x-nonce"),
            "credential_headers": sorted(n for n in CREDENTIAL_HEADERS if n in h),
            # Every header as sent (credential values redacted), to compare with the upstream.
            "headers": [[k, "<redacted>" if k.lower() in CREDENTIAL_HEADERS else v]
                        for k, v in h.multi_items()],
        })

    async def ahook(self, request):
        self.hook(request)

    def sent_for(self, call_id):
        return [s for s in self.sent if s["call"] == call_id]

    # --- clients

    def timeout(self):
        return httpx2.Timeout(self.args.timeout, connect=3.0)

    def client(self, *, auth=None, max_retries=0, headers=None, **cred):
        http = httpx2.Client(auth=auth, timeout=self.timeout(),
                             event_hooks={"request": [self.hook]})
        return anthropic.Anthropic(base_url=self.args.base_url, max_retries=max_retries,
                                   timeout=self.timeout(), http_client=http,
                                   default_headers={"x-rg-e2e-run": self.run_id, **(headers or {})},
                                   **cred)

    def async_client(self, *, auth=None, max_retries=0, headers=None, **cred):
        http = httpx2.AsyncClient(auth=auth, timeout=self.timeout(),
                                  event_hooks={"request": [self.ahook]})
        return anthropic.AsyncAnthropic(base_url=self.args.base_url, max_retries=max_retries,
                                        timeout=self.timeout(), http_client=http,
                                        default_headers={"x-rg-e2e-run": self.run_id,
                                                         **(headers or {})}, **cred)


def params(extra_text="", model=MODEL):
    return dict(model=model, max_tokens=64,
                messages=[{"role": "user", "content": "Say hello through the relay." + extra_text}])


def describe(exc):
    return f"{type(exc).__name__}: {exc}"


def check_relay_headers(run, name, headers, key_id):
    """The module's verdict, exposed by the test relay with add_header (absent elsewhere)."""
    if "x-rg-key" in headers or run.args.expect_rg_headers:
        run.ok(headers.get("x-rg-status") == "OK" and headers.get("x-rg-key") == key_id,
               f"{name}: relay accepted it as key {key_id}",
               f"x-rg-status={headers.get('x-rg-status')!r} x-rg-key={headers.get('x-rg-key')!r}")


def record_usage(run, call_id, msg):
    """What the SDK reported for one call (its final Message), for the caller to compare with
    the relay's counters. Never raises: a malformed count is recorded as an error."""
    c = run.calls[call_id]
    c["model"] = msg.model
    c["raw_usage"] = msg.usage.model_dump(mode="json") if msg.usage is not None else None
    try:
        c["usage"] = from_usage(c["raw_usage"] or {})
    except ValueError as e:
        c["usage_error"] = str(e)
    return c.get("usage")


def one_request(run, name, call_id):
    sent = run.sent_for(call_id)
    run.ok(len(sent) == 1, f"{name}: exactly one HTTP request", f"{len(sent)} sent")
    return sent


def check_create(run, case, client, key_id, expect_cred, mock=None, model=MODEL):
    """mock: control headers for the mock upstream (x-mock-usage and friends)."""
    name = f"{case}: messages.create"
    call_id, hdrs = run.call_headers(case, "create", "200")
    run.calls[call_id]["key"] = key_id
    try:
        raw = client.messages.with_raw_response.create(**params(model=model),
                                                       extra_headers={**hdrs, **(mock or {})})
        msg = raw.parse()
    except Exception as e:  # noqa: BLE001 - any failure is this check's failure
        run.ok(False, name, describe(e))
        return
    text = "".join(b.text for b in msg.content if b.type == "text")
    run.ok(raw.status_code == 200 and msg.type == "message" and msg.role == "assistant"
           and text == MOCK_TEXT and msg.stop_reason == "end_turn" and msg.id.startswith("msg_mock_"),
           name, f"status={raw.status_code} text={text!r} stop={msg.stop_reason!r} id={msg.id!r}")
    run.ok(bool(raw.headers.get("request-id")) and
           raw.headers.get("anthropic-ratelimit-requests-limit") is not None,
           f"{name}: request-id and anthropic-ratelimit-* came back through the relay",
           f"headers={dict(raw.headers)}")
    check_relay_headers(run, name, raw.headers, key_id)
    record_usage(run, call_id, msg)
    sent = one_request(run, name, call_id)
    if sent and expect_cred is not None:
        run.ok(sent[0]["credential_headers"] == sorted(expect_cred),
               f"{name}: the SDK sent credential headers {sorted(expect_cred)}",
               f"sent {sent[0]['credential_headers']}")
    return call_id


def check_stream(run, case, client, key_id, mock=None, model=MODEL):
    name = f"{case}: messages.stream"
    call_id, hdrs = run.call_headers(case, "stream", "200")
    run.calls[call_id]["key"] = key_id
    try:
        with client.messages.stream(**params(" (streamed)", model=model),
                                    extra_headers={**hdrs, **(mock or {})}) as stream:
            events = [e.type for e in stream]
            text = stream.get_final_text()
            final = stream.get_final_message()
            headers = stream.response.headers
            ctype = headers.get("content-type", "")
    except Exception as e:  # noqa: BLE001
        run.ok(False, name, describe(e) + "\n" + traceback.format_exc())
        return
    check_stream_result(run, name, events, text, final, ctype)
    check_relay_headers(run, name, headers, key_id)
    record_usage(run, call_id, final)
    one_request(run, name, call_id)
    return call_id


def check_stream_result(run, name, events, text, final, ctype):
    wire = [e for e in events if e in STREAM_EVENTS]
    # The helper adds "text" events of its own between the raw ones; compare the raw order.
    dedup = [e for i, e in enumerate(wire) if i == 0 or e != wire[i - 1]]
    run.ok(ctype.startswith("text/event-stream"), f"{name}: text/event-stream", ctype)
    run.ok(dedup == STREAM_EVENTS and wire.count("content_block_delta") == 5,
           f"{name}: every event in order, through message_stop", f"events={events}")
    run.ok(text == MOCK_TEXT and final.stop_reason == "end_turn",
           f"{name}: the whole text and stop_reason",
           f"text={text!r} stop={final.stop_reason!r}")


def check_rejected(run, case, client, want_status, want_message):
    """A bad credential: AuthenticationError after one request, although max_retries=2."""
    name = f"{case}: rejected"
    call_id, hdrs = run.call_headers(case, "create", "401")
    t0 = time.monotonic()
    try:
        client.messages.create(**params(), extra_headers=hdrs)
    except anthropic.AuthenticationError as e:
        body = e.body if isinstance(e.body, dict) else {}
        err = body.get("error", body) if isinstance(body, dict) else {}
        run.ok(e.status_code == 401 and err.get("type") == "authentication_error"
               and want_message in str(err.get("message")),
               f"{name} with AuthenticationError 401 authentication_error ({want_message})",
               f"status={e.status_code} body={e.body!r}")
        run.ok(e.response.headers.get("x-should-retry") == "false",
               f"{name}: x-should-retry: false", f"headers={dict(e.response.headers)}")
        run.ok(e.response.headers.get("x-rg-status", want_status) == want_status,
               f"{name}: relay verdict {want_status}", e.response.headers.get("x-rg-status"))
    except Exception as e:  # noqa: BLE001
        run.ok(False, f"{name} with AuthenticationError", describe(e))
    else:
        run.ok(False, f"{name} with AuthenticationError", "the request succeeded")
    sent = run.sent_for(call_id)
    run.ok(len(sent) == 1, f"{name}: the SDK did not retry (max_retries=2, one request sent)",
           f"{len(sent)} requests, retry counts {[s['retry_count'] for s in sent]}")
    # With a retry the SDK would have slept (0.5 s+) first; a rejection is immediate.
    run.ok(time.monotonic() - t0 < 5, f"{name}: promptly")


def case_sign_httpx2(run):
    auth = rgc.RelayGuardAuth2(run.args.key_id, run.args.secret)
    # api_key is required by the SDK's header check; the relay ignores it for a signed request
    # (the signature headers decide) and drops it before the upstream.
    with run.client(auth=auth, api_key="unused-relay-guard-signs") as c:
        check_create(run, "sign-httpx2", c, run.args.key_id,
                     ["authorization", "x-key-id", "x-nonce", "x-signature", "x-timestamp"])
        check_stream(run, "sign-httpx2", c, run.args.key_id)
    # A second call on the same keep-alive connection gets a fresh nonce (no REPLAY).
    with run.client(auth=auth, api_key="unused-relay-guard-signs") as c:
        for i in range(2):
            check_create(run, f"sign-httpx2-keepalive-{i + 1}", c, run.args.key_id, None)


def case_sign_retry(run):
    """An upstream 500 is retried by the SDK; each attempt must be signed afresh (timestamp and
    nonce), or the relay would answer the retry 401 REPLAY and the SDK would raise
    AuthenticationError instead of InternalServerError."""
    name = "sign-retry: upstream 500, max_retries=1"
    auth = rgc.RelayGuardAuth2(run.args.key_id, run.args.secret)
    call_id, hdrs = run.call_headers("sign-retry", "create", "500")
    run.calls[call_id]["attempts"] = 2
    with run.client(auth=auth, api_key="unused-relay-guard-signs", max_retries=1) as c:
        try:
            c.messages.create(**params(), extra_headers={**hdrs, "x-mock-status": "500"})
        except anthropic.InternalServerError as e:
            run.ok(e.status_code == 500 and e.response.headers.get("x-rg-status") == "OK",
                   f"{name}: InternalServerError from the upstream, the retry accepted by the relay",
                   f"status={e.status_code} x-rg-status={e.response.headers.get('x-rg-status')!r}")
        except Exception as e:  # noqa: BLE001
            run.ok(False, f"{name}: InternalServerError", describe(e))
        else:
            run.ok(False, f"{name}: InternalServerError", "the request succeeded")
    sent = run.sent_for(call_id)
    run.ok([s["retry_count"] for s in sent] == ["0", "1"] and len({s["nonce"] for s in sent}) == 2,
           f"{name}: two attempts, each with its own nonce",
           f"retry counts {[s['retry_count'] for s in sent]}, nonces {[s['nonce'] for s in sent]}")


def case_sign_httpx(run):
    import httpx
    auth = rgc.RelayGuardAuth(run.args.key_id, run.args.secret)
    try:
        http = httpx.Client(auth=auth, timeout=run.args.timeout)
        client = anthropic.Anthropic(base_url=run.args.base_url, api_key="unused", max_retries=0,
                                     http_client=http)
    except TypeError as e:
        run.skip("sign-httpx: RelayGuardAuth on httpx.Client",
                 f"anthropic {anthropic.__version__} refuses httpx objects ({str(e)[:90]}...); "
                 "RelayGuardAuth2/httpx2 is the variant for it")
        return
    # anthropic < 1.0: the httpx client works; its requests bypass the httpx2 hooks, so no
    # request counting here.
    with client as c:
        call_id, hdrs = run.call_headers("sign-httpx", "create", "200")
        try:
            msg = c.messages.create(**params(), extra_headers=hdrs)
            run.ok(msg.content[0].text == MOCK_TEXT, "sign-httpx: messages.create")
        except Exception as e:  # noqa: BLE001
            run.ok(False, "sign-httpx: messages.create", describe(e))


def case_sign_async(run):
    name = "sign-async: AsyncAnthropic messages.stream"
    auth = rgc.RelayGuardAuth2(run.args.key_id, run.args.secret)
    call_id, hdrs = run.call_headers("sign-async", "stream", "200")

    async def go():
        async with run.async_client(auth=auth, api_key="unused-relay-guard-signs") as c:
            async with c.messages.stream(**params(" (async)"), extra_headers=hdrs) as stream:
                events = [e.type async for e in stream]
                return (events, await stream.get_final_text(), await stream.get_final_message(),
                        stream.response.headers)

    try:
        events, text, final, headers = asyncio.run(go())
    except Exception as e:  # noqa: BLE001
        run.ok(False, name, describe(e))
        return
    check_stream_result(run, name, events, text, final, headers.get("content-type", ""))
    check_relay_headers(run, name, headers, run.args.key_id)
    one_request(run, name, call_id)


def token_cases(run, label, token, key_id):
    """One token, three ways the SDK (or Claude Code) can carry it."""
    # What this SDK version does with api_key= (anthropic < 1.0 sent x-api-key; 2.x sends
    # Authorization: Bearer) is reported, not assumed: the relay accepts both.
    with run.client(api_key=token) as c:
        check_create(run, f"{label}-api-key", c, key_id, None)
        check_stream(run, f"{label}-api-key", c, key_id)
    with run.client(auth_token=token) as c:
        check_create(run, f"{label}-auth-token", c, key_id, ["authorization"])
        check_stream(run, f"{label}-auth-token", c, key_id)
    # x-api-key only, as Claude Code sends ANTHROPIC_API_KEY: the SDK still wants a credential
    # argument, so give it the token and omit the Authorization header it would build.
    with run.client(api_key=token,
                    headers={"x-api-key": token, "Authorization": anthropic.omit}) as c:
        check_create(run, f"{label}-x-api-key", c, key_id, ["x-api-key"])
        check_stream(run, f"{label}-x-api-key", c, key_id)


# --- usage (t/054-usage-clients.t): the mock sends exact usage objects (x-mock-usage for the JSON
# body or message_start, x-mock-usage-delta for message_delta); the SDK must report them, and
# the caller checks that the relay counted the same per key, model and type.
HAIKU, SONNET, OPUS = "claude-haiku-4-5", "claude-sonnet-4-5", "claude-opus-4-1"


def usage_headers(start=None, delta=None, **more):
    h = {f"x-mock-{k.replace('_', '-')}": str(v) for k, v in more.items()}
    if start is not None:
        h["x-mock-usage"] = json.dumps(start)
    if delta is not None:
        h["x-mock-usage-delta"] = json.dumps(delta)
    return h


def check_usage(run, call_id, want, want_model):
    """The SDK's final Message reported `want` (relay types; None: only the model checked)."""
    if not call_id:
        return    # the call itself failed and said so
    c = run.calls[call_id]
    name = f"{c['case']} {c['kind']}"
    run.ok(c.get("model") == want_model, f"{name}: the SDK reported model {want_model}",
           f"model {c.get('model')!r}")
    if want is None:
        run.ok(bool(c.get("usage")) and c["usage"]["input"] > 0 and c["usage"]["output"] > 0,
               f"{name}: the SDK reported the mock's own usage", f"{c.get('raw_usage')}")
    else:
        run.ok(c.get("usage") == want, f"{name}: the SDK reported the usage the mock sent",
               f"got {c.get('usage')} ({c.get('usage_error', c.get('raw_usage'))}), want {want}")


def usage_cases(run):
    a = run.args
    alice = rgc.RelayGuardAuth2(a.key_id, a.secret)
    bob_token = rgc.mint_token(a.second_key_id, a.second_secret, a.token_ttl)
    full = {"input_tokens": 1234, "cache_creation_input_tokens": 300,
            "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200},
            "cache_read_input_tokens": 4000, "output_tokens": 56,
            "server_tool_use": {"web_search_requests": 2}, "service_tier": "standard"}
    with run.client(auth=alice, api_key="unused-relay-guard-signs") as c:
        # Anthropic's shape, every field, in a JSON body.
        i = check_create(run, "usage-sign-create-full", c, a.key_id, None, model=HAIKU,
                         mock=usage_headers(full))
        check_usage(run, i, counts(1234, 56, 300, 100, 200, 4000, 2), HAIKU)
        # A stream: input and cache in message_start (cache writes without the TTL split),
        # output in message_delta.
        i = check_stream(run, "usage-sign-stream-split", c, a.key_id, model=HAIKU,
                         mock=usage_headers({"input_tokens": 777, "cache_creation_input_tokens": 50,
                                             "cache_read_input_tokens": 60, "output_tokens": 1},
                                            {"output_tokens": 88}))
        check_usage(run, i, counts(777, 88, 50, 0, 0, 60), HAIKU)
        # message_delta repeats input and cache counts with new values: the later ones count.
        i = check_stream(run, "usage-sign-stream-repeated", c, a.key_id, model=SONNET,
                         mock=usage_headers({"input_tokens": 10, "cache_read_input_tokens": 20,
                                             "output_tokens": 1},
                                            {"input_tokens": 11, "cache_read_input_tokens": 21,
                                             "output_tokens": 30}))
        check_usage(run, i, counts(11, 30, 0, 0, 0, 21), SONNET)
    with run.client(auth_token=a.static_token) as c:
        # A compatible upstream: message_start says 0, message_delta carries everything.
        i = check_stream(run, "usage-static-stream-delta-only", c, a.static_key_id, model=SONNET,
                         mock=usage_headers({"input_tokens": 0, "output_tokens": 0},
                                            {"input_tokens": 321, "cache_creation_input_tokens": 40,
                                             "cache_read_input_tokens": 999, "output_tokens": 12,
                                             "server_tool_use": {"web_search_requests": 1}}))
        check_usage(run, i, counts(321, 12, 40, 0, 0, 999, 1), SONNET)
    with run.client(api_key=a.static_token) as c:
        # The response names another model than the request: counted under the response's.
        i = check_create(run, "usage-static-create-other-model", c, a.static_key_id, None,
                         model=HAIKU, mock=usage_headers(model=OPUS))
        check_usage(run, i, None, OPUS)
    with run.client(api_key=bob_token,
                    headers={"x-api-key": bob_token, "Authorization": anthropic.omit}) as c:
        # Counts past 32 bits (still exact in a double, which Prometheus and Perl read).
        i = check_create(run, "usage-minted-create-large", c, a.second_key_id, None, model=SONNET,
                         mock=usage_headers({"input_tokens": 3_000_000_000,
                                             "output_tokens": 4_294_967_301}))
        check_usage(run, i, counts(3_000_000_000, 4_294_967_301), SONNET)
    i = usage_async_stream(run, bob_token, a.second_key_id, usage_headers(
        {"input_tokens": 5, "cache_creation_input_tokens": 2048,
         "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 2048},
         "output_tokens": 1}, {"output_tokens": 300}, sse_split=7))
    check_usage(run, i, counts(5, 300, 2048, 0, 2048), SONNET)


def usage_async_stream(run, token, key_id, mock):
    """AsyncAnthropic, the token in x-api-key, the SSE split into 7-byte pieces by the mock."""
    case = "usage-minted-async-stream-split"
    name = f"{case}: AsyncAnthropic messages.stream"
    call_id, hdrs = run.call_headers(case, "stream", "200")
    run.calls[call_id]["key"] = key_id

    async def go():
        async with run.async_client(api_key=token, headers={"x-api-key": token,
                                                            "Authorization": anthropic.omit}) as c:
            async with c.messages.stream(**params(" (async)", model=SONNET),
                                         extra_headers={**hdrs, **mock}) as stream:
                events = [e.type async for e in stream]
                return (events, await stream.get_final_text(), await stream.get_final_message(),
                        stream.response.headers)

    try:
        events, text, final, headers = asyncio.run(go())
    except Exception as e:  # noqa: BLE001
        run.ok(False, name, describe(e))
        return None
    check_stream_result(run, name, events, text, final, headers.get("content-type", ""))
    check_relay_headers(run, name, headers, key_id)
    record_usage(run, call_id, final)
    one_request(run, name, call_id)
    return call_id


def negative_cases(run):
    bad = rgc.RelayGuardAuth2(run.args.key_id, run.args.secret + "-wrong")
    with run.client(auth=bad, api_key="unused-relay-guard-signs", max_retries=2) as c:
        check_rejected(run, "wrong-secret", c, "BAD_SIGNATURE", "signature")
    with run.client(auth_token="rgs1_not-a-known-token-0123456789", max_retries=2) as c:
        check_rejected(run, "unknown-static-token", c, "BAD_TOKEN", "unknown token")
    expired = rgc.mint_token(run.args.key_id, run.args.secret, 60, now=int(time.time()) - 3600)
    with run.client(api_key=expired, max_retries=2) as c:
        check_rejected(run, "expired-minted-token", c, "EXPIRED", "expired")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base-url", required=True, help="the relay, e.g. http://127.0.0.1:2300")
    p.add_argument("--key-id", default="alice")
    p.add_argument("--secret", default="alice-secret-0123456789")
    p.add_argument("--static-token", default="team-a-static-token-0123456789")
    p.add_argument("--static-key-id", default="team-a", help="key id the static token belongs to")
    p.add_argument("--second-key-id", default="bob", help="a second signing key (usage cases)")
    p.add_argument("--second-secret", default="bob-secret-0123456789ab")
    p.add_argument("--token-ttl", type=int, default=300, help="lifetime of the minted token")
    p.add_argument("--cases", choices=("auth", "usage", "all"), default="auth",
                   help="auth: credentials, streaming, retries, rejections (t/006-sdk.t); usage: "
                        "exact usage objects from the mock (t/054-usage-clients.t)")
    p.add_argument("--timeout", type=float, default=10.0, help="SDK read timeout, seconds")
    p.add_argument("--run-id", help="value of x-rg-e2e-run (default: random)")
    p.add_argument("--report", help="write the requests sent (JSON) to this file")
    p.add_argument("--expect-rg-headers", action="store_true",
                   help="fail when the relay does not return X-RG-Status / X-RG-Key")
    args = p.parse_args(argv)
    if args.base_url.startswith("https://api.anthropic.com"):
        p.error("this test never talks to api.anthropic.com: pass the relay's URL")

    run = Run(args)
    run.note(f"anthropic {anthropic.__version__}, httpx2 {httpx2.__version__}, "
             f"run {run.run_id}, relay {args.base_url}")
    auth_cases = [
        ("signing auth (httpx2)", lambda: case_sign_httpx2(run)),
        ("signing auth (httpx2), retried", lambda: case_sign_retry(run)),
        ("signing auth (httpx)", lambda: case_sign_httpx(run)),
        ("signing auth (async)", lambda: case_sign_async(run)),
        ("static token", lambda: token_cases(run, "static", args.static_token, args.static_key_id)),
        ("short-lived token", lambda: token_cases(
            run, "minted", rgc.mint_token(args.key_id, args.secret, args.token_ttl), args.key_id)),
        ("rejections", lambda: negative_cases(run)),
    ]
    cases = {"auth": auth_cases, "usage": [("usage", lambda: usage_cases(run))],
             "all": auth_cases + [("usage", lambda: usage_cases(run))]}[args.cases]
    for label, fn in cases:
        run.note(label)
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - report and carry on with the other cases
            run.ok(False, f"{label}: unexpected error", describe(e) + "\n" + traceback.format_exc())

    # Which header carried api_key= in this SDK version (informational).
    for case in ("static-api-key", "minted-api-key") if args.cases != "usage" else ():
        ids = [k for k, v in run.calls.items() if v["case"] == case]
        creds = {tuple(s["credential_headers"]) for i in ids for s in run.sent_for(i)}
        run.note(f"{case}: api_key= was sent as {sorted(creds)}")

    if args.report:
        with open(args.report, "w", encoding="utf-8") as f:
            json.dump({"run": run.run_id, "calls": run.calls, "sent": run.sent}, f, indent=1)
    print(f"# {run.checks} checks, {run.failed} failed", flush=True)
    return 1 if run.failed else 0


if __name__ == "__main__":
    sys.exit(main())
