-- Replays a request list: one request per line, tab-separated METHOD, PATH, TOKEN, BODY
-- ("-" for none). Each wrk thread starts at a different line and walks the list in order.
-- In a BODY, "{n}" becomes a number unique across threads and requests (for creates,
-- whose URLs must differ). done() prints one JSON line with the figures the harness reads.

local threads = {}
local counter = 0

function setup(thread)
  thread:set("thread_id", #threads)
  table.insert(threads, thread)
end

function init(args)
  requests = {}
  for line in io.lines(args[1]) do
    local method, path, token, body = line:match("^(%S+)\t(%S+)\t(%S+)\t(.*)$")
    local headers = {}
    if token ~= "-" then headers["Authorization"] = "Bearer " .. token end
    if body ~= "-" then headers["Content-Type"] = "application/json" else body = nil end
    table.insert(requests, {method = method, path = path, headers = headers, body = body})
  end
  index = (thread_id * 7919) % #requests
  -- args[2]: a nonce from the harness, so reruns against the same data never repeat a URL.
  prefix = string.format("%s-t%d-", args[2] or tostring(os.time()), thread_id)
end

function request()
  index = index % #requests + 1
  local r = requests[index]
  local body = r.body
  if body and body:find("{n}", 1, true) then
    counter = counter + 1
    body = body:gsub("{n}", prefix .. counter)
  end
  return wrk.format(r.method, r.path, r.headers, body)
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
