-- wrk script for bench/http/run.sh: every request is a new checkout (a fresh Idempotency-Key and order id), so
-- the server runs the whole saga each time; nothing is answered from the idempotency store.
local threads = {}
local run = tostring(os.time()) .. "-" .. tostring(math.random(1, 1000000))

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  counter = 0
  prefix = run .. "-" .. tostring(tid) .. "-"
end

function request()
  counter = counter + 1
  local id = prefix .. tostring(counter)
  local body = '{"order_id":"o-' .. id .. '","amount":"12.34","currency":"USD","source":"tok_visa",'
    .. '"email":"a@example.com","items":[{"sku":"sku_1","qty":1}],"fail_shipment":false}'
  return wrk.format("POST", "/v1/checkouts",
    { ["Idempotency-Key"] = "k-" .. id, ["Content-Type"] = "application/json" }, body)
end

function done(summary, latency, requests)
  io.write(string.format("statuses: %d non-2xx of %d\n", summary.errors.status, summary.requests))
end
