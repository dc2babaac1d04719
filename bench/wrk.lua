-- wrk script: POST a new text in every request and count the answers that carry a task error.
-- bench/wrk.py passes the file of request bodies (one JSON per line) and where this run starts in it.
local bodies, next_body = {}, 1
degraded = 0  -- a global: done() reads it from every thread
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  for line in io.lines(args[1]) do
    bodies[#bodies + 1] = line
  end
  -- Threads walk disjoint parts of the file, so no text is sent twice.
  next_body = tonumber(args[2]) + id * math.floor(#bodies / tonumber(args[3]))
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  local body = bodies[next_body]
  next_body = next_body + 1
  return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
  if status == 200 and string.find(body, '"code":"', 1, true) then
    degraded = degraded + 1
  end
end

function done(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do
    total = total + t:get("degraded")
  end
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "non2xx": %d, ' ..
    '"socket_errors": %d, "degraded": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout, total))
end
