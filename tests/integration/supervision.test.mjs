// Supervision seen from outside: a fault injected into a run or room actor (the relay-fault-test
// binary's admin endpoint POST /v1/admin/fault/<topic>, built only for tests) is absorbed by the
// shard's supervisor — the topic restarts with its ring reloaded from storage, live subscribers
// over SSE and WebSocket carry on without a gap or a duplicate, a producer flooding through the
// crash loses no acknowledged event — and past the restart budget the run ends as failed/crashed.
// The default relay executable has no such endpoint.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { RELAY_FAULT_BIN, api, errorShape, metricSum, mintToken, startServer, tokenFor, waitUntil } from './lib/server.mjs';
import { openSse, range } from './lib/sse.mjs';
import { closeAll, connect } from './lib/ws.mjs';
import { assertRange, checkAgainstFlood, startFlood } from './lib/flood.mjs';

const alice = tokenFor('alice', 'user');
const service = tokenFor('producer', 'service');
const admin = mintToken({ sub: 'ops', role: 'admin' });

async function createRun(base) {
  const res = await api(base, 'POST', '/v1/runs', { token: alice, body: { kind: 'external', input: {} } });
  assert.equal(res.status, 201, res.text);
  return res.json.id;
}

async function append(base, id, from, to) {
  const body = range(from, to).map((i) => ({ type: 'delta', data: { i } }));
  const res = await api(base, 'POST', `/v1/runs/${id}/events`, { token: service, body });
  assert.equal(res.status, 202, res.text);
  assert.equal(res.json.last_seq, to);
}

const restarts = async (base) => (await metricSum(base, /^relay_restarts_total$/)).sum;

/// Injects a fault into `topic` and waits until the supervisor has restarted it (the restart
/// counter moved), so that the next step talks to the new incarnation.
async function crash(base, topic) {
  const before = await restarts(base);
  const res = await api(base, 'POST', `/v1/admin/fault/${topic}`, { token: admin });
  assert.equal(res.status, 200, res.text);
  await waitUntil(async () => (await restarts(base)) > before,
    { timeoutMs: 5_000, what: `the restart of ${topic}` });
}

describe('supervised restart from the log', { timeout: 90_000 }, () => {
  let srv;
  before(async () => {
    // A small ring: a resume from an old position must come from storage after the restart.
    srv = await startServer({ 'runs.ring_capacity': 20, 'supervisor.restart_max': 3, 'supervisor.restart_window_s': 60 },
      { bin: RELAY_FAULT_BIN });
  });
  after(async () => { await srv?.stop(); });

  test('a crashed run restarts with its ring from storage; SSE and WebSocket subscribers see no gap', async () => {
    const id = await createRun(srv.url);
    const topic = `run:${id}`;
    const sse = openSse(`${srv.url}/v1/runs/${id}/events`, { token: alice });
    const ws = await connect(srv.port, alice, { name: 'ws' });
    try {
      await ws.ok({ op: 'subscribe', topic, after: 0 });
      await append(srv.url, id, 1, 30);
      await sse.waitForEvents(30);
      await ws.waitForEvents(topic, 30);

      await crash(srv.url, topic);
      const info = await api(srv.url, 'GET', `/v1/runs/${id}`, { token: alice });
      assert.equal(info.json.status, 'running', info.text);
      assert.equal(info.json.last_seq, 30, 'the restarted run knows its seq');

      await append(srv.url, id, 31, 45);
      await sse.waitForEvents(45);
      await ws.waitForEvents(topic, 45);
      assertRange(sse.seqs(), 1, 45, 'live SSE subscriber across the restart');
      assertRange(ws.seqs(topic), 1, 45, 'live WebSocket subscriber across the restart');
      assert.equal(sse.events.filter((e) => e.event === 'gap').length, 0, sse.describe());
      assert.equal(ws.ops('gap').length, 0);

      // A client resuming from before the crash, older than the 20-event ring: filled from storage.
      const late = openSse(`${srv.url}/v1/runs/${id}/events`, { token: alice, headers: { 'last-event-id': '3' } });
      try {
        await late.waitForEvents(42);
        assertRange(late.seqs(), 4, 45, 'resume from 3 after the restart');
        assert.equal(late.events.filter((e) => e.event === 'gap').length, 0, late.describe());
      } finally { late.destroy(); }
    } finally {
      sse.destroy();
      await closeAll([ws]);
    }
  });

  test('a producer flooding through a crash: every acknowledged event is delivered once, in order', async () => {
    const id = await createRun(srv.url);
    const topic = `run:${id}`;
    const sse = openSse(`${srv.url}/v1/runs/${id}/events`, { token: alice });
    const flood = startFlood(srv.url, id, service, { workers: 4, batch: 5 });
    try {
      await waitUntil(() => flood.check() && flood.maxAcked >= 500, { timeoutMs: 20_000, what: '500 acknowledged events' });
      await crash(srv.url, topic);  // requests in flight get 503 (retried by the producer), never a 404 or 500
      const atCrash = flood.maxAcked;
      await waitUntil(() => flood.check() && flood.maxAcked >= atCrash + 500,
        { timeoutMs: 20_000, what: '500 more acknowledged events after the restart' });
    } finally {
      await flood.stop();
    }
    const done = await api(srv.url, 'POST', `/v1/runs/${id}/complete`, { token: service, body: {} });
    assert.equal(done.status, 200, done.text);
    assert.equal(await sse.waitEnd({ timeoutMs: 20_000 }), 'end', sse.describe());
    const events = sse.events.filter((e) => e.event !== 'complete');
    const n = checkAgainstFlood(events, flood, { what: 'live subscriber through the crash' });
    assert.equal(n, flood.maxAcked, 'nothing but acknowledged events');
    assert.equal(n, flood.ackedEvents, 'every acknowledged event exactly once');
  });

  test('a crashed room restarts with its seq and members; WebSocket members carry on without a gap', async () => {
    const room = 'sup.room';
    const topic = `room:${room}`;
    const a = await connect(srv.port, alice, { name: 'alice' });
    const b = await connect(srv.port, tokenFor('bob'), { name: 'bob' });
    try {
      await a.ok({ op: 'join', room });
      await b.ok({ op: 'join', room });
      for (let i = 1; i <= 10; i++) await a.ok({ op: 'send', room, text: `m${i}`, client_msg_id: `a/${i}` });
      await b.waitForEvents(topic, 10);

      await crash(srv.url, topic);
      // A retry of an already acknowledged message is still recognised after the restart.
      const again = await a.ok({ op: 'send', room, text: 'm10', client_msg_id: 'a/10' });
      assert.equal(again.seq, 10, 'the dedup window survived the restart');
      for (let i = 11; i <= 20; i++) await a.ok({ op: 'send', room, text: `m${i}`, client_msg_id: `a/${i}` });
      await b.waitForEvents(topic, 20);
      assertRange(b.seqs(topic), 1, 20, 'bob across the room restart');
      assert.deepEqual(b.events(topic).map((m) => m.data.text), range(1, 20).map((i) => `m${i}`));
      const presence = await api(srv.url, 'GET', `/v1/rooms/${room}/presence`, { token: alice });
      assert.equal(presence.status, 200, presence.text);
      assert.deepEqual(presence.json.members.map((m) => m.user).sort(), ['alice', 'bob'],
        'the members survived the restart');
    } finally {
      await closeAll([a, b]);
    }
  });

  test('past the restart budget the run ends as failed/crashed and its subscribers are told', async () => {
    const id = await createRun(srv.url);
    const topic = `run:${id}`;
    const sse = openSse(`${srv.url}/v1/runs/${id}/events`, { token: alice });
    await append(srv.url, id, 1, 5);
    await sse.waitForEvents(5);
    const finalBefore = (await metricSum(srv.url, /^relay_crashes_final_total$/)).sum;
    for (let i = 0; i < 3; i++) await crash(srv.url, topic);  // restart_max 3: all three absorbed
    let info = await api(srv.url, 'GET', `/v1/runs/${id}`, { token: alice });
    assert.equal(info.json.status, 'running', 'three crashes are within the budget');

    const res = await api(srv.url, 'POST', `/v1/admin/fault/${topic}`, { token: admin });
    assert.equal(res.status, 200, res.text);
    await waitUntil(async () => (await metricSum(srv.url, /^relay_crashes_final_total$/)).sum > finalBefore,
      { timeoutMs: 5_000, what: 'the run to fail past its budget' });
    assert.equal(await sse.waitEnd({ timeoutMs: 10_000 }), 'end', sse.describe());
    const last = sse.events.at(-1);
    assert.equal(last.event, 'error', sse.describe());
    assert.equal(last.json.data.code, 'crashed', last.data);
    assertRange(sse.seqs(), 1, 6, 'the deltas, then the error event');
    info = await api(srv.url, 'GET', `/v1/runs/${id}`, { token: alice });
    assert.equal(info.json.status, 'failed', info.text);
    assert.equal(info.json.reason, 'crashed', info.text);
    const more = await api(srv.url, 'POST', `/v1/runs/${id}/events`, { token: service, body: [{ type: 'delta', data: {} }] });
    assert.equal(more.status, 409, 'a failed run takes no more events');
  });

  test('the fault endpoint is for admins only and names unknown topics', async () => {
    const id = await createRun(srv.url);
    const before = await restarts(srv.url);
    const none = await api(srv.url, 'POST', `/v1/admin/fault/run:${id}`, {});
    assert.equal(none.status, 401, none.text);
    const user = await api(srv.url, 'POST', `/v1/admin/fault/run:${id}`, { token: alice });
    assert.equal(user.status, 403, user.text);
    assert.equal(errorShape(user), null);
    const svc = await api(srv.url, 'POST', `/v1/admin/fault/run:${id}`, { token: service });
    assert.equal(svc.status, 403, svc.text);
    const unknown = await api(srv.url, 'POST', '/v1/admin/fault/run:r_nosuchrun', { token: admin });
    assert.equal(unknown.status, 404, unknown.text);
    assert.equal(errorShape(unknown), null);
    assert.equal(await restarts(srv.url), before, 'refused faults crash nothing');
  });
});

describe('the default relay executable', { timeout: 30_000 }, () => {
  test('has no fault endpoint: 404 even for an admin', async () => {
    const srv = await startServer();
    try {
      const id = await createRun(srv.url);
      const res = await api(srv.url, 'POST', `/v1/admin/fault/run:${id}`, { token: admin });
      assert.equal(res.status, 404, res.text);
      assert.equal(errorShape(res), null);
      assert.equal(await restarts(srv.url), 0);
      const info = await api(srv.url, 'GET', `/v1/runs/${id}`, { token: alice });
      assert.equal(info.json.status, 'running');
    } finally {
      await srv.stop();
    }
  });
});
