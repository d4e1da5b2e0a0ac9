-- wrk script: POST one JSON body (the file named by BENCH_BODY) to the URL wrk is given.
--
-- With BENCH_FRESH set, every request carries orders the service has never seen: each placer
-- order number ("ORD-123456") gets a suffix unique to the request (BENCH_SEED, then a counter),
-- so any cache keyed on the content of an order misses. bench/openloop.py --fresh does the same.
local path = assert(os.getenv("BENCH_BODY"), "BENCH_BODY must name the request body file")
local file = assert(io.open(path, "rb"))
local body = file:read("*a")
file:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"

if os.getenv("BENCH_FRESH") then
  local prefix = os.getenv("BENCH_SEED") or tostring(os.time())
  local counter = 0
  function request()
    counter = counter + 1
    local fresh = body:gsub('("ORD%-%d+)"', "%1-" .. prefix .. "-" .. counter .. '"')
    return wrk.format(nil, nil, nil, fresh)
  end
end
