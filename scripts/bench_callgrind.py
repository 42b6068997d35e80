#!/usr/bin/env python3
"""Instructions per request of the front nginx, under callgrind, for one or more module builds.

  scripts/bench_callgrind.py --module A.so [--module B.so ...] [--nginx BIN]
                             [--variant VARIANT] [--requests N]

Counts are repeatable for the same binaries and inputs, whatever else the machine does, so
two builds compare reliably where wall-clock benchmarks drown in noise. For each module the
front nginx (master_process off, one process, the module loaded, proxying to a plain upstream
nginx that answers `return 200`) runs twice under `valgrind --tool=callgrind`: once for W
warm-up requests, once for W + N; (I(W+N) - I(W)) / N cancels start-up and shutdown. Requests
go over one keep-alive connection: signature (1 KiB body, each request signed afresh),
token (x-api-key), redact-off / redact-on (~20 Claude Code headers, token, combined log),
usage-off / usage-on (token, zone; the upstream answers a 1 KB message JSON with usage;
relay_guard_accounting off / on), usage-sse-off / usage-sse-on (the same with a 41-event
SSE stream), limits-on (usage-on with the key given every limit, none of which refuses).
Only loopback; each run is bounded by its request count.
"""

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def py(*args):
    """Request material from bench_requests.py, as scripts/bench makes it."""
    subprocess.run([sys.executable, os.path.join(HERE, "bench_requests.py"), *args], check=True)

FRONT_PORT, UPSTREAM_PORT = 18690, 18691
WARMUP = 300

UPSTREAM_CONF = """
worker_processes 1; daemon on; error_log {d}/upstream-error.log warn; pid {d}/upstream.pid;
events {{ worker_connections 256; }}
http {{ access_log off; client_body_temp_path {d}/ubody;
  server {{ listen 127.0.0.1:{up}; keepalive_requests 1000000; client_max_body_size 1m;
    location / {{
      if ($http_x_bench_answer = message) {{ rewrite ^ /__message last; }}
      if ($http_x_bench_answer = sse) {{ rewrite ^ /__sse last; }}
      default_type application/json; return 200 '{{"ok":true}}'; }}
    # Static files refuse POST (405); an error_page redirect re-serves them as GET.
    location = /__message {{ default_type application/json; alias {d}/answer-message.json;
      error_page 405 =200 $uri; }}
    location = /__sse {{ default_type text/event-stream; alias {d}/answer-sse.txt;
      error_page 405 =200 $uri; }} }} }}
"""

FRONT_CONF = """
load_module {module};
daemon off; master_process off; worker_processes 1;
error_log {d}/front-error.log warn; pid {d}/front.pid;
events {{ worker_connections 256; }}
http {{
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;
  {zone}
  access_log {log};
  upstream up {{ server 127.0.0.1:{up}; keepalive 8; }}
  server {{ listen 127.0.0.1:{front}; keepalive_requests 1000000; client_max_body_size 1m;
    client_body_buffer_size 16k;
    relay_guard_keys {d}/keys.json; relay_guard_clock_skew 300s;
    location /v1/ {{ relay_guard {mode}; {redact} {usage}
      proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }} }} }}
"""


def wait_port(port, proc, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"nginx exited ({proc.returncode}) before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"nothing listens on {port} after {seconds} s")


def read_response(sock, buf):
    """Reads one HTTP/1.1 response with a Content-Length; returns (status, rest of buf)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise SystemExit("connection closed mid-response")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    m = re.search(rb"\r\ncontent-length: *(\d+)", head, re.I)
    need = int(m.group(1)) if m else 0
    while len(rest) < need:
        chunk = sock.recv(65536)
        if not chunk:
            raise SystemExit("connection closed mid-body")
        rest += chunk
    return status, rest[need:]


def heads_for(variant, d, body_path, count, secret, token):
    """`count` request heads (bytes) from bench_requests, as scripts/bench sends them."""
    out = os.path.join(d, f"heads-{variant}-{count}.bin")
    args = ["heads", "--out", out, "--body-file", body_path, "--host", f"127.0.0.1:{FRONT_PORT}",
            "--token", token, "--target", "/v1/messages"]
    if variant == "signature":
        args += ["--key-id", "bench", "--secret", secret, "--count", str(count)]
    elif variant.startswith("redact"):
        args += ["--headers", "claude-code"]
        args[args.index("/v1/messages")] = "/v1/messages?beta=true"
    else:
        args += ["--count", str(count)]
    py(*args)
    data = open(out, "rb").read()
    os.unlink(out)
    n = data.count(b"\r\n\r\n")
    size = len(data) // n
    heads = [data[i * size:(i + 1) * size] for i in range(n)]
    return [heads[i % n] for i in range(count)]


def usage_conf(variant, d):
    """usage-[sse-]on|off: relay_guard_accounting and which answer the upstream sends;
    limits-on: usage-on with the key given every limit (too high to refuse)."""
    if variant == "limits-on":
        return ("relay_guard_accounting on; proxy_set_header X-Bench-Answer message; "
                f"relay_guard_keys {d}/keys-limits.json;")
    if not variant.startswith("usage"):
        return ""
    answer = "sse" if "-sse-" in variant else "message"
    flag = variant.rsplit("-", 1)[1]
    return f"relay_guard_accounting {flag}; proxy_set_header X-Bench-Answer {answer};"


def instructions(nginx, module, variant, n, d, body, heads):
    mode = "signature" if variant == "signature" else "token"
    conf = FRONT_CONF.format(
        module=module, d=d, up=UPSTREAM_PORT, front=FRONT_PORT, mode=mode,
        zone="relay_guard_zone bench:8m;"
        if variant in ("signature", "limits-on") or variant.startswith("usage")
        else "",
        log=f"{d}/access.log combined" if variant.startswith("redact") else "off",
        redact={"redact-on": "relay_guard_redact on;", "redact-off": "relay_guard_redact off;"}
        .get(variant, ""),
        usage=usage_conf(variant, d))
    with open(os.path.join(d, "front.conf"), "w") as f:
        f.write(conf)
    out = os.path.join(d, f"callgrind.{os.getpid()}.{n}.out")
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                             nginx, "-p", d + "/", "-c", os.path.join(d, "front.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(FRONT_PORT, proc)
        sock = socket.create_connection(("127.0.0.1", FRONT_PORT), timeout=60)
        buf = b""
        for head in heads[:n]:
            sock.sendall(head + body)
            status, buf = read_response(sock, buf)
            if status != 200:
                raise SystemExit(f"{variant}: status {status} (see {d}/front-error.log)")
        sock.close()
    finally:
        proc.send_signal(signal.SIGQUIT)
        proc.wait(timeout=120)
    text = open(out).read()
    if os.environ.get("RG_CALLGRIND_KEEP"):
        import shutil; shutil.copy(out, os.environ["RG_CALLGRIND_KEEP"] + f".{variant}.{n}")
    m = re.search(r"^(?:summary|totals): *(\d+)", text, re.M)
    if not m:
        raise SystemExit(f"no totals in {out}")
    return int(m.group(1))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--module", action="append", required=True)
    p.add_argument("--nginx", default="/usr/sbin/nginx")
    p.add_argument("--variant", default="signature",
                   choices=["signature", "token", "redact-off", "redact-on", "usage-off",
                            "usage-on", "usage-sse-off", "usage-sse-on", "limits-on"])
    p.add_argument("--requests", type=int, default=2000)
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="rg-callgrind-") as d:
        secret, token = "bench-secret-0123456789abcdef", "rgs1_bench-token-0123456789abcdef"
        py("keys", "--out", f"{d}/keys.json", "--key-id", "bench", "--secret", secret,
           "--token", token)
        with open(f"{d}/keys.json") as f:
            doc = json.load(f)
        doc["default_limits"] = {"requests_per_minute": 1000000, "burst": 1000000,
                                 "concurrent_requests": 100000,
                                 "tokens": [{"budget": 1099511627775, "per": "1d"},
                                            {"budget": 1099511627775, "per": "5h"}]}
        with open(f"{d}/keys-limits.json", "w") as f:
            json.dump(doc, f)
        body_path = f"{d}/body.bin"
        size = 1024 if a.variant == "signature" else 300
        py("body", "--out", body_path, "--size", str(size))
        body = open(body_path, "rb").read()
        # The upstream's workers (nobody, when started as root) serve the answers from here.
        os.chmod(d, 0o755)
        py("answer", "--kind", "message", "--out", f"{d}/answer-message.json")
        py("answer", "--kind", "sse", "--out", f"{d}/answer-sse.txt")
        with open(f"{d}/upstream.conf", "w") as f:
            f.write(UPSTREAM_CONF.format(d=d, up=UPSTREAM_PORT))
        subprocess.run([a.nginx, "-p", d + "/", "-c", f"{d}/upstream.conf"], check=True)
        try:
            wait_port(UPSTREAM_PORT, None)
            total = WARMUP + a.requests
            for module in a.module:
                # Fresh heads for each run: a signed request is accepted once.
                lo = instructions(a.nginx, os.path.realpath(module), a.variant, WARMUP, d, body,
                                  heads_for(a.variant, d, body_path, WARMUP, secret, token))
                hi = instructions(a.nginx, os.path.realpath(module), a.variant, total, d, body,
                                  heads_for(a.variant, d, body_path, total, secret, token))
                print(f"{a.variant:<13} {(hi - lo) / a.requests:>10.0f} instructions/request  "
                      f"{module}")
        finally:
            pid = open(f"{d}/upstream.pid").read().strip()
            os.kill(int(pid), signal.SIGQUIT)


if __name__ == "__main__":
    main()
