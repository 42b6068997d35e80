#!/usr/bin/env python3
"""The real clients against relay-guard's limit refusals (issue 13): the official `anthropic`
SDK and the Claude Code CLI, each left to its own retry policy, through a relay whose keys have
limits. t/066-limits-clients.t runs one case per invocation and checks the relay's side (its
access log and the mock's count of what reached the upstream); this script checks and reports
the client's side:

  sdk-budget  the key's token budget is spent for a long window (the caller spent it): the
              refusal says x-should-retry: false and retry-after > 60, so the SDK, with its
              default max_retries, must raise RateLimitError after one request.
  sdk-rpm     the key has requests_per_minute 60, burst 1: a first call spends the burst, the
              second is refused with retry-after 1 and x-should-retry: true, which the SDK
              must retry by itself after ~1 s, and succeed.
  cc-budget   `claude -p` (as scripts/claude_code_e2e.py runs it, but with Claude Code's own
              default retries) against the spent budget: it must stop with an error.
  cc-rpm      `claude -p` right after the caller spent a slow rpm key's burst: its first
              request is refused with a retry-after of a few seconds; it must wait and finish.

Every request carries x-test-tag (the relay's access log groups by it) and x-mock-inflight
(the mock counts what reached it under that name). The SDK's request hook records every
request that left the client, with its x-stainless-retry-count and time.

Output: "ok N - ..." / "not ok N - ..." per check, "# ..." notes; --report writes what the
client did as JSON. Exit status 1 if any check failed.
"""

import argparse
import json
import os
import re
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

# Before the SDK is imported: no key, base URL or header from the caller's environment (every
# client here gets an explicit base_url and key; Claude Code gets a clean environment anyway).
for _name in list(os.environ):
    if _name.startswith("ANTHROPIC_"):
        del os.environ[_name]

import claude_code_e2e as cce  # noqa: E402

# The longest an SDK call may take here: a call that slept on a long retry-after (the SDK
# honours any retry-after once it decides to retry) is reported as a failure, not waited for.
SDK_CALL_LIMIT = 20.0


class Checks:
    def __init__(self):
        self.n = 0
        self.failed = 0

    def ok(self, cond, name, detail=""):
        self.n += 1
        if not cond:
            self.failed += 1
        print(("ok" if cond else "not ok") + f" {self.n} - {name}"
              + (f"  # {detail}" if detail and not cond else ""), flush=True)
        return cond

    def note(self, text):
        for line in str(text).splitlines() or [""]:
            print(f"# {line}", flush=True)


# --- the SDK -------------------------------------------------------------------------------------

def sdk_client(args, sent, tag):
    """An Anthropic client with the SDK's default max_retries (not passed), the key's token as
    api_key, and a hook that records every request that leaves it."""
    import anthropic
    import httpx2

    def hook(request):
        sent.append({"t": time.monotonic(), "tag": request.headers.get("x-test-tag"),
                     "retry_count": request.headers.get("x-stainless-retry-count")})

    timeout = httpx2.Timeout(10.0, connect=3.0)
    http = httpx2.Client(timeout=timeout, event_hooks={"request": [hook]})
    return anthropic.Anthropic(base_url=args.base_url, api_key=args.token, timeout=timeout,
                               http_client=http,
                               default_headers={"x-test-tag": tag,
                                                "x-mock-inflight": args.inflight})


def bounded_call(fn):
    """Runs fn() in a daemon thread for at most SDK_CALL_LIMIT s: (done, result, exception)."""
    box = {}

    def run():
        try:
            box["result"] = fn()
        except BaseException as e:  # noqa: BLE001 - reported to the caller
            box["exc"] = e
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(SDK_CALL_LIMIT)
    return not t.is_alive(), box.get("result"), box.get("exc")


def create(client):
    return client.messages.create(model="claude-haiku-4-5", max_tokens=16,
                                  messages=[{"role": "user", "content": "hi"}])


def same_text(want, text):
    """want occurs in text, any run of digits matching any other (the seconds of a retry-after
    in the relay's message change between two refusals)."""
    def norm(s):
        return re.sub(r"\d+", "#", s)
    return bool(want) and norm(want) in norm(text)


def error_of(exc):
    body = getattr(exc, "body", None)
    err = body.get("error", {}) if isinstance(body, dict) else {}
    return err if isinstance(err, dict) else {}


def case_sdk_budget(args, c, report):
    import anthropic
    sent = []
    tag = f"{args.tag}-call"
    client = sdk_client(args, sent, tag)
    c.ok(client.max_retries == anthropic.DEFAULT_MAX_RETRIES and client.max_retries >= 1,
         f"the client has the SDK's default max_retries ({client.max_retries})")
    t0 = time.monotonic()
    done, _, exc = bounded_call(lambda: create(client))
    secs = time.monotonic() - t0
    report.update(tag=tag, requests=len(sent), seconds=round(secs, 3),
                  retry_counts=[s["retry_count"] for s in sent], finished=done,
                  exception=type(exc).__name__ if exc else None)
    if not c.ok(done, f"the call ended within {SDK_CALL_LIMIT:g} s",
                f"still waiting after {len(sent)} request(s): the SDK is sleeping on a "
                "retry-after, so it decided to retry"):
        return
    resp = getattr(exc, "response", None)
    headers = dict(resp.headers) if resp is not None else {}
    err = error_of(exc)
    report.update(status=getattr(exc, "status_code", None), error=err,
                  retry_after=headers.get("retry-after"),
                  x_should_retry=headers.get("x-should-retry"))
    c.ok(isinstance(exc, anthropic.RateLimitError), "the SDK raised RateLimitError",
         f"{type(exc).__name__}: {exc}" if exc else "the call succeeded")
    c.ok(getattr(exc, "status_code", None) == 429, "... with status 429")
    c.ok(err.get("type") == "rate_limit_error", "... error type rate_limit_error", repr(err))
    c.ok(same_text(args.message, str(err.get("message", ""))),
         f"... and the relay's message ({args.message!r})", repr(err.get("message")))
    c.ok(headers.get("x-should-retry") == "false", "the response said x-should-retry: false",
         repr(headers.get("x-should-retry")))
    ra = headers.get("retry-after", "")
    c.ok(ra.isdigit() and int(ra) > 60, f"the response said retry-after > 60 ({ra!r})")
    c.ok(len(sent) == 1, f"exactly one request left the SDK (no retry, max_retries="
         f"{client.max_retries})", f"{len(sent)} sent, retry counts {report['retry_counts']}")
    c.ok(secs < 5, f"and it raised at once ({secs:.2f} s)")


def case_sdk_rpm(args, c, report):
    import anthropic
    sent = []
    first = sdk_client(args, sent, f"{args.tag}-first")
    r = first.messages.create(model="claude-haiku-4-5", max_tokens=16,
                              messages=[{"role": "user", "content": "hi"}])
    c.ok(r.content and r.content[0].text, "the first call (the key's burst of 1) succeeded")
    sent_first = len(sent)
    tag = f"{args.tag}-call"
    client = sdk_client(args, sent, tag)
    c.ok(client.max_retries == anthropic.DEFAULT_MAX_RETRIES and client.max_retries >= 1,
         f"the client has the SDK's default max_retries ({client.max_retries})")
    t0 = time.monotonic()
    done, msg, exc = bounded_call(lambda: create(client))
    secs = time.monotonic() - t0
    mine = sent[sent_first:]
    gaps = [round(b["t"] - a["t"], 3) for a, b in zip(mine, mine[1:])]
    report.update(tag=tag, requests=len(mine), seconds=round(secs, 3), gaps=gaps,
                  retry_counts=[s["retry_count"] for s in mine], finished=done,
                  exception=f"{type(exc).__name__}: {exc}" if exc else None)
    c.note(f"second call: {len(mine)} request(s), gaps {gaps} s, {secs:.2f} s in all")
    if not c.ok(done, f"the call ended within {SDK_CALL_LIMIT:g} s"):
        return
    c.ok(exc is None and msg is not None and msg.content and msg.content[0].text,
         "the SDK retried by itself and the call succeeded",
         f"{type(exc).__name__}: {exc}" if exc else "")
    c.ok(len(mine) == 2, "exactly two requests: the refused one and one retry",
         f"{len(mine)} sent, retry counts {report['retry_counts']}, gaps {gaps}")
    c.ok(bool(gaps) and gaps[0] >= 0.9, "the retry waited ~retry-after (>= 0.9 s)", str(gaps))
    c.ok(secs < 10, f"and finished in well under 10 s ({secs:.2f} s)")


# --- Claude Code -----------------------------------------------------------------------------------

def claude_run(args, tag):
    """One `claude -p` as claude_code_e2e.py runs it (its environment, timeout and process
    group), but with Claude Code's own retry policy: CLAUDE_CODE_MAX_RETRIES unset."""
    ns = argparse.Namespace(run_id=args.tag, base_url=args.base_url, timeout=args.timeout,
                            static_token=args.token)
    spec = {"cred": "api-key", "headers": {"x-test-tag": tag, "x-mock-inflight": args.inflight}}
    with tempfile.TemporaryDirectory(prefix="rg-limits-cc-") as tmp:
        home, work = os.path.join(tmp, "home"), os.path.join(tmp, "work")
        for d in (home, os.path.join(home, ".claude"), os.path.join(home, "tmp"), work):
            os.makedirs(d)
        env = cce.environment(ns, home, tag, spec, None)
        env.pop("CLAUDE_CODE_MAX_RETRIES", None)
        cmd = [os.path.abspath(args.claude), "-p", "Say hello through the relay.",
               "--model", "claude-haiku-4-5", "--output-format", "json", "--max-turns", "1"]
        return cce.run_claude(cmd, env, work, args.timeout)


def claude_result(out):
    try:
        res = json.loads(out)
        return res if isinstance(res, dict) else {}
    except ValueError:
        return {}


def case_cc(args, c, report, want_success):
    tag = f"{args.tag}-call"
    rc, out, err, secs = claude_run(args, tag)
    res = claude_result(out)
    report.update(tag=tag, rc=rc, seconds=round(secs, 3), subtype=res.get("subtype"),
                  is_error=res.get("is_error"), result=str(res.get("result"))[:500],
                  stdout=out[-1500:], stderr=err[-1500:])
    c.note(f"claude exited {rc} after {secs:.1f} s: subtype={res.get('subtype')!r} "
           f"is_error={res.get('is_error')!r} result={str(res.get('result'))[:300]!r}")
    if err.strip():
        c.note("stderr: " + err.strip()[-600:])
    if not c.ok(rc is not None, f"claude finished within {args.timeout:g} s",
                "killed at the timeout (it kept retrying or waiting)"):
        return
    if want_success:
        c.ok(rc == 0 and res.get("subtype") == "success" and not res.get("is_error"),
             "claude completed (exit 0, result success)", f"rc={rc} stdout={out[-300:]!r}")
        return
    c.ok(rc != 0 and res.get("is_error") is True, "claude exited non-zero with an error result",
         f"rc={rc} is_error={res.get('is_error')!r}")
    c.ok(same_text(args.message, str(res.get("result", ""))),
         f"... whose text carries the relay's message ({args.message!r})",
         repr(res.get("result")) if res else f"stdout={out[-300:]!r} stderr={err[-300:]!r}")
    # Fields Claude Code's json result has carried since 2.1 (absent: not checked).
    if "api_error_status" in res:
        c.ok(res["api_error_status"] == 429 and res.get("api_error_type") == "rate_limit_error",
             "... and api_error_status 429, api_error_type rate_limit_error",
             f"{res.get('api_error_status')!r} {res.get('api_error_type')!r}")


CASES = {"sdk-budget": case_sdk_budget, "sdk-rpm": case_sdk_rpm,
         "cc-budget": lambda a, c, r: case_cc(a, c, r, False),
         "cc-rpm": lambda a, c, r: case_cc(a, c, r, True)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--case", required=True, choices=sorted(CASES))
    p.add_argument("--base-url", required=True, help="the relay, e.g. http://127.0.0.1:2300")
    p.add_argument("--token", required=True, help="the key's static token")
    p.add_argument("--tag", required=True, help="prefix of x-test-tag values")
    p.add_argument("--inflight", required=True, help="x-mock-inflight name")
    p.add_argument("--message", default="",
                   help="the refusal's message, as the relay sent it to the caller")
    p.add_argument("--claude", help="the claude executable (cc-* cases)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per claude run")
    p.add_argument("--report", help="write what the client did (JSON) to this file")
    args = p.parse_args(argv)
    if "api.anthropic.com" in args.base_url:
        p.error("this test never talks to api.anthropic.com: pass the relay's URL")
    if args.case.startswith("cc-") and not args.claude:
        p.error(f"{args.case} needs --claude")
    c = Checks()
    report = {"case": args.case}
    try:
        CASES[args.case](args, c, report)
    except Exception as e:  # noqa: BLE001 - a failed check, with what happened
        c.ok(False, f"{args.case} ran", f"{type(e).__name__}: {e}")
    if args.report:
        with open(args.report, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
    print(f"# {c.n} checks, {c.failed} failed", flush=True)
    sys.stdout.flush()
    # os._exit: an SDK call still sleeping in its daemon thread must not keep us alive.
    os._exit(1 if c.failed else 0)


if __name__ == "__main__":
    main()
