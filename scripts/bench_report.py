#!/usr/bin/env python3
"""Prints scripts/bench's table from its results file (one tab-separated line per variant:
name, req/s, baseline, requests, front worker CPU ticks, seconds, generated heads, p50 µs,
p99 µs, body KiB)."""

import argparse

NOTES = {
    "plain": "relay_guard off: proxy_pass only",
    "signature-1k": "relay_guard signature, every request uniquely signed",
    "token": "relay_guard token (x-api-key), no zone = metrics-off",
    "metrics-on": "relay_guard token + relay_guard_zone (metrics recorded)",
    "redact-off": "token, ~20 Claude Code headers, combined access_log, redact off",
    "redact-on": "as redact-off with relay_guard_redact on",
    "plain-100k": "relay_guard off, body in memory (128k buffer)",
    "signature-100k": "signature, body in memory (128k buffer)",
    "plain-100k-file": "relay_guard off, body in a temp file (16k buffer)",
    "signature-100k-file": "signature, body hashed from the temp file (16k buffer)",
    "usage-off": "token + zone, upstream answers a 1 KB message JSON, relay_guard_accounting off",
    "usage-on": "as usage-off with relay_guard_accounting on (JSON usage counted)",
    "usage-sse-off": "token + zone, upstream answers a 41-event SSE stream, relay_guard_accounting off",
    "usage-sse-on": "as usage-sse-off with relay_guard_accounting on (stream usage counted)",
    "limits-on": "as usage-on with every limit on the key (rate, concurrency, two token budgets), none refusing",
    "redis-on": "as signature-1k with relay_guard_redis (nonce SET NX in Redis on loopback TCP, the worker's pipelined connection)",
    "redis-unix": "as redis-on, through the same redis-server's unix socket",
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("results")
    p.add_argument("--clk-tck", type=int, required=True)
    p.add_argument("--sha256-us", type=float, required=True)
    p.add_argument("--wrk", required=True)
    p.add_argument("--nginx", required=True)
    p.add_argument("--cpu", required=True)
    p.add_argument("--elapsed", type=int, required=True)
    p.add_argument("--rounds", type=int, required=True)
    a = p.parse_args()

    runs = {}
    order = []
    for line in open(a.results):
        (name, rps, base, reqs, ticks, secs, heads, p50, p99, kib, up_ticks, wrk_ticks,
         rnd) = line.rstrip("\n").split("\t")
        if name not in runs:
            runs[name] = []
            order.append(name)
        runs[name].append(dict(rps=float(rps), base=base, reqs=int(reqs), ticks=int(ticks),
                               secs=int(secs), heads=int(heads), p50=int(p50), p99=int(p99),
                               kib=int(kib), up=int(up_ticks), wrk=int(wrk_ticks)))
    us = lambda ticks, reqs: ticks / a.clk_tck * 1e6 / reqs  # noqa: E731
    rows = {}
    for name, rs in runs.items():
        reqs = sum(r["reqs"] for r in rs)
        wall = sum(r["reqs"] / r["rps"] for r in rs)
        ticks = sum(r["ticks"] for r in rs)
        rows[name] = dict(
            base=rs[0]["base"], kib=rs[0]["kib"], reqs=reqs, rps=reqs / wall,
            cpu=us(ticks, reqs), busy=ticks / a.clk_tck / wall * 100,
            up=us(sum(r["up"] for r in rs), reqs), wrk=us(sum(r["wrk"] for r in rs), reqs),
            p50=max(r["p50"] for r in rs), p99=max(r["p99"] for r in rs),
            secs=[r["secs"] for r in rs], heads=[r["heads"] for r in rs],
            cpu_rounds=[us(r["ticks"], r["reqs"]) for r in rs],
            noisy=max(r["rps"] for r in rs) > 1.5 * min(r["rps"] for r in rs))

    print()
    print("relay-guard bench (loopback; same-run ratios; the machine may be shared, so absolute numbers are noisy)")
    print(f"  nginx:    {a.nginx}")
    print(f"  cpu:      {a.cpu}")
    print(f"  wrk:      {a.wrk}  (each variant: {a.rounds} round(s), alternating order)")
    print("  topology: wrk -> front nginx (worker_processes 1, fresh instance per variant) -> upstream nginx")
    print("            (separate instance, 1 worker, 'return 200'); keep-alive on both hops; POST bodies of 1 KiB or")
    print("            100 KiB; client_body_buffer_size 128k keeps 100 KiB bodies in memory, *-file variants use 16k")
    print("            so bodies go to a temp file; signature variants need relay_guard_zone (64m), so they also")
    print("            record metrics (see metrics-on for that share)")
    print(f"  front CPU = utime+stime of the front worker (/proc/<pid>/stat, {a.clk_tck} ticks/s) / completed requests;")
    print("  added = front CPU minus the baseline's; front busy = front worker CPU / wall time; upstr. and wrk")
    print("  = the upstream worker's and wrk's CPU per request (where the rest of the 2 cores went)")
    print()
    hdr = (f"{'variant':<20} {'req/s':>7} {'baseline':<16} {'ratio':>6} {'front CPU':>9} {'added':>7} "
           f"{'added per round':<16} {'front':>5} {'upstr.':>6} {'wrk':>5} {'p50':>5} {'p99':>6} {'requests':>9}")
    print(hdr)
    print(f"{'':<20} {'':>7} {'':<16} {'':>6} {'µs/req':>9} {'µs/req':>7} {'µs/req':<16} {'busy':>5} "
          f"{'µs/req':>6} {'µs/req':>5} {'ms':>5} {'ms':>6}")
    print("-" * len(hdr))
    for name in order:
        r = rows[name]
        b = rows.get(r["base"])
        if name == r["base"] or b is None:
            ratio, added, base, per_round = "1.000", "-", "(baseline)", "-"
        else:
            ratio = f"{r['rps'] / b['rps']:.3f}"
            added = f"{r['cpu'] - b['cpu']:+.1f}"
            base = r["base"]
            per_round = " ".join(f"{x - y:+.1f}" for x, y in zip(r["cpu_rounds"], b["cpu_rounds"]))
        flag = "!" if r["noisy"] or (b is not None and b["noisy"]) else " "
        print(f"{name + flag:<20} {r['rps']:>7.0f} {base:<16} {ratio:>6} {r['cpu']:>9.1f} {added:>7} "
              f"{per_round:<16} {r['busy']:>4.0f}% {r['up']:>6.1f} {r['wrk']:>5.1f} "
              f"{r['p50'] / 1000:>5.2f} {r['p99'] / 1000:>6.2f} {r['reqs']:>9}")
    print("(req/s, CPU and ratios: all rounds together; p50/p99: the worst round)")
    noisy = [n for n in order if rows[n]["noisy"]]
    if noisy:
        print(f"! req/s of {', '.join(noisy)} differed by more than 1.5x between rounds: the machine was"
              " busy with something else; trust those rows (and their comparisons) less, or run again")
    print()
    for name in order:
        r = rows[name]
        signed = ""
        if max(r["heads"]) > 1:
            signed = (f"; {'+'.join(map(str, r['heads']))} signed heads generated for "
                      f"{'+'.join(map(str, r['secs']))} s")
        print(f"  {name:<20} {NOTES.get(name, '')}{signed}")
    print()
    print(f"SHA-256 over 100 KiB, measured in this run with Python hashlib (OpenSSL): {a.sha256_us:.1f} µs per pass")
    for name in order:
        r = rows[name]
        b = rows.get(r["base"])
        if r["kib"] == 100 and b is not None and name != r["base"]:
            added = r["cpu"] - b["cpu"]
            print(f"  {name}: adds {added:+.1f} µs CPU per request = {added / a.sha256_us:.2f} x one SHA-256 pass over 100 KiB")
    print(f"total time {a.elapsed}s; all responses 2xx, no socket errors, no signed request sent twice")


if __name__ == "__main__":
    main()
