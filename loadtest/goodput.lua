-- wrk script for `python -m loadtest.bench_goodput`: how many readers got their own image.
--
-- Configured from the environment, which every Lua state wrk makes can read:
--   GOODPUT_PATHS       a file of signed paths, one a line, each a different reader
--   GOODPUT_OUT         where done() writes the result
--   GOODPUT_RIGHT       the personalised variant's name (X-Atopen-Variant of a right answer)
--   GOODPUT_THREADS     wrk's -t: thread k of n sends lines k+1, k+1+n, ... so that no two
--                       threads send the same reader
--   GOODPUT_RATE        requests/s over all threads (open loop); unset, a connection sends
--                       as soon as its previous answer arrives (closed loop)
--   GOODPUT_TIMEOUT_MS  an answer later than this counts as a timeout, not as a right one
--
-- wrk's own latency covers every answer; the right images' and the defaults' latencies
-- matter here (a default is meant to come at once), and response() is not told which
-- connection (so which request) it answers. Each request
-- therefore carries its number in X-Request-Id, which atopen echoes, and its send time
-- is kept under that number.

local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } goodput_timespec;
int clock_gettime(int clock_id, goodput_timespec *tp);
]])
local CLOCK_MONOTONIC = 1
local clock = ffi.new("goodput_timespec")

-- Microseconds on the monotonic clock: Lua's own clocks have a resolution of seconds.
local function now_us()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, clock)
  return tonumber(clock.tv_sec) * 1000000 + tonumber(clock.tv_nsec) / 1000
end

local right_name = os.getenv("GOODPUT_RIGHT") or "named"
local thread_count = tonumber(os.getenv("GOODPUT_THREADS") or "1")
local rate = tonumber(os.getenv("GOODPUT_RATE") or "")
local timeout_us = tonumber(os.getenv("GOODPUT_TIMEOUT_MS") or "5000") * 1000
-- A send this much after its due time is late: every connection was still waiting.
local LATE_US = 10000

-- Globals read by done() through thread:get (only plain values and tables cross states).
counts = {
  sent = 0, answered = 0, right = 0, default = 0, other = 0, non200 = 0,
  timeouts_answered = 0, unmatched = 0, repeats = 0, late = 0,
}
right_us = {}
default_us = {}
pending = {}

local paths = {}
local host
local seq = 0
local interval_us
local next_due
local verifying = false

-- Setup and done run in wrk's main Lua state, which sends nothing.
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  threads[#threads + 1] = thread
end

function init(args)
  local line_no = 0
  for line in io.lines(os.getenv("GOODPUT_PATHS")) do
    if line_no % thread_count == id then
      paths[#paths + 1] = line
    end
    line_no = line_no + 1
  end
  host = wrk.headers["Host"]
  -- wrk calls the first thread's request() once before it runs, to check the request
  -- parses: that call is not a send.
  verifying = id == 0
  if rate then
    interval_us = 1000000 * thread_count / rate
  end
end

function request()
  if verifying then
    verifying = false
    return wrk.format("GET", paths[1])
  end
  seq = seq + 1
  if seq > #paths then
    counts.repeats = counts.repeats + 1
  end
  local path = paths[(seq - 1) % #paths + 1]
  counts.sent = counts.sent + 1
  pending[seq] = now_us()
  return "GET " .. path .. " HTTP/1.1\r\nHost: " .. host .. "\r\nX-Request-Id: " .. seq
    .. "\r\n\r\n"
end

function response(status, headers, body)
  local at = now_us()
  counts.answered = counts.answered + 1
  local number = tonumber(headers["X-Request-Id"] or "")
  local sent_at = number and pending[number]
  if sent_at then
    pending[number] = nil
  else
    counts.unmatched = counts.unmatched + 1
  end
  if sent_at and at - sent_at > timeout_us then
    counts.timeouts_answered = counts.timeouts_answered + 1
    return
  end
  if status ~= 200 then
    counts.non200 = counts.non200 + 1
    return
  end
  local variant = headers["X-Atopen-Variant"]
  if variant == right_name then
    counts.right = counts.right + 1
    if sent_at then
      right_us[#right_us + 1] = at - sent_at
    end
  elseif variant == "default" then
    counts.default = counts.default + 1
    if sent_at then
      default_us[#default_us + 1] = at - sent_at
    end
  else
    counts.other = counts.other + 1
  end
end

if rate then
  -- Open loop: the thread hands out send times at its share of the rate, each to the next
  -- connection that is free. A time already past goes out at once (and counts as late
  -- when well past), so a run short of free connections shows as late sends and a lower
  -- arrival rate, not as a quietly slower client.
  function delay()
    local at = now_us()
    next_due = next_due or at
    local due = next_due
    next_due = due + interval_us
    local wait_us = due - at
    if wait_us < -LATE_US then
      counts.late = counts.late + 1
    end
    if wait_us <= 0 then
      return 0
    end
    return math.floor(wait_us / 1000 + 0.5)
  end
end

function done(summary, latency, requests)
  local at = now_us()
  local total = {}
  local stale = 0
  local max_thread_sent = 0
  local latencies = {}
  for _, thread in ipairs(threads) do
    local thread_counts = thread:get("counts")
    for name, value in pairs(thread_counts) do
      total[name] = (total[name] or 0) + value
    end
    max_thread_sent = math.max(max_thread_sent, thread_counts.sent)
    -- A request still unanswered at the end after waiting past the timeout is a timeout;
    -- a younger one is undecided and counts nowhere.
    for _, sent_at in pairs(thread:get("pending")) do
      if at - sent_at > timeout_us then
        stale = stale + 1
      end
    end
    for _, value in ipairs(thread:get("right_us")) do
      latencies[#latencies + 1] = string.format("%.0f", value)
    end
    for _, value in ipairs(thread:get("default_us")) do
      latencies[#latencies + 1] = string.format("d%.0f", value)
    end
  end
  local out = assert(io.open(os.getenv("GOODPUT_OUT"), "w"))
  local fields = {
    "duration_us=" .. summary.duration,
    "threads=" .. #threads,
    "max_thread_sent=" .. max_thread_sent,
    "timeouts_pending=" .. stale,
    "connect_errors=" .. summary.errors.connect,
    "read_errors=" .. summary.errors.read,
    "write_errors=" .. summary.errors.write,
  }
  for name, value in pairs(total) do
    fields[#fields + 1] = name .. "=" .. value
  end
  out:write(table.concat(fields, " "), "\n")
  out:write(table.concat(latencies, "\n"), "\n")
  out:close()
end
