//! The job queue on Redis (`[state] backend = "redis"`): every node takes jobs from, and
//! answers for, one fleet-wide queue, so a job acknowledged by any node survives that node.
//!
//! Owns the key schema and the Lua scripts; the `queue` module owns what a job is and how an
//! attempt runs. All keys share the hash tag `{jobs}` (one Cluster slot), so every script may
//! touch any of them:
//!
//! ```text
//! P:{jobs}:job:<id>        hash    rec (the job's JSON), status, owner, route, score, seq,
//!                                  dup, att, fin, holder, token, idem
//! P:{jobs}:ready:<route>   zset    id -> score ((9 - priority) * 1e12 + seq: priority first)
//! P:{jobs}:running         zset    id -> claim deadline (Redis ms): past it, any node reclaims
//! P:{jobs}:delayed         zset    id -> due (Redis ms): a retry waiting out its backoff
//! P:{jobs}:owner:<owner>   zset    id -> seq (the owner's jobs, for the list)
//! P:{jobs}:idem:<owner>\n<key>  string  job id (the idempotency key)
//! P:{jobs}:depth           string  jobs queued, waiting or running, fleet-wide
//! P:{jobs}:owners          hash    owner -> that owner's depth
//! P:{jobs}:seq             string  the last submission number
//! P:{jobs}:dups            string  duplicate executions, fleet-wide, ever
//! P:{jobs}:seen            string  Redis ms of the last take or renewal (claims' catch-up)
//! P:{jobs}:taken:<token>   string  the job a take claimed, for [`UNTAKE`] (PX reclaim_idle +
//!                                  60 s, or until the attempt's end)
//! ```
//!
//! A job moves `ready` → `running` (the take script, atomically: one node gets it) → a
//! terminal status, or `delayed` → `ready` for a retry (promoted by whichever node takes
//! next). Its holder renews the claim every `reclaim_idle / 3`; a claim past its deadline
//! (the holder died, or stalled that long) is reclaimed by the next take anywhere: the job
//! runs again, counted in its `dup` and in `dups`. Time nobody could reach Redis does not
//! count against a claim (`seen`, see [`TAKE`]). Every change of a held job carries the
//! holder's token, so a holder whose claim was taken over cannot overwrite the new run.
//! Time in every script is Redis's (`TIME`). Finished jobs (and their idempotency keys)
//! expire after `jobs.retention_ms`; the owner index drops them lazily when listed.
//!
//! Record fields read back are untrusted: the record is size-bounded and parsed with errors,
//! never unwrapped.

use std::sync::LazyLock;

use redis::Script;

use super::{Lane, Redis, StateError};

/// The hash tag of every job key.
const TAG: &str = "jobs";

/// The largest job record read back, bytes (a request body is bounded far below this by the
/// server's body limit; anything larger is not ours).
pub const MAX_RECORD_BYTES: usize = 64 << 20;

/// Jobs a take promotes from `delayed` or reclaims from `running` at most per call, so one
/// call stays short however much piled up.
const PROMOTE_PER_TAKE: u32 = 64;
const RECLAIM_PER_TAKE: u32 = 16;

/// Index rows a filtered list reads at most before it answers with what it found.
pub const MAX_LIST_SCAN: usize = 10_000;

/// Shared Lua: the Redis clock in ms, what ending a job does to the counters, and the
/// claims' catch-up after a time nobody reached Redis (`heal`, see [`TAKE`]).
const PRELUDE: &str = r"
local b = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function heal(idle)
  local seen = tonumber(redis.call('GET', b .. 'seen') or '')
  redis.call('SET', b .. 'seen', now)
  if not seen or now - seen <= idle / 2 then return end
  local gap = now - seen
  local held = redis.call('ZRANGE', b .. 'running', 0, -1, 'WITHSCORES')
  for i = 1, #held, 2 do
    redis.call('ZADD', b .. 'running', 'XX', tonumber(held[i + 1]) + gap, held[i])
  end
end
local function ended(h, owner, retention)
  redis.call('DECR', b .. 'depth')
  if owner then redis.call('HINCRBY', b .. 'owners', owner, -1) end
  if retention > 0 then
    redis.call('PEXPIRE', h, retention)
    local idem = redis.call('HGET', h, 'idem')
    if idem and idem ~= '' then redis.call('PEXPIRE', idem, retention) end
  end
end
";

/// ARGV: base, id, owner, idem key ('' for none), route, priority, rec, max_queued,
/// max_per_key (0: unbounded). → {'new', seq} | {'existing', id} | {'full', depth} |
/// {'keyfull', depth}.
const ENQUEUE: &str = r"
local id, owner, idem, route = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local prio, rec = tonumber(ARGV[6]), ARGV[7]
local maxq, maxk = tonumber(ARGV[8]), tonumber(ARGV[9])
-- A key of the wrong type would fail a write below after the job's record was written (a
-- script is not rolled back): the record would stay, in no index, for ever. Checked first.
local function is(k, want)
  local t = redis.call('TYPE', k)['ok']
  return t == 'none' or t == want
end
if not (is(b .. 'ready:' .. route, 'zset') and is(b .. 'owner:' .. owner, 'zset')
    and is(b .. 'depth', 'string') and is(b .. 'seq', 'string') and is(b .. 'owners', 'hash')
    and (idem == '' or is(idem, 'string'))) then
  return redis.error_reply('WRONGTYPE a key of the job queue holds the wrong kind of value')
end
if idem ~= '' then
  local have = redis.call('GET', idem)
  if have and redis.call('EXISTS', b .. 'job:' .. have) == 1 then return {'existing', have} end
end
local depth = tonumber(redis.call('GET', b .. 'depth') or '0')
if depth >= maxq then return {'full', tostring(depth)} end
if maxk > 0 then
  local own = tonumber(redis.call('HGET', b .. 'owners', owner) or '0')
  if own >= maxk then return {'keyfull', tostring(own)} end
end
local seq = redis.call('INCR', b .. 'seq')
local score = (9 - prio) * 1000000000000 + seq
local h = b .. 'job:' .. id
redis.call('HSET', h, 'rec', rec, 'status', 'queued', 'owner', owner, 'route', route,
  'score', score, 'seq', seq, 'dup', 0, 'att', 0, 'idem', idem)
redis.call('ZADD', b .. 'ready:' .. route, score, id)
redis.call('ZADD', b .. 'owner:' .. owner, seq, id)
redis.call('INCR', b .. 'depth')
redis.call('HINCRBY', b .. 'owners', owner, 1)
if idem ~= '' then redis.call('SET', idem, id) end
return {'new', tostring(seq)}
";

/// ARGV: base, node, token, reclaim_idle ms, max_attempts, retention ms, routes….
/// Promotes due retries, reclaims lapsed claims, then claims the best ready job of the
/// routes. → {reclaimed} | {reclaimed, id, rec, seq, dup}.
///
/// A claim lapses when its holder did not renew it for `reclaim_idle` *while Redis could be
/// reached*. Every take and renewal stamps `seen` with Redis's time; in a live fleet one comes
/// at least every `reclaim_idle / 3` while any job is held (its holder's renewals) and every
/// 100 ms from a node with a free worker. The first take or renewal after a longer silence
/// (Redis stopped or unreachable for everyone, or every node down) first moves every claim's
/// deadline on by the silence: holders that could not renew through it keep their jobs, and
/// their ends land when they reach Redis (second probe, P5: a 5 s stall re-ran 10 jobs that
/// had already succeeded). A node that died before the silence still loses its claims, at
/// most `reclaim_idle` after the fleet is back.
const TAKE: &str = r"
local node, token = ARGV[2], ARGV[3]
local idle, maxatt, retention = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
heal(idle)
local due = redis.call('ZRANGEBYSCORE', b .. 'delayed', '-inf', now, 'LIMIT', 0, PROMOTE)
for _, id in ipairs(due) do
  redis.call('ZREM', b .. 'delayed', id)
  local h = b .. 'job:' .. id
  local v = redis.call('HMGET', h, 'status', 'route', 'score')
  if v[1] == 'queued' and v[2] then redis.call('ZADD', b .. 'ready:' .. v[2], v[3], id) end
end
local reclaimed = 0
local lost = redis.call('ZRANGEBYSCORE', b .. 'running', '-inf', now, 'LIMIT', 0, RECLAIM)
for _, id in ipairs(lost) do
  redis.call('ZREM', b .. 'running', id)
  local h = b .. 'job:' .. id
  local v = redis.call('HMGET', h, 'status', 'route', 'score', 'att', 'owner')
  if v[1] == 'running' then
    reclaimed = reclaimed + 1
    redis.call('HINCRBY', h, 'dup', 1)
    redis.call('INCR', b .. 'dups')
    redis.call('HSET', h, 'holder', '', 'token', '')
    if tonumber(v[4] or '0') >= maxatt then
      redis.call('HSET', h, 'status', 'dead', 'fin', now)
      ended(h, v[5], retention)
    else
      redis.call('HSET', h, 'status', 'queued')
      redis.call('ZADD', b .. 'ready:' .. v[2], v[3], id)
    end
  end
end
local best, broute, bscore = nil, nil, nil
for i = 7, #ARGV do
  local top = redis.call('ZRANGE', b .. 'ready:' .. ARGV[i], 0, 0, 'WITHSCORES')
  if top[1] and (bscore == nil or tonumber(top[2]) < bscore) then
    best, broute, bscore = top[1], ARGV[i], tonumber(top[2])
  end
end
if not best then return {reclaimed} end
redis.call('ZREM', b .. 'ready:' .. broute, best)
local h = b .. 'job:' .. best
redis.call('HSET', h, 'status', 'running', 'holder', node, 'token', token)
redis.call('HINCRBY', h, 'att', 1)
redis.call('ZADD', b .. 'running', now + idle, best)
redis.call('SET', b .. 'taken:' .. token, best, 'PX', idle + 60000)
local v = redis.call('HMGET', h, 'rec', 'seq', 'dup')
return {reclaimed, best, v[1] or '', v[2] or '0', v[3] or '0'}
";

/// ARGV: base, token. Puts back the job a take with `token` claimed, if it still holds it
/// unchanged: the take's answer never reached its node (a timeout, a broken connection), so
/// the job never ran there. Without it the job would wait out its claim and run again as a
/// duplicate execution, though it ran once. → 1 | 0 (nothing to put back).
const UNTAKE: &str = r"
local key = b .. 'taken:' .. ARGV[2]
local id = redis.call('GET', key)
if not id then return 0 end
redis.call('DEL', key)
local h = b .. 'job:' .. id
if redis.call('HGET', h, 'token') ~= ARGV[2] then return 0 end
local v = redis.call('HMGET', h, 'status', 'route', 'score')
if v[1] ~= 'running' then return 0 end
redis.call('ZREM', b .. 'running', id)
redis.call('HSET', h, 'status', 'queued', 'holder', '', 'token', '')
redis.call('HINCRBY', h, 'att', -1)
redis.call('ZADD', b .. 'ready:' .. v[2], v[3], id)
return 1
";

/// ARGV: base, id, token, reclaim_idle ms. Renews the claim. → 1 | 0 (not ours any more).
const RENEW: &str = r"
heal(tonumber(ARGV[4]))
local h = b .. 'job:' .. ARGV[2]
if redis.call('HGET', h, 'token') ~= ARGV[3] then return 0 end
redis.call('ZADD', b .. 'running', 'XX', now + tonumber(ARGV[4]), ARGV[2])
return 1
";

/// ARGV: base, id, token, rec. Writes a held job's record. → 1 | 0 (not ours any more).
const WRITE: &str = r"
local h = b .. 'job:' .. ARGV[2]
if redis.call('HGET', h, 'token') ~= ARGV[3] then return 0 end
redis.call('HSET', h, 'rec', ARGV[4])
return 1
";

/// ARGV: base, id, token, rec, status (queued: retry after delay), delay ms, retention ms,
/// the attempt's cost (pico-dollars). Ends a held attempt. → {1, late} (ended, now or by an
/// earlier run of this finish whose answer was lost: `fin_token`; `late` as below) | {0}
/// (not ours any more: the new holder's run stands; this attempt's cost is added to the
/// job's `late`, once per token) | {2} (the job is gone: evicted or deleted).
const FINISH: &str = r"
local id, status = ARGV[2], ARGV[5]
local h = b .. 'job:' .. id
local late = function() return redis.call('HGET', h, 'late') or '0' end
if redis.call('HGET', h, 'token') ~= ARGV[3] then
  if redis.call('HGET', h, 'fin_token') == ARGV[3] then return {1, late()} end
  if redis.call('EXISTS', h) == 0 then return {2} end
  if redis.call('HSETNX', h, 'late:' .. ARGV[3], ARGV[8]) == 1 then
    redis.call('HINCRBY', h, 'late', ARGV[8])
  end
  return {0}
end
redis.call('ZREM', b .. 'running', id)
redis.call('DEL', b .. 'taken:' .. ARGV[3])
redis.call('HSET', h, 'rec', ARGV[4], 'holder', '', 'token', '', 'status', status,
  'fin_token', ARGV[3])
if status == 'queued' then
  redis.call('ZADD', b .. 'delayed', now + tonumber(ARGV[6]), id)
else
  redis.call('HSET', h, 'fin', now)
  ended(h, redis.call('HGET', h, 'owner'), tonumber(ARGV[7]))
end
return {1, late()}
";

/// ARGV: base, id, owner ('' for any), rec, retention ms. Cancels a queued job.
/// → {'ok'} | {'missing'} | {'conflict', status}.
const CANCEL: &str = r"
local id, owner = ARGV[2], ARGV[3]
local h = b .. 'job:' .. id
local v = redis.call('HMGET', h, 'status', 'owner', 'route')
if not v[1] or (owner ~= '' and v[2] ~= owner) then return {'missing'} end
if v[1] ~= 'queued' then return {'conflict', v[1]} end
local gone = redis.call('ZREM', b .. 'ready:' .. v[3], id) + redis.call('ZREM', b .. 'delayed', id)
if gone == 0 then return {'conflict', 'running'} end
redis.call('HSET', h, 'status', 'cancelled', 'fin', now, 'rec', ARGV[4])
ended(h, v[2], tonumber(ARGV[5]))
return {'ok'}
";

/// ARGV: base, id, owner ('' for any), rec, max_queued, max_per_key (0: unbounded). Queues
/// a dead job again. → {'ok'} | {'missing'} | {'conflict', status} | {'full', depth} |
/// {'keyfull', depth}.
const RETRY: &str = r"
local id, owner = ARGV[2], ARGV[3]
local maxq, maxk = tonumber(ARGV[5]), tonumber(ARGV[6])
local h = b .. 'job:' .. id
local v = redis.call('HMGET', h, 'status', 'owner', 'route', 'score', 'idem')
if not v[1] or (owner ~= '' and v[2] ~= owner) then return {'missing'} end
if v[1] ~= 'dead' then return {'conflict', v[1]} end
local depth = tonumber(redis.call('GET', b .. 'depth') or '0')
if depth >= maxq then return {'full', tostring(depth)} end
if maxk > 0 then
  local own = tonumber(redis.call('HGET', b .. 'owners', v[2]) or '0')
  if own >= maxk then return {'keyfull', tostring(own)} end
end
redis.call('PERSIST', h)
if v[5] and v[5] ~= '' then redis.call('PERSIST', v[5]) end
redis.call('HSET', h, 'status', 'queued', 'att', 0, 'rec', ARGV[4])
redis.call('HDEL', h, 'fin')
redis.call('ZADD', b .. 'ready:' .. v[3], v[4], id)
redis.call('INCR', b .. 'depth')
redis.call('HINCRBY', b .. 'owners', v[2], 1)
return {'ok'}
";

/// ARGV: base, id, rec. Writes an ended job's record (its callback's progress); nothing
/// for a job that is not ended (retried meanwhile) or gone. → 1 | 0.
const ENDED_WRITE: &str = r"
local h = b .. 'job:' .. ARGV[2]
if redis.call('HEXISTS', h, 'fin') == 0 then return 0 end
redis.call('HSET', h, 'rec', ARGV[3])
return 1
";

fn script(body: &str) -> Script {
    let body = body
        .replace("PROMOTE", &PROMOTE_PER_TAKE.to_string())
        .replace("RECLAIM", &RECLAIM_PER_TAKE.to_string());
    Script::new(&format!("{PRELUDE}{body}"))
}

static ENQUEUE_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(ENQUEUE));
static TAKE_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(TAKE));
static RENEW_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(RENEW));
static UNTAKE_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(UNTAKE));
static WRITE_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(WRITE));
static FINISH_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(FINISH));
static CANCEL_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(CANCEL));
static RETRY_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(RETRY));
static ENDED_WRITE_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(ENDED_WRITE));

/// What a [`Jobs::finish`] came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finished {
    /// Ended as asked; what attempts taken over earlier cost ([`Record::late`]).
    Ended(u64),
    /// The claim was taken over: the new holder's run stands (this attempt's cost is added
    /// to the job's `late`).
    TakenOver,
    /// The job is gone from Redis (evicted, deleted): its outcome is lost.
    Gone,
}

/// How a held attempt ends ([`Jobs::finish`]).
#[derive(Clone, Copy, Debug)]
pub struct Ending<'a> {
    /// The job's record now.
    pub rec: &'a str,
    /// Where it stands now (`queued`: retried after `delay_ms`).
    pub status: &'a str,
    /// For a retry, the wait before it is due.
    pub delay_ms: u64,
    /// How long an ended job is kept.
    pub retention_ms: u64,
    /// What the attempt cost, pico-dollars.
    pub cost_pico: u64,
}

/// A job to queue, as [`Jobs::enqueue`] stores it.
#[derive(Clone, Copy, Debug)]
pub struct NewJob<'a> {
    /// Its id.
    pub id: &'a str,
    /// The API key it belongs to.
    pub owner: &'a str,
    /// The owner's idempotency key, if the submission had one.
    pub idem: Option<&'a str>,
    /// The route that runs it.
    pub route: &'a str,
    /// 0 to 9, higher first (above 9 counts as 9).
    pub priority: u8,
    /// The job's record, as JSON.
    pub rec: &'a str,
}

/// What an enqueue came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// Stored and queued, with its submission number.
    New(u64),
    /// The idempotency key names this job.
    Existing(String),
    /// The fleet's queue holds this many jobs (`max_queued`).
    Full(u64),
    /// The owner holds this many (`max_queued_per_key`).
    KeyFull(u64),
}

/// What a cancel or a retry came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Changed {
    /// Done.
    Ok,
    /// No such job (for this owner).
    Missing,
    /// The job's status forbids it (the status).
    Conflict(String),
    /// The queue is full (a retry needs a slot).
    Full(u64),
    /// The owner's share is full.
    KeyFull(u64),
}

/// A job claimed by this node.
#[derive(Debug)]
pub struct Taken {
    /// The job.
    pub id: String,
    /// The claim's token: every later change of the job carries it.
    pub token: String,
    /// Its record (JSON), as its last holder or its submitter wrote it.
    pub rec: String,
    /// Its submission number.
    pub seq: u64,
    /// Duplicate executions so far (this take included when it was a reclaim).
    pub dup: u32,
}

/// A job's stored fields (see the module doc).
#[derive(Debug)]
pub struct Record {
    /// The job's JSON.
    pub rec: String,
    /// Its status, as the scripts keep it (authoritative over the JSON's).
    pub status: String,
    /// Its submission number.
    pub seq: u64,
    /// Duplicate executions.
    pub dup: u32,
    /// When it ended (Redis ms).
    pub fin: Option<u64>,
    /// Its owner.
    pub owner: String,
    /// What its attempts whose claim was taken over cost, pico-dollars (their finish found
    /// another holder, so their outcome is not in `rec`).
    pub late: u64,
}

/// Fleet-wide counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Jobs queued, waiting or running.
    pub depth: u64,
    /// Jobs waiting out a retry's backoff.
    pub waiting: u64,
    /// Jobs held by some node.
    pub running: u64,
    /// Duplicate executions, ever.
    pub duplicates: u64,
}

/// The job queue's keys and scripts on one [`Redis`]. Every call is on the background lane
/// (jobs are off the request path; `POST /v1/jobs` waits for the durable write anyway).
#[derive(Clone, Copy)]
pub struct Jobs<'a> {
    /// The connection.
    pub redis: &'a Redis,
}

impl<'a> Jobs<'a> {
    /// Jobs on `redis`.
    pub fn new(redis: &'a Redis) -> Jobs<'a> {
        Jobs { redis }
    }

    /// `P:{jobs}:` — every key's start.
    fn base(&self) -> String {
        self.redis.key(TAG, "")
    }

    /// The idempotency key's Redis key ('' for none).
    fn idem_key(&self, owner: &str, key: Option<&str>) -> String {
        key.map_or_else(String::new, |k| {
            self.redis.key(TAG, &format!("idem:{owner}\n{k}"))
        })
    }

    /// Stores `job` and queues it, unless its owner's idempotency key names a job or a bound
    /// is reached (`max_per_key` 0: none).
    pub async fn enqueue(
        &self,
        job: &NewJob<'_>,
        max_queued: u32,
        max_per_key: u32,
    ) -> Result<Enqueued, StateError> {
        let NewJob {
            id,
            owner,
            idem,
            route,
            priority,
            rec,
        } = *job;
        let reply: Vec<String> = self
            .redis
            .script(
                "jobs_enqueue",
                Lane::Background,
                ENQUEUE_SCRIPT
                    .arg(self.base())
                    .arg(id)
                    .arg(owner)
                    .arg(self.idem_key(owner, idem))
                    .arg(route)
                    .arg(priority.min(9))
                    .arg(rec)
                    .arg(max_queued)
                    .arg(max_per_key),
            )
            .await?;
        let number = |i: usize| reply.get(i).and_then(|v| v.parse::<u64>().ok());
        match reply.first().map(String::as_str) {
            Some("new") => Ok(Enqueued::New(number(1).unwrap_or(0))),
            Some("existing") => Ok(Enqueued::Existing(
                reply.get(1).cloned().unwrap_or_default(),
            )),
            Some("full") => Ok(Enqueued::Full(number(1).unwrap_or(0))),
            Some("keyfull") => Ok(Enqueued::KeyFull(number(1).unwrap_or(0))),
            _ => Err(unexpected("jobs_enqueue", &reply)),
        }
    }

    /// Claims the best ready job of `routes` for this node (after promoting due retries and
    /// reclaiming lapsed claims); `(reclaimed, None)` when none is ready.
    pub async fn take(
        &self,
        routes: &[&str],
        token: &str,
        reclaim_idle_ms: u64,
        max_attempts: u32,
        retention_ms: u64,
    ) -> Result<(u64, Option<Taken>), StateError> {
        let mut invocation = TAKE_SCRIPT.arg(self.base());
        invocation
            .arg(self.redis.node())
            .arg(token)
            .arg(reclaim_idle_ms)
            .arg(max_attempts)
            .arg(retention_ms);
        for route in routes {
            invocation.arg(*route);
        }
        let reply: Vec<redis::Value> = self
            .redis
            .script("jobs_take", Lane::Background, &invocation)
            .await?;
        let text = |i: usize| -> Option<String> {
            reply
                .get(i)
                .and_then(|v| redis::from_redis_value_ref(v).ok())
        };
        let int = |i: usize| -> u64 {
            reply
                .get(i)
                .and_then(|v| redis::from_redis_value_ref::<u64>(v).ok())
                .unwrap_or(0)
        };
        let reclaimed = int(0);
        let Some(id) = text(1) else {
            return Ok((reclaimed, None));
        };
        let rec = text(2).unwrap_or_default();
        if rec.len() > MAX_RECORD_BYTES {
            return Err(StateError::Redis(format!(
                "job {id}: its record is {} bytes, over {MAX_RECORD_BYTES}",
                rec.len()
            )));
        }
        Ok((
            reclaimed,
            Some(Taken {
                id,
                token: token.to_owned(),
                rec,
                seq: int(3),
                dup: u32::try_from(int(4)).unwrap_or(u32::MAX),
            }),
        ))
    }

    /// Puts back the job a take with `token` claimed when its answer was lost (see
    /// [`UNTAKE`]); `true` when there was one.
    pub async fn untake(&self, token: &str) -> Result<bool, StateError> {
        let put_back: i64 = self
            .redis
            .script(
                "jobs_untake",
                Lane::Background,
                UNTAKE_SCRIPT.arg(self.base()).arg(token),
            )
            .await?;
        Ok(put_back == 1)
    }

    /// Renews this node's claim on job `id`; `false`: the claim was taken over.
    pub async fn renew(
        &self,
        id: &str,
        token: &str,
        reclaim_idle_ms: u64,
    ) -> Result<bool, StateError> {
        let held: i64 = self
            .redis
            .script(
                "jobs_renew",
                Lane::Background,
                RENEW_SCRIPT
                    .arg(self.base())
                    .arg(id)
                    .arg(token)
                    .arg(reclaim_idle_ms),
            )
            .await?;
        Ok(held == 1)
    }

    /// Writes held job `id`'s record; `false`: the claim was taken over (nothing written).
    pub async fn write(&self, id: &str, token: &str, rec: &str) -> Result<bool, StateError> {
        let held: i64 = self
            .redis
            .script(
                "jobs_write",
                Lane::Background,
                WRITE_SCRIPT.arg(self.base()).arg(id).arg(token).arg(rec),
            )
            .await?;
        Ok(held == 1)
    }

    /// Ends held job `id`'s attempt as `end` says (also when an earlier call of this did it:
    /// its answer was lost, and a retry is safe).
    pub async fn finish(
        &self,
        id: &str,
        token: &str,
        end: &Ending<'_>,
    ) -> Result<Finished, StateError> {
        let Ending {
            rec,
            status,
            delay_ms,
            retention_ms,
            cost_pico,
        } = *end;
        let reply: Vec<String> = self
            .redis
            .script(
                "jobs_finish",
                Lane::Background,
                FINISH_SCRIPT
                    .arg(self.base())
                    .arg(id)
                    .arg(token)
                    .arg(rec)
                    .arg(status)
                    .arg(delay_ms)
                    .arg(retention_ms)
                    .arg(cost_pico),
            )
            .await?;
        Ok(match reply.first().map(String::as_str) {
            Some("1") => Finished::Ended(reply.get(1).and_then(|v| v.parse().ok()).unwrap_or(0)),
            Some("2") => Finished::Gone,
            _ => Finished::TakenOver,
        })
    }

    /// Writes ended job `id`'s record (its callback's progress); `false`: it is not ended
    /// any more, or gone (nothing written).
    pub async fn write_ended(&self, id: &str, rec: &str) -> Result<bool, StateError> {
        let written: i64 = self
            .redis
            .script(
                "jobs_write_ended",
                Lane::Background,
                ENDED_WRITE_SCRIPT.arg(self.base()).arg(id).arg(rec),
            )
            .await?;
        Ok(written == 1)
    }

    /// Cancels queued job `id` (of `owner`, when given), writing `rec` as its record.
    pub async fn cancel(
        &self,
        id: &str,
        owner: Option<&str>,
        rec: &str,
        retention_ms: u64,
    ) -> Result<Changed, StateError> {
        let reply: Vec<String> = self
            .redis
            .script(
                "jobs_cancel",
                Lane::Background,
                CANCEL_SCRIPT
                    .arg(self.base())
                    .arg(id)
                    .arg(owner.unwrap_or(""))
                    .arg(rec)
                    .arg(retention_ms),
            )
            .await?;
        changed("jobs_cancel", &reply)
    }

    /// Queues dead job `id` (of `owner`, when given) again, writing `rec` as its record.
    pub async fn retry(
        &self,
        id: &str,
        owner: Option<&str>,
        rec: &str,
        max_queued: u32,
        max_per_key: u32,
    ) -> Result<Changed, StateError> {
        let reply: Vec<String> = self
            .redis
            .script(
                "jobs_retry",
                Lane::Background,
                RETRY_SCRIPT
                    .arg(self.base())
                    .arg(id)
                    .arg(owner.unwrap_or(""))
                    .arg(rec)
                    .arg(max_queued)
                    .arg(max_per_key),
            )
            .await?;
        changed("jobs_retry", &reply)
    }

    /// Job `id`'s fields, `None` when there is no such job (or it expired).
    pub async fn get(&self, id: &str) -> Result<Option<Record>, StateError> {
        let mut records = self.get_many(&[id.to_owned()]).await?;
        Ok(records.pop().flatten())
    }

    /// The fields of each of `ids` (one round trip), `None` for those that do not exist.
    pub async fn get_many(&self, ids: &[String]) -> Result<Vec<Option<Record>>, StateError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HMGET")
                .arg(self.redis.key(TAG, &format!("job:{id}")))
                .arg(&["rec", "status", "seq", "dup", "fin", "owner", "late"]);
        }
        let rows: Vec<Vec<Option<String>>> =
            self.redis.pipe("jobs_get", Lane::Background, &pipe).await?;
        Ok(rows.into_iter().map(record).collect())
    }

    /// Up to `count` of `owner`'s job ids, newest first, submitted before `before` (any
    /// when `None`), from `offset` on.
    pub async fn owner_ids(
        &self,
        owner: &str,
        before: Option<u64>,
        offset: usize,
        count: usize,
    ) -> Result<Vec<String>, StateError> {
        let max = before.map_or_else(|| "+inf".to_owned(), |seq| format!("({seq}"));
        self.redis
            .query(
                "jobs_list",
                Lane::Background,
                redis::cmd("ZREVRANGEBYSCORE")
                    .arg(self.redis.key(TAG, &format!("owner:{owner}")))
                    .arg(max)
                    .arg("-inf")
                    .arg("LIMIT")
                    .arg(offset)
                    .arg(count),
            )
            .await
    }

    /// Drops ids of expired jobs from `owner`'s index.
    pub async fn forget(&self, owner: &str, ids: &[String]) -> Result<(), StateError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.redis
            .query::<i64>(
                "jobs_forget",
                Lane::Background,
                redis::cmd("ZREM")
                    .arg(self.redis.key(TAG, &format!("owner:{owner}")))
                    .arg(ids),
            )
            .await
            .map(drop)
    }

    /// The fleet-wide counters (one round trip).
    pub async fn counts(&self) -> Result<Counts, StateError> {
        let mut pipe = redis::pipe();
        pipe.cmd("GET")
            .arg(self.redis.key(TAG, "depth"))
            .cmd("ZCARD")
            .arg(self.redis.key(TAG, "delayed"))
            .cmd("ZCARD")
            .arg(self.redis.key(TAG, "running"))
            .cmd("GET")
            .arg(self.redis.key(TAG, "dups"));
        let (depth, waiting, running, duplicates): (Option<i64>, u64, u64, Option<u64>) = self
            .redis
            .pipe("jobs_counts", Lane::Background, &pipe)
            .await?;
        Ok(Counts {
            depth: depth.unwrap_or(0).max(0) as u64,
            waiting,
            running,
            duplicates: duplicates.unwrap_or(0),
        })
    }
}

/// A record from one `HMGET` row, `None` when the job does not exist.
fn record(row: Vec<Option<String>>) -> Option<Record> {
    let mut fields = row.into_iter();
    let rec = fields.next().flatten()?;
    let status = fields.next().flatten()?;
    let number = |v: Option<Option<String>>| v.flatten().and_then(|s| s.parse::<u64>().ok());
    let seq = number(fields.next()).unwrap_or(0);
    let dup = number(fields.next()).map_or(0, |d| u32::try_from(d).unwrap_or(u32::MAX));
    let fin = number(fields.next());
    let owner = fields.next().flatten().unwrap_or_default();
    let late = number(fields.next()).unwrap_or(0);
    (rec.len() <= MAX_RECORD_BYTES).then_some(Record {
        rec,
        status,
        seq,
        dup,
        fin,
        owner,
        late,
    })
}

/// A cancel's or a retry's reply.
fn changed(op: &str, reply: &[String]) -> Result<Changed, StateError> {
    let number = || {
        reply
            .get(1)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    match reply.first().map(String::as_str) {
        Some("ok") => Ok(Changed::Ok),
        Some("missing") => Ok(Changed::Missing),
        Some("conflict") => Ok(Changed::Conflict(reply.get(1).cloned().unwrap_or_default())),
        Some("full") => Ok(Changed::Full(number())),
        Some("keyfull") => Ok(Changed::KeyFull(number())),
        _ => Err(unexpected(op, reply)),
    }
}

fn unexpected(op: &str, reply: &[String]) -> StateError {
    let shown: Vec<String> = reply
        .iter()
        .take(2)
        .map(|s| s.chars().take(64).collect())
        .collect();
    StateError::Redis(format!("{op}: unexpected reply {shown:?}"))
}
