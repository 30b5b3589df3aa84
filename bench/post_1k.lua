-- wrk script: POST the 1 KB JSON document in payload_1k.json (next to this script) on every request.
-- Headers given with `wrk -H` are kept; the request is built once, so the script costs nothing per request.
local here = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./"
local file = assert(io.open(here .. "payload_1k.json", "rb"))
local body = file:read("*a")
file:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
