#!/usr/bin/env python3
"""A scripted fake Redis for the relay's bad-reply tests (t/071): Redis replies are input too.

Stdlib only, loopback. It reads RESP commands (AUTH, PING, SET, EVAL, anything else gets -ERR)
and answers the relay's two checks the way Redis does: `SET key 1 NX PX ttl` (a nonce alone)
with +OK or a nil, and EVAL of the relay's script (KEYS: nonce key, rate key, slot set; ARGV:
nonce ttl ms, rate interval µs, burst tolerance µs, and the slot's limit, member and lease,
unused here: keys with concurrency or budgets are for a real Redis, t/072 and t/073) with
{1,0,0} admitted, {0,0,0} a replay, {2,wait,0} over the rate, the SET NX and the GCRA kept
here in memory. Or, as the mode file says at the moment a command arrives, it misbehaves (for
SET: admit +OK, replay a nil, unexpected :1):

  correct      the script's answer, as above
  admit        {1,0,0} whatever was asked        replay     {0,0,0} whatever was asked
  truncated    the first half of the answer, then close
  error        -ERR mock failure                  wrongpass  -WRONGPASS (to AUTH too)
  unexpected   +OK instead of the array           badarray   *3 :5 :0 :0 (no such verdict)
  nested       an array nested 64 deep
  huge         a 1 MiB bulk string (larger than any reply the relay asks for)
  long         a 2,000-byte bulk string (under the parser's bulk bound, over the relay's
               1 KiB reply buffer)
  reset        half the answer, then a TCP reset (SO_LINGER 0)
  silent       accept, read, never answer (the connection stays open until the client leaves)
  slow         the correct answer --slow-ms after its command arrived (past the relay's
               timeout); pipelined commands' replies are not delayed one after another
  close        close the connection as soon as a command arrives

AUTH is answered +OK (checked against --requirepass when given) except in wrongpass, so a
fault hits the script's reply even behind a password. The mode is read from --mode-file
(one word; "correct" when the file is missing), so a test switches it between requests. After
every script the counts are written to --stats-file as JSON (connections, commands by name,
evals by mode; written at each connection and script): a test can tell that a request never
reached Redis.
"""
import argparse, json, os, queue, socket, struct, sys, threading, time

MODES = {"correct", "admit", "replay", "truncated", "error", "wrongpass", "unexpected",
         "badarray", "nested", "huge", "long", "reset", "silent", "slow", "close"}


class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.nonces = {}        # key -> expiry (monotonic s)
        self.tat = {}           # rate key -> theoretical arrival time (µs)
        self.stats = {"connections": 0, "commands": {}, "evals": {}, "keys": []}

    def mode(self):
        try:
            with open(self.args.mode_file) as f:
                m = f.read().strip() or "correct"
        except (FileNotFoundError, TypeError):
            m = "correct"
        return m if m in MODES else "correct"

    def count(self, section, name):
        with self.lock:
            d = self.stats[section]
            d[name] = d.get(name, 0) + 1
            if section == "evals":   # one write per script: the file is for tests, not a log
                self.save()

    def save(self):
        if not self.args.stats_file:
            return
        tmp = self.args.stats_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.stats, f)
        os.replace(tmp, self.args.stats_file)

    def script(self, keys, argv):
        """The relay's script, in Python: the reply's two integers."""
        nonce_key, rate_key = keys
        ttl_ms, interval, tolerance = (int(x) for x in argv)
        with self.lock:
            for k in (nonce_key, rate_key):
                if k and k not in self.stats["keys"] and len(self.stats["keys"]) < 1000:
                    self.stats["keys"].append(k)
            now_s = time.monotonic()
            if nonce_key:
                exp = self.nonces.get(nonce_key)
                if exp is not None and exp > now_s:
                    return 0, 0
                self.nonces[nonce_key] = now_s + ttl_ms / 1000.0
            if not rate_key:
                return 1, 0
            now = int(time.time() * 1e6)
            nxt = max(self.tat.get(rate_key, 0), now) + interval
            if nxt - now > tolerance:
                return 1, nxt - now - tolerance
            self.tat[rate_key] = nxt
            return 1, 0


def read_command(f):
    """One RESP array of bulk strings from file f, or None at EOF / on garbage."""
    line = f.readline(1024)
    if not line.startswith(b"*") or not line.endswith(b"\r\n"):
        return None
    try:
        n = int(line[1:-2])
    except ValueError:
        return None
    if not 0 < n <= 64:
        return None
    out = []
    for _ in range(n):
        h = f.readline(1024)
        if not h.startswith(b"$"):
            return None
        try:
            size = int(h[1:-2])
        except ValueError:
            return None
        if not 0 <= size <= 1 << 20:
            return None
        data = f.read(size + 2)
        if len(data) != size + 2:
            return None
        out.append(data[:-2])
    return out


def verdict(ok, wait):
    """The script's reply: {0,0,0} a replay, {2,wait,0} over the rate, {1,0,0} admitted."""
    v = 0 if not ok else (2 if wait > 0 else 1)
    return b"*3\r\n:%d\r\n:%d\r\n:0\r\n" % (v, wait)


class Ordered:
    """A connection's replies in command order, each sent no earlier than its delay after it
    was queued: a slow Redis delays every reply by the same time, so a pipelining client gets
    each one slow-ms after its command, not slow-ms after the previous reply."""

    def __init__(self, conn):
        self.conn = conn
        self.q = queue.Queue()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def send(self, data, delay_s=0.0):
        self.q.put((time.monotonic() + delay_s, data))

    def _run(self):
        while True:
            item = self.q.get()
            if item is None:
                return
            due, data = item
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                self.conn.sendall(data)
            except OSError:
                pass   # the client left; keep draining so close() returns

    def close(self):
        """Waits until everything queued was sent (or failed)."""
        self.q.put(None)
        self.t.join()


def serve(conn, st):
    with st.lock:
        st.stats["connections"] += 1
        st.save()
    # Each reply in one segment, now: Nagle would hold the second of two small replies (AUTH,
    # then the script) for the relay's delayed ACK, 40 ms that are the mock's, not the relay's.
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = conn.makefile("rb")
    out = Ordered(conn)
    authed = st.args.requirepass is None
    try:
        while True:
            cmd = read_command(f)
            if cmd is None:
                return
            name = cmd[0].upper().decode("ascii", "replace")
            st.count("commands", name)
            mode = st.mode()
            if name == "AUTH":
                if mode == "wrongpass" or (st.args.requirepass is not None
                                           and cmd[-1].decode("utf-8", "replace") != st.args.requirepass):
                    out.send(b"-WRONGPASS invalid username-password pair or user is disabled.\r\n")
                else:
                    authed = True
                    out.send(b"+OK\r\n")
                continue
            if not authed:
                out.send(b"-NOAUTH Authentication required.\r\n")
                continue
            if name == "PING":
                out.send(b"+PONG\r\n")
                continue
            if (name == "SET" and len(cmd) == 6 and cmd[2] == b"1" and cmd[3].upper() == b"NX"
                    and cmd[4].upper() == b"PX"):
                is_set = True
                keys, argv = [cmd[1].decode("ascii", "replace"), ""], [cmd[5], b"0", b"0"]
            elif name == "EVAL" and len(cmd) == 12 and cmd[2] == b"3" and cmd[5] == b"":
                is_set = False
                keys, argv = [c.decode("ascii", "replace") for c in cmd[3:5]], cmd[6:9]
            else:
                out.send(b"-ERR mock_redis: only the relay's SET NX PX or its EVAL of a nonce and a rate\r\n")
                continue
            st.count("evals", mode)

            def reply(ok, wait):
                if is_set:
                    return b"+OK\r\n" if ok else b"$-1\r\n"
                return verdict(ok, wait)
            if mode in ("correct", "slow", "truncated", "reset"):
                answer = reply(*st.script(keys, argv))
            elif mode == "admit":
                answer = reply(1, 0)
            else:
                answer = reply(0, 0)
            if mode in ("correct", "admit", "replay"):
                out.send(answer)
            elif mode == "slow":
                out.send(answer, st.args.slow_ms / 1000.0)
            elif mode == "truncated":
                out.send(answer[: len(answer) // 2])
                return
            elif mode == "reset":
                out.send(answer[: len(answer) // 2])
                out.close()
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            elif mode in ("error", "wrongpass"):
                out.send(b"-ERR mock failure\r\n")
            elif mode == "unexpected":
                out.send(b":1\r\n" if is_set else b"+OK\r\n")
            elif mode == "badarray":
                out.send(b"*3\r\n:5\r\n:0\r\n:0\r\n")
            elif mode == "nested":
                out.send(b"*1\r\n" * 64 + b":1\r\n")
            elif mode == "long":
                out.send(b"$2000\r\n" + b"x" * 2000 + b"\r\n")
            elif mode == "huge":
                out.send(b"$%d\r\n" % (1 << 20) + b"x" * (1 << 20) + b"\r\n")
            elif mode == "silent":
                # Hold the connection until the client closes it; never answer.
                while conn.recv(65536):
                    pass
                return
            elif mode == "close":
                return
    except OSError:
        return
    finally:
        out.close()
        try:
            f.close()
            conn.close()
        except OSError:
            pass


def main(argv=None):
    p = argparse.ArgumentParser(description="A scripted fake Redis for relay-guard's tests.")
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0: a free one)")
    p.add_argument("--mode-file", help="file holding the current mode (see the module doc)")
    p.add_argument("--stats-file", help="where the counts are written after each command")
    p.add_argument("--requirepass", help="the password AUTH must give")
    p.add_argument("--slow-ms", type=int, default=500, help="delay of the slow mode")
    p.add_argument("--pidfile", help="write the process id here once listening")
    args = p.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    st = State(args)
    st.save()
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host or "127.0.0.1", int(port)))
    srv.listen(128)
    if args.pidfile:
        with open(args.pidfile, "w") as f:
            f.write("%d\n" % os.getpid())
    print("mock_redis listening on %s:%d" % srv.getsockname(), flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn, st), daemon=True).start()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(0)
