"""Lua scripts for atomic, checked job transitions (Redis >= 7.0 and Valkey).

Every script that touches a job takes the same leading keys::

    KEYS[1] job hash   KEYS[2] job events   KEYS[3] queue stream   KEYS[4] fence counter
    KEYS[5..9] state zsets: queued, running, succeeded, failed, cancelled

Scripts answer with a table whose first element is a status word (``ok``, ``started``,
``done``, ``stale``, ``gone``, ``notfound``, ``badstate``, ``fenced``, ``existing``,
``terminal``, ``direct``) so that Python never parses error strings. Times come from the
server's clock (``TIME``). Values built here (dead-letter reasons) are msgpack via the
server's cmsgpack. ``DISPATCH`` (the queue's delivery in priority order) answers with the
delivered entry.
"""

from __future__ import annotations

from typing import Final

_PRELUDE: Final = """
local STATE_KEY = {queued=5, running=6, succeeded=7, failed=8, cancelled=9}
local TERMINAL = {succeeded=true, failed=true, cancelled=true}
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function move_state(job_id, old, new, now)
  if old and STATE_KEY[old] then redis.call('ZREM', KEYS[STATE_KEY[old]], job_id) end
  redis.call('ZADD', KEYS[STATE_KEY[new]], now, job_id)
  redis.call('HSET', KEYS[1], 'state', new, 'updated_ms', now)
end
-- Fencing tokens only grow, also across a loss of the server's data (FLUSHALL, a failover to
-- an empty replica): a token is never below the server's clock in microseconds, so a counter
-- that starts again from nothing still issues tokens above every earlier one (one script run
-- takes more than a microsecond, so the clock outruns the counter). Kept as text ('%d') so
-- Lua's number formatting never turns one into an exponent.
local function next_token()
  local clock = redis.call('TIME')
  local floor = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
  local t = redis.call('INCR', KEYS[4])
  if t < floor then
    t = floor
    redis.call('SET', KEYS[4], string.format('%d', t))
  end
  return string.format('%d', t)
end
local function add_event(maxlen, now, etype, data)
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, '*', 'type', etype, 'ts', now, 'data', data)
end
local function release(ttl_ms, group)
  local msg = redis.call('HGET', KEYS[1], 'msg_id')
  if msg then
    redis.call('XACK', KEYS[3], group, msg)
    redis.call('XDEL', KEYS[3], msg)
  end
  redis.call('PEXPIRE', KEYS[1], ttl_ms)
  redis.call('PEXPIRE', KEYS[2], ttl_ms)
end
"""

SUBMIT: Final = (
    _PRELUDE
    + """
-- KEYS[10] all-jobs zset, KEYS[11] idempotency key (the job key when there is none),
-- KEYS[12] waiting zset, KEYS[13] submit counter
-- ARGV: job_id, spec, meta, idem_ttl_ms (0 = none), maxlen, event_data, priority, -priority
-- The job waits in KEYS[12] (score -priority; the zero-padded submit number in the member keeps
-- one priority FIFO) until DISPATCH delivers it; its 'msg_id' is set by START.
local use_idem = ARGV[4] ~= '0'
if use_idem then
  local existing = redis.call('GET', KEYS[11])
  if existing then return {'existing', existing} end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'existing_id', ARGV[1]} end
local now = now_ms()
local member = string.format('%020d', redis.call('INCR', KEYS[13])) .. ':' .. ARGV[1]
redis.call('ZADD', KEYS[12], ARGV[8], member)
redis.call('HSET', KEYS[1], 'job_id', ARGV[1], 'state', 'queued', 'created_ms', now,
  'updated_ms', now, 'spec', ARGV[2], 'meta', ARGV[3], 'attempts', 0, 'token', 0,
  'cancel', 0, 'committed_frames', 0, 'priority', ARGV[7], 'waiting_as', member)
redis.call('ZADD', KEYS[10], now, ARGV[1])
redis.call('ZADD', KEYS[5], now, ARGV[1])
if use_idem then redis.call('SET', KEYS[11], ARGV[1], 'PX', ARGV[4]) end
add_event(ARGV[5], now, 'submitted', ARGV[6])
return {'ok', ARGV[1]}
"""
)

START: Final = (
    _PRELUDE
    + """
-- KEYS[10] waiting zset
-- ARGV: job_id, worker_id, group, msg_id, max_deliveries, maxlen, finished_ttl_ms
-- A job's first delivery binds it to its entry ('msg_id'); any other entry is stale.
local now = now_ms()
local function drop_msg()
  redis.call('XACK', KEYS[3], ARGV[3], ARGV[4])
  redis.call('XDEL', KEYS[3], ARGV[4])
end
if redis.call('EXISTS', KEYS[1]) == 0 then drop_msg() return {'gone'} end
local h = redis.call('HMGET', KEYS[1], 'state', 'msg_id', 'cancel', 'attempts', 'owner',
  'waiting_as')
local state = h[1]
if not h[2] and state == 'queued' then
  redis.call('HSET', KEYS[1], 'msg_id', ARGV[4])
  if h[6] then redis.call('ZREM', KEYS[10], h[6]) end
elseif h[2] ~= ARGV[4] then drop_msg() return {'stale', state} end
if TERMINAL[state] then drop_msg() return {'done', state} end
if h[3] == '1' then
  move_state(ARGV[1], state, 'cancelled', now)
  add_event(ARGV[6], now, 'cancelled', cmsgpack.pack({worker=ARGV[2]}))
  release(ARGV[7], ARGV[3])
  return {'done', 'cancelled'}
end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
if attempts > tonumber(ARGV[5]) then
  local reason = 'dead-lettered: delivered ' .. attempts .. ' times (max_deliveries=' ..
    ARGV[5] .. '); the last owner ' .. tostring(h[5] or 'none') ..
    ' stopped heartbeating before finishing'
  redis.call('HSET', KEYS[1], 'error',
    cmsgpack.pack({kind='dead_letter', reason=reason, attempts=attempts}))
  move_state(ARGV[1], state, 'failed', now)
  add_event(ARGV[6], now, 'dead_lettered', cmsgpack.pack({reason=reason}))
  release(ARGV[7], ARGV[3])
  return {'done', 'failed'}
end
local token = next_token()
redis.call('HSET', KEYS[1], 'owner', ARGV[2], 'token', token)
move_state(ARGV[1], state, 'running', now)
local etype = 'started'
if state == 'running' then etype = 'reclaimed' end
add_event(ARGV[6], now, etype,
  cmsgpack.pack({worker=ARGV[2], attempt=attempts, token=token, previous_owner=h[5]}))
return {'started', token, attempts}
"""
)

TRANSITION: Final = (
    _PRELUDE
    + """
-- ARGV: job_id, expected_state, token, new_state, field ('' = none), value, maxlen,
--       finished_ttl_ms, group, event_type, event_data
if redis.call('EXISTS', KEYS[1]) == 0 then return {'notfound'} end
local h = redis.call('HMGET', KEYS[1], 'state', 'token', 'owner')
if h[1] ~= ARGV[2] then return {'badstate', h[1]} end
if h[2] ~= ARGV[3] then return {'fenced', tostring(h[3]), tostring(h[2])} end
local now = now_ms()
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], ARGV[5], ARGV[6]) end
move_state(ARGV[1], h[1], ARGV[4], now)
add_event(ARGV[7], now, ARGV[10], ARGV[11])
if TERMINAL[ARGV[4]] then release(ARGV[8], ARGV[9]) end
return {'ok', ARGV[4]}
"""
)

CANCEL: Final = (
    _PRELUDE
    + """
-- KEYS[10] waiting zset
-- ARGV: job_id, maxlen, finished_ttl_ms, group, event_data
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'notfound'} end
local now = now_ms()
if state == 'queued' then
  local member = redis.call('HGET', KEYS[1], 'waiting_as')
  if member then redis.call('ZREM', KEYS[10], member) end
  redis.call('HSET', KEYS[1], 'cancel', 1)
  move_state(ARGV[1], state, 'cancelled', now)
  add_event(ARGV[2], now, 'cancelled', ARGV[5])
  release(ARGV[3], ARGV[4])
  return {'ok', 'cancelled'}
end
if state == 'running' then
  redis.call('HSET', KEYS[1], 'cancel', 1, 'updated_ms', now)
  add_event(ARGV[2], now, 'cancel_requested', ARGV[5])
  return {'ok', 'running'}
end
return {'terminal', state}
"""
)

RETRY: Final = (
    _PRELUDE
    + """
-- KEYS[10] waiting zset, KEYS[11] submit counter
-- ARGV: job_id, maxlen, event_data
-- A failed or cancelled job waits again, at its priority and behind the jobs already waiting
-- there; its next delivery is attempt 1 of retry n ('retries'). Its error and result go, its
-- counters and committed frames stay (the store's watermark wins), and it no longer expires.
local h = redis.call('HMGET', KEYS[1], 'state', 'priority', 'direct')
local state = h[1]
if not state then return {'notfound'} end
if state ~= 'failed' and state ~= 'cancelled' then return {'badstate', state} end
if h[3] == '1' then return {'direct', state} end
local now = now_ms()
local member = string.format('%020d', redis.call('INCR', KEYS[11])) .. ':' .. ARGV[1]
redis.call('ZADD', KEYS[10], -tonumber(h[2] or '0'), member)
redis.call('HDEL', KEYS[1], 'msg_id', 'error', 'result')
redis.call('HSET', KEYS[1], 'attempts', 0, 'cancel', 0, 'waiting_as', member)
local retries = redis.call('HINCRBY', KEYS[1], 'retries', 1)
redis.call('PERSIST', KEYS[1])
redis.call('PERSIST', KEYS[2])
move_state(ARGV[1], state, 'queued', now)
add_event(ARGV[2], now, 'requeued', ARGV[3])
return {'ok', state, retries}
"""
)

PROGRESS: Final = (
    _PRELUDE
    + """
-- ARGV: token, maxlen, committed_frames (-1 = unchanged), event_data, name1, incr1, ...
local h = redis.call('HMGET', KEYS[1], 'state', 'token', 'owner', 'cancel')
if not h[1] then return {'notfound'} end
if h[1] ~= 'running' then return {'badstate', h[1]} end
if h[2] ~= ARGV[1] then return {'fenced', tostring(h[3]), tostring(h[2])} end
local now = now_ms()
if tonumber(ARGV[3]) >= 0 then redis.call('HSET', KEYS[1], 'committed_frames', ARGV[3]) end
for i = 5, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], 'n:' .. ARGV[i], ARGV[i + 1])
end
redis.call('HSET', KEYS[1], 'updated_ms', now)
add_event(ARGV[2], now, 'progress', ARGV[4])
return {'ok', h[4]}
"""
)

START_DIRECT: Final = (
    _PRELUDE
    + """
-- A job its submitter runs itself (``sapiens-stream run``): registered and started in one step,
-- with no queue entry, so no service ever claims it. Its lease lives in the job hash
-- ('lease_until', renewed by the owner's heartbeat); once that passes, the same call from
-- another process takes the job over with a new token.
-- KEYS[10] all-jobs zset. ARGV: job_id, spec, meta, worker_id, lease_ms, maxlen,
--   finished_ttl_ms, group
local now = now_ms()
local h = redis.call('HMGET', KEYS[1], 'state', 'direct', 'lease_until', 'owner', 'cancel')
local state = h[1]
if state then
  if TERMINAL[state] then return {'done', state} end
  if h[2] ~= '1' then return {'queued', state} end
  if tonumber(h[3] or '0') > now then return {'busy', tostring(h[4])} end
  if h[5] == '1' then
    move_state(ARGV[1], state, 'cancelled', now)
    add_event(ARGV[6], now, 'cancelled', cmsgpack.pack({worker=ARGV[4]}))
    release(ARGV[7], ARGV[8])
    return {'done', 'cancelled'}
  end
else
  redis.call('HSET', KEYS[1], 'job_id', ARGV[1], 'created_ms', now, 'spec', ARGV[2],
    'meta', ARGV[3], 'attempts', 0, 'token', 0, 'cancel', 0, 'committed_frames', 0,
    'direct', 1)
  redis.call('ZADD', KEYS[10], now, ARGV[1])
  add_event(ARGV[6], now, 'submitted', cmsgpack.pack({worker=ARGV[4]}))
end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
local token = next_token()
redis.call('HSET', KEYS[1], 'owner', ARGV[4], 'token', token,
  'lease_until', now + tonumber(ARGV[5]))
move_state(ARGV[1], state, 'running', now)
local etype = 'started'
if state then etype = 'reclaimed' end
add_event(ARGV[6], now, etype,
  cmsgpack.pack({worker=ARGV[4], attempt=attempts, token=token, previous_owner=h[4]}))
return {'started', token, attempts}
"""
)

HEARTBEAT: Final = """
-- KEYS[1] worker key, KEYS[2] queue, KEYS[3..] hashes of the worker's direct jobs.
-- ARGV: ttl_ms, info, group, worker_id, number of queue entries, msg_id..., then one token per
-- direct job.
-- Refreshes the worker key and resets the idle time of the entries it still owns
-- (XCLAIM ... JUSTID does not count as a delivery), so XAUTOCLAIM only takes entries of
-- workers that stopped heartbeating; renews the lease of each direct job it still owns.
-- Returns what it no longer owns: queue entry ids, and the keys of direct jobs. A consumer
-- group that vanished (the server lost its data) loses every entry, and never raises.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[1])
local lost = {}
local n = tonumber(ARGV[5])
for i = 6, 5 + n do
  local p = redis.pcall('XPENDING', KEYS[2], ARGV[3], ARGV[i], ARGV[i], 1, ARGV[4])
  if type(p) ~= 'table' or p.err or #p == 0 then
    table.insert(lost, ARGV[i])
  else
    redis.call('XCLAIM', KEYS[2], ARGV[3], ARGV[4], 0, ARGV[i], 'JUSTID')
  end
end
for k = 3, #KEYS do
  local h = redis.call('HMGET', KEYS[k], 'state', 'owner', 'token')
  if h[1] == 'running' and h[2] == ARGV[4] and h[3] == ARGV[5 + n + k - 2] then
    redis.call('HSET', KEYS[k], 'lease_until', now + tonumber(ARGV[1]))
  else
    table.insert(lost, KEYS[k])
  end
end
return lost
"""

DISPATCH: Final = """
-- KEYS[1] queue stream, KEYS[2] waiting zset. ARGV: group, consumer.
-- Delivers one job to the consumer: an undelivered stream entry first (entries queued by an
-- earlier version, which wrote jobs straight to the stream), else the waiting job of highest
-- priority, oldest first within a priority, appended to the stream and read at once, so it is
-- a pending entry of this consumer (heartbeats keep it, XAUTOCLAIM takes it from a dead one).
-- Answers {msg_id, field, value, ...} or {} when nothing waits. The first read raises NOGROUP
-- before anything is written when the group is gone.
local function read_one()
  local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1,
    'STREAMS', KEYS[1], '>')
  if not r then return nil end
  local entry = r[1][2][1]
  local out = {entry[1]}
  for _, v in ipairs(entry[2]) do out[#out + 1] = v end
  return out
end
local got = read_one()
if got then return got end
local top = redis.call('ZRANGE', KEYS[2], 0, 0)
if #top == 0 then return {} end
redis.call('ZREM', KEYS[2], top[1])
redis.call('XADD', KEYS[1], '*', 'job', string.sub(top[1], 22))
return read_one()
"""
