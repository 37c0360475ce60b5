// Producer floods and the checks of what storage kept, shared by the storage tests.
//
// startFlood() runs `workers` concurrent producers, each POSTing batches of `batch` events to one
// run as fast as the acks come. Every event carries {b, j}: the batch id (unique across the flood)
// and its index in the batch, so the stream read back later can be checked event by event against
// what was acknowledged: batch b answered 202 {last_seq: L} owns seqs L-batch+1..L.

import assert from 'node:assert/strict';

import { api } from './server.mjs';
import { range } from './sse.mjs';

/// flood = startFlood(base, runId, token, {workers, batch, timeoutMs}); flood.stop() (resolves once
/// every worker returned); flood.acked: [{b, last, at}]; flood.maxAcked; flood.statuses {code: n};
/// flood.errors (network errors); flood.first503At (Date.now() of the first 503, or null).
/// onAck(flood) runs after each 202 (e.g. to stop at a count). Any other status than 202 / 503
/// fails the flood: stop() throws it, check() too, `failed` rejects with it.
export function startFlood(base, runId, token, { workers = 8, batch = 10, timeoutMs = 5_000, onAck, on503 } = {}) {
  const f = {
    acked: [], maxAcked: 0, ackedEvents: 0, statuses: {}, errors: [], sentBatches: 0,
    first503At: null, last503At: null, lastAckAt: null, stopped: false, batch,
  };
  let nextBatch = 0;
  const worker = async () => {
    while (!f.stopped) {
      const b = nextBatch++;
      const body = Array.from({ length: batch }, (_, j) => ({ type: 'delta', data: { b, j } }));
      f.sentBatches++;
      let res;
      try {
        res = await api(base, 'POST', `/v1/runs/${runId}/events`, { token, body, timeoutMs });
      } catch (e) {
        f.errors.push(e);
        // A refused connection (server gone) must not spin: back off briefly, the test stops us.
        await new Promise((r) => setTimeout(r, 20));
        continue;
      }
      f.statuses[res.status] = (f.statuses[res.status] ?? 0) + 1;
      if (res.status === 202) {
        const last = res.json?.last_seq;
        if (!Number.isInteger(last)) throw new Error(`202 without last_seq: ${res.text}`);
        const at = Date.now();
        f.acked.push({ b, last, at });
        f.ackedEvents += batch;
        f.lastAckAt = at;
        if (last > f.maxAcked) f.maxAcked = last;
        if (onAck) onAck(f);
      } else if (res.status === 503) {
        const at = Date.now();
        if (f.first503At === null) f.first503At = at;
        f.last503At = at;
        f.last503 = res;
        if (on503) on503(f);
        // A producer honouring the 503: a short pause before it tries again.
        await new Promise((r) => setTimeout(r, 10));
      } else {
        throw new Error(`append answered ${res.status}: ${res.text}`);
      }
    }
  };
  const done = Promise.all(Array.from({ length: workers }, worker));
  let failure = null;
  done.catch((e) => { failure = e; f.stopped = true; });
  f.stop = async () => {
    f.stopped = true;
    await done.catch(() => {});
    if (failure) throw failure;
    return f;
  };
  f.failure = () => failure;
  /// Throws the producer's failure (an unexpected status), if any: call it in wait predicates so
  /// a broken flood fails the wait at once instead of timing it out.
  f.check = () => { if (failure) throw failure; return true; };
  /// Rejects when a producer fails (never resolves otherwise): for Promise.race with a wait.
  f.failed = new Promise((_, reject) => { done.catch(reject); });
  f.failed.catch(() => {});
  return f;
}

/// Checks the events of a run read back from 0 (SSE items, `gap`s included) against a flood:
/// - seqs are exactly 1..n (no gap event, no hole, no duplicate, in order);
/// - every acknowledged batch is there at the seqs its ack named, with its own data;
/// - every event is one the flood sent ({b, j} with j < batch), none twice, a batch's events adjacent.
/// `extra(e)` may accept events that are not the flood's (e.g. later appends, `complete`).
/// `lostAbove`: acknowledged batches that start above this seq may be missing (batched durability
/// after a crash); a batch is committed whole or not at all, so one straddling it is still an error.
/// Returns n.
export function checkAgainstFlood(events, flood, { extra = () => false, what = 'stream', lostAbove = Infinity } = {}) {
  const gaps = events.filter((e) => e.event === 'gap');
  assert.equal(gaps.length, 0, `${what}: no gap expected, got ${JSON.stringify(gaps.map((g) => g.json))}`);
  const seqs = events.map((e) => Number(e.id));
  assertRange(seqs, 1, seqs.length, what);
  const bySeq = new Map(events.map((e) => [Number(e.id), e]));
  const seen = new Set();
  for (const e of events) {
    assert.equal(e.json.seq, Number(e.id), `${what}: id and data.seq agree`);
    if (extra(e)) continue;
    const d = e.json.data;
    assert.ok(e.json.type === 'delta' && d && Number.isInteger(d.b) && Number.isInteger(d.j) &&
              d.j >= 0 && d.j < flood.batch, `${what}: an event the producer never sent: ${e.data}`);
    const key = `${d.b}/${d.j}`;
    assert.ok(!seen.has(key), `${what}: event ${key} stored twice (again at seq ${e.id})`);
    seen.add(key);
    // The events of one POST get adjacent seqs: seq - j is the same for the whole batch.
    const first = bySeq.get(Number(e.id) - d.j);
    assert.ok(first && first.json.data?.b === d.b && first.json.data?.j === 0,
      `${what}: batch ${d.b} is not contiguous around seq ${e.id}`);
  }
  for (const { b, last } of flood.acked) {
    if (last - flood.batch + 1 > lostAbove) continue;
    for (let j = 0; j < flood.batch; j++) {
      const seq = last - flood.batch + 1 + j;
      const e = bySeq.get(seq);
      assert.ok(e, `${what}: acknowledged event seq ${seq} (batch ${b}) is missing; stream has 1..${seqs.length}`);
      assert.deepEqual(e.json.data, { b, j }, `${what}: seq ${seq} was acknowledged for batch ${b}`);
    }
  }
  return seqs.length;
}

/// Asserts that `list` is exactly [from..to], naming duplicates and holes when not.
export function assertRange(list, from, to, what) {
  if (list.length === to - from + 1 && list.every((v, i) => v === from + i)) return;
  const want = range(from, to);
  const seen = new Set();
  const dups = list.filter((v) => (seen.has(v) ? true : (seen.add(v), false)));
  const holes = want.filter((v) => !seen.has(v));
  assert.fail(`${what}: expected ${from}..${to} (${want.length}), got ${list.length}; ` +
              `duplicates ${JSON.stringify(dups.slice(0, 20))}, holes ${JSON.stringify(holes.slice(0, 20))}, ` +
              `first out of order at index ${list.findIndex((v, i) => v !== want[i])}`);
}
