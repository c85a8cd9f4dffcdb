-- Replays conditional GETs: one request per line, tab-separated METHOD, PATH, TOKEN, ETAG
-- ("-" for no token). Each request sends its line's ETag as If-None-Match, so a server that
-- still has that version answers 304. Each wrk thread starts at a different line and walks
-- the list in order. done() prints the same JSON line as requests.lua. No response()
-- callback (it would cost wrk time per answer): the harness checks that the lines answer 304
-- before the run, and the run's bytes per request show it stayed so.

local threads = {}

function setup(thread)
  thread:set("thread_id", #threads)
  table.insert(threads, thread)
end

function init(args)
  requests = {}
  for line in io.lines(args[1]) do
    local method, path, token, etag = line:match("^(%S+)\t(%S+)\t(%S+)\t(%S+)$")
    local headers = {["If-None-Match"] = etag}
    if token ~= "-" then headers["Authorization"] = "Bearer " .. token end
    table.insert(requests, wrk.format(method, path, headers))
  end
  index = (thread_id * 7919) % #requests
end

function request()
  index = index % #requests + 1
  return requests[index]
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,' ..
    '"errors_connect":%d,"errors_read":%d,"errors_write":%d,"errors_status":%d,"errors_timeout":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
    errors.connect, errors.read, errors.write, errors.status, errors.timeout))
end
