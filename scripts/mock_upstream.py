#!/usr/bin/env python3
"""Loopback stand-in for the Anthropic API, for relay-guard tests and the offline demo.

Stdlib only. It answers the endpoints the relay forwards (/v1/messages, streaming
or not, count_tokens, models), can be told per request to fail, stall, cut or
pace an SSE stream, echoes WebSocket frames, and records every request it sees
(headers exactly as received, body hashed) so tests can check what the relay
actually sent upstream. See --help and the report in the commit for details.

Control headers (all optional, sent by the test client through the relay):
  x-mock-status: N        answer N in Anthropic's error shape (N >= 400)
  x-mock-delay-ms: N      wait N ms before sending response headers
  x-mock-inflight: NAME   count this request under NAME (1..256 printable ASCII) from its
                          arrival until the mock starts to answer (after x-mock-delay-ms), so
                          "now" never counts a request the relay may already have finished;
                          GET /__mock/inflight reports {NAME: {"now": N, "max": N, "total": N}}
                          (never reset: use a fresh NAME per test): the concurrency the
                          upstream really got, never more
  x-mock-sse-gap-ms: N    pause between SSE events (default --sse-gap-ms)
  x-mock-sse-events: N    number of content_block_delta events (default 5)
  x-mock-sse-cut: N       drop the connection after N deltas, no message_stop
  x-mock-sse-error: 1     send an `event: error` mid-stream and end
  x-mock-sse-error-type: T  its error.type (default overloaded_error; 1..256 printable ASCII)
  x-mock-usage: JSON      the usage, verbatim (duplicate keys and all): the JSON body's
                          `usage`, or a stream's message_start.message.usage; `none` omits the
                          key. Any JSON value up to 32 KiB that Python can parse (no NaN)
  x-mock-usage-delta: JSON  a stream's message_delta.usage, verbatim; `none` omits the key
  x-mock-model: NAME      the model to report (default: the request's); 1..1024 printable ASCII
  x-mock-sse-split: N     write the SSE bytes in N-byte pieces (1..1048576), one flushed chunk
                          each, across event boundaries; a pause (x-mock-sse-gap-ms) or the
                          end sends the part piece first, so no piece waits
  x-mock-text-bytes: N    a JSON answer's text is N bytes (1..67108864) of the mock text
                          repeated, its default output_tokens the number of words in it
  x-mock-pad-bytes: N     a JSON answer ends with a root "mock_padding" string of N bytes
                          (1..67108864) after its usage: usage in the middle of a big body
  x-mock-raw-body: B64    answer 200 with exactly these bytes (base64, <= 1 MiB decoded) as an
                          application/json body, whatever the request asked
  x-mock-raw-sse: B64     answer 200 with exactly these bytes as a text/event-stream body
                          (x-mock-sse-split applies; with x-mock-sse-cut, any N, the
                          connection drops after them instead); for hostile streams
Without x-mock-usage the usage is deterministic and in Anthropic's current shape:
input_tokens (about 4 prompt characters each), cache_creation_input_tokens 0,
cache_read_input_tokens 0, cache_creation {ephemeral_5m_input_tokens 0,
ephemeral_1h_input_tokens 0}, output_tokens, service_tier; a stream's message_start carries
that with output_tokens 1 and message_delta.usage only {"output_tokens": <deltas>}.
A malformed x-mock-* header of the usage family answers 400 in Anthropic's error shape,
naming the header.
"""
import argparse, base64, binascii, hashlib, http.server, itertools, json, os, re, signal
import socket, socketserver, ssl, struct, sys, threading, time
from datetime import datetime, timedelta, timezone

READ_CHUNK = 256 * 1024               # body read size; bodies are hashed, never held whole
PARSE_LIMIT = 32 * 1024 * 1024        # keep at most this much of a body for JSON parsing
WS_MAX_MESSAGE = 64 * 1024 * 1024     # refuse larger WebSocket messages (close 1009)
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MOCK_TEXT = "Hello from the relay-guard mock upstream."
DEFAULT_MODEL = "claude-sonnet-4-5"
MODELS = [  # (id, display_name, created_at), newest first as the real API lists them
    ("claude-sonnet-4-5", "Claude Sonnet 4.5", "2025-09-29T00:00:00Z"),
    ("claude-haiku-4-5", "Claude Haiku 4.5", "2025-10-01T00:00:00Z"),
    ("claude-opus-4-1", "Claude Opus 4.1", "2025-08-05T00:00:00Z"),
]
ERRORS = {  # status -> (error.type, default message); other 4xx/5xx fall back below
    400: ("invalid_request_error", "Invalid request"),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "Not found"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of requests has exceeded your rate limit."),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}
RATELIMIT_HEADERS = [  # (name, value); "reset" values are filled in per response
    ("anthropic-ratelimit-requests-limit", "1000"), ("anthropic-ratelimit-requests-remaining", "999"),
    ("anthropic-ratelimit-requests-reset", None), ("anthropic-ratelimit-tokens-limit", "100000"),
    ("anthropic-ratelimit-tokens-remaining", "99000"), ("anthropic-ratelimit-tokens-reset", None),
]
API_METHODS = {"/v1/messages": "POST", "/v1/messages/count_tokens": "POST",
               "/v1/models": "GET", "/v1/models/": "GET", "/ws": "GET"}
USAGE_HEADER_MAX = 32 * 1024         # x-mock-usage / x-mock-usage-delta, characters
MODEL_MAX = 1024                      # x-mock-model
ERROR_TYPE_MAX = 256                  # x-mock-sse-error-type
SPLIT_MAX = 1024 * 1024               # x-mock-sse-split
RAW_MAX = 1024 * 1024                 # x-mock-raw-body / x-mock-raw-sse, decoded bytes
TEXT_MAX = 64 * 1024 * 1024           # x-mock-text-bytes
INFLIGHT_NAME_MAX = 256               # x-mock-inflight
INFLIGHT_GROUPS_MAX = 10000           # names tracked at most (a bound, not a limit tests reach)
PRINTABLE = re.compile(r"[\x20-\x7e]+\Z")
# Stands for a verbatim JSON text in an object until dumps_verbatim swaps it in. The random
# part keeps a request's own strings (the echoed model) from ever matching it.
VERBATIM = "\x01verbatim-%s\x01" % os.urandom(8).hex()
OMIT = object()                       # a usage header's `none`: leave the key out
REASONS = {529: "Overloaded"}         # http.server has no reason phrase for 529
RETRY_AFTER_STATUSES = (429, 529)


def error_body(status, message=None):
    """Anthropic's error envelope for an HTTP status."""
    fallback = ("invalid_request_error", "Mock error") if status < 500 else ("api_error", "Mock error")
    etype, default = ERRORS.get(status, fallback)
    return {"type": "error", "error": {"type": etype, "message": message or default}}


def dumps(obj):
    return json.dumps(obj, separators=(",", ":"))


def dumps_verbatim(obj, raw):
    """dumps(obj) with the VERBATIM placeholder replaced by the JSON text raw (if any)."""
    text = dumps(obj)
    return text if raw is None else text.replace(dumps(VERBATIM), raw, 1)


def default_usage(input_tokens, output_tokens):
    """Anthropic's current usage object for a request that used no cache."""
    return {"input_tokens": input_tokens, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            "output_tokens": output_tokens, "service_tier": "standard"}


class ControlError(Exception):
    """A malformed control header; the message names it and is sent back in a 400."""


def _reject_constant(name):
    raise ValueError("%s is not JSON" % name)


def usage_control(headers, name):
    """A usage header: None when absent, OMIT for `none`, else its exact (valid JSON) text."""
    value = headers.get(name)
    if value is None:
        return None
    value = value.strip()
    if value == "none":
        return OMIT
    if not value or len(value) > USAGE_HEADER_MAX:
        raise ControlError("%s: want JSON of 1..%d characters" % (name, USAGE_HEADER_MAX))
    try:
        json.loads(value, parse_constant=_reject_constant)
    except RecursionError:
        raise ControlError("%s: nested too deeply for the mock to check (use x-mock-raw-body"
                           " or x-mock-raw-sse)" % name) from None
    except ValueError as e:
        raise ControlError("%s: not valid JSON: %s" % (name, e)) from None
    return value


def text_control(headers, name, limit):
    """A printable-ASCII header of 1..limit characters, or None when absent."""
    value = headers.get(name)
    if value is None:
        return None
    value = value.strip()
    if len(value) > limit or not PRINTABLE.match(value):
        raise ControlError("%s: want 1..%d printable ASCII characters" % (name, limit))
    return value


def base64_control(headers, name):
    """The decoded bytes of a base64 header, or None when absent."""
    value = headers.get(name)
    if value is None:
        return None
    value = value.strip()
    if len(value) > (RAW_MAX + 2) // 3 * 4:
        raise ControlError("%s: more than %d bytes" % (name, RAW_MAX))
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ControlError("%s: not base64: %s" % (name, e)) from None


def count_control(headers, name, limit):
    """A whole number 1..limit, or 0 when absent."""
    value = headers.get(name)
    if value is None:
        return 0
    value = value.strip()
    if not re.fullmatch(r"[0-9]{1,9}", value) or not 1 <= int(value) <= limit:
        raise ControlError("%s: want a whole number 1..%d" % (name, limit))
    return int(value)


def mock_text(n):
    """MOCK_TEXT repeated to exactly n characters (MOCK_TEXT itself for 0)."""
    if not n:
        return MOCK_TEXT
    unit = MOCK_TEXT + " "
    return (unit * (n // len(unit) + 1))[:n]


class UsageControls:
    """The usage family of control headers of one request, checked."""

    def __init__(self, headers):
        self.usage = usage_control(headers, "x-mock-usage")
        self.usage_delta = usage_control(headers, "x-mock-usage-delta")
        self.model = text_control(headers, "x-mock-model", MODEL_MAX)
        self.error_type = text_control(headers, "x-mock-sse-error-type", ERROR_TYPE_MAX)
        self.split = count_control(headers, "x-mock-sse-split", SPLIT_MAX)
        self.text_bytes = count_control(headers, "x-mock-text-bytes", TEXT_MAX)
        self.pad_bytes = count_control(headers, "x-mock-pad-bytes", TEXT_MAX)
        self.raw_body = base64_control(headers, "x-mock-raw-body")
        self.raw_sse = base64_control(headers, "x-mock-raw-sse")
        if self.raw_body is not None and self.raw_sse is not None:
            raise ControlError("x-mock-raw-body and x-mock-raw-sse exclude each other")


def utc_iso(delta_s=0):
    t = datetime.now(timezone.utc) + timedelta(seconds=delta_s)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def raw_target(raw_requestline):
    """The request-target exactly as sent (http.server rewrites a leading '//')."""
    words = raw_requestline.decode("latin-1").rstrip("\r\n").split()
    return words[1] if len(words) >= 2 else ""


def route_of(target):
    """Path part of the target, tolerating absolute-form (http://host/path)."""
    path = target.split("?", 1)[0]
    if "://" in path:
        path = "/" + path.split("://", 1)[1].partition("/")[2]
    return path


def estimate_tokens(req):
    """Deterministic rough token count (~4 chars per token) of the prompt parts."""
    text = dumps(req.get("messages", "")) + dumps(req.get("system", ""))
    return max(1, len(text) // 4)


def delta_texts(n):
    """Split MOCK_TEXT into n pieces that concatenate back to it (cycling if n is large)."""
    words = MOCK_TEXT.split(" ")
    if n <= len(words):
        bounds = [round(i * len(words) / n) for i in range(n + 1)]
        groups = [" ".join(words[bounds[i]:bounds[i + 1]]) for i in range(n)]
        return [g if i == 0 else " " + g for i, g in enumerate(groups)]
    return [(" " if i else "") + words[i % len(words)] for i in range(n)]


class Recorder:
    """Thread-safe log of received requests and accepted connections."""

    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        self.requests = []
        self.connections = 0
        # Ids stay unique for the process lifetime (not reset) so a keep-alive
        # connection opened before a reset can never share an id with a new one.
        self._conn_ids = itertools.count(1)
        self._req_ids = itertools.count(1)

    def new_connection(self):
        with self.lock:
            self.connections += 1
            return next(self._conn_ids)

    def next_request_id(self):
        with self.lock:
            return "req_mock_%d" % next(self._req_ids)

    def add(self, record):
        line = dumps(record) + "\n"
        with self.lock:
            self.requests.append(record)
            if self.path:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(line)

    def snapshot(self):
        with self.lock:
            ids = sorted({r["connection"] for r in self.requests})
            return {"requests": list(self.requests), "connections": self.connections,
                    "connection_ids": ids}

    def reset(self):
        with self.lock:
            self.requests.clear()
            self.connections = 0


class InFlight:
    """Requests being handled per x-mock-inflight name: now, the most at once, and the total."""

    def __init__(self):
        self.lock = threading.Lock()
        self.groups = {}

    def enter(self, name):
        """Counts a request in; False when the name cannot be tracked (too many names)."""
        with self.lock:
            g = self.groups.get(name)
            if g is None:
                if len(self.groups) >= INFLIGHT_GROUPS_MAX:
                    return False
                g = self.groups[name] = {"now": 0, "max": 0, "total": 0}
            g["now"] += 1
            g["total"] += 1
            g["max"] = max(g["max"], g["now"])
            return True

    def leave(self, name):
        with self.lock:
            self.groups[name]["now"] -= 1

    def snapshot(self):
        with self.lock:
            return {k: dict(v) for k, v in self.groups.items()}


class BodyError(Exception):
    pass


class BodyReader:
    """Reads a Content-Length or chunked body, hashing as it goes and keeping only a prefix."""

    def __init__(self, rfile):
        self.rfile = rfile
        self.digest = hashlib.sha256()
        self.length = 0
        self.kept = bytearray()
        self.complete = False

    def read(self, headers):
        if "chunked" in headers.get("Transfer-Encoding", "").lower():
            self._read_chunked()
        else:
            cl = headers.get("Content-Length")
            if cl is not None:
                if not cl.strip().isdigit():
                    raise BodyError("invalid Content-Length")
                self._consume(int(cl))
        self.complete = True

    def _consume(self, n):
        while n > 0:
            data = self.rfile.read(min(n, READ_CHUNK))
            if not data:
                raise BodyError("connection closed before the body was complete")
            self.digest.update(data)
            self.length += len(data)
            n -= len(data)
            room = PARSE_LIMIT - len(self.kept)
            if room > 0:
                self.kept += data[:room]

    def _read_chunked(self):
        while True:
            line = self.rfile.readline(65537)
            if not line.endswith(b"\n"):
                raise BodyError("bad chunk-size line")
            size_txt = line.split(b";", 1)[0].strip()
            if not size_txt or any(c not in b"0123456789abcdefABCDEF" for c in size_txt):
                raise BodyError("bad chunk size")
            size = int(size_txt, 16)
            if size == 0:
                break
            self._consume(size)
            if self.rfile.readline(3) not in (b"\r\n", b"\n"):
                raise BodyError("missing CRLF after chunk data")
        while True:  # trailer section ends with an empty line
            line = self.rfile.readline(65537)
            if not line:
                raise BodyError("connection closed in chunked trailer")
            if line in (b"\r\n", b"\n"):
                break

    @property
    def truncated(self):
        return self.length > len(self.kept)


# ---------------------------------------------------------------- WebSocket

class WsClose(Exception):
    """Close the WebSocket with status code args[0]."""


def read_exact(rfile, n):
    data = rfile.read(n)
    if len(data) < n:
        raise EOFError
    return data


def unmask(payload, mask):
    n = len(payload)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def read_ws_frame(rfile):
    """One frame as (fin, opcode, payload); client frames must be masked (RFC 6455 5.1)."""
    b0, b1 = read_exact(rfile, 2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", read_exact(rfile, 2))[0]
    elif n == 127:
        n = struct.unpack("!Q", read_exact(rfile, 8))[0]
    if not b1 & 0x80:
        raise WsClose(1002)
    if n > WS_MAX_MESSAGE:
        raise WsClose(1009)
    mask = read_exact(rfile, 4)
    return bool(b0 & 0x80), b0 & 0x0F, unmask(read_exact(rfile, n), mask)


def ws_frame(opcode, payload):
    """An unmasked, final server frame."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


def ws_echo_loop(rfile, wfile):
    """Echo whole messages back (fragments reassembled); answer ping and close."""
    msg_op, parts, size = None, [], 0
    try:
        while True:
            fin, op, payload = read_ws_frame(rfile)
            if op == 0x8:          # close: echo the status code back, then stop
                wfile.write(ws_frame(0x8, payload[:2]))
                return
            if op == 0x9:
                wfile.write(ws_frame(0xA, payload))
                continue
            if op == 0xA:
                continue
            if op in (0x1, 0x2):
                if msg_op is not None:
                    raise WsClose(1002)
                msg_op, parts, size = op, [], 0
            elif op != 0x0 or msg_op is None:
                raise WsClose(1002)
            parts.append(payload)
            size += len(payload)
            if size > WS_MAX_MESSAGE:
                raise WsClose(1009)
            if fin:
                wfile.write(ws_frame(msg_op, b"".join(parts)))
                msg_op, parts, size = None, [], 0
    except WsClose as e:
        wfile.write(ws_frame(0x8, struct.pack("!H", e.args[0])))
    except EOFError:
        pass


# ---------------------------------------------------------------- HTTP

class MockHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "relay-guard-mock/1.0"
    timeout = 300                     # idle keep-alive / stalled client limit, seconds

    # --- connection lifecycle

    def setup(self):
        self.conn_id = self.server.recorder.new_connection()
        self.tls = self.server.ssl_context is not None
        if self.tls:
            # Handshake here, in the worker thread, so a slow or bogus client
            # cannot stall the accept loop.
            self.request.settimeout(30)
            self.request = self.server.ssl_context.wrap_socket(self.request, server_side=True)
        super().setup()

    def finish(self):
        try:
            super().finish()
        finally:
            if self.tls:  # the server only closes the plain socket, detached by wrap_socket
                self.request.close()

    def version_string(self):
        return self.server_version

    def log_message(self, fmt, *args):
        if not self.server.quiet:
            sys.stderr.write("mock[%d] %s\n" % (getattr(self, "conn_id", 0), fmt % args))

    # --- response helpers

    def int_header(self, name, default, lo, hi):
        """A numeric control header, or default when absent or unparsable."""
        try:
            return min(hi, max(lo, int(self.headers.get(name, "").strip())))
        except ValueError:
            return default

    def start_response(self, status, content_type, length=None, extra=()):
        self.send_response(status, REASONS.get(status))
        rid = getattr(self, "request_id", None) or self.server.recorder.next_request_id()
        self.send_header("request-id", rid)
        self.send_header("anthropic-organization-id", "00000000-0000-4000-8000-000000000000")
        for name, value in RATELIMIT_HEADERS:
            self.send_header(name, value or utc_iso(60))
        self.send_header("Content-Type", content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        for name, value in extra:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()

    def send_json(self, status, obj, extra=()):
        data = dumps(obj).encode()
        self.start_response(status, "application/json", len(data), extra)
        if getattr(self, "command", None) != "HEAD":
            self.wfile.write(data)

    def send_api_error(self, status, message=None):
        extra = [("retry-after", "7")] if status in RETRY_AFTER_STATUSES else []
        if status == 426:
            extra.append(("Sec-WebSocket-Version", "13"))
        self.send_json(status, error_body(status, message), extra)

    def send_error(self, code, message=None, explain=None):
        """Replaces http.server's HTML errors (bad request line, 501, 414, 431)."""
        self.close_connection = True
        if getattr(self, "request_version", "") == "HTTP/0.9":
            self.request_version = "HTTP/1.0"  # garbage request line: still send a status line
        try:
            self.send_api_error(code, message)
        except OSError:
            pass

    # --- request dispatch

    def do_GET(self):
        self.request_id = self.server.recorder.next_request_id()
        self.target = raw_target(self.raw_requestline)
        route = route_of(self.target)
        body = BodyReader(self.rfile)
        try:
            body.read(self.headers)
        except BodyError as e:
            self.close_connection = True
            if not route.startswith("/__mock/"):
                self.record(body)
            self.send_error(400, "malformed request body: %s" % e)
            return
        if route.startswith("/__mock/"):
            self.handle_control(route)
            return
        self.record(body)
        try:
            group = text_control(self.headers, "x-mock-inflight", INFLIGHT_NAME_MAX)
        except ControlError as e:
            self.send_api_error(400, str(e))
            return
        self.inflight_group = group if group is not None and self.server.inflight.enter(group) else None
        try:
            self.answer(route, body)
        finally:
            self.leave_inflight()

    def leave_inflight(self):
        """Ends this request's x-mock-inflight count (once)."""
        if getattr(self, "inflight_group", None) is not None:
            self.server.inflight.leave(self.inflight_group)
            self.inflight_group = None

    def answer(self, route, body):
        delay_ms = self.int_header("x-mock-delay-ms", 0, 0, 3_600_000)
        if delay_ms:
            time.sleep(delay_ms / 1000)
        # Before the first byte of the answer: once the relay has it, it may end the request.
        self.leave_inflight()
        forced = self.int_header("x-mock-status", 0, 0, 999)
        if forced >= 400:
            self.send_api_error(forced)
        elif self.headers.get("Upgrade", "").strip().lower() == "websocket":
            self.handle_websocket()
        else:
            self.handle_api(route, body)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = do_GET

    def record(self, body):
        self.server.recorder.add({
            "connection": self.conn_id, "tls": self.tls, "request_id": self.request_id,
            "time": time.time(), "method": self.command, "target": self.target,
            "http_version": self.request_version,
            "headers": [[k, v] for k, v in self.headers.items()],  # original case and order
            "body_len": body.length, "body_sha256": body.digest.hexdigest(),
            "body_complete": body.complete,
        })

    def handle_control(self, route):
        rec = self.server.recorder
        if route == "/__mock/record" and self.command in ("GET", "HEAD"):
            self.send_json(200, rec.snapshot())
        elif route == "/__mock/reset" and self.command == "POST":
            rec.reset()
            self.send_json(200, {"ok": True})
        elif route == "/__mock/inflight" and self.command in ("GET", "HEAD"):
            self.send_json(200, self.server.inflight.snapshot())
        elif route == "/__mock/health":
            self.send_json(200, {"ok": True})
        else:
            self.send_api_error(404)

    def handle_api(self, route, body):
        method = "GET" if self.command == "HEAD" else self.command
        want = API_METHODS.get("/v1/models/" if route.startswith("/v1/models/") else route)
        if want is None:
            self.send_api_error(404)
        elif route == "/ws":
            self.send_api_error(426, "this endpoint expects a WebSocket upgrade")
        elif method != want:
            self.send_api_error(405, "Method %s not allowed for %s" % (self.command, route))
        elif route == "/v1/models":
            self.send_json(200, models_list())
        elif route.startswith("/v1/models/"):
            model = model_object(route[len("/v1/models/"):])
            self.send_json(200, model) if model else self.send_api_error(404, "model not found")
        else:
            req = self.parse_json_body(body)
            if req is None:
                return
            if route == "/v1/messages/count_tokens":
                self.send_json(200, {"input_tokens": estimate_tokens(req)})
            else:
                self.handle_messages(req, body)

    def parse_json_body(self, body):
        """The body as a JSON object, {} if too big to parse, None after sending a 400."""
        if body.truncated:
            return {}  # huge upload tests care about the hash, not the content
        try:
            req = json.loads(body.kept.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            self.send_api_error(400, "Request body is not valid JSON: %s" % e)
            return None
        if not isinstance(req, dict):
            self.send_api_error(400, "Request body must be a JSON object")
            return None
        return req

    def handle_messages(self, req, body):
        try:
            ctl = UsageControls(self.headers)
        except ControlError as e:
            self.send_api_error(400, str(e))
            return
        if ctl.raw_body is not None:
            self.start_response(200, "application/json", len(ctl.raw_body))
            if self.command != "HEAD":
                self.wfile.write(ctl.raw_body)
            return
        model = req.get("model") if isinstance(req.get("model"), str) else DEFAULT_MODEL
        model = ctl.model or model
        input_tokens = estimate_tokens(req) if req else max(1, body.length // 4)
        msg_id = "msg_mock_%s" % self.request_id.rsplit("_", 1)[1].zfill(20)
        if req.get("stream") is True or ctl.raw_sse is not None:
            self.stream_messages(msg_id, model, input_tokens, ctl)
            return
        text = mock_text(ctl.text_bytes)
        msg = {"id": msg_id, "type": "message", "role": "assistant", "model": model,
               "content": [{"type": "text", "text": text}],
               "stop_reason": "end_turn", "stop_sequence": None}
        raw = put_usage(msg, "usage", ctl.usage, default_usage(input_tokens, len(text.split())))
        if ctl.pad_bytes:
            msg["mock_padding"] = "p" * ctl.pad_bytes
        data = dumps_verbatim(msg, raw).encode()
        self.start_response(200, "application/json", len(data))
        if self.command != "HEAD":
            self.wfile.write(data)

    # --- SSE

    def stream_messages(self, msg_id, model, input_tokens, ctl):
        gap = self.int_header("x-mock-sse-gap-ms", self.server.sse_gap_ms, 0, 3_600_000) / 1000
        n_deltas = self.int_header("x-mock-sse-events", 5, 0, 100_000)
        cut = self.int_header("x-mock-sse-cut", -1, 0, 100_000)
        error_at = n_deltas // 2 if self.headers.get("x-mock-sse-error", "").strip() == "1" else -1
        # An HTTP/1.0 client (nginx's default proxy_http_version) cannot take
        # chunked encoding: stream raw and delimit by closing the connection.
        self.chunked = self.request_version != "HTTP/1.0"
        self.close_connection = self.close_connection or not self.chunked
        self.split, self.pending = ctl.split, b""
        if self.split:  # each piece its own segment, as far as the kernel allows
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        extra = [("Cache-Control", "no-cache")] + [("Transfer-Encoding", "chunked")] * self.chunked
        self.start_response(200, "text/event-stream; charset=utf-8", extra=extra)
        if self.command == "HEAD":
            return
        if ctl.raw_sse is not None:
            self.write_sse(ctl.raw_sse)
            self.cut_connection() if cut >= 0 else self.end_stream()
            return
        events = sse_events(msg_id, model, input_tokens, delta_texts(n_deltas), ctl)
        deltas_sent = 0
        for i, (name, data) in enumerate(events):
            if i and gap:
                self.flush_pending()
                time.sleep(gap)
            if name == "content_block_delta" and deltas_sent == cut:
                self.cut_connection()
                return
            if name == "content_block_delta" and deltas_sent == error_at:
                error = error_body(529)
                if ctl.error_type:
                    error["error"] = {"type": ctl.error_type, "message": "Mock error event"}
                self.write_event("error", dumps(error))
                break
            self.write_event(name, data)
            deltas_sent += name == "content_block_delta"
            if name == "content_block_stop" and cut >= 0:  # cut beyond the deltas: still no message_stop
                self.cut_connection()
                return
        self.end_stream()

    def write_event(self, name, data):
        """data: the event's JSON text."""
        self.write_sse(("event: %s\ndata: %s\n\n" % (name, data)).encode())

    def write_sse(self, payload):
        """Stream bytes, as one chunk or, with x-mock-sse-split, as N-byte pieces."""
        if not self.split:
            self.write_chunk(payload)
            return
        self.pending += payload
        while len(self.pending) >= self.split:
            self.write_chunk(self.pending[:self.split])
            self.pending = self.pending[self.split:]

    def flush_pending(self):
        if self.split and self.pending:
            self.write_chunk(self.pending)
            self.pending = b""

    def write_chunk(self, payload):
        if self.chunked:
            payload = b"%x\r\n%s\r\n" % (len(payload), payload)
        self.wfile.write(payload)
        self.wfile.flush()

    def end_stream(self):
        self.flush_pending()
        if self.chunked:
            self.wfile.write(b"0\r\n\r\n")

    def cut_connection(self):
        """Drop the TCP connection mid-response (no final chunk, no TLS close_notify)."""
        self.close_connection = True
        try:
            self.flush_pending()
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # --- WebSocket

    def handle_websocket(self):
        key = self.headers.get("Sec-WebSocket-Key", "").strip()
        try:
            key_ok = len(base64.b64decode(key, validate=True)) == 16
        except ValueError:
            key_ok = False
        if self.command != "GET" or "upgrade" not in self.headers.get("Connection", "").lower() or not key_ok:
            self.send_api_error(400, "bad WebSocket handshake")
            return
        if self.headers.get("Sec-WebSocket-Version", "").strip() != "13":
            self.send_api_error(426, "unsupported WebSocket version")
            return
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        self.send_response(101)
        self.send_header("request-id", self.request_id)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        protocols = self.headers.get("Sec-WebSocket-Protocol")
        if protocols:
            self.send_header("Sec-WebSocket-Protocol", protocols.split(",")[0].strip())
        self.end_headers()
        self.close_connection = True  # the connection is the WebSocket's now
        ws_echo_loop(self.rfile, self.wfile)


def models_list():
    data = [model_object(mid) for mid, _, _ in MODELS]
    return {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}


def model_object(model_id):
    for mid, name, created in MODELS:
        if mid == model_id:
            return {"type": "model", "id": mid, "display_name": name, "created_at": created}
    return None


def put_usage(obj, key, control, default):
    """Sets obj[key] per a usage control header; returns the verbatim text to swap in, if any."""
    if control is OMIT:
        return None
    if control is None:
        obj[key] = default
        return None
    obj[key] = VERBATIM
    return control


def sse_events(msg_id, model, input_tokens, texts, ctl):
    """(event name, data JSON text) pairs of one Messages API stream, in Anthropic's order."""
    message = {"id": msg_id, "type": "message", "role": "assistant", "model": model,
               "content": [], "stop_reason": None, "stop_sequence": None}
    raw = put_usage(message, "usage", ctl.usage, default_usage(input_tokens, 1))
    yield "message_start", dumps_verbatim({"type": "message_start", "message": message}, raw)
    yield "content_block_start", dumps({"type": "content_block_start", "index": 0,
                                        "content_block": {"type": "text", "text": ""}})
    yield "ping", dumps({"type": "ping"})
    for text in texts:
        yield "content_block_delta", dumps({"type": "content_block_delta", "index": 0,
                                            "delta": {"type": "text_delta", "text": text}})
    yield "content_block_stop", dumps({"type": "content_block_stop", "index": 0})
    delta = {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}}
    raw = put_usage(delta, "usage", ctl.usage_delta, {"output_tokens": max(1, len(texts))})
    yield "message_delta", dumps_verbatim(delta, raw)
    yield "message_stop", dumps({"type": "message_stop"})


# ---------------------------------------------------------------- server

class MockServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, addr, recorder, ssl_context, sse_gap_ms, quiet):
        self.address_family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        self.recorder = recorder
        self.inflight = InFlight()
        self.ssl_context = ssl_context
        self.sse_gap_ms = sse_gap_ms
        self.quiet = quiet
        super().__init__(addr, MockHandler)

    def server_bind(self):
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn) that can hang offline.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, EOFError, ssl.SSLError)):
            return  # clients vanishing is routine in relay tests
        sys.stderr.write("mock: error from %s: %r\n" % (client_address, exc))


def parse_listen(value):
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError("expected HOST:PORT, got %r" % value)
    return host.strip("[]") or "127.0.0.1", int(port)


def parse_args(argv):
    p = argparse.ArgumentParser(description="Mock Anthropic API upstream for relay-guard tests.")
    p.add_argument("--listen", type=parse_listen, default=("127.0.0.1", 0),
                   help="HOST:PORT to listen on (port 0 picks a free one)")
    p.add_argument("--tls-cert", help="PEM certificate chain; enables TLS (needs --tls-key)")
    p.add_argument("--tls-key", help="PEM private key for --tls-cert")
    p.add_argument("--record", help="append each request record as a JSON line to this file")
    p.add_argument("--sse-gap-ms", type=int, default=0, help="default pause between SSE events")
    p.add_argument("--pidfile", help="write the process id here once listening")
    p.add_argument("--quiet", action="store_true", help="do not log each request to stderr")
    args = p.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        p.error("--tls-cert and --tls-key go together")
    return args


def make_ssl_context(cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def main(argv=None):
    args = parse_args(argv)
    ctx = make_ssl_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    server = MockServer(args.listen, Recorder(args.record), ctx, args.sse_gap_ms, args.quiet)

    def stop(signum, frame):
        raise SystemExit(0)  # unwinds serve_forever in the main thread; workers are daemons

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.pidfile:
        with open(args.pidfile, "w") as f:
            f.write("%d\n" % os.getpid())
    host, port = server.server_address[:2]
    shown = "[%s]" % host if ":" in host else host
    sys.stderr.write("mock upstream listening on %s://%s:%d\n" % ("https" if ctx else "http", shown, port))
    sys.stderr.flush()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        if args.pidfile and os.path.exists(args.pidfile):
            os.unlink(args.pidfile)


if __name__ == "__main__":
    main()
