#!/usr/bin/env python3
"""The real Claude Code CLI through a relay-guard nginx, offline: what it reports as usage.

Run against a relay whose location has `relay_guard any;`, injects the upstream key and
proxies to scripts/mock_upstream.py (with its usage control headers):

    python3 scripts/claude_code_e2e.py --claude target/npm/node_modules/.bin/claude \\
        --base-url http://127.0.0.1:PORT --report F

Each run is one `claude -p` (non-interactive) with a private HOME and config dir, a clean
environment (nothing from the caller's ANTHROPIC_* or ~/.claude reaches it), every
non-essential request, telemetry, error reporting and the auto-updater off, retries off, a
proxy that refuses everything but loopback (so nothing can leave the machine), and a hard
timeout (the whole process group is killed). The mock is steered through
ANTHROPIC_CUSTOM_HEADERS, which Claude Code adds to every request it makes; x-rg-e2e-req names
the run, so the caller can group the relay's log lines and the mock's records by run.

The runs cover each way Claude Code can carry a relay token (ANTHROPIC_AUTH_TOKEN and
ANTHROPIC_API_KEY with the static token, apiKeyHelper minting short-lived ones), two output
formats (json; stream-json, whose `result` event carries the totals: its `assistant` events
hold message_start's usage snapshot, output_tokens 1), more than one model, a resumed session,
and a tool loop of several requests in one run (x-mock-raw-sse answers every request with a
tool_use of Read, --max-turns stops it).

What Claude Code reported is taken from its final result: `usage` (the run's totals) and
`modelUsage` (per model, keyed by the model it asked for). Both are mapped to the relay's token
types with the relay's rule (cache writes the TTL breakdown does not cover are 5-minute ones)
and written to --report as JSON; the caller compares them with the relay's counters.

Output: one "ok - ..." / "not ok - ..." line per check, then "# N checks, M failed"; exit
status 1 if any check failed. This script checks Claude Code's side only (it reported what the
mock sent); the relay's side is the caller's.
"""

import argparse
import base64
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from usage_types import TYPES, counts, from_model_usage, from_usage  # noqa: E402

# Anthropic's usage shape: cache writes split by TTL, cache reads, a server tool.
CACHED = {"input_tokens": 2000, "cache_creation_input_tokens": 1500,
          "cache_creation": {"ephemeral_5m_input_tokens": 500, "ephemeral_1h_input_tokens": 1000},
          "cache_read_input_tokens": 30000, "output_tokens": 1, "service_tier": "standard"}
# A compatible upstream's shape: message_start says nothing, message_delta says it all (the
# TTL split too, which Claude Code keeps; the Python SDK 2.15's stream helper drops it).
DELTA_ONLY = {"input_tokens": 321, "cache_creation_input_tokens": 40,
              "cache_creation": {"ephemeral_5m_input_tokens": 15, "ephemeral_1h_input_tokens": 25},
              "cache_read_input_tokens": 999, "output_tokens": 12,
              "server_tool_use": {"web_search_requests": 1}}
# The tool loop's usage, per response: message_start and message_delta of the raw stream.
LOOP_START = {"input_tokens": 100, "cache_creation_input_tokens": 30,
              "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 20},
              "cache_read_input_tokens": 500, "output_tokens": 1}
LOOP_DELTA = {"output_tokens": 7, "server_tool_use": {"web_search_requests": 1}}
LOOP_TURNS = 3


def scaled(c, k):
    return {t: v * k for t, v in c.items()}


def sse(name, obj):
    return f"event: {name}\ndata: {json.dumps(obj, separators=(',', ':'))}\n\n"


def tool_use_stream(model, path):
    """A whole Messages stream whose answer is a tool_use of Read (base64, for x-mock-raw-sse)."""
    text = (sse("message_start", {"type": "message_start", "message": {
                "id": "msg_mock_tool_loop", "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": None, "stop_sequence": None, "usage": LOOP_START}})
            + sse("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {
                "type": "tool_use", "id": "toolu_mock_1", "name": "Read", "input": {}}})
            + sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
                "type": "input_json_delta", "partial_json": json.dumps({"file_path": path})}})
            + sse("content_block_stop", {"type": "content_block_stop", "index": 0})
            + sse("message_delta", {"type": "message_delta", "delta": {
                "stop_reason": "tool_use", "stop_sequence": None}, "usage": LOOP_DELTA})
            + sse("message_stop", {"type": "message_stop"}))
    return base64.b64encode(text.encode()).decode("ascii")


def plan(args, work):
    """The runs, in order. `expect`: what Claude Code must report in total (None: the mock's
    own estimate, checked only for consistency); `requests`: API requests the run makes."""
    sonnet, haiku, opus = "claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1"
    static, minted = ("static", args.static_key_id), ("helper", args.key_id)
    return [
        dict(name="static-auth-token-cached", cred="auth-token", key=static[1], model=sonnet,
             fmt="json", requests=1, expect=counts(2000, 42, 1500, 500, 1000, 30000),
             headers={"x-mock-usage": json.dumps(CACHED),
                      "x-mock-usage-delta": json.dumps({"output_tokens": 42})}),
        # The same session resumed on another model: the mock's own usage, which grows with
        # the conversation Claude Code sends back.
        dict(name="static-api-key-resumed", cred="api-key", key=static[1], model=haiku,
             fmt="stream-json", requests=1, expect=None, resume=True, headers={}),
        dict(name="helper-delta-only", cred="helper", key=minted[1], model=haiku, fmt="json",
             requests=1, expect=counts(321, 12, 40, 15, 25, 999, 1),
             headers={"x-mock-usage": json.dumps({"input_tokens": 0, "output_tokens": 0}),
                      "x-mock-usage-delta": json.dumps(DELTA_ONLY), "x-mock-sse-split": "7"}),
        dict(name="helper-tool-loop", cred="helper", key=minted[1], model=sonnet,
             fmt="stream-json", requests=LOOP_TURNS, max_turns=LOOP_TURNS,
             subtype="error_max_turns", rc=1,
             expect=scaled(counts(100, 7, 30, 10, 20, 500, 1), LOOP_TURNS),
             headers={"x-mock-raw-sse": tool_use_stream(sonnet, os.path.join(work, "notes.txt"))}),
        # The response names another model than the request: Claude Code files the usage under
        # the model it asked for, the relay under the one the response names.
        dict(name="helper-response-model", cred="helper", key=minted[1], model=haiku,
             response_model=opus, fmt="json", requests=1, expect=None,
             headers={"x-mock-model": opus}),
    ]


class Run:
    def __init__(self, args):
        self.args = args
        self.run_id = args.run_id or uuid.uuid4().hex[:12]
        self.checks = 0
        self.failed = 0

    def ok(self, cond, name, detail=""):
        self.checks += 1
        if not cond:
            self.failed += 1
        print(("ok" if cond else "not ok") + f" {self.checks} - {name}"
              + (f"  # {detail}" if detail and not cond else ""), flush=True)
        return cond

    def note(self, text):
        print(f"# {text}", flush=True)


def environment(args, home, req_id, spec, settings):
    """The whole environment of one run: nothing inherited but PATH (apiKeyHelper runs
    scripts/rg-mint-token, which needs bash and python3)."""
    headers = {"x-rg-e2e-run": args.run_id, "x-rg-e2e-req": req_id, **spec["headers"]}
    for name, value in headers.items():
        if "\n" in value or "\r" in value:
            raise ValueError(f"header {name} holds a line break")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home, "LANG": "C.UTF-8",
        "CLAUDE_CONFIG_DIR": os.path.join(home, ".claude"), "TMPDIR": os.path.join(home, "tmp"),
        "ANTHROPIC_BASE_URL": args.base_url,
        "ANTHROPIC_CUSTOM_HEADERS": "\n".join(f"{k}: {v}" for k, v in headers.items()),
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1", "DISABLE_AUTOUPDATER": "1", "DISABLE_BUG_COMMAND": "1",
        # One HTTP request per API call: a retry would be another request the relay counts.
        "CLAUDE_CODE_MAX_RETRIES": "0",
        "API_TIMEOUT_MS": str(int(args.timeout * 1000)),
        # Anything not on loopback goes to a proxy that is not there, and fails at once.
        "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost,::1",
    }
    if spec["cred"] == "auth-token":      # Authorization: Bearer
        env["ANTHROPIC_AUTH_TOKEN"] = args.static_token
    elif spec["cred"] == "api-key":       # x-api-key
        env["ANTHROPIC_API_KEY"] = args.static_token
    return env


def result_of(fmt, stdout):
    """Claude Code's final result object, from --output-format json or stream-json."""
    if fmt == "json":
        return json.loads(stdout)
    results = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    results = [e for e in results if isinstance(e, dict) and e.get("type") == "result"]
    if len(results) != 1:
        raise ValueError(f"{len(results)} result events in the stream")
    return results[0]


def run_claude(cmd, env, cwd, timeout):
    """(returncode, stdout, stderr, seconds); the whole process group is killed at timeout."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        return None, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), timeout
    return p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), \
        time.monotonic() - t0


def one_run(run, spec, home, work, settings, session):
    args = run.args
    name = spec["name"]
    req_id = f"{args.run_id}-cc-{name}"
    cmd = [args.claude, "-p", f"Say hello through the relay ({name}).", "--model", spec["model"],
           "--output-format", spec["fmt"], "--max-turns", str(spec.get("max_turns", 1))]
    if spec["fmt"] == "stream-json":
        cmd.append("--verbose")            # -p with stream-json requires it
    if spec["cred"] == "helper":
        cmd += ["--settings", settings]
    if spec.get("resume"):
        if not session or "model_usage_cumulative" not in session:
            run.ok(False, f"{name}: a session to resume")
            return None
        cmd += ["--resume", session["session"]]
    rc, out, err, secs = run_claude(cmd, environment(args, home, req_id, spec, settings), work,
                                    args.timeout)
    report = {"name": name, "req": req_id, "key": spec["key"], "model": spec["model"],
              "response_model": spec.get("response_model", spec["model"]),
              "requests": spec["requests"], "rc": rc, "seconds": round(secs, 3)}
    if not run.ok(rc is not None, f"{name}: finished within {args.timeout:g} s",
                  f"killed; stderr: {err[-500:]}"):
        return report
    want_rc, want_subtype = spec.get("rc", 0), spec.get("subtype", "success")
    try:
        res = result_of(spec["fmt"], out)
    except (ValueError, TypeError) as e:
        run.ok(False, f"{name}: a result on stdout", f"{e}; rc={rc} stdout={out[-500:]!r} "
               f"stderr={err[-500:]!r}")
        return report
    run.ok(rc == want_rc and res.get("subtype") == want_subtype,
           f"{name}: exit {want_rc}, result {want_subtype}",
           f"rc={rc} subtype={res.get('subtype')!r} is_error={res.get('is_error')!r} "
           f"result={str(res.get('result'))[:200]!r} stderr={err[-300:]!r}")
    try:
        total = from_usage(res.get("usage") or {})
        per_model = {m: from_model_usage(u) for m, u in (res.get("modelUsage") or {}).items()}
    except (ValueError, AttributeError) as e:
        run.ok(False, f"{name}: usage and modelUsage are token counts", str(e))
        return report
    report.update(session=res.get("session_id"), subtype=res.get("subtype"),
                  num_turns=res.get("num_turns"), usage=total, model_usage_cumulative=per_model,
                  raw_usage=res.get("usage"), raw_model_usage=res.get("modelUsage"))
    if spec.get("resume"):
        # After --resume, modelUsage holds the whole session (the earlier runs' models too),
        # while usage is this run's alone: what this run added is the difference.
        before = session["model_usage_cumulative"]
        run.ok(res.get("session_id") == session["session"] and
               all(per_model.get(m, {}).get(t, -1) >= c[t] for m, c in before.items() for t in TYPES),
               f"{name}: resumed session {session['session']}; its modelUsage includes the earlier runs'",
               f"session {res.get('session_id')!r}, before {before}, now {per_model}")
        per_model = {m: {t: c[t] - before.get(m, {}).get(t, 0) for t in TYPES}
                     for m, c in per_model.items()}
        per_model = {m: c for m, c in per_model.items() if any(c.values())}
    report["model_usage"] = per_model
    run.ok(sorted(per_model) == [spec["model"]],
           f"{name}: modelUsage names the one model asked for ({spec['model']})",
           f"modelUsage keys {sorted(per_model)}")
    summed = {t: sum(c[t] for c in per_model.values()) for t in TYPES}
    run.ok(summed == total, f"{name}: modelUsage adds up to usage", f"{summed} vs {total}")
    if spec["expect"] is not None:
        run.ok(total == spec["expect"], f"{name}: reported the usage the mock sent "
               f"({spec['requests']} request(s))", f"got {total}, want {spec['expect']}")
    else:
        run.ok(total["input"] > 0 and total["output"] > 0,
               f"{name}: reported the mock's own usage (input and output > 0)", str(total))
    return report


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--claude", required=True, help="the claude executable")
    p.add_argument("--base-url", required=True, help="the relay, e.g. http://127.0.0.1:2300")
    p.add_argument("--key-id", default="alice", help="key apiKeyHelper mints tokens for")
    p.add_argument("--secret", default="alice-secret-0123456789")
    p.add_argument("--static-token", default="team-a-static-token-0123456789")
    p.add_argument("--static-key-id", default="team-a", help="key id the static token belongs to")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per claude run")
    p.add_argument("--run-id", help="value of x-rg-e2e-run (default: random)")
    p.add_argument("--report", help="write what Claude Code reported (JSON) to this file")
    args = p.parse_args(argv)
    if "api.anthropic.com" in args.base_url:
        p.error("this test never talks to api.anthropic.com: pass the relay's URL")
    args.claude = os.path.abspath(args.claude)    # the runs' working directory is elsewhere
    run = Run(args)
    args.run_id = run.run_id

    reports = []
    with tempfile.TemporaryDirectory(prefix="rg-cc-e2e-") as tmp:
        home, work = os.path.join(tmp, "home"), os.path.join(tmp, "work")
        for d in (home, os.path.join(home, ".claude"), os.path.join(home, "tmp"), work):
            os.makedirs(d)
        try:
            version = subprocess.run(
                [args.claude, "--version"], capture_output=True, text=True, timeout=30,
                stdin=subprocess.DEVNULL,
                env={"PATH": os.environ.get("PATH", ""), "HOME": home}).stdout.strip()
        except (OSError, subprocess.SubprocessError) as e:
            version = f"unknown ({type(e).__name__}: {e})"
        run.note(f"Claude Code {version}, run {run.run_id}, relay {args.base_url}")
        with open(os.path.join(work, "notes.txt"), "w", encoding="utf-8") as f:
            f.write("A file for Claude Code's Read tool.\n")
        secret_file = os.path.join(home, "alice.secret")
        with open(os.open(secret_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(args.secret)
        settings = os.path.join(home, "relay-settings.json")
        helper = " ".join(shlex.quote(a) for a in (
            os.path.join(HERE, "rg-mint-token"), "--key-id", args.key_id, "--secret-file",
            secret_file, "--ttl", "600"))
        with open(settings, "w", encoding="utf-8") as f:
            json.dump({"apiKeyHelper": helper}, f)
        session = None    # the last run's report: the session --resume continues
        for spec in plan(args, work):
            try:
                r = one_run(run, spec, home, work, settings, session)
            except (OSError, ValueError, subprocess.SubprocessError) as e:
                run.ok(False, f"{spec['name']}: ran", f"{type(e).__name__}: {e}")
                continue
            if r:
                reports.append(r)
                session = r if r.get("session") else session
    if args.report:
        with open(args.report, "w", encoding="utf-8") as f:
            json.dump({"run": run.run_id, "claude_version": version, "runs": reports}, f, indent=1)
    print(f"# {run.checks} checks, {run.failed} failed", flush=True)
    return 1 if run.failed else 0


if __name__ == "__main__":
    sys.exit(main())
