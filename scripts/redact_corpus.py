#!/usr/bin/env python3
"""Generated corpus for relay-guard's log redaction (t/043-redact-corpus.t).

Draws random secrets of every kind the module masks (Anthropic keys with `sk-ant-` in any
letter case, static tokens in the rgs1_ form and opaque ones, short-lived rgt1 tokens, the
upstream key, which is a configured literal matching no pattern), places each in every field
nginx or a common log format prints (path, query, fragment, absolute-form host, Host, a
server_name regex capture, Basic auth's user, headers, cookies nested in other headers),
percent-encoded in any mix of escaped and literal bytes in either hex case, sends the requests
over plain sockets, and checks every access-log and error-log byte for any 12-byte slice of
the secret part of any secret, as logged, percent-decoded and in any letter case.

    redact_corpus.py gen   --dir DIR [--seed N] [--count N]   keys file, upstream key, corpus
    redact_corpus.py send  --dir DIR --port P [--host-header H] [--only N]
    redact_corpus.py check --dir DIR LOG...                    prints a JSON summary

Every request presents a credential (Bearer or x-api-key): a secret is known to the module by
its shape, as configured, or as what the request presented. A secret nobody told the module
about and that has no known shape cannot be masked, and is not generated.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import random
import re
import socket
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import relay_guard_client as rgc  # noqa: E402  (the project's own signer and token helpers)

WINDOW = 12
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
ALNUM = B64URL[:62]
KEY_ID = "corpus"
ANTHROPIC_KINDS = ["api03", "admin01", "oat01", "ort01"]

# Where a secret goes. Each entry: name -> (location kind, how the request is built).
FIELDS = [
    "path", "path-encoded", "query-free", "query-listed", "query-name", "fragment",
    "query-fragment", "absolute-host", "host", "host-port", "tenant", "basic-user",
    "user-agent", "x-debug", "referer", "x-original-url", "cookie", "cookie-in-header",
    "headers-in-header", "bearer-twice", "x-auth-echo",
]
LOCATIONS = ["/v1/", "/down/", "/static/", "/tok/"]


def public_prefix(s):
    """The bytes of a secret that may stay readable: as the module's reference decides."""
    if s[:7].lower() == "sk-ant-":
        kind = ""
        for c in s[7:]:
            if c.islower() or c.isdigit():
                kind += c
            else:
                break
        if 1 <= len(kind) <= 12 and s[7 + len(kind):8 + len(kind)] == "-":
            return 8 + len(kind)
        return 7
    if s[:5].lower() in ("rgt1.", "rgs1_"):
        return 5
    return 0


def rand_case(rng, s):
    return "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in s)


def percent_encode(rng, s, share, upper):
    """Escapes a random `share` of the bytes of s (at least one), hex in upper or lower case
    (upper None: each escape picks)."""
    idx = [i for i in range(len(s)) if rng.random() < share] or [rng.randrange(len(s))]
    chosen = set(idx)
    out = []
    for i, c in enumerate(s):
        if i in chosen:
            up = rng.random() < 0.5 if upper is None else upper
            out.append(("%%%02X" if up else "%%%02x") % ord(c))
        else:
            out.append(c)
    return "".join(out)


def new_secrets(rng, now):
    """One secret of each kind, plus the material the server needs to know them by."""
    secret = "".join(rng.choice(ALNUM) for _ in range(32))
    static_rgs = "rgs1_" + "".join(rng.choice(B64URL) for _ in range(43))
    static_opaque = "team-" + "".join(rng.choice(ALNUM) for _ in range(26))
    expiry = now + 1800
    payload = "rgt1.%s.%d" % (KEY_ID, expiry)
    rgt = payload + "." + hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
    upstream = "corp-gw-" + "".join(rng.choice(ALNUM) for _ in range(34))
    return secret, {"rgs": static_rgs, "opaque": static_opaque, "rgt": rgt, "upstream": upstream}


def anthropic_key(rng):
    kind = rng.choice(ANTHROPIC_KINDS)
    body = "".join(rng.choice(B64URL) for _ in range(rng.randrange(60, 96)))
    prefix = "sk-ant-%s-" % kind
    # Any letter case for the prefix; the kind stays readable only when lower-case.
    r = rng.random()
    if r < 0.3:
        prefix = prefix.upper()
    elif r < 0.6:
        prefix = rand_case(rng, prefix)
    return prefix + body


def encode(rng, s, how):
    """The secret as placed: literal, or percent-encoded in one of several ways."""
    if how == "literal":
        return s
    if how == "all-upper":
        return percent_encode(rng, s, 1.0, True)
    if how == "all-lower":
        return percent_encode(rng, s, 1.0, False)
    if how == "some":
        return percent_encode(rng, s, rng.choice([0.1, 0.3, 0.6]), None)
    # One escape every few bytes, so no 12 literal bytes remain.
    out, i = [], 0
    while i < len(s):
        step = rng.randrange(3, 11)
        chunk = s[i:i + step]
        j = rng.randrange(len(chunk))
        out.append(chunk[:j] + ("%%%02X" % ord(chunk[j])) + chunk[j + 1:])
        i += step
    return "".join(out)


ENCODINGS = ["literal", "all-upper", "all-lower", "some", "sparse"]
# Fields where a percent-encoded secret is as likely as a literal one.
URL_FIELDS = {"path-encoded", "query-free", "query-listed", "query-name", "fragment",
              "query-fragment", "referer", "x-original-url", "cookie", "cookie-in-header"}


def build_request(rng, n, kind, secret, field, location, creds):
    """One raw HTTP/1.1 request carrying `secret` in `field`."""
    # nginx refuses an absolute-form host outside [A-Za-z0-9.-] while it parses the request
    # line, before any module runs (see the README): such secrets go to the Host header.
    if field == "absolute-host" and not all(c.isalnum() or c in ".-" for c in secret):
        field = "host"
    how = rng.choice(ENCODINGS) if field in URL_FIELDS or rng.random() < 0.2 else "literal"
    if field == "absolute-host":
        how = "literal"
    if field == "path-encoded" and how == "literal":
        how = "some"
    placed = encode(rng, secret, how)
    # The credential the request presents: the opaque token must be presented to be known.
    if kind == "opaque":
        cred = secret
    elif kind == "anthropic" and location == "/tok/" and rng.random() < 0.5:
        # Refused (401), with relay-guard's own info line quoting the request.
        cred = secret
    else:
        cred = rng.choice([creds["rgs"], creds["opaque"], creds["rgt"]])
    via = "x-api-key" if field in ("basic-user", "bearer-twice") or rng.random() < 0.5 else "bearer"
    headers = [("X-Case", "c-%d" % n)]
    host = "relay.test"
    target = location + "models"
    absolute = None
    if field in ("path", "path-encoded"):
        target = location + "models/" + placed + "/x"
    elif field == "query-free":
        target = location + "models?beta=true&q=" + placed
    elif field == "query-listed":
        target = location + "models?" + rng.choice(["key", "api_key", "token", "sig"]) + "=" + placed
    elif field == "query-name":
        target = location + "models?" + placed + "=1&b=2"
    elif field == "fragment":
        target = location + "models#" + placed
    elif field == "query-fragment":
        target = location + "models?b=1#frag-" + placed
    elif field == "absolute-host":
        absolute = "http://" + placed + ".relay.test"
    elif field == "host":
        host = placed
    elif field == "host-port":
        host = "relay.test:" + placed
    elif field == "tenant":
        host = placed + ".tenant.test"
    elif field == "basic-user":
        user = base64.b64encode((placed + ":pw-" + str(n)).encode()).decode()
        headers.append(("Authorization", "Basic " + user))
    elif field == "user-agent":
        headers.append(("User-Agent", "claude-cli/1.0 (corpus) " + placed))
    elif field == "x-debug":
        headers.append(("X-Debug", "upstream said " + placed + ", retrying"))
    elif field == "referer":
        headers.append(("Referer", "https://console.test/settings?from=" + placed + "&p=2"))
    elif field == "x-original-url":
        headers.append(("X-Original-URL", "/v1/models/" + placed + "?x=" + placed))
    elif field == "cookie":
        headers.append(("Cookie", "theme=dark; session=" + placed + "; lang=en"))
    elif field == "cookie-in-header":
        headers.append(("X-Forwarded-Cookie", "sid=" + placed + "; theme=dark"))
    elif field == "headers-in-header":
        headers.append(("X-Original-Headers", "Cookie: a=1; session=" + placed + ", Host: x"))
    elif field == "bearer-twice":
        headers.append(("X-Auth-Echo", "Bearer Bearer " + placed))
    elif field == "x-auth-echo":
        headers.append(("X-Auth-Echo", "token " + placed))
    if via == "bearer":
        headers.append(("Authorization", "Bearer " + cred))
    else:
        headers.append(("x-api-key", cred))
    line_target = (absolute + target) if absolute else target
    head = ["GET %s HTTP/1.1" % line_target, "Host: " + host]
    head += ["%s: %s" % kv for kv in headers]
    head += ["Connection: close", "", ""]
    return {
        "n": n, "kind": kind, "field": field, "encoding": how, "location": location,
        "raw": "\r\n".join(head),
    }


def cmd_gen(a):
    seed = a.seed if a.seed is not None else int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    now = int(time.time())
    os.makedirs(a.dir, exist_ok=True)
    secret, creds = new_secrets(rng, now)
    keys = {"keys": [{"id": KEY_ID, "secrets": [secret],
                      "token_sha256": [rgc.token_sha256(creds["rgs"]),
                                       rgc.token_sha256(creds["opaque"])]}]}
    with open(os.path.join(a.dir, "keys.json"), "w") as f:
        json.dump(keys, f)
    path = os.path.join(a.dir, "upstream-key")
    with open(path, "w") as f:
        f.write(creds["upstream"] + "\n")
    os.chmod(path, 0o600)
    secrets = dict(creds)
    kinds = ["anthropic", "rgs", "opaque", "rgt", "upstream"]
    requests = []
    # Every kind in every field once (the location cycling), then random placements.
    plan = [(k, f) for k in kinds for f in FIELDS]
    while len(plan) < a.count:
        plan.append((rng.choice(kinds), rng.choice(FIELDS)))
    for n, (kind, field) in enumerate(plan):
        if kind == "anthropic":
            value = anthropic_key(rng)
            secrets["anthropic-%d" % n] = value
        else:
            value = secrets[kind]
            # A short-lived or static token in another letter case is another string to find.
            if kind in ("rgs", "rgt") and rng.random() < 0.15:
                value = value[:5].upper() + value[5:]
        location = LOCATIONS[n % len(LOCATIONS)]
        requests.append(build_request(rng, n, kind, value, field, location, creds))
    # Error-log lines longer than nginx's 2048-byte line buffer are cut: a path long enough
    # puts the cut inside the presented token in `open() "<path>" failed`, at one of these
    # lengths whatever the length of the line's time, pid and connection number.
    static_root = os.path.join(os.path.abspath(a.dir), "www")
    for pad in range(1900 - len(static_root), 1990 - len(static_root), 3):
        n = len(requests)
        raw = "\r\n".join([
            "GET /static/%s/%s/x HTTP/1.1" % ("a" * pad, creds["opaque"]),
            "Host: relay.test", "X-Case: c-%d" % n, "x-api-key: " + creds["opaque"],
            "Connection: close", "", ""])
        requests.append({"n": n, "kind": "opaque", "field": "cut-line", "encoding": "literal",
                         "location": "/static/", "raw": raw})
    with open(os.path.join(a.dir, "corpus.json"), "w") as f:
        json.dump({"seed": seed, "secrets": secrets, "requests": requests}, f)
    print("seed %d: %d requests (%d placed), %d secrets"
          % (seed, len(requests), len(plan), len(secrets)))


def send_one(port, raw):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(raw.encode("latin-1"))
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    line = data.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def cmd_send(a):
    corpus = json.load(open(os.path.join(a.dir, "corpus.json")))
    reqs = corpus["requests"]
    if a.only:
        reqs = reqs[:a.only]
    statuses = {}
    for r in reqs:
        st = send_one(a.port, r["raw"])
        statuses[str(st)] = statuses.get(str(st), 0) + 1
    print(json.dumps({"seed": corpus["seed"], "sent": len(reqs), "statuses": statuses}))


def variants(line):
    """A log line as it is, percent-decoded, with nginx's \\xHH escapes undone, all lower-case."""
    out = {line}
    unesc = line
    if "\\x" in line:
        try:
            unesc = line.encode("latin-1").decode("unicode_escape")
        except (UnicodeDecodeError, UnicodeEncodeError):
            unesc = line
        out.add(unesc)
    for v in list(out):
        out.add(urllib.parse.unquote(v, encoding="latin-1"))
    return {v.lower() for v in out}


def cmd_check(a):
    corpus = json.load(open(os.path.join(a.dir, "corpus.json")))
    windows = {}
    for name, s in corpus["secrets"].items():
        # Logs are compared in any letter case, so a window that is some case of a public
        # prefix (`SK-ANT-OAT01` and a kept `sk-ant-oat01-`) is public too.
        skip = max(public_prefix(s), public_prefix(s.lower()))
        for i in range(len(s) - WINDOW + 1):
            if i + WINDOW <= skip:
                continue
            windows.setdefault(s[i:i + WINDOW].lower(), name)
    leaks, lines, masks = [], 0, 0
    counts = {"request": 0, "upstream": 0, "host": 0, "open_failed": 0, "cut": 0,
              "cut_in_secret": 0, "access_cases": set()}
    for path in a.logs:
        with open(path, "rb") as f:
            text = f.read().decode("latin-1")
        for line in text.splitlines():
            lines += 1
            masks += line.count("[redacted:")
            if ', request: "' in line:
                counts["request"] += 1
            if ', upstream: "' in line:
                counts["upstream"] += 1
            if ', host: "' in line:
                counts["host"] += 1
            if "open() " in line and "failed" in line:
                counts["open_failed"] += 1
            if "open() " in line and len(line.encode("latin-1")) >= 2047:
                counts["cut"] += 1
                # nginx marks where it cut the message with `...`: right after a mask, the
                # cut fell inside a secret.
                if re.search(r"\[redacted:[0-9a-f]{8}\]\.\.\. \(", line):
                    counts["cut_in_secret"] += 1
            if line.startswith("{") and '"case":"c-' in line:
                counts["access_cases"].add(line.split('"case":"', 1)[1].split('"', 1)[0])
            found = set()
            for v in variants(line):
                for i in range(len(v) - WINDOW + 1):
                    name = windows.get(v[i:i + WINDOW])
                    if name and name not in found:
                        found.add(name)
                        leaks.append({"file": os.path.basename(path), "secret": name,
                                      "window": v[i:i + WINDOW], "line": line[:400]})
    counts["access_cases"] = len(counts["access_cases"])
    print(json.dumps({"seed": corpus["seed"], "requests": len(corpus["requests"]),
                      "lines": lines, "masks": masks, "counts": counts,
                      "leak_count": len(leaks), "leaks": leaks[:40]}))
    return 1 if leaks else 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("--dir", required=True)
    g.add_argument("--seed", type=int)
    g.add_argument("--count", type=int, default=300)
    s = sub.add_parser("send")
    s.add_argument("--dir", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--only", type=int, default=0, help="send only the first N requests")
    c = sub.add_parser("check")
    c.add_argument("--dir", required=True)
    c.add_argument("logs", nargs="+")
    a = p.parse_args(argv)
    return {"gen": cmd_gen, "send": cmd_send, "check": cmd_check}[a.cmd](a) or 0


if __name__ == "__main__":
    sys.exit(main())
