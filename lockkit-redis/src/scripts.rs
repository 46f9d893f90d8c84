//! The Lua scripts. Each runs atomically on the server that owns the lock's
//! hash slot, touches only the lock's own keys (declared in `KEYS`, all with
//! one hash tag) and reads time with `TIME` (the server's clock).
//!
//! They are sent with `EVALSHA`; on `NOSCRIPT` (a restarted or failed-over
//! server, `SCRIPT FLUSH`) the client loads them again and retries — the
//! behaviour of [`redis::Script`].
//!
//! The lease value is `<lease id>\n<token>\n<acquired ms>\n<owner>`. Lease
//! ids and owners never contain control characters (core validates them),
//! so comparing the value's prefix up to the first `\n` with a lease id is
//! exact.

use std::sync::LazyLock;

use redis::Script;

/// Takes the lock if it is free — and, when FIFO waiters are queued, only
/// for the waiter at the head of the queue.
///
/// `KEYS`: lock, fence, queue, waiters. `ARGV`: lease id, owner, TTL ms,
/// mode (`try`: never queue; `wait`: join or stay in the queue), queue
/// entry TTL ms.
///
/// Returns the new fencing token, or 0 when not granted. The token is
/// computed first, `SET NX PX` stores the lease, and only when that
/// succeeded is the fence counter `INCR`ed (to the same value, as the
/// script is atomic).
///
/// Idempotent per lease id: if the lease is already held under this id (a
/// retry after a reply was lost), its TTL is reset from now and its token
/// returned, so the caller's deadline (counted from before the retry) is
/// never later than the server's expiry.
const ACQUIRE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id = ARGV[1]
local held = redis.call('GET', KEYS[1])
if held and string.sub(held, 1, string.len(id) + 1) == id .. '\n' then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return tonumber(string.match(held, '^[^\n]*\n(%d+)\n'))
end
local head = false
if redis.call('EXISTS', KEYS[3]) == 1 then
  local dead = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now)
  for _, w in ipairs(dead) do
    redis.call('ZREM', KEYS[3], w)
    redis.call('ZREM', KEYS[4], w)
  end
  head = redis.call('ZRANGE', KEYS[3], 0, 0)[1] or false
end
if redis.call('EXISTS', KEYS[1]) == 0 and (not head or head == id) then
  local token = (tonumber(redis.call('GET', KEYS[2])) or 0) + 1
  local value = id .. '\n' .. string.format('%d', token) .. '\n' .. string.format('%d', now) .. '\n' .. ARGV[2]
  if redis.call('SET', KEYS[1], value, 'NX', 'PX', ARGV[3]) then
    if head then
      redis.call('ZREM', KEYS[3], id)
      redis.call('ZREM', KEYS[4], id)
    end
    return redis.call('INCR', KEYS[2])
  end
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
";

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

/// [`EXTEND`] for many leases in one call (standalone servers only: in a
/// cluster the keys of different locks live in different slots).
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

/// The Lua function every script that frees a lock or changes a queue's
/// head ends with: drops expired queue entries, then publishes the lock
/// name — followed by `\n` and the lease id of the queue's head when FIFO
/// waiters are queued, so that only the head retries (`lockkit_core::spi::Wakes`). Returns
/// the payload it published.
macro_rules! announce {
    () => {
        r"
local function announce(queue, waiters, channel, name)
  local payload = name
  if redis.call('EXISTS', queue) == 1 then
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
  return announce(KEYS[2], KEYS[3], ARGV[2], ARGV[3])
end
return 0
"
);

/// Admin delete, announcing the release. `KEYS`: lock, queue, waiters.
/// `ARGV`: channel, lock name. Returns the published payload when a live
/// lease was removed, else 0.
const FORCE_RELEASE: &str = concat!(
    announce!(),
    r"
if redis.call('DEL', KEYS[1]) == 1 then
  return announce(KEYS[2], KEYS[3], ARGV[1], ARGV[2])
end
return 0
"
);

/// A FIFO waiter leaves the queue (timeout, cancellation). `KEYS`: queue,
/// waiters. `ARGV`: lease id, channel, lock name. Announces the (maybe new)
/// head. Returns the published payload when an entry was removed, else 0.
const LEAVE: &str = concat!(
    announce!(),
    r"
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if removed == 1 then
  return announce(KEYS[1], KEYS[2], ARGV[2], ARGV[3])
end
return 0
"
);

/// Reads a lease with its remaining TTL and the server's time, atomically.
/// `KEYS`: lock. Returns nil when free, else `{value, pttl ms, now ms}`.
const INSPECT: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then
  return false
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return {v, redis.call('PTTL', KEYS[1]), string.format('%d', now)}
";

/// Reads many leases at once (`list` on a standalone server). `KEYS`:
/// lock keys. Returns `{now ms, {{value, pttl ms} or false, …}}`, in key
/// order; a key that is gone, or not a string, is `false`.
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
    pub(crate) extend_many: Script,
    pub(crate) release: Script,
    pub(crate) force_release: Script,
    pub(crate) leave: Script,
    pub(crate) inspect: Script,
    pub(crate) inspect_many: Script,
}

/// The scripts, shared by every backend instance.
pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    acquire: Script::new(ACQUIRE),
    extend: Script::new(EXTEND),
    extend_many: Script::new(EXTEND_MANY),
    release: Script::new(RELEASE),
    force_release: Script::new(FORCE_RELEASE),
    leave: Script::new(LEAVE),
    inspect: Script::new(INSPECT),
    inspect_many: Script::new(INSPECT_MANY),
});
