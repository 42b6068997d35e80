#!/usr/bin/env python3
"""Request material for scripts/bench (standard library only).

  bench_requests.py keys --out F --key-id ID --secret S --token T     keys file for the module
  bench_requests.py body --out F --size BYTES                          JSON Messages body, exact size
  bench_requests.py heads --out F --body-file B --host H --target T --token T
        [--headers base|claude-code] [--key-id ID --secret S --count N]
  bench_requests.py sha256 --size BYTES                                µs per SHA-256 pass (hashlib)

`heads` writes request heads for scripts/bench.lua, back to back, all of the same length:
with --secret, N heads each signed with a fresh nonce and timestamp = now (the wire protocol of
relay_guard_client.py). "base" heads carry x-api-key and the four signature headers (without
--secret: N heads with random nonces and signatures), so every 1 KiB / 100 KiB variant sends
unique heads of one size; "claude-code" heads (one, static) carry ~20 headers like Claude
Code's and x-api-key.
"""

import argparse
import hashlib
import hmac
import json
import os
import secrets
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import relay_guard_client as rgc  # noqa: E402


def cmd_keys(a):
    doc = {"keys": [{"id": a.key_id, "secrets": [a.secret],
                     "token_sha256": rgc.token_sha256(a.token)}]}
    with open(a.out, "w") as f:
        json.dump(doc, f)


def cmd_body(a):
    head = '{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":"'
    tail = '"}]}'
    filler = a.size - len(head) - len(tail)
    if filler < 0:
        raise SystemExit(f"body size {a.size} is too small")
    words = ("Summarise the following design notes for the relay and list open questions. " * (filler // 70 + 2))
    with open(a.out, "wb") as f:
        f.write((head + words[:filler] + tail).encode())


CLAUDE_CODE_HEADERS = [
    ("Accept", "application/json"),
    ("Accept-Encoding", "gzip, deflate, br, zstd"),
    ("Accept-Language", "*"),
    ("anthropic-beta", "claude-code-20250219,oauth-2025-04-20,interleaved-thinking-2025-05-14,"
                       "fine-grained-tool-streaming-2025-05-14"),
    ("anthropic-dangerous-direct-browser-access", "true"),
    ("anthropic-version", "2023-06-01"),
    ("Connection", "keep-alive"),
    ("Content-Type", "application/json"),
    ("sec-fetch-mode", "cors"),
    ("User-Agent", "claude-cli/1.0.98 (external, cli)"),
    ("x-app", "cli"),
    ("X-Stainless-Arch", "x64"),
    ("X-Stainless-Helper-Method", "stream"),
    ("X-Stainless-Lang", "js"),
    ("X-Stainless-OS", "Linux"),
    ("X-Stainless-Package-Version", "0.60.0"),
    ("X-Stainless-Retry-Count", "0"),
    ("X-Stainless-Runtime", "node"),
    ("X-Stainless-Runtime-Version", "v22.18.0"),
    ("X-Stainless-Timeout", "600"),
]


def cmd_heads(a):
    with open(a.body_file, "rb") as f:
        body = f.read()
    common = [("Host", a.host)]
    if a.headers == "claude-code":
        common += CLAUDE_CODE_HEADERS
    else:
        common += [("Content-Type", "application/json"), ("anthropic-version", "2023-06-01")]
    common += [("x-api-key", a.token), ("Content-Length", str(len(body)))]
    prefix = "\t".join([f"POST {a.target} HTTP/1.1"] + [f"{k}: {v}" for k, v in common])
    if a.headers == "claude-code" and a.secret:
        raise SystemExit("claude-code heads are token-only")

    now = str(int(time.time()))
    out = open(a.out, "wb")
    first_len = []

    def emit(head):
        # One record per request: the whole head, CRLFs and the blank line included. All
        # records of a file have the same length, so the wrk script slices them out of one
        # string (cheap for its garbage collector, unlike a table of 100 000s of strings).
        rec = (head.replace("\t", "\r\n") + "\r\n\r\n").encode()
        if first_len and len(rec) != first_len[0]:
            raise SystemExit("request heads differ in length")
        first_len[:] = [len(rec)]
        out.write(rec)

    if not a.secret:
        if a.headers == "base":
            # Same shape as signed heads, and as unique (random nonce and signature), so wrk
            # builds every request string afresh exactly as for signed ones; the module ignores
            # these headers outside signature mode.
            for _ in range(a.count):
                emit("\t".join([prefix, f"{rgc.HEADER_KEY_ID}: {a.key_id or 'bench'}",
                                f"{rgc.HEADER_TIMESTAMP}: {now}",
                                f"{rgc.HEADER_NONCE}: {secrets.token_urlsafe(24)}",
                                f"{rgc.HEADER_SIGNATURE}: {secrets.token_hex(32)}"]))
        else:
            emit(prefix)
    else:
        # Hash the body once; only the nonce changes between requests. The first head is
        # checked against relay_guard_client.signed_headers, the reference implementation.
        body_hash = rgc.sha256_hex(body)
        key = a.secret.encode()
        fixed = "\n".join([rgc.SCHEME, a.key_id, now]) + "\n"
        tail = "\n" + "\n".join(["POST", a.target, body_hash])
        for i in range(a.count):
            nonce = secrets.token_urlsafe(24)  # 32 characters
            sig = hmac.new(key, (fixed + nonce + tail).encode(), hashlib.sha256).hexdigest()
            if i == 0:
                ref = rgc.signed_headers(a.key_id, a.secret, "POST", a.target, body, now, nonce)
                assert ref[rgc.HEADER_SIGNATURE] == sig, "signature differs from relay_guard_client"
            emit(f"{prefix}\t{rgc.HEADER_KEY_ID}: {a.key_id}\t{rgc.HEADER_TIMESTAMP}: {now}"
                 f"\t{rgc.HEADER_NONCE}: {nonce}\t{rgc.HEADER_SIGNATURE}: {sig}")
    out.close()


def cmd_sha256(a):
    data = os.urandom(a.size)
    best = None
    for _ in range(5):
        n = 0
        t0 = time.perf_counter()
        while True:
            hashlib.sha256(data).digest()
            n += 1
            dt = time.perf_counter() - t0
            if dt > 0.05:
                break
        per = dt / n
        best = per if best is None else min(best, per)
    print(f"{best * 1e6:.1f}")


def answer_message():
    """A ~1 KB non-streaming Messages API response, usage with cache fields as Anthropic sends."""
    text = ("The relay forwards this request to the upstream and counts what it reports. " * 10).strip()
    return json.dumps({
        "id": "msg_bench_0123456789abcdef", "type": "message", "role": "assistant",
        "model": "claude-sonnet-4-5", "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 1234, "cache_creation_input_tokens": 2048,
                  "cache_read_input_tokens": 40960,
                  "cache_creation": {"ephemeral_5m_input_tokens": 2048, "ephemeral_1h_input_tokens": 0},
                  "output_tokens": 256, "service_tier": "standard"},
    }, separators=(",", ":"))


def answer_sse(deltas=36):
    """A Claude Code-like stream: message_start, 36 text deltas, message_delta, message_stop."""
    ev = [("message_start", {"type": "message_start", "message": {
        "id": "msg_bench_0123456789abcdef", "type": "message", "role": "assistant",
        "model": "claude-sonnet-4-5", "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 1234, "cache_creation_input_tokens": 2048, "cache_read_input_tokens": 40960,
                  "cache_creation": {"ephemeral_5m_input_tokens": 2048, "ephemeral_1h_input_tokens": 0},
                  "output_tokens": 1, "service_tier": "standard"}}}),
          ("content_block_start", {"type": "content_block_start", "index": 0,
                                   "content_block": {"type": "text", "text": ""}}),
          ("ping", {"type": "ping"})]
    ev += [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                    "delta": {"type": "text_delta", "text": "word%d of the answer " % i}})
           for i in range(deltas)]
    ev += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
           ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                              "usage": {"output_tokens": 256}}),
           ("message_stop", {"type": "message_stop"})]
    return "".join("event: %s\ndata: %s\n\n" % (n, json.dumps(d, separators=(",", ":"))) for n, d in ev)


def cmd_answer(a):
    """Writes the upstream's answer, served as a static file by the bench's upstream nginx."""
    body = answer_message() if a.kind == "message" else answer_sse()
    with open(a.out, "w") as f:
        f.write(body)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("keys")
    s.add_argument("--out", required=True)
    s.add_argument("--key-id", required=True)
    s.add_argument("--secret", required=True)
    s.add_argument("--token", required=True)
    s.set_defaults(func=cmd_keys)
    s = sub.add_parser("body")
    s.add_argument("--out", required=True)
    s.add_argument("--size", type=int, required=True)
    s.set_defaults(func=cmd_body)
    s = sub.add_parser("heads")
    s.add_argument("--out", required=True)
    s.add_argument("--body-file", required=True)
    s.add_argument("--host", required=True)
    s.add_argument("--target", default="/v1/messages")
    s.add_argument("--token", required=True)
    s.add_argument("--headers", choices=["base", "claude-code"], default="base")
    s.add_argument("--key-id")
    s.add_argument("--secret")
    s.add_argument("--count", type=int, default=1)
    s.set_defaults(func=cmd_heads)
    s = sub.add_parser("answer")
    s.add_argument("--kind", choices=["message", "sse"], required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_answer)
    s = sub.add_parser("sha256")
    s.add_argument("--size", type=int, required=True)
    s.set_defaults(func=cmd_sha256)
    a = p.parse_args()
    a.func(a)


if __name__ == "__main__":
    main()
