// Durable storage (SQLite) seen from outside: kill -9 mid-flood in sync and batched mode, a clean
// restart of a room with 5 000 messages (history pages, resume beyond the ring, seq continuing),
// late resume of a finished run and take-over of an orphaned one after a restart, and replay
// beyond the in-memory ring over SSE and WebSocket.
//
// Servers that must come back over "the same" database get an absolute --storage.path in a temp
// dir of the test's own, removed in after().

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { api, metricSum, startServer, tokenFor, waitUntil } from './lib/server.mjs';
import { openSse, range } from './lib/sse.mjs';
import { closeAll, connect } from './lib/ws.mjs';
import { assertRange, checkAgainstFlood, startFlood } from './lib/flood.mjs';

const alice = tokenFor('alice', 'user');
const service = tokenFor('producer', 'service');

async function createRun(base, body = { kind: 'external', input: {} }) {
  const res = await api(base, 'POST', '/v1/runs', { token: alice, body });
  assert.equal(res.status, 201, res.text);
  return res.json.id;
}

async function append(base, id, events) {
  const res = await api(base, 'POST', `/v1/runs/${id}/events`, { token: service, body: events });
  assert.equal(res.status, 202, res.text);
  return res.json.last_seq;
}

const deltas = (from, to) => range(from, to).map((i) => ({ type: 'delta', data: { i } }));

/// Servers and temp dirs of a describe block, all stopped / removed in its after() hook.
function resources() {
  const r = { servers: [], dirs: [] };
  r.server = async (flags) => { const s = await startServer(flags); r.servers.push(s); return s; };
  r.dir = (prefix) => { const d = mkdtempSync(path.join(os.tmpdir(), prefix)); r.dirs.push(d); return d; };
  r.cleanup = async () => {
    const errors = [];
    for (const s of r.servers.splice(0)) {
      try { await s.stop(); } catch (e) { errors.push(e); }
    }
    for (const d of r.dirs.splice(0)) rmSync(d, { recursive: true, force: true });
    if (errors.length) throw errors[0];
  };
  return r;
}

/// kill -9 mid-flood, restart over the same file, read the run back from 0 and append more.
/// Returns {acked, recovered, flood, srv2}.
async function crashAndRecover(res, durability, { target, minFloodMs = 0 }) {
  const dbPath = path.join(res.dir('relay-it-crash-'), 'relay.db');
  const flags = { 'storage.durability': durability, 'storage.path': dbPath };
  const srv1 = await res.server(flags);
  const id = await createRun(srv1.url);
  // In batched mode the run's row itself is committed up to flush_ms after the 201: wait for it
  // explicitly (through the storage metric) so the crash cannot take the run's existence with it.
  await waitUntil(async () => (await metricSum(srv1.url, /^relay_storage_commits_total$/)).sum >= 1,
    { timeoutMs: 5_000, what: 'the first storage commit' });

  const t0 = Date.now();
  let reached;
  const reachedP = new Promise((r) => { reached = r; });
  const flood = startFlood(srv1.url, id, service, {
    workers: 8, batch: 10,
    onAck: (f) => { if (f.maxAcked >= target && Date.now() - t0 >= minFloodMs) reached(); },
  });
  let timer;
  await Promise.race([reachedP, flood.failed, new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`flood did not reach ${target} acked events in 30 s: ` +
      `maxAcked ${flood.maxAcked}, statuses ${JSON.stringify(flood.statuses)}`)), 30_000);
  })]).finally(() => clearTimeout(timer));
  // Mid-flood: 8 requests are in flight when the process dies.
  const killedAt = Date.now();
  const exit = await srv1.kill9();
  flood.stopped = true;
  assert.equal(exit.signal, 'SIGKILL', JSON.stringify(exit));
  await flood.stop();  // every worker has its answer (or its connection error) now
  const floodMs = killedAt - t0;

  const srv2 = await res.server(flags);
  const state = await api(srv2.url, 'GET', `/v1/runs/${id}`, { token: alice });
  assert.equal(state.status, 200, `the run is found again after the crash: ${state.text}\n${srv2.output()}`);
  assert.equal(state.json.status, 'running', `an orphaned run is taken over as running: ${state.text}`);
  const recovered = state.json.last_seq;

  // From 0: the run is still running, so the stream stays open; read exactly last_seq events
  // (beyond the 2000-event ring: the start comes from storage).
  const s = openSse(`${srv2.url}/v1/runs/${id}/events`, { token: alice });
  try {
    await s.waitForEvents(recovered, { timeoutMs: 20_000, what: `events 1..${recovered}` });
    // The producer carries on: seq continues at recovered + 1.
    const more = await append(srv2.url, id, [{ type: 'after', data: 1 }, { type: 'after', data: 2 }]);
    assert.equal(more, recovered + 2, 'appends after the restart continue the seq');
    const done = await api(srv2.url, 'POST', `/v1/runs/${id}/complete`, { token: service, body: { data: 'end' } });
    assert.equal(done.status, 200, done.text);
    assert.equal(await s.waitEnd({ timeoutMs: 10_000 }), 'end', s.describe());
    const n = checkAgainstFlood(s.events, flood, {
      extra: (e) => e.json.seq > recovered, what: `${durability} after kill -9`,
      lostAbove: durability === 'sync' ? Infinity : recovered,
    });
    assert.equal(n, recovered + 3);
    assert.deepEqual(s.events.slice(recovered).map((e) => [e.json.type, e.json.data]),
      [['after', 1], ['after', 2], ['complete', 'end']]);
  } finally {
    s.destroy();
  }
  const lastWindow = flood.acked.filter((a) => a.at >= killedAt - 20).length * flood.batch;
  return { id, acked: flood.maxAcked, recovered, flood, floodMs, killedAt, lastWindow, srv2 };
}

describe('kill -9 mid-flood (SQLite)', { timeout: 120_000 }, () => {
  const res = resources();
  after(() => res.cleanup());

  test('sync: every acknowledged event survives, in order, no hole; appends continue after it', async () => {
    const r = await crashAndRecover(res, 'sync', { target: 3000 });
    console.log(`sync kill -9: acked ${r.acked}, recovered ${r.recovered} ` +
                `(${r.flood.ackedEvents} events acked in ${r.floodMs} ms, ${r.flood.sentBatches} batches sent)`);
    assert.ok(r.recovered >= r.acked,
      `sync: the highest acknowledged seq ${r.acked} is stored (recovered last_seq ${r.recovered})`);
    // Nothing unacknowledged may be invented either: at most the batches in flight at the kill.
    assert.ok(r.recovered <= r.acked + 8 * 10, `recovered ${r.recovered} vs acked ${r.acked}`);
  });

  test('batched: no corruption (1..N contiguous, acked batches intact below N), loss measured', async () => {
    const flushMs = 20;
    const r = await crashAndRecover(res, 'batched', { target: 3000, minFloodMs: 1500 });
    const lost = r.acked - r.recovered;
    // Acks that came in the last second before the kill: what a crash can be expected to take
    // (flush_ms of group commit plus a commit in progress, generously).
    const lastSecond = r.flood.acked.filter((a) => a.at >= r.killedAt - 1000).length * r.flood.batch;
    console.log(`batched kill -9: acked ${r.acked}, recovered ${r.recovered}, lost ${Math.max(0, lost)} ` +
                `(flush_ms ${flushMs}; ${r.flood.ackedEvents} events acked in ${r.floodMs} ms, ` +
                `≈${Math.round(r.flood.ackedEvents / (r.floodMs / 1000))}/s; ${r.lastWindow} acked in the ` +
                `last ${flushMs} ms, ${lastSecond} in the last second)`);
    // checkAgainstFlood (in crashAndRecover) already asserted contiguity, no duplicates, and every
    // acked batch at or below the recovered seq intact. The loss is bounded by recent acks.
    assert.ok(r.recovered > 0, 'something was committed before the crash');
    assert.ok(lost <= lastSecond,
      `lost ${lost} acknowledged events, more than the ${lastSecond} acked in the last second before the kill`);
  });
});

describe('clean restart over the same SQLite file', { timeout: 120_000 }, () => {
  const res = resources();
  let dbPath;
  let srv;
  const room = 'restart-room';
  const sent = new Map();  // seq -> text, from the send acks
  let finishedRun;
  let orphanRun;
  let stoppedAt;
  before(async () => {
    dbPath = path.join(res.dir('relay-it-restart-'), 'relay.db');
    srv = await res.server({ 'storage.path': dbPath });
  });
  after(() => res.cleanup());

  test('a room gets 5 000 messages, a run completes, another is left running; SIGTERM exits 0', async () => {
    // Pipelined sends on one connection, at most 500 outstanding: they take effect in order. The
    // acks are collected by ref as they arrive (cheaper than one waiter per request).
    const acks = new Map();
    const ws = await connect(srv.port, alice, {
      name: 'alice',
      onMessage: (m) => { if (typeof m.ref === 'string' && m.ref.startsWith('send-')) acks.set(m.ref, m); },
    });
    try {
      const N = 5000;
      const window = 500;
      for (let from = 1; from <= N; from += window) {
        const to = Math.min(N, from + window - 1);
        for (let i = from; i <= to; i++) ws.send({ op: 'send', room, text: `m${i}`, ref: `send-${i}` });
        await ws.waitFor(() => acks.size >= to, { timeoutMs: 20_000, what: `acks of sends ${from}..${to}` });
      }
      for (let i = 1; i <= N; i++) {
        const a = acks.get(`send-${i}`);
        assert.equal(a?.op, 'ack', `send ${i}: ${JSON.stringify(a)}`);
        sent.set(a.seq, `m${i}`);
      }
      assertRange([...sent.keys()].sort((a, b) => a - b), 1, N, 'send acks');
      assertRange(range(1, N).map((i) => acks.get(`send-${i}`).seq), 1, N, 'acks in send order');
    } finally {
      await closeAll([ws]);
    }
    // Group commit: a flood of 5 000 messages costs far fewer transactions than events. Batched
    // durability acks before the commit, so the last batch may still be in its flush window here.
    const written = await waitUntil(async () => {
      const n = (await metricSum(srv.url, /^relay_storage_events_written_total$/)).sum;
      return n >= 5000 ? n : 0;
    }, { timeoutMs: 5_000, what: 'relay_storage_events_written_total >= 5000' });
    const commits = (await metricSum(srv.url, /^relay_storage_commits_total$/)).sum;
    assert.ok(commits >= 1 && commits * 4 < written, `commits ${commits} for ${written} events`);
    const h = await api(srv.url, 'GET', '/health');
    assert.equal(h.status, 200, h.text);
    assert.equal(h.json.storage, 'ok');
    assert.equal(h.json.storage_backend, 'sqlite');
    finishedRun = await createRun(srv.url);
    await append(srv.url, finishedRun, deltas(1, 30));
    const c = await api(srv.url, 'POST', `/v1/runs/${finishedRun}/complete`, { token: service, body: { data: { ok: 1 } } });
    assert.equal(c.status, 200, c.text);
    orphanRun = await createRun(srv.url, { kind: 'external', input: {}, inactivity_s: 8 });
    await append(srv.url, orphanRun, deltas(1, 5));
    // A clean stop commits what is pending and exits 0 (stop() asserts it).
    await srv.stop();
    stoppedAt = Date.now();
    srv = await res.server({ 'storage.path': dbPath });
    const orphan = await api(srv.url, 'GET', `/v1/runs/${orphanRun}`, { token: alice });
    assert.equal(orphan.status, 200, orphan.text);
    assert.equal(orphan.json.status, 'running', `taken over at start: ${orphan.text}`);
    assert.equal(orphan.json.last_seq, 5);
  });

  test('history pages (limit 500) walk all 5 000 messages back to null, in order, exactly once', async () => {
    assert.ok(finishedRun, 'needs the first test');
    const pages = [];
    let before = 0;
    for (let i = 0; i < 20; i++) {
      const q = before ? `?before_seq=${before}&limit=500` : '?limit=500';
      const r = await api(srv.url, 'GET', `/v1/rooms/${room}/messages${q}`, { token: alice });
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(Object.keys(r.json).sort(), ['before_seq', 'messages']);
      const msgs = r.json.messages;
      assert.ok(msgs.length <= 500);
      assert.deepEqual(msgs.map((m) => m.seq), [...msgs.map((m) => m.seq)].sort((a, b) => a - b), 'oldest first');
      pages.unshift(msgs);
      if (r.json.before_seq === null) break;
      assert.equal(r.json.before_seq, msgs[0].seq, 'before_seq names the oldest message of the page');
      before = r.json.before_seq;
    }
    const all = pages.flat();
    assertRange(all.map((m) => m.seq), 1, 5000, 'history');
    assert.equal(pages.length, 10, 'ten full pages');
    for (const m of all) {
      assert.equal(m.type, 'message');
      assert.equal(m.data.text, sent.get(m.seq), `text of seq ${m.seq}`);
      assert.equal(m.data.user, 'alice');
      assert.ok(Number.isInteger(m.ts));
    }
    // limit is capped at 500.
    const big = await api(srv.url, 'GET', `/v1/rooms/${room}/messages?limit=1000`, { token: alice });
    assert.equal(big.status, 200, big.text);
    assert.deepEqual(big.json.messages.map((m) => m.seq), range(4501, 5000));
    assert.equal(big.json.before_seq, 4501);
    // A smaller page in the middle: the newest 7 below 100.
    const mid = await api(srv.url, 'GET', `/v1/rooms/${room}/messages?before_seq=100&limit=7`, { token: alice });
    assert.deepEqual(mid.json.messages.map((m) => m.seq), range(93, 99));
    assert.equal(mid.json.before_seq, 93);
  });

  test('SSE resume from seq 10 gets 11..5000 without a gap (storage fill), a new message is 5001; WebSocket join after 10 too', async () => {
    assert.ok(finishedRun, 'needs the first test');
    const s = openSse(`${srv.url}/v1/rooms/${room}/events`, { token: alice, headers: { 'last-event-id': '10' } });
    try {
      await s.waitForEvents(4990, { timeoutMs: 20_000, what: '11..5000' });
      const posted = await api(srv.url, 'POST', `/v1/rooms/${room}/messages`, { token: alice, body: { text: 'after restart' } });
      assert.equal(posted.status, 202, posted.text);
      assert.equal(posted.json.seq, 5001, 'the room continues its seq after the restart');
      await s.waitForEvents(4991, { what: 'the new message live' });
      assert.ok(!s.events.some((e) => e.event === 'gap'), `no gap: ${JSON.stringify(s.events.find((e) => e.event === 'gap')?.json)}`);
      assertRange(s.seqs(), 11, 5001, 'room stream');
      for (const e of s.events.slice(0, 4990)) assert.equal(e.json.data.text, sent.get(e.json.seq));
      assert.equal(s.events.at(-1).json.data.text, 'after restart');
      // The same over WebSocket: join with after 10.
      const ws = await connect(srv.port, alice, { name: 'alice' });
      try {
        const ack = await ws.ok({ op: 'join', room, after: 10 });
        assert.equal(ack.recovered, true, JSON.stringify(ack));
        const topic = `room:${room}`;
        await ws.waitForEvents(topic, 4991, { timeoutMs: 20_000, what: '11..5001 over WebSocket' });
        await ws.ok({ op: 'ping' });
        assert.deepEqual(ws.ops('gap'), []);
        assertRange(ws.seqs(topic), 11, 5001, 'room over WebSocket');
      } finally {
        await closeAll([ws]);
      }
    } finally {
      s.destroy();
    }
  });

  test('late resume: the run completed before the restart replays whole, complete included, and closes', async () => {
    assert.ok(finishedRun, 'needs the first test');
    const state = await api(srv.url, 'GET', `/v1/runs/${finishedRun}`, { token: alice });
    assert.equal(state.status, 200, state.text);
    assert.equal(state.json.status, 'completed');
    assert.equal(state.json.last_seq, 31);
    const s = openSse(`${srv.url}/v1/runs/${finishedRun}/events`, { token: alice });
    assert.equal(await s.waitEnd({ timeoutMs: 10_000 }), 'end', s.describe());
    assert.deepEqual(s.seqs(), range(1, 31));
    assert.deepEqual(s.events.slice(0, 30).map((e) => e.json.data), range(1, 30).map((i) => ({ i })));
    assert.equal(s.events.at(-1).event, 'complete');
    assert.deepEqual(s.events.at(-1).json.data, { ok: 1 });
    // From the middle too, and an append to it is still refused.
    const m = openSse(`${srv.url}/v1/runs/${finishedRun}/events?after=25`, { token: alice });
    assert.equal(await m.waitEnd({ timeoutMs: 10_000 }), 'end', m.describe());
    assert.deepEqual(m.seqs(), range(26, 31));
    const late = await api(srv.url, 'POST', `/v1/runs/${finishedRun}/events`, { token: service, body: { type: 'delta', data: 0 } });
    assert.equal(late.status, 409, late.text);
  });

  test('a run left running is taken over at start and, with nobody feeding it, times out after its inactivity_s', async () => {
    assert.ok(orphanRun, 'needs the first test');
    const s = openSse(`${srv.url}/v1/runs/${orphanRun}/events`, { token: alice });
    assert.equal(await s.waitEnd({ timeoutMs: 25_000 }), 'end', s.describe());
    assert.deepEqual(s.seqs(), range(1, 6));
    assert.deepEqual(s.events.slice(0, 5).map((e) => e.json.data), range(1, 5).map((i) => ({ i })));
    assert.equal(s.events.at(-1).event, 'error');
    assert.equal(s.events.at(-1).json.data.code, 'timed_out');
    assert.ok(s.events.at(-1).json.ts > stoppedAt, 'the timeout fired in the restarted server');
    const state = await api(srv.url, 'GET', `/v1/runs/${orphanRun}`, { token: alice });
    assert.equal(state.json.status, 'timed_out', state.text);
    assert.equal(state.json.last_seq, 6);
  });
});

describe('replay beyond the ring from storage (ring 50)', { timeout: 60_000 }, () => {
  let srv;
  before(async () => { srv = await startServer({ 'runs.ring_capacity': 50 }); });
  after(async () => { if (srv) await srv.stop(); });

  test('200 events, resume from 3 over SSE and WebSocket: 4..200 with no gap, ack recovered:true', async () => {
    const id = await createRun(srv.url);
    const topic = `run:${id}`;
    for (let i = 1; i <= 200; i += 20) assert.equal(await append(srv.url, id, deltas(i, i + 19)), i + 19);

    const s = openSse(`${srv.url}/v1/runs/${id}/events`, { token: alice, headers: { 'last-event-id': '3' } });
    const ws = await connect(srv.port, alice, { name: 'alice' });
    try {
      await s.waitForEvents(197, { what: '4..200' });
      const ack = await ws.ok({ op: 'subscribe', topic, after: 3 });
      assert.equal(ack.recovered, true, `storage has 4..200: ${JSON.stringify(ack)}`);
      assert.equal(ack.last_seq, 200);
      await ws.waitForEvents(topic, 197, { what: '4..200 over WebSocket' });
      // Live events after the stored ones, then the end.
      assert.equal(await append(srv.url, id, deltas(201, 210)), 210);
      assert.equal((await api(srv.url, 'POST', `/v1/runs/${id}/complete`, { token: service })).status, 200);
      assert.equal(await s.waitEnd(), 'end', s.describe());
      await ws.waitForEvents(topic, 208, { what: 'live 201..211' });
      await ws.ok({ op: 'ping' });
      assert.deepEqual(ws.ops('gap'), [], 'no gap over WebSocket');
      assert.ok(!s.events.some((e) => e.event === 'gap'), 'no gap over SSE');
      assertRange(s.seqs(), 4, 211, 'SSE');
      assertRange(ws.seqs(topic), 4, 211, 'WebSocket');
      assert.deepEqual(s.events.slice(0, 207).map((e) => e.json.data), range(4, 210).map((i) => ({ i })));
      assert.deepEqual(ws.events(topic).slice(0, 207).map((m) => m.data), range(4, 210).map((i) => ({ i })));
      assert.equal(ws.events(topic).at(-1).type, 'complete');
    } finally {
      s.destroy();
      await closeAll([ws]);
    }
    // Once the run is over, from 0 and from the middle: all from storage, then the stream closes.
    const z = openSse(`${srv.url}/v1/runs/${id}/events?after=0`, { token: alice });
    assert.equal(await z.waitEnd(), 'end', z.describe());
    assertRange(z.seqs(), 1, 211, 'from 0');
    assert.ok(!z.events.some((e) => e.event === 'gap'));
    const ws2 = await connect(srv.port, alice, { name: 'alice2' });
    try {
      const ack = await ws2.ok({ op: 'subscribe', topic, after: 100 });
      assert.equal(ack.recovered, true);
      await ws2.waitFor((c) => c.events(topic).some((e) => e.type === 'complete'), { what: 'complete' });
      assertRange(ws2.seqs(topic), 101, 211, 'WebSocket from 100');
      assert.deepEqual(ws2.ops('gap'), []);
    } finally {
      await closeAll([ws2]);
    }
  });
});
