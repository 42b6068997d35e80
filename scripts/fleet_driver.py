#!/usr/bin/env python3
"""The client side of scripts/fleet (issue 14): measures the fleet's figures in one run.

Run by scripts/fleet inside the client namespace, given the fleet description it wrote
(--fleet target/fleet/fleet.json: the hosts, the mock upstream and its record, Redis's address,
password file, pid and command line, the keys file, the relay's Redis timeout). Each phase
prints its figures and checks its property; the exit status is 1 when any property failed.

Phases (with Redis):
  replay     N signed requests, each sent to one host and replayed once at every other host
             (and at its own): 0 replays accepted
  race       32 simultaneous identical requests spread over the 3 hosts: exactly 1 accepted
             (several rounds)
  rpm        3 clients, one per host, flooding key "rpm" (6 a minute, burst 3): admitted <=
             burst + floor(t * rpm / 60) fleet-wide, refusals 429 with retry-after
  concurrency 4 slow requests per host at once for key "cc" (3 in flight): exactly 3 admitted
             fleet-wide each round, Redis's slot set holds 3 while they run and 0 after
  budget     key "tok" (50 tokens a day) sent in turn to each host, 20 tokens a response:
             exactly 3 admitted fleet-wide, then 429 LIMIT_TOKENS; Redis's counter = 60
  kill       load over all hosts, then kill -9 of r3's master and workers mid-run; every
             request replayed at the surviving hosts: no nonce admitted twice
  redis-stop Redis paused (SIGSTOP: connections accepted, nothing answered): `closed` gives
             503 + retry-after within the timeout, `local` relays and counts the fallback
  redis-kill Redis killed (-9: connections refused), the same two checks
  redis-back Redis started again under load: every host relays again within one timeout
Throughout, the mock's record (what really reached the upstream) must hold each nonce at most
once. With Redis disabled (scripts/fleet --no-redis) only replay, race, rpm, concurrency and
budget run, as a check of the harness: each host alone must then admit what another host admitted.
Every client socket has a timeout, so nothing here can hang.
"""
import argparse, collections, http.client, json, os, re, signal, socket, subprocess, sys
import threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from relay_guard_client import signed_headers  # noqa: E402

CLIENT_TIMEOUT = 5.0          # seconds: far above any answer the relay should take
BODY = json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 16,
                   "messages": [{"role": "user", "content": "fleet"}]}).encode()

failures = []


def check(ok, what):
    print(("  ok    " if ok else "  FAIL  ") + what, flush=True)
    if not ok:
        failures.append(what)
    return ok


class Request:
    """One signed request, kept as bytes so that a replay is the very same request."""

    def __init__(self, key_id, secret, target="/v1/messages", body=BODY, extra=None):
        self.target = target
        self.body = body
        self.headers = signed_headers(key_id, secret, "POST", target, body)
        self.headers.update(extra or {})
        self.headers["content-type"] = "application/json"
        self.headers["anthropic-version"] = "2023-06-01"
        self.nonce = self.headers["X-Nonce"]


class Answer:
    def __init__(self, status, headers, body, seconds, error=None):
        self.status, self.headers, self.body = status, headers, body
        self.seconds, self.error = seconds, error

    @property
    def rg(self):
        return self.headers.get("x-rg-status", "")

    def __repr__(self):
        return "%s %s%s (%.1f ms)" % (self.status, self.rg, " " + self.error if self.error else "",
                                      self.seconds * 1000)


def send(addr, req, timeout=CLIENT_TIMEOUT, conn=None):
    """Sends req to addr (host:port) on a new connection (or conn); never raises."""
    host, port = addr.rsplit(":", 1)
    t0 = time.monotonic()
    try:
        c = conn or http.client.HTTPConnection(host, int(port), timeout=timeout)
        c.request("POST", req.target, req.body, req.headers)
        r = c.getresponse()
        body = r.read()
        c.close()
        return Answer(r.status, {k.lower(): v for k, v in r.getheaders()}, body,
                      time.monotonic() - t0)
    except (OSError, http.client.HTTPException) as e:
        return Answer(0, {}, b"", time.monotonic() - t0, type(e).__name__)


def get(addr, path, timeout=CLIENT_TIMEOUT):
    host, port = addr.rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=timeout)
    c.request("GET", path)
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, body


METRIC = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$')


def scrape(host):
    """{series: value} of one host's /metrics; {} when the host does not answer."""
    try:
        status, body = get(host["addr"], "/metrics")
    except (OSError, http.client.HTTPException):
        return {}
    out = {}
    for line in body.decode(errors="replace").splitlines():
        m = METRIC.match(line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def total(snap, family, **labels):
    """Sum of a family's series (matching labels) in one scrape."""
    s = 0.0
    for k, v in snap.items():
        name, _, rest = k.partition("{")
        if name != family:
            continue
        if all('%s="%s"' % (a, b) in rest for a, b in labels.items()):
            s += v
    return s


def fleet_total(hosts, family, **labels):
    return sum(total(scrape(h), family, **labels) for h in hosts)


def mock_nonces(path):
    """nonce -> [hosts] of every request that reached the mock (its --record file)."""
    seen = collections.defaultdict(list)
    try:
        with open(path) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # the line being written
                h = {k.lower(): v for k, v in rec.get("headers", [])}
                if "x-nonce" in h:
                    seen[h["x-nonce"]].append(h.get("x-fleet-host", "?"))
    except FileNotFoundError:
        pass
    return seen


def percentile(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


class Fleet:
    def __init__(self, desc):
        self.d = desc
        self.hosts = desc["hosts"]
        keys = json.load(open(desc["keys"]))["keys"]
        self.secret = {k["id"]: k["secrets"][0] for k in keys if k.get("secrets")}
        self.timeout = desc["timeout_ms"] / 1000.0
        self.redis_pid = desc["redis"]["pid"]
        self.redis_proc = None

    def req(self, key="fleet", target="/v1/messages", extra=None):
        return Request(key, self.secret[key], target, extra=extra)

    def alive_hosts(self):
        return [h for h in self.hosts if not h.get("dead")]

    # --- Redis control (its namespace's command line, from scripts/fleet) ----------------------
    def redis_ping(self):
        host, port = self.d["redis"]["addr"].split(":")
        pw = open(self.d["redis"]["password_file"]).read().strip().encode()
        try:
            with socket.create_connection((host, int(port)), timeout=0.5) as s:
                s.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n*1\r\n$4\r\nPING\r\n" % (len(pw), pw))
                data = b""
                while data.count(b"\r\n") < 2:
                    chunk = s.recv(256)
                    if not chunk:
                        break
                    data += chunk
                return data == b"+OK\r\n+PONG\r\n"
        except OSError:
            return False

    def redis_cmd(self, *args):
        """One command's raw reply (after AUTH), or None when Redis does not answer."""
        host, port = self.d["redis"]["addr"].split(":")
        pw = open(self.d["redis"]["password_file"]).read().strip().encode()
        parts = [b"AUTH", pw] + [a.encode() if isinstance(a, str) else a for a in args]
        wire = b"*2\r\n" + b"".join(b"$%d\r\n%s\r\n" % (len(x), x) for x in parts[:2])
        wire += b"*%d\r\n" % (len(parts) - 2) + b"".join(b"$%d\r\n%s\r\n" % (len(x), x) for x in parts[2:])
        wire += b"*1\r\n$4\r\nQUIT\r\n"   # Redis closes after it: read to the end
        try:
            with socket.create_connection((host, int(port)), timeout=0.5) as s:
                s.sendall(wire)
                data = b""
                while len(data) < 65536:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
        except OSError:
            return None
        if not (data.startswith(b"+OK\r\n") and data.endswith(b"+OK\r\n")):
            return None
        return data[len(b"+OK\r\n"):-len(b"+OK\r\n")]

    def redis_signal(self, sig):
        os.kill(self.redis_pid, sig)

    def redis_start(self):
        self.redis_proc = subprocess.Popen(self.d["redis"]["start"], stdin=subprocess.DEVNULL)
        self.redis_pid = self.redis_proc.pid
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.redis_ping():
                return time.monotonic()
            time.sleep(0.005)
        raise SystemExit("redis-server did not come back within 5 s")


# --- phases --------------------------------------------------------------------------------------

def phase_replay(f, n, fleet_on):
    print("replay: %d signed requests, each replayed once at every other host and at its own" % n)
    hosts = f.hosts
    first_ok = replays = replay_ok = other = 0
    for i in range(n):
        req = f.req()
        origin = hosts[i % len(hosts)]
        a = send(origin["addr"], req)
        first_ok += a.status == 200
        if a.status != 200:
            print("    first send of request %d at %s: %r" % (i, origin["name"], a))
        for h in hosts:
            b = send(h["addr"], req)
            replays += 1
            if b.status == 200:
                replay_ok += 1
            elif not (b.status == 401 and b.rg == "REPLAY"):
                other += 1
                print("    replay of request %d at %s: %r" % (i, h["name"], b))
    cross = replays - n  # the replays at another host than the origin
    print("  figures: %d/%d first sends admitted; %d replays (%d at other hosts), %d admitted"
          % (first_ok, n, replays, cross, replay_ok))
    check(first_ok == n, "every first send admitted (200)")
    if fleet_on:
        check(replay_ok == 0, "0 replays accepted at any host")
        check(other == 0, "every replay refused with 401 REPLAY")
    else:
        check(replay_ok == cross, "harness check (no Redis): each other host admits the replay "
              "(%d of %d), its own host refuses it" % (replay_ok, cross))


def phase_race(f, fleet_on, rounds=5, clients=32):
    print("race: %d simultaneous identical requests over %d hosts, %d rounds"
          % (clients, len(f.hosts), rounds))
    admitted_per_round = []
    bad = []
    for _ in range(rounds):
        req = f.req()
        conns = []
        for i in range(clients):
            host, port = f.hosts[i % len(f.hosts)]["addr"].split(":")
            c = http.client.HTTPConnection(host, int(port), timeout=CLIENT_TIMEOUT)
            c.connect()
            conns.append(c)
        barrier = threading.Barrier(clients)
        answers = [None] * clients

        def one(i):
            barrier.wait()
            answers[i] = send(f.hosts[i % len(f.hosts)]["addr"], req, conn=conns[i])

        ts = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(CLIENT_TIMEOUT + 5)
        ok = sum(1 for a in answers if a and a.status == 200)
        admitted_per_round.append(ok)
        bad += [a for a in answers if not a or (a.status != 200 and not (a.status == 401 and a.rg == "REPLAY"))]
    print("  figures: admitted per round %s; other answers: %s" % (admitted_per_round, bad[:5] or "none"))
    if fleet_on:
        check(all(x == 1 for x in admitted_per_round), "exactly 1 of %d admitted in every round" % clients)
        check(not bad, "all others 401 REPLAY")
    else:
        check(max(admitted_per_round) > 1, "harness check (no Redis): more than one host admits the same request")


def phase_rpm(f, fleet_on, seconds=3.0, rpm=6, burst=3):
    print("rpm: key \"rpm\" (%d a minute, burst %d), one flooding client per host for %.0f s"
          % (rpm, burst, seconds))
    rows = []
    lock = threading.Lock()
    t_start = time.time()

    def client(h):
        end = t_start + seconds
        while time.time() < end:
            t1 = time.time()
            a = send(h["addr"], f.req("rpm"))
            with lock:
                rows.append((a, t1, time.time(), h["name"]))
            time.sleep(0.01)

    ts = [threading.Thread(target=client, args=(h,)) for h in f.hosts]
    for t in ts:
        t.start()
    for t in ts:
        t.join(seconds + CLIENT_TIMEOUT + 5)
    ok = [r for r in rows if r[0].status == 200]
    refused = [r for r in rows if r[0].status == 429]
    other = [r for r in rows if r[0].status not in (200, 429)]
    span = max(r[2] for r in rows) - min(r[1] for r in rows)
    bound = burst + int(span * rpm / 60)
    per_host = collections.Counter(r[3] for r in ok)
    print("  figures: %d requests in %.2f s, %d admitted (%s), %d refused 429, %d other; bound "
          "burst + floor(t*rpm/60) = %d" % (len(rows), span, len(ok), dict(per_host), len(refused),
                                            len(other), bound))
    check(not other, "every answer 200 or 429")
    check(all(r[0].headers.get("retry-after", "").isdigit() for r in refused),
          "every 429 carries retry-after")
    if fleet_on:
        check(len(ok) <= bound, "admitted fleet-wide <= %d" % bound)
        check(len(ok) >= burst, "the burst of %d was admitted" % burst)
    else:
        check(len(ok) > bound, "harness check (no Redis): three hosts admit more than one limit (%d > %d)"
              % (len(ok), bound))


def phase_concurrency(f, fleet_on, limit=3, per_host=4, hold_ms=800, rounds=2):
    print("concurrency: key \"cc\" (%d in flight), %d simultaneous requests per host holding %d ms, "
          "%d rounds" % (limit, per_host, hold_ms, rounds))
    extra = {"x-mock-delay-ms": str(hold_ms)}
    admitted, other, zcards = [], [], []
    for _ in range(rounds):
        clients = [h for h in f.hosts for _ in range(per_host)]
        barrier = threading.Barrier(len(clients) + 1)
        answers = [None] * len(clients)

        def one(i):
            req = f.req("cc", extra=extra)
            barrier.wait()
            answers[i] = send(clients[i]["addr"], req)

        ts = [threading.Thread(target=one, args=(i,)) for i in range(len(clients))]
        for t in ts:
            t.start()
        barrier.wait()
        time.sleep(hold_ms / 2000.0)
        zcards.append(f.redis_cmd("ZCARD", "relay-guard:c:cc") if fleet_on else b"")
        for t in ts:
            t.join(CLIENT_TIMEOUT + 5)
        admitted.append(sum(1 for a in answers if a and a.status == 200))
        other += [a for a in answers if not a or (a.status != 200 and not (a.status == 429 and a.rg == "LIMIT_CONCURRENCY"))]
        time.sleep(0.2)  # the settlements, after the responses
    after = f.redis_cmd("ZCARD", "relay-guard:c:cc") if fleet_on else b""
    print("  figures: admitted per round %s of %d; in Redis's slot set while held %s, after %r; "
          "other answers: %s" % (admitted, len(f.hosts) * per_host, zcards, after, other[:5] or "none"))
    check(not other, "every answer 200 or 429 LIMIT_CONCURRENCY")
    if fleet_on:
        check(all(a == limit for a in admitted),
              "exactly %d admitted fleet-wide in every round (the slots came back between rounds)" % limit)
        check(all(z == b":%d\r\n" % limit for z in zcards), "the slot set held %d members while they ran" % limit)
        check(after == b":0\r\n", "and none after they finished (each released exactly once)")
    else:
        check(max(admitted) > limit, "harness check (no Redis): each host admits its own %d (%s)" % (limit, admitted))


def phase_budget(f, fleet_on, budget=50, per_response=20):
    print("budget: key \"tok\" (%d tokens a day), each response counting %d, sent in turn to each host"
          % (budget, per_response))
    usage = json.dumps({"input_tokens": per_response // 2, "output_tokens": per_response - per_response // 2})
    rows = []
    for i in range(3 * len(f.hosts)):
        h = f.hosts[i % len(f.hosts)]
        a = send(h["addr"], f.req("tok", extra={"x-mock-usage": usage}))
        rows.append((h["name"], a))
        time.sleep(0.05)  # the settlement reaches Redis after the response
    ok = [n for n, a in rows if a.status == 200]
    refused = [(n, a) for n, a in rows if a.status == 429]
    other = [(n, a) for n, a in rows if a.status not in (200, 429)]
    want = -(-budget // per_response)   # admitted while the used count is under the budget
    counter = None
    if fleet_on:
        day = int(f.redis_cmd("TIME").split(b"\r\n")[2]) // 86400
        counter = f.redis_cmd("GET", "relay-guard:t:tok:86400:%d" % day)
    print("  figures: %d requests, %d admitted (%s), %d refused, %d other; Redis's counter %r"
          % (len(rows), len(ok), ok, len(refused), len(other), counter))
    check(not other, "every answer 200 or 429")
    check(all(a.rg == "LIMIT_TOKENS" and a.headers.get("retry-after", "").isdigit() for _, a in refused),
          "every 429 is LIMIT_TOKENS with retry-after")
    if fleet_on:
        check(len(ok) == want, "exactly %d admitted fleet-wide (the budget spent after %d tokens)"
              % (want, want * per_response))
        check(counter == b"$%d\r\n%d\r\n" % (len(str(want * per_response)), want * per_response),
              "Redis's counter holds every admitted response's tokens once (%d)" % (want * per_response))
    else:
        check(len(ok) > want, "harness check (no Redis): each host spends its own budget (%d admitted)" % len(ok))


def phase_kill(f, seconds=3.0):
    victim = f.hosts[-1]
    print("kill: signed load over all hosts for %.0f s, kill -9 of %s's master and workers at the middle"
          % (seconds, victim["name"]))
    sent = []
    lock = threading.Lock()
    t_start = time.monotonic()
    killed = threading.Event()

    def client(k):
        i = k
        while time.monotonic() < t_start + seconds:
            h = f.hosts[i % len(f.hosts)]
            i += 1
            req = f.req()
            a = send(h["addr"], req, timeout=2.0)
            with lock:
                sent.append((req, h, a, killed.is_set()))

    ts = [threading.Thread(target=client, args=(k,)) for k in range(6)]
    for t in ts:
        t.start()
    time.sleep(seconds / 2)
    master = victim["master"]
    try:
        with open("/proc/%d/task/%d/children" % (master, master)) as fh:
            workers = [int(p) for p in fh.read().split()]
    except OSError:
        workers = []
    for p in [master] + workers:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    killed.set()
    victim["dead"] = True
    for t in ts:
        t.join(seconds + 10)
    at_victim = [s for s in sent if s[1] is victim]
    admitted_victim = sum(1 for s in at_victim if s[2].status == 200)
    lost = sum(1 for s in at_victim if s[2].status == 0)
    print("  figures: %d requests (%d to %s: %d admitted, %d cut or refused by the kill), %d workers killed"
          % (len(sent), len(at_victim), victim["name"], admitted_victim, lost, len(workers)))
    survivors = f.alive_hosts()
    replay_ok_after_ok = 0
    twice = 0
    for req, h, a, _ in sent:
        oks = int(a.status == 200)
        for s in survivors:
            if s is h:
                continue
            b = send(s["addr"], req)
            if b.status == 200:
                oks += 1
                if a.status == 200:
                    replay_ok_after_ok += 1
        twice += oks > 1
    check(len(workers) >= 1, "%s's master and %d worker(s) killed" % (victim["name"], len(workers)))
    check(replay_ok_after_ok == 0, "no request admitted anywhere was admitted again at a survivor")
    check(twice == 0, "no nonce admitted twice by the clients' count (%d)" % twice)


def outage_checks(f, what, expect_kind):
    closed_lat, bad_closed, local_bad = [], [], []
    before_fb = {h["name"]: total(scrape(h), "relay_guard_redis_fallbacks_total") for h in f.alive_hosts()}
    before_err = {h["name"]: scrape(h) for h in f.alive_hosts()}
    per_host = 10
    for h in f.alive_hosts():
        for _ in range(per_host):
            a = send(h["addr"], f.req(), timeout=2.0)
            closed_lat.append(a.seconds)
            body = {}
            try:
                body = json.loads(a.body)
            except ValueError:
                pass
            good = (a.status == 503 and a.headers.get("retry-after", "").isdigit()
                    and a.rg == "STORE_UNAVAILABLE"
                    and body.get("type") == "error"
                    and body.get("error", {}).get("type") == "overloaded_error")
            if not good:
                bad_closed.append((h["name"], repr(a), a.body[:120]))
    local_reqs = []
    for h in f.alive_hosts():
        for _ in range(per_host):
            req = f.req(target="/local/v1/messages")
            a = send(h["addr"], req, timeout=2.0)
            local_reqs.append((h, req, a))
            if a.status != 200:
                local_bad.append((h["name"], repr(a)))
    # The local store still refuses a replay at the same host during the outage.
    h0, req0, _ = local_reqs[0]
    same = send(h0["addr"], req0)
    counted = {h["name"]: total(scrape(h), "relay_guard_redis_fallbacks_total") - before_fb[h["name"]]
               for h in f.alive_hosts()}
    kinds = collections.Counter()
    for h in f.alive_hosts():
        now = scrape(h)
        for k in ("connect", "timeout", "protocol", "error_reply"):
            kinds[k] += (total(now, "relay_guard_redis_errors_total", kind=k)
                         - total(before_err[h["name"]], "relay_guard_redis_errors_total", kind=k))
    limit = f.timeout + 0.25
    print("  figures (%s): closed: %d requests, answer time p50 %.1f ms, max %.1f ms (timeout %d ms); "
          "local: %d of %d relayed, fallbacks counted %s; errors by kind %s"
          % (what, len(closed_lat), percentile(closed_lat, 50) * 1000, max(closed_lat) * 1000,
             f.d["timeout_ms"], len(local_reqs) - len(local_bad), len(local_reqs), counted, dict(kinds)))
    check(not bad_closed, "closed: every signed request 503 overloaded_error, retry-after, "
          "STORE_UNAVAILABLE%s" % ("" if not bad_closed else ": e.g. %s" % (bad_closed[:3],)))
    check(max(closed_lat) <= limit, "closed: every answer within the timeout + 250 ms (max %.0f ms)"
          % (max(closed_lat) * 1000))
    check(not local_bad, "local: every request relayed%s" % ("" if not local_bad else ": %s" % local_bad[:3]))
    check(all(counted[n] == per_host for n in counted),
          "local: relay_guard_redis_fallbacks_total counts each one (+%d per host)" % per_host)
    check(same.status == 401 and same.rg == "REPLAY", "local: a same-host replay is still refused (%r)" % same)
    check(kinds[expect_kind] > 0, "relay_guard_redis_errors_total{kind=\"%s\"} counted" % expect_kind)


def phase_redis_down(f):
    print("redis-stop: Redis paused with SIGSTOP (accepts connections, answers nothing)")
    f.redis_signal(signal.SIGSTOP)
    outage_checks(f, "paused", "timeout")
    print("redis-kill: Redis killed with -9 (connections refused)")
    f.redis_signal(signal.SIGKILL)
    time.sleep(0.1)
    outage_checks(f, "killed", "connect")


def phase_redis_back(f, after=1.0):
    print("redis-back: Redis started again under signed load on every host")
    # One client per host, sending from before Redis is back until `after` s past it; a
    # host's recovery is the send time of its first request from which on every answer was
    # 200, relative to the moment Redis answered PING (a request in flight then may be 503).
    rows = {h["name"]: [] for h in f.alive_hosts()}
    stop = threading.Event()

    def client(h):
        while not stop.is_set():
            t1 = time.monotonic()
            a = send(h["addr"], f.req(), timeout=2.0)
            rows[h["name"]].append((t1, a))
            time.sleep(0.002)

    ts = [threading.Thread(target=client, args=(h,)) for h in f.alive_hosts()]
    for t in ts:
        t.start()
    time.sleep(0.1)
    t_ready = f.redis_start()
    time.sleep(after)
    stop.set()
    for t in ts:
        t.join(5)
    recovery, bad_after = {}, {}
    for name, rs in rows.items():
        since = None
        for t1, a in rs:
            if a.status == 200:
                since = t1 if since is None else since
            else:
                since = None
        recovery[name] = None if since is None else since - t_ready
        bad_after[name] = [a for t1, a in rs if t1 > t_ready + f.timeout and a.status != 200]
    print("  figures: requests sent %s; 200 from every request sent after Redis answered PING + %s"
          " (negative: before the driver's 5 ms PING poll saw it)"
          % ({n: len(r) for n, r in rows.items()},
             {n: ("%.1f ms" % (v * 1000) if v is not None else "never") for n, v in recovery.items()}))
    check(all(v is not None and v <= f.timeout for v in recovery.values()),
          "every host in normal service within one timeout (%d ms) of Redis's return" % f.d["timeout_ms"])
    check(not any(bad_after.values()), "no failed request sent a timeout or more after Redis's return%s"
          % ("" if not any(bad_after.values()) else ": %s" % {n: b[:2] for n, b in bad_after.items() if b}))
    req = f.req()
    hs = f.alive_hosts()
    a = send(hs[0]["addr"], req)
    b = send(hs[1]["addr"], req)
    check(a.status == 200 and b.status == 401 and b.rg == "REPLAY",
          "fleet-wide replay refusal is back (%r, then %r at another host)" % (a, b))


def phase_record(f):
    seen = mock_nonces(f.d["mock_record"])
    twice = {n: h for n, h in seen.items() if len(h) > 1}
    print("upstream record: %d nonces reached the mock, %d more than once %s"
          % (len(seen), len(twice), list(twice.items())[:3] if twice else ""))
    return twice


def redis_histogram(f):
    for h in f.alive_hosts():
        s = scrape(h)
        n = total(s, "relay_guard_redis_seconds_count")
        tot = total(s, "relay_guard_redis_seconds_sum")
        print("  %s: relay_guard_redis_seconds count %d, mean %.3f ms" % (h["name"], n, 1000 * tot / n if n else 0))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fleet", required=True, help="the fleet.json scripts/fleet wrote")
    p.add_argument("--requests", type=int, default=60, help="N of the replay phase")
    a = p.parse_args(argv)
    f = Fleet(json.load(open(a.fleet)))
    on = f.d["redis_enabled"]
    print("fleet: %s, %d worker(s) per host, Redis %s, timeout %d ms"
          % (f.d["nginx"], f.d["workers"], f.d["redis"]["addr"] if on else "off (harness check)",
             f.d["timeout_ms"]))
    t0 = time.monotonic()
    phase_replay(f, a.requests, on)
    phase_race(f, on)
    phase_rpm(f, on)
    phase_concurrency(f, on)
    phase_budget(f, on)
    if on:
        phase_kill(f)
        twice = phase_record(f)
        check(not twice, "the upstream saw every nonce at most once (kill included)")
        phase_redis_down(f)
        phase_redis_back(f)
        redis_histogram(f)
    twice = phase_record(f)
    if on:
        check(not twice, "the upstream saw every nonce at most once (whole run)")
    else:
        check(len(twice) > 0, "harness check (no Redis): the upstream's record shows the replays")
    print("fleet: %.1f s, %s" % (time.monotonic() - t0,
                                 "all properties hold" if not failures else "%d FAILED:" % len(failures)))
    for x in failures:
        print("  - " + x)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
