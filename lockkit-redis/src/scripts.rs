//! The Lua scripts. Each runs atomically on the server that owns the lock's
//! hash slot, touches only the lock's own keys (declared in `KEYS`, all with
//! one hash tag) and reads time with `TIME` (the server's clock).
//!
//! They are sent with `EVALSHA`; on `NOSCRIPT` (a restarted or failed-over
//! server, `SCRIPT FLUSH`) the client loads them again and retries — the
//! behaviour of [`redis::Script`].
//!
//! A lock's lease (permit count 1) is the string `:lock`, valued
//! `<lease id>\n<token>\n<acquired ms>\n<owner>`. A semaphore's leases
//! (count N > 1) are the members of the sorted set `:permits` (lease id,
//! scored by its expiry in server ms; a member whose score is not above
//! the server's `now` has expired) and their details in the hash
//! `:holders` (lease id → `<token>\n<acquired ms>\n<N>\n<owner>`). Both
//! keys expire (`PEXPIREAT`) with their latest permit, so nothing outlives
//! the last holder. Lease ids and owners never contain control characters
//! (core validates them), so comparing the value's prefix up to the first
//! `\n` with a lease id is exact.

use std::sync::LazyLock;

use redis::Script;

/// Lua helpers every semaphore script starts with.
///
/// - `clock()`: the server's time in ms.
/// - `purge(permits, holders, now)`: drops permits that expired by `now`
///   and returns how many are live.
/// - `keep_until(permits, holders, now)`: makes both keys expire with the
///   latest live permit (deletes them when none is live).
/// - `count_of(permits, holders)`: the permit count the live holders
///   asked with, or `false` when none holds.
macro_rules! permits_lib {
    () => {
        r"
local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function purge(permits, holders, now)
  if redis.call('EXISTS', permits) == 0 then
    return 0
  end
  local dead = redis.call('ZRANGEBYSCORE', permits, '-inf', now)
  for _, id in ipairs(dead) do
    redis.call('ZREM', permits, id)
    redis.call('HDEL', holders, id)
  end
  return redis.call('ZCARD', permits)
end
local function keep_until(permits, holders, now)
  local last = redis.call('ZRANGE', permits, -1, -1, 'WITHSCORES')
  if last[2] and tonumber(last[2]) > now then
    redis.call('PEXPIREAT', permits, last[2])
    redis.call('PEXPIREAT', holders, last[2])
  else
    redis.call('DEL', permits, holders)
  end
end
local function count_of(permits, holders)
  local first = redis.call('ZRANGE', permits, 0, 0)[1]
  if not first then
    return false
  end
  local details = redis.call('HGET', holders, first)
  if not details then
    return false
  end
  return tonumber(string.match(details, '^%d+\n%d+\n(%d+)\n'))
end
"
    };
}

/// Takes a permit of the lock or semaphore if one is free — and, when
/// FIFO waiters are queued, only for a waiter near enough the head that a
/// permit is left for everyone queued before it.
///
/// `KEYS`: lock, fence, queue, waiters, permits, holders. `ARGV`: lease
/// id, owner, TTL ms, mode (`try`: never queue; `wait`: join or stay in
/// the queue), queue entry TTL ms, permit count.
///
/// Returns the new fencing token (`INCR` of the fence counter, so larger
/// than every earlier grant of the name, whatever its count), 0 when not
/// granted, or minus the holders' permit count when they asked with
/// another count than this request (the request then leaves the queue).
///
/// Admission: `used` live permits (the lock's string counts as one of a
/// count of 1) plus `ahead` queued waiters before this request (all of
/// the queue when it is not in it) must stay below the count. For a count
/// of 1 that is "free, and the head of the queue or no queue".
///
/// Idempotent per lease id: if a permit is already held under this id (a
/// retry after a reply was lost), its TTL is reset from now and its token
/// returned, so the caller's deadline (counted from before the retry) is
/// never later than the server's expiry.
const ACQUIRE: &str = concat!(
    permits_lib!(),
    r"
local now = clock()
local id = ARGV[1]
local ttl = tonumber(ARGV[3])
local n = tonumber(ARGV[6])
local held = redis.call('GET', KEYS[1])
if held and n == 1 and string.sub(held, 1, string.len(id) + 1) == id .. '\n' then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return tonumber(string.match(held, '^[^\n]*\n(%d+)\n'))
end
local used, count = 0, false
if held then
  used, count = 1, 1
else
  used = purge(KEYS[5], KEYS[6], now)
  if used > 0 then
    count = count_of(KEYS[5], KEYS[6])
    local mine = redis.call('HGET', KEYS[6], id)
    if mine and n > 1 and redis.call('ZSCORE', KEYS[5], id) then
      redis.call('ZADD', KEYS[5], now + ttl, id)
      keep_until(KEYS[5], KEYS[6], now)
      return tonumber(string.match(mine, '^(%d+)\n'))
    end
  end
end
if count and count ~= n then
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZREM', KEYS[4], id)
  return -count
end
local ahead = 0
local queued = redis.call('EXISTS', KEYS[3]) == 1
if queued then
  local dead = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now)
  for _, w in ipairs(dead) do
    redis.call('ZREM', KEYS[3], w)
    redis.call('ZREM', KEYS[4], w)
  end
  ahead = redis.call('ZRANK', KEYS[3], id) or redis.call('ZCARD', KEYS[3])
end
if used + ahead < n then
  local token = redis.call('INCR', KEYS[2])
  local stamp = string.format('%d', token) .. '\n' .. string.format('%d', now) .. '\n'
  if n == 1 then
    redis.call('SET', KEYS[1], id .. '\n' .. stamp .. ARGV[2], 'PX', ARGV[3])
  else
    redis.call('ZADD', KEYS[5], now + ttl, id)
    redis.call('HSET', KEYS[6], id, stamp .. ARGV[6] .. '\n' .. ARGV[2])
    keep_until(KEYS[5], KEYS[6], now)
  end
  if queued then
    redis.call('ZREM', KEYS[3], id)
    redis.call('ZREM', KEYS[4], id)
  end
  return token
end
if ARGV[4] == 'wait' then
  if not redis.call('ZSCORE', KEYS[3], id) then
    local last = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
    local seq = 1
    if last[2] then seq = tonumber(last[2]) + 1 end
    redis.call('ZADD', KEYS[3], seq, id)
  end
  redis.call('ZADD', KEYS[4], now + tonumber(ARGV[5]), id)
  local newest = redis.call('ZRANGE', KEYS[4], -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', KEYS[3], newest[2])
  redis.call('PEXPIREAT', KEYS[4], newest[2])
end
return 0
"
);

/// Compare-and-`PEXPIRE`. `KEYS`: lock. `ARGV`: lease id, TTL ms.
/// Returns 1 when extended, 0 when the lease is not held under this id.
const EXTEND: &str = r"
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. '\n' then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// [`EXTEND`] for a semaphore's permit: rescore the lease id if it is
/// still live. `KEYS`: permits, holders. `ARGV`: lease id, TTL ms.
/// Returns 1 when extended, 0 when no live permit has this id.
const EXTEND_PERMIT: &str = concat!(
    permits_lib!(),
    r"
local now = clock()
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) > now and redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  keep_until(KEYS[1], KEYS[2], now)
  return 1
end
return 0
"
);

/// [`EXTEND`] for many locks' leases in one call (standalone servers only:
/// in a cluster the keys of different locks live in different slots).
/// `KEYS`: the locks. `ARGV`: lease id and TTL ms per key, in key order.
/// Returns one 1 (extended) or 0 (not held under that id) per key.
const EXTEND_MANY: &str = r"
local out = {}
for i, key in ipairs(KEYS) do
  local id = ARGV[2 * i - 1]
  local v = redis.call('GET', key)
  if v and string.sub(v, 1, string.len(id) + 1) == id .. '\n' then
    redis.call('PEXPIRE', key, ARGV[2 * i])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
";

/// The Lua function every script that frees a permit or changes a queue's
/// head ends with: drops expired queue entries, then publishes the lock
/// name — followed by `\n` and the lease id of the queue's head when FIFO
/// waiters are queued, so that only the head retries
/// (`lockkit_core::spi::Wakes`). With `everyone` (a semaphore: several
/// waiters near the head may enter) it publishes the name followed by a
/// bare `\n`, which wakes every waiter of the name. Returns the payload
/// it published.
macro_rules! announce {
    () => {
        r"
local function announce(queue, waiters, channel, name, everyone)
  local payload = name
  if everyone then
    payload = name .. '\n'
  elseif redis.call('EXISTS', queue) == 1 then
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    local dead = redis.call('ZRANGEBYSCORE', waiters, '-inf', now)
    for _, w in ipairs(dead) do
      redis.call('ZREM', queue, w)
      redis.call('ZREM', waiters, w)
    end
    local head = redis.call('ZRANGE', queue, 0, 0)[1]
    if head then
      payload = name .. '\n' .. head
    end
  end
  redis.call('PUBLISH', channel, payload)
  return payload
end
"
    };
}

/// Compare-and-`DEL`, announcing the release. `KEYS`: lock, queue,
/// waiters. `ARGV`: lease id, channel, lock name. Returns the published
/// payload when this lease was held and is now gone, 0 otherwise (the
/// current holder is untouched).
const RELEASE: &str = concat!(
    announce!(),
    r"
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. '\n' then
  redis.call('DEL', KEYS[1])
  return announce(KEYS[2], KEYS[3], ARGV[2], ARGV[3], false)
end
return 0
"
);

/// [`RELEASE`] for a semaphore's permit. `KEYS`: permits, holders, queue,
/// waiters. `ARGV`: lease id, channel, lock name. Removes the lease id's
/// permit (live or expired); returns the published payload when it was
/// live, 0 otherwise.
const RELEASE_PERMIT: &str = concat!(
    permits_lib!(),
    announce!(),
    r"
local now = clock()
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
keep_until(KEYS[1], KEYS[2], now)
if tonumber(score) > now then
  return announce(KEYS[3], KEYS[4], ARGV[2], ARGV[3], true)
end
return 0
"
);

/// Admin delete of every holder (the lock's lease or all of a semaphore's
/// permits), announcing the release. `KEYS`: lock, queue, waiters,
/// permits, holders. `ARGV`: channel, lock name. Returns the published
/// payload when a live lease was removed, else 0.
const FORCE_RELEASE: &str = concat!(
    permits_lib!(),
    announce!(),
    r"
local lock = redis.call('DEL', KEYS[1]) == 1
local live = purge(KEYS[4], KEYS[5], clock())
redis.call('DEL', KEYS[4], KEYS[5])
if lock or live > 0 then
  return announce(KEYS[2], KEYS[3], ARGV[1], ARGV[2], live > 0)
end
return 0
"
);

/// A FIFO waiter leaves the queue (timeout, cancellation). `KEYS`: queue,
/// waiters. `ARGV`: lease id, channel, lock name, permit count. Announces
/// the (maybe new) head — every waiter for a semaphore. Returns the
/// published payload when an entry was removed, else 0.
const LEAVE: &str = concat!(
    announce!(),
    r"
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if removed == 1 then
  return announce(KEYS[1], KEYS[2], ARGV[2], ARGV[3], ARGV[4] ~= '1')
end
return 0
"
);

/// Reads every live holder with its remaining TTL and the server's time,
/// atomically. `KEYS`: lock, permits, holders. Returns `{now ms, permit
/// count, {{value, pttl ms}, …}}`, the values in the lock's format
/// (`<lease id>\n<token>\n<acquired ms>\n<owner>`) by token; no holders
/// when free (count 1 then).
const INSPECT: &str = concat!(
    permits_lib!(),
    r"
local now = clock()
local out = {}
local count = 1
local v = redis.call('GET', KEYS[1])
if v then
  out[1] = {v, redis.call('PTTL', KEYS[1])}
elseif redis.call('EXISTS', KEYS[2]) == 1 then
  local live = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. now, '+inf', 'WITHSCORES')
  for i = 1, #live, 2 do
    local details = redis.call('HGET', KEYS[3], live[i])
    if details then
      local token, acquired, n, owner = string.match(details, '^(%d+)\n(%d+)\n(%d+)\n(.*)$')
      if token then
        count = tonumber(n)
        out[#out + 1] = {live[i] .. '\n' .. token .. '\n' .. acquired .. '\n' .. owner,
          tonumber(live[i + 1]) - now}
      end
    end
  end
end
return {string.format('%d', now), count, out}
"
);

/// Reads many locks' leases at once (`list` on a standalone server).
/// `KEYS`: lock keys. Returns `{now ms, {{value, pttl ms} or false, …}}`,
/// in key order; a key that is gone, or not a string, is `false`.
const INSPECT_MANY: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i, key in ipairs(KEYS) do
  local v = redis.pcall('GET', key)
  if type(v) == 'string' then
    out[i] = {v, redis.call('PTTL', key)}
  else
    out[i] = false
  end
end
return {string.format('%d', now), out}
";

/// The compiled scripts (their SHA1s are computed once per process).
pub(crate) struct Scripts {
    pub(crate) acquire: Script,
    pub(crate) extend: Script,
    pub(crate) extend_permit: Script,
    pub(crate) extend_many: Script,
    pub(crate) release: Script,
    pub(crate) release_permit: Script,
    pub(crate) force_release: Script,
    pub(crate) leave: Script,
    pub(crate) inspect: Script,
    pub(crate) inspect_many: Script,
}

/// The scripts, shared by every backend instance.
pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    acquire: Script::new(ACQUIRE),
    extend: Script::new(EXTEND),
    extend_permit: Script::new(EXTEND_PERMIT),
    extend_many: Script::new(EXTEND_MANY),
    release: Script::new(RELEASE),
    release_permit: Script::new(RELEASE_PERMIT),
    force_release: Script::new(FORCE_RELEASE),
    leave: Script::new(LEAVE),
    inspect: Script::new(INSPECT),
    inspect_many: Script::new(INSPECT_MANY),
});
