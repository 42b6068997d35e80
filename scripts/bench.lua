-- wrk script for scripts/bench: sends pre-rendered requests, each head at most once.
--   wrk ... -s scripts/bench.lua URL -- HEADS_FILE BODY_FILE THREADS unique|cycle|static
-- HEADS_FILE: complete request heads (request line, header lines, blank line), back to back and
-- all of the same length, as scripts/bench_requests.py writes them; BODY_FILE: the body sent
-- after every head. The heads stay in one string (hundreds of thousands of small strings would
-- weigh on LuaJIT's collector) and each request slices its own out. Every variant that is
-- compared with another sends unique heads: LuaJIT interns strings, so a request string built
-- the same way every time costs wrk much less CPU than fresh ones, which would skew req/s.
-- "unique": thread t of THREADS sends heads t, t+THREADS, ... and counts any wrap-around as a
-- reuse (a replayed signed request, which the module would refuse); "cycle" and "static" send the
-- heads round and round ("static": one head, the same request every time).
-- done() prints one RESULT line that scripts/bench parses. The status check is strict: any
-- response outside 200-299 counts in non2xx (wrk's own "Non-2xx" counter starts at 400).

local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("tid", thread_count)
  table.insert(threads, thread)
end

local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

function init(args)
  nthreads = tonumber(args[3]) or 1
  unique = args[4] == "unique"
  blob = slurp(args[1])
  body = slurp(args[2])
  local e = assert(blob:find("\r\n\r\n", 1, true), "no request head in " .. args[1])
  len = e + 3
  assert(#blob % len == 0, "request heads differ in length in " .. args[1])
  local total = #blob / len
  -- this thread's heads: tid, tid + nthreads, ... (1-based)
  n = math.floor((total - tid) / nthreads) + 1
  assert(n > 0, "no request heads for thread " .. tid)
  used, reused, bad = 0, 0, 0
end

function request()
  local k = used % n        -- k-th head of this thread (0-based)
  if unique and used >= n then reused = reused + 1 end
  used = used + 1
  local off = (tid - 1 + k * nthreads) * len
  return blob:sub(off + 1, off + len) .. body
end

function response(status, headers, body)
  if status < 200 or status > 299 then bad = bad + 1 end
end

function done(summary, latency, requests)
  local bad_total, reused_total, sent_total, avail_total = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    bad_total = bad_total + t:get("bad")
    reused_total = reused_total + t:get("reused")
    sent_total = sent_total + t:get("used")
    avail_total = avail_total + t:get("n")
  end
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d non2xx=%d connect_err=%d read_err=%d write_err=%d timeouts=%d sent=%d heads=%d reused=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, bad_total, e.connect, e.read, e.write, e.timeout,
    sent_total, avail_total, reused_total, latency:percentile(50), latency:percentile(99)))
end
