"""Tests for scripts/relay_guard_client.py against t/data/vectors.json, its CLI, and its httpx auth.

Stdlib unittest, so any of these work from the repo root:
    python3 scripts/test_client.py
    python3 -m unittest discover -s scripts -p 'test_*.py'
    python3 -m pytest scripts/test_client.py
The httpx, httpx2 and anthropic tests are skipped when those packages are not importable.
"""

import base64
import hashlib
import hmac
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
VECTORS_PATH = HERE.parent / "t" / "data" / "vectors.json"
CLI = HERE / "relay_guard_client.py"
sys.path.insert(0, str(HERE))

import relay_guard_client as rg  # noqa: E402


def installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def load_vectors():
    with open(VECTORS_PATH, encoding="utf-8") as f:
        return json.load(f)


VECTORS = load_vectors()


def body_of(vector) -> bytes:
    return base64.b64decode(vector["body_b64"], validate=True)


def verify_vector(vector) -> None:
    rg.verify_signature(vector["secret"], vector["key_id"], vector["timestamp"], vector["nonce"],
                        vector["method"], vector["target"], body_of(vector), vector["signature"])


class SignatureVectors(unittest.TestCase):
    def test_valid(self):
        for v in VECTORS["signature"]["valid"]:
            with self.subTest(v["name"]):
                body = body_of(v)
                self.assertEqual(hashlib.sha256(body).hexdigest(), v["body_sha256"])
                self.assertEqual(
                    rg.string_to_sign(v["key_id"], v["timestamp"], v["nonce"], v["method"],
                                      v["target"], body),
                    v["string_to_sign"])
                self.assertEqual(
                    rg.sign(v["secret"], v["key_id"], v["timestamp"], v["nonce"], v["method"],
                            v["target"], body),
                    v["signature"].lower())
                verify_vector(v)

    def test_invalid(self):
        for v in VECTORS["signature"]["invalid"]:
            with self.subTest(v["name"]):
                with self.assertRaises(rg.RelayGuardError) as cm:
                    verify_vector(v)
                self.assertEqual(cm.exception.code, v["expect"], cm.exception.detail)

    def test_malformed_cases_have_one_bad_field(self):
        # A second bad field would not change the verdict, but it would hide an implementation
        # that skips the check the case is named after.
        checks = {
            "key_id": rg.KEY_ID_RE, "nonce": rg.NONCE_RE, "timestamp": rg.DIGITS_RE,
            "signature": rg.SIGNATURE_RE,
        }
        for v in VECTORS["signature"]["invalid"]:
            bad = [field for field, pattern in checks.items() if not pattern.fullmatch(v[field])]
            with self.subTest(v["name"]):
                self.assertEqual(len(bad), 1 if v["expect"] == "MALFORMED" else 0, bad)

    def test_required_cases_present(self):
        names = {v["name"] for v in VECTORS["signature"]["valid"]}
        self.assertIn("uppercase-hex-signature-accepted", names)
        upper = [v for v in VECTORS["signature"]["valid"] if v["signature"] != v["signature"].lower()]
        self.assertTrue(upper)
        self.assertTrue(any(len(v["key_id"]) == 64 for v in VECTORS["signature"]["valid"]))
        self.assertEqual({16, 128} & {len(v["nonce"]) for v in VECTORS["signature"]["valid"]},
                         {16, 128})
        self.assertTrue(any(body_of(v) == bytes(range(256)) for v in VECTORS["signature"]["valid"]))


def token_faults(v) -> set:
    """Every check a token fails, evaluated independently of check order."""
    try:
        key_id, expiry, mac = rg.parse_token(v["token"])
    except rg.RelayGuardError:
        return {"MALFORMED"}
    faults = set()
    if key_id != v["key_id"]:
        faults.add("UNKNOWN_KEY")  # no secret to check the MAC with
    else:
        payload = v["token"][:-len(mac) - 1]
        want = hmac.new(v["secret"].encode(), payload.encode(), hashlib.sha256).hexdigest()
        if want != mac:
            faults.add("BAD_TOKEN")
    if v["now"] > expiry:
        faults.add("EXPIRED")
    if expiry - v["now"] > v["max_ttl"]:
        faults.add("TTL_TOO_LONG")
    return faults


class TokenVectors(unittest.TestCase):
    def test_valid(self):
        for v in VECTORS["token"]["valid"]:
            with self.subTest(v["name"]):
                minted = rg.mint_token(v["key_id"], v["secret"], ttl_seconds=v["expiry"] - v["now"],
                                       now=v["now"])
                self.assertEqual(minted, v["token"])
                self.assertEqual(
                    rg.verify_token(v["token"], {v["key_id"]: [v["secret"]]}, v["now"], v["max_ttl"]),
                    v["key_id"])
                self.assertEqual(token_faults(v), set())

    def test_invalid(self):
        for v in VECTORS["token"]["invalid"]:
            with self.subTest(v["name"]):
                with self.assertRaises(rg.RelayGuardError) as cm:
                    rg.verify_token(v["token"], {v["key_id"]: [v["secret"]]}, v["now"], v["max_ttl"])
                self.assertEqual(cm.exception.code, v["expect"], cm.exception.detail)
                self.assertEqual(token_faults(v), {v["expect"]}, "case must fail exactly one check")

    def test_previous_secret_still_verifies(self):
        v = VECTORS["token"]["valid"][0]
        keys = {v["key_id"]: ["a-newer-secret", v["secret"]]}
        self.assertEqual(rg.verify_token(v["token"], keys, v["now"], v["max_ttl"]), v["key_id"])

    def test_mac_covers_expiry_as_written(self):
        # A leading zero changes the signed text, so the same MAC must not carry over.
        secret, keys = "s", {"alice": ["s"]}
        token = rg.mint_token("alice", secret, 60, now=1000)
        self.assertEqual(rg.verify_token(token, keys, 1000, 60), "alice")
        _, expiry, mac = rg.parse_token(token)
        with self.assertRaises(rg.RelayGuardError) as cm:
            rg.verify_token(f"rgt1.alice.0{expiry}.{mac}", keys, 1000, 60)
        self.assertEqual(cm.exception.code, "BAD_TOKEN")

    def test_static_tokens(self):
        for v in VECTORS["static_token"]:
            with self.subTest(v["id"]):
                self.assertEqual(rg.token_sha256(v["token"]), v["token_sha256"])


class Helpers(unittest.TestCase):
    def test_signed_headers_fresh_nonce_and_timestamp(self):
        a = rg.signed_headers("alice", "s", "GET", "/v1/models")
        b = rg.signed_headers("alice", "s", "GET", "/v1/models")
        self.assertNotEqual(a["X-Nonce"], b["X-Nonce"])
        self.assertRegex(a["X-Timestamp"], r"^[0-9]+$")
        rg.verify_signature("s", "alice", a["X-Timestamp"], a["X-Nonce"], "GET", "/v1/models",
                            b"", a["X-Signature"])

    def test_signed_headers_matches_vector(self):
        v = VECTORS["signature"]["valid"][1]
        h = rg.signed_headers(v["key_id"], v["secret"], v["method"], v["target"], body_of(v),
                              timestamp=int(v["timestamp"]), nonce=v["nonce"])
        self.assertEqual(h, {"X-Key-Id": v["key_id"], "X-Timestamp": v["timestamp"],
                             "X-Nonce": v["nonce"], "X-Signature": v["signature"].lower()})

    def test_new_nonce_charset(self):
        for _ in range(200):
            self.assertRegex(rg.new_nonce(), rg.NONCE_RE)

    def test_newline_cannot_enter_string_to_sign(self):
        with self.assertRaises(ValueError):
            rg.string_to_sign("alice", 1, "n" * 16, "GET", "/x\nPOST", b"")

    def test_module_import_does_not_need_httpx(self):
        code = ("import sys; sys.path.insert(0, sys.argv[1]); import relay_guard_client; "
                "assert not {'httpx', 'httpx2'} & set(sys.modules)")
        subprocess.run([sys.executable, "-c", code, str(HERE)], check=True)


def run_cli(*args, stdin=None, env=None):
    full_env = {k: v for k, v in os.environ.items() if k != rg.SECRET_ENV}
    full_env.update(env or {})
    return subprocess.run([sys.executable, str(CLI), *args], input=stdin, capture_output=True,
                          check=True, env=full_env).stdout


class Cli(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)

    def write(self, name: str, data: bytes) -> str:
        path = os.path.join(self.tmp.name, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def sign_args(self, v):
        return ["sign", "--key-id", v["key_id"], "--method", v["method"], "--target", v["target"],
                "--body-file", self.write("body", body_of(v)),
                "--timestamp", v["timestamp"], "--nonce", v["nonce"]]

    def expected_lines(self, v):
        return [f"X-Key-Id: {v['key_id']}", f"X-Timestamp: {v['timestamp']}",
                f"X-Nonce: {v['nonce']}", f"X-Signature: {v['signature'].lower()}"]

    def test_sign_every_valid_vector_secret_file(self):
        for v in VECTORS["signature"]["valid"]:
            with self.subTest(v["name"]):
                # Trailing newline as `echo` would leave it: must not become part of the secret.
                secret_file = self.write("secret", (v["secret"] + "\n").encode("utf-8"))
                out = run_cli(*self.sign_args(v), "--secret-file", secret_file)
                self.assertEqual(out.decode().splitlines(), self.expected_lines(v))

    def test_sign_secret_from_env_and_flag(self):
        v = VECTORS["signature"]["valid"][5]  # non-ASCII secret
        want = self.expected_lines(v)
        env_out = run_cli(*self.sign_args(v), env={rg.SECRET_ENV: v["secret"]})
        flag_out = run_cli(*self.sign_args(v), "--secret", v["secret"])
        self.assertEqual(env_out.decode().splitlines(), want)
        self.assertEqual(flag_out.decode().splitlines(), want)

    def test_sign_body_string_and_curl_format(self):
        v = VECTORS["signature"]["valid"][2]
        out = run_cli("sign", "--key-id", v["key_id"], "--secret", v["secret"], "--method",
                      v["method"], "--target", v["target"], "--body", body_of(v).decode(),
                      "--timestamp", v["timestamp"], "--nonce", v["nonce"], "--curl")
        self.assertEqual(out.decode().strip(),
                         " ".join(f"-H '{line}'" for line in self.expected_lines(v)))

    def test_sign_without_secret_fails(self):
        with self.assertRaises(subprocess.CalledProcessError):
            run_cli("sign", "--key-id", "alice", "--method", "GET", "--target", "/v1/models")

    def test_sign_rejects_bad_nonce(self):
        with self.assertRaises(subprocess.CalledProcessError):
            run_cli("sign", "--key-id", "alice", "--secret", "s", "--method", "GET",
                    "--target", "/", "--nonce", "short")

    def test_mint_round_trip(self):
        secret = "clé-секрет-🔑-秘密"
        token = run_cli("mint", "--key-id", "team.alice", "--secret-file",
                        self.write("secret", secret.encode()), "--ttl", "600").decode()
        self.assertTrue(token.endswith("\n") and token.count("\n") == 1, "token only, one line")
        _, expiry, _ = rg.parse_token(token.strip())
        self.assertEqual(rg.verify_token(token.strip(), {"team.alice": [secret]}, expiry - 600, 600),
                         "team.alice")

    def test_hash_token(self):
        for v in VECTORS["static_token"]:
            with self.subTest(v["id"]):
                self.assertEqual(run_cli("hash-token", v["token"]).decode().strip(), v["token_sha256"])
                self.assertEqual(run_cli("hash-token", "-", stdin=(v["token"] + "\n").encode())
                                 .decode().strip(), v["token_sha256"])

    def test_new_key(self):
        lines = run_cli("new-key", "--id", "alice").decode().splitlines()
        fields = dict(line.split(": ", 1) for line in lines[:2])
        entry = json.loads(lines[-1])
        self.assertEqual(entry["id"], "alice")
        self.assertEqual(entry["secrets"], [fields["secret"]])
        self.assertEqual(entry["token_sha256"], [rg.token_sha256(fields["static token"])])
        self.assertFalse(fields["static token"].startswith(rg.TOKEN_PREFIX))


class RecordingTransport:
    """MockTransport handler that keeps every request and answers from a script."""

    def __init__(self, responses):
        self.requests = []
        self.responses = list(responses)

    def __call__(self, request):
        request.read()
        self.requests.append(request)
        return self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]


def assert_signed(test, request, key_id, secret):
    """Checks a request the way the server would see it: target = raw_path, body = bytes sent."""
    h = request.headers
    test.assertEqual(h["x-key-id"], key_id)
    test.assertRegex(h["x-nonce"], rg.NONCE_RE)
    test.assertRegex(h["x-signature"], r"^[0-9a-f]{64}$")
    rg.verify_signature(secret, key_id, h["x-timestamp"], h["x-nonce"], request.method,
                        request.url.raw_path.decode("ascii"), request.content, h["x-signature"])


class AuthTests:
    """RelayGuardAuth* through a real client and a MockTransport; `library` picks httpx or httpx2."""

    library = ""
    auth_class = ""

    def http(self):
        return importlib.import_module(self.library)

    def auth(self):
        return getattr(rg, self.auth_class)("alice", "s3cret")

    def client(self, handler):
        http = self.http()
        return http.Client(transport=http.MockTransport(handler), auth=self.auth())

    def test_auth_is_an_auth_of_its_library(self):
        self.assertIsInstance(self.auth(), self.http().Auth)

    def test_signs_raw_path_with_query_and_exact_body(self):
        rec = RecordingTransport([self.http().Response(200)])
        body = bytes(range(256))
        with self.client(rec) as c:
            c.post("http://relay.test/v1/messages?a=1&a=2&b=%2F", content=body)
        (req,) = rec.requests
        self.assertEqual(req.url.raw_path, b"/v1/messages?a=1&a=2&b=%2F")
        self.assertEqual(req.content, body)
        assert_signed(self, req, "alice", "s3cret")
        want = rg.sign("s3cret", "alice", req.headers["x-timestamp"], req.headers["x-nonce"],
                       "POST", "/v1/messages?a=1&a=2&b=%2F", body)
        self.assertEqual(req.headers["x-signature"], want)

    def test_streamed_request_body_is_signed(self):
        rec = RecordingTransport([self.http().Response(200)])
        with self.client(rec) as c:
            c.post("http://relay.test/v1/messages", content=iter([b'{"a":', b'1}']))
        self.assertEqual(rec.requests[0].content, b'{"a":1}')
        assert_signed(self, rec.requests[0], "alice", "s3cret")

    def test_each_send_gets_fresh_nonce(self):
        rec = RecordingTransport([self.http().Response(200)])
        with self.client(rec) as c:
            c.get("http://relay.test/v1/models")
            c.get("http://relay.test/v1/models")
        self.assertEqual(len({r.headers["x-nonce"] for r in rec.requests}), 2)
        for r in rec.requests:
            assert_signed(self, r, "alice", "s3cret")

    def test_async_client(self):
        import asyncio
        http = self.http()
        rec = RecordingTransport([http.Response(200)])

        async def go():
            async with http.AsyncClient(transport=http.MockTransport(rec), auth=self.auth()) as c:
                await c.post("http://relay.test/v1/messages?beta=true", content=b'{"x":1}')

        asyncio.run(go())
        assert_signed(self, rec.requests[0], "alice", "s3cret")


@unittest.skipUnless(installed("httpx"), "httpx not installed")
class HttpxAuth(AuthTests, unittest.TestCase):
    library, auth_class = "httpx", "RelayGuardAuth"


@unittest.skipUnless(installed("httpx2"), "httpx2 not installed")
class Httpx2Auth(AuthTests, unittest.TestCase):
    library, auth_class = "httpx2", "RelayGuardAuth2"


SSE_BODY = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":"message",'
    b'"role":"assistant","model":"m","content":[],"stop_reason":null,"stop_sequence":null,'
    b'"usage":{"input_tokens":1,"output_tokens":0}}}\n\n'
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
    b'"content_block":{"type":"text","text":""}}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"hi"}}\n\n'
    b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn",'
    b'"stop_sequence":null},"usage":{"output_tokens":1}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)


def sdk_http_library() -> str:
    """anthropic >= 1.0 is built on httpx2, older releases on httpx."""
    import anthropic
    return "httpx" if int(anthropic.__version__.split(".")[0]) < 1 else "httpx2"


@unittest.skipUnless(installed("anthropic"), "anthropic SDK not installed")
class AnthropicSdk(unittest.TestCase):
    def setUp(self):
        self.library = sdk_http_library()
        self.auth_class = {"httpx": "RelayGuardAuth", "httpx2": "RelayGuardAuth2"}[self.library]

    def http(self):
        return importlib.import_module(self.library)

    def sdk(self, handler):
        import anthropic
        http = self.http()
        client = http.Client(transport=http.MockTransport(handler),
                             auth=getattr(rg, self.auth_class)("alice", "s3cret"))
        return anthropic.Anthropic(base_url="http://relay.test", api_key="unused",
                                   http_client=client, max_retries=1)

    def test_retry_is_signed_afresh(self):
        http = self.http()
        overloaded = http.Response(529, json={"type": "error", "error": {
            "type": "overloaded_error", "message": "x"}}, headers={"retry-after-ms": "1"})
        ok = http.Response(200, json={"data": [], "has_more": False, "first_id": None,
                                       "last_id": None})
        rec = RecordingTransport([overloaded, ok])
        self.sdk(rec).models.list()
        self.assertEqual(len(rec.requests), 2)
        self.assertNotEqual(rec.requests[0].headers["x-nonce"], rec.requests[1].headers["x-nonce"])
        for r in rec.requests:
            assert_signed(self, r, "alice", "s3cret")

    def test_streaming_message(self):
        rec = RecordingTransport([self.http().Response(
            200, content=SSE_BODY, headers={"content-type": "text/event-stream"})])
        with self.sdk(rec).messages.stream(model="m", max_tokens=8,
                                           messages=[{"role": "user", "content": "héllo"}]) as s:
            text = "".join(s.text_stream)
        self.assertEqual(text, "hi")
        req = rec.requests[0]
        self.assertEqual(req.method, "POST")
        self.assertTrue(req.url.raw_path.startswith(b"/v1/messages"))
        assert_signed(self, req, "alice", "s3cret")


if __name__ == "__main__":
    unittest.main()
