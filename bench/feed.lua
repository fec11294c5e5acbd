-- wrk script for bench/read.py: GET a path with a random reader's token on every request, and
-- collect the server's own time (the Server-Timing header) of every 200 answer, and wrk's own
-- latency (what the client waited: send to last byte, queueing and proxy included).
-- Environment: BENCH_TOKENS (a file, one token a line), BENCH_PATH, BENCH_OUT (where done()
-- writes "errors n" lines, "client_p50_us"/"client_p99_us" lines and one dur_ms a line).
local tokens = {}
for line in io.lines(os.getenv("BENCH_TOKENS")) do tokens[#tokens + 1] = line end
local path = os.getenv("BENCH_PATH")
local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  threads[#threads + 1] = thread
end

function init(args)
  math.randomseed(os.time() * 1000 + id)
  durations, errors = {}, 0
end

function request()
  return wrk.format("GET", path, {Authorization = "Token " .. tokens[math.random(#tokens)]})
end

function response(status, headers, body)
  if status ~= 200 then
    errors = errors + 1
    return
  end
  local timing = headers["Server-Timing"] or headers["server-timing"]
  if timing then durations[#durations + 1] = tonumber(timing:match("dur=([%d.]+)")) end
end

function done(summary, latency, requests)
  local out = io.open(os.getenv("BENCH_OUT"), "w")
  out:write("client_p50_us ", latency:percentile(50), "\n")
  out:write("client_p99_us ", latency:percentile(99), "\n")
  for _, thread in ipairs(threads) do
    out:write("errors ", thread:get("errors"), "\n")
    for _, d in ipairs(thread:get("durations")) do out:write(d, "\n") end
  end
  out:close()
end
