#!/usr/bin/env python3
"""Client side of relay-guard's wire protocol, version 1: request signatures and client tokens.

Importable module and CLI. Only the standard library is needed; httpx (or httpx2) is imported the
first time `RelayGuardAuth` (or `RelayGuardAuth2`) is used, so the signing helpers and the CLI work
on a bare Python 3.9+.

Signing a request (headers X-Key-Id, X-Timestamp, X-Nonce, X-Signature):

    X-Signature = hex(HMAC-SHA256(secret, string_to_sign))
    string_to_sign = "\\n".join(["RG1-HMAC-SHA256", key_id, timestamp, nonce,
                                 method, request_target, hex(SHA-256(body))])

Short-lived client tokens: "rgt1.<key id>.<expiry>.<hex HMAC-SHA256(secret, 'rgt1.<key id>.<expiry>')>".

With the official SDK. anthropic >= 1.0 is built on httpx2 and refuses httpx objects:

    import anthropic, httpx2
    from relay_guard_client import RelayGuardAuth2
    client = anthropic.Anthropic(
        base_url="http://127.0.0.1:8080", api_key="unused",
        http_client=httpx2.Client(auth=RelayGuardAuth2("alice", secret)))

anthropic < 1.0, and any other httpx code, takes `httpx.Client(auth=RelayGuardAuth(...))`.

CLI (run with --help for details):

    relay_guard_client.py sign --key-id ID --secret-file F --method POST --target /v1/messages --body-file F
    relay_guard_client.py mint --key-id ID --secret-file F [--ttl 3600]
    relay_guard_client.py hash-token TOKEN
    relay_guard_client.py new-key --id ID
"""

import argparse
import hashlib
import hmac
import json
import os
import re
import secrets
import shlex
import sys
import time
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

SCHEME = "RG1-HMAC-SHA256"
TOKEN_PREFIX = "rgt1."
# Static tokens are opaque to the server (it compares their SHA-256); the prefix only makes them
# easy to recognise in logs and secret scanners, and keeps them apart from "rgt1." tokens.
STATIC_TOKEN_PREFIX = "rgs1_"
SECRET_ENV = "RELAY_GUARD_SECRET"

HEADER_KEY_ID = "X-Key-Id"
HEADER_TIMESTAMP = "X-Timestamp"
HEADER_NONCE = "X-Nonce"
HEADER_SIGNATURE = "X-Signature"

# fullmatch() is used everywhere: "$" would accept a trailing newline. Explicit ASCII classes
# rather than \d, which in Python also matches non-ASCII digits.
KEY_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
NONCE_RE = re.compile(r"[A-Za-z0-9._~-]{16,128}")
DIGITS_RE = re.compile(r"[0-9]{1,20}")
SIGNATURE_RE = re.compile(r"[0-9A-Fa-f]{64}")
TOKEN_MAC_RE = re.compile(r"[0-9a-f]{64}")
# Method and target travel on the request line, so they cannot contain whitespace or controls;
# refusing them here also keeps a field from smuggling an extra line into the string to sign.
REQUEST_LINE_FIELD_RE = re.compile(r"[\x21-\x7e]+")

U64_MAX = 2**64 - 1

Timestamp = Union[int, str]


class RelayGuardError(ValueError):
    """A protocol failure; `code` is the verdict name shared with the server and test vectors:
    MALFORMED, BAD_SIGNATURE, BAD_TOKEN, EXPIRED, TTL_TOO_LONG or UNKNOWN_KEY."""

    def __init__(self, code: str, detail: str):
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def _require(pattern: "re.Pattern[str]", value: str, what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise RelayGuardError("MALFORMED", f"invalid {what}: {value!r}")
    return value


def _unix_seconds(value: Timestamp, what: str) -> str:
    """Decimal seconds as the protocol spells them; bounded to u64 like the server's parser."""
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    _require(DIGITS_RE, text, what)
    if int(text) > U64_MAX:
        raise RelayGuardError("MALFORMED", f"{what} out of range: {text}")
    return text


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hmac_hex(secret: str, message: str) -> str:
    return hmac.new(secret.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).hexdigest()


def string_to_sign(key_id: str, timestamp: Timestamp, nonce: str, method: str, target: str,
                   body: bytes = b"") -> str:
    """The exact text that X-Signature covers. Raises RelayGuardError(MALFORMED) on a bad field."""
    return "\n".join([
        SCHEME,
        _require(KEY_ID_RE, key_id, "key id"),
        _unix_seconds(timestamp, "timestamp"),
        _require(NONCE_RE, nonce, "nonce"),
        _require(REQUEST_LINE_FIELD_RE, method, "method"),
        _require(REQUEST_LINE_FIELD_RE, target, "request target"),
        sha256_hex(body or b""),
    ])


def sign(secret: str, key_id: str, timestamp: Timestamp, nonce: str, method: str, target: str,
         body: bytes = b"") -> str:
    """Lowercase hex X-Signature for one request."""
    return _hmac_hex(secret, string_to_sign(key_id, timestamp, nonce, method, target, body))


def new_nonce() -> str:
    # token_urlsafe uses [A-Za-z0-9_-], a subset of the nonce charset; 24 bytes give 32 chars.
    return secrets.token_urlsafe(24)


def signed_headers(key_id: str, secret: str, method: str, target: str, body: bytes = b"",
                   timestamp: Optional[Timestamp] = None,
                   nonce: Optional[str] = None) -> Dict[str, str]:
    """The four relay-guard headers for one request; fresh timestamp and nonce unless given."""
    timestamp = _unix_seconds(int(time.time()) if timestamp is None else timestamp, "timestamp")
    nonce = new_nonce() if nonce is None else nonce
    return {
        HEADER_KEY_ID: key_id,
        HEADER_TIMESTAMP: timestamp,
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: sign(secret, key_id, timestamp, nonce, method, target, body),
    }


def verify_signature(secret: str, key_id: str, timestamp: str, nonce: str, method: str,
                     target: str, body: bytes, signature: str) -> None:
    """Checks one request's signature the way the server does, minus the clock-skew and replay
    checks (those depend on server state). Raises RelayGuardError(MALFORMED|BAD_SIGNATURE)."""
    _require(SIGNATURE_RE, signature, "signature")
    expected = sign(secret, key_id, timestamp, nonce, method, target, body)
    if not hmac.compare_digest(expected, signature.lower()):
        raise RelayGuardError("BAD_SIGNATURE", "signature does not match")


def _token_payload(key_id: str, expiry: Timestamp) -> str:
    return f"{TOKEN_PREFIX}{_require(KEY_ID_RE, key_id, 'key id')}.{_unix_seconds(expiry, 'expiry')}"


def mint_token(key_id: str, secret: str, ttl_seconds: int = 3600,
               now: Optional[int] = None) -> str:
    """A short-lived client token valid for ttl_seconds from now. The server also caps the
    lifetime (expiry - its clock); keep ttl a little below that cap if the clocks may differ."""
    if ttl_seconds < 0:
        raise ValueError("ttl_seconds must not be negative")
    now = int(time.time()) if now is None else int(now)
    payload = _token_payload(key_id, now + int(ttl_seconds))
    return f"{payload}.{_hmac_hex(secret, payload)}"


def parse_token(token: str) -> Tuple[str, int, str]:
    """Splits an rgt1 token into (key id, expiry, mac). Key ids may contain dots, so the fields
    are taken from the right. Raises RelayGuardError(MALFORMED)."""
    if not isinstance(token, str) or not token.startswith(TOKEN_PREFIX):
        raise RelayGuardError("MALFORMED", "not an rgt1 token")
    parts = token[len(TOKEN_PREFIX):].rsplit(".", 2)
    if len(parts) != 3:
        raise RelayGuardError("MALFORMED", "token has missing parts")
    key_id, expiry, mac = parts
    _require(KEY_ID_RE, key_id, "token key id")
    expiry = int(_unix_seconds(expiry, "token expiry"))
    _require(TOKEN_MAC_RE, mac, "token mac")
    return key_id, expiry, mac


def verify_token(token: str, keys: Mapping[str, Sequence[str]], now: int, max_ttl: int) -> str:
    """Checks an rgt1 token against {key id: [secrets]}; returns its key id. Valid iff the MAC
    matches one of the key's secrets, now <= expiry and expiry - now <= max_ttl. Raises
    RelayGuardError(MALFORMED|UNKNOWN_KEY|BAD_TOKEN|EXPIRED|TTL_TOO_LONG)."""
    key_id, expiry, mac = parse_token(token)
    if key_id not in keys:
        raise RelayGuardError("UNKNOWN_KEY", f"unknown key id {key_id!r}")
    # The MAC covers the token's own text, not a re-rendering of the parsed expiry.
    payload = token[:-len(mac) - 1]
    if not any(hmac.compare_digest(_hmac_hex(s, payload), mac) for s in keys[key_id]):
        raise RelayGuardError("BAD_TOKEN", "token mac does not match")
    if now > expiry:
        raise RelayGuardError("EXPIRED", f"token expired at {expiry}")
    if expiry - now > max_ttl:
        raise RelayGuardError("TTL_TOO_LONG", f"token expiry {expiry} is over {max_ttl}s ahead")
    return key_id


def token_sha256(token: str) -> str:
    """What the keys file stores for a static token."""
    return sha256_hex(token.encode("utf-8"))


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def new_static_token() -> str:
    return STATIC_TOKEN_PREFIX + secrets.token_urlsafe(32)


def keys_file_entry(key_id: str, secret: str, static_token: str) -> dict:
    return {"id": _require(KEY_ID_RE, key_id, "key id"), "secrets": [secret],
            "token_sha256": [token_sha256(static_token)]}


def _make_auth_class(library: str):
    """Builds the auth class for `library`, "httpx" or "httpx2" (the fork that anthropic >= 1.0
    uses, which rejects httpx objects). Their Auth interfaces are the same."""
    import importlib

    # Deferred: the rest of this module must work without either library installed.
    http = importlib.import_module(library)

    class Auth(http.Auth):
        # Makes the client read a streamed request body before auth_flow, so it can be hashed.
        requires_request_body = True

        def __init__(self, key_id: str, secret: str):
            _require(KEY_ID_RE, key_id, "key id")
            self.key_id = key_id
            self.secret = secret

        def auth_flow(self, request):
            # Runs once per send, retries included, so every attempt gets a fresh timestamp and
            # nonce. raw_path is the request-target put on the request line: path plus query,
            # percent-encoding untouched.
            target = request.url.raw_path.decode("ascii")
            request.headers.update(
                signed_headers(self.key_id, self.secret, request.method, target, request.content))
            yield request

    Auth.__doc__ = f"{library}.Auth that signs every request: {library}.Client(auth=...(key_id, secret))."
    return Auth


# The public auth classes, built on first use (PEP 562) so importing this module never needs
# httpx: RelayGuardAuth for httpx (anthropic < 1.0 and plain httpx code), RelayGuardAuth2 for
# httpx2 (anthropic >= 1.0).
_AUTH_CLASSES = {"RelayGuardAuth": "httpx", "RelayGuardAuth2": "httpx2"}


def __getattr__(name):
    if name in _AUTH_CLASSES:
        cls = _make_auth_class(_AUTH_CLASSES[name])
        cls.__name__ = cls.__qualname__ = name
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------------------------
# CLI


def _read_text_file(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    with open(path, encoding="utf-8") as f:
        return f.read()


def _read_secret(args) -> str:
    """--secret-file, then --secret, then $RELAY_GUARD_SECRET. Files and the environment keep
    the secret out of shell history and `ps`."""
    if args.secret_file is not None:
        # Only the line ending goes: a secret file written by `echo` ends in a newline.
        secret = _read_text_file(args.secret_file).rstrip("\r\n")
    elif args.secret is not None:
        secret = args.secret
    else:
        secret = os.environ.get(SECRET_ENV)
    if not secret:
        raise SystemExit(f"error: no secret: pass --secret-file, --secret or set ${SECRET_ENV}")
    return secret


def _read_body(args) -> bytes:
    if args.body_file is not None:
        if args.body_file == "-":
            return sys.stdin.buffer.read()
        with open(args.body_file, "rb") as f:
            return f.read()
    if args.body is not None:
        return args.body.encode("utf-8")
    return b""


def _cmd_sign(args) -> None:
    headers = signed_headers(args.key_id, _read_secret(args), args.method, args.target,
                             _read_body(args), args.timestamp, args.nonce)
    lines = [f"{name}: {value}" for name, value in headers.items()]
    if args.curl:
        print(" ".join(f"-H {shlex.quote(line)}" for line in lines))
    else:
        print("\n".join(lines))


def _cmd_mint(args) -> None:
    print(mint_token(args.key_id, _read_secret(args), args.ttl))


def _cmd_hash_token(args) -> None:
    token = sys.stdin.readline().rstrip("\r\n") if args.token == "-" else args.token
    print(token_sha256(token))


def _cmd_new_key(args) -> None:
    secret, static_token = new_secret(), new_static_token()
    entry = keys_file_entry(args.id, secret, static_token)
    print(f"secret: {secret}")
    print(f"static token: {static_token}")
    print("keys file entry:")
    print(json.dumps(entry))


def _add_secret_options(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--secret-file", metavar="F",
                       help="file holding the secret ('-' for stdin); trailing newline ignored")
    group.add_argument("--secret", metavar="S",
                       help=f"the secret itself (visible to ps and shell history; "
                            f"prefer --secret-file or ${SECRET_ENV})")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relay_guard_client.py",
        description="relay-guard client: sign requests, mint and hash tokens, create keys. "
                    f"Without --secret-file or --secret the secret comes from ${SECRET_ENV}.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sign", help="print the X-Key-Id/X-Timestamp/X-Nonce/X-Signature headers")
    p.add_argument("--key-id", required=True)
    _add_secret_options(p)
    p.add_argument("--method", required=True, help="request method, as it will be sent")
    p.add_argument("--target", required=True,
                   help="request target exactly as it will be sent: path and query")
    body = p.add_mutually_exclusive_group()
    body.add_argument("--body-file", metavar="F", help="file with the exact body bytes ('-' for stdin)")
    body.add_argument("--body", metavar="STR", help="body as a string (UTF-8)")
    p.add_argument("--timestamp", help="Unix seconds (default: now)")
    p.add_argument("--nonce", help="nonce (default: fresh random)")
    p.add_argument("--curl", action="store_true",
                   help="print shell-quoted curl -H arguments instead of header lines")
    p.set_defaults(func=_cmd_sign)

    p = sub.add_parser("mint", help="print a short-lived rgt1 token (e.g. for apiKeyHelper)")
    p.add_argument("--key-id", required=True)
    _add_secret_options(p)
    p.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    p.set_defaults(func=_cmd_mint)

    p = sub.add_parser("hash-token", help="print a static token's token_sha256")
    p.add_argument("token", help="the token ('-' reads one line from stdin)")
    p.set_defaults(func=_cmd_hash_token)

    p = sub.add_parser("new-key", help="create a secret, a static token and their keys-file entry")
    p.add_argument("--id", required=True, help="key id: 1-64 of [A-Za-z0-9._-]")
    p.set_defaults(func=_cmd_new_key)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        args.func(args)
    except (RelayGuardError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
