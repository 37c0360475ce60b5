// Runs over WebSocket (GET /v1/ws): a run followed over WebSocket and SSE at once delivers the
// same events; subscribe with `after` resumes exactly; unsubscribe stops delivery; a position
// older than the ring gets `gap` (ack recovered:false); `publish` appends for services only.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { api, metricSum, startServer, tokenFor } from './lib/server.mjs';
import { openSse, range } from './lib/sse.mjs';
import { closeAll, connect, wsErrorShape } from './lib/ws.mjs';

const alice = tokenFor('alice', 'user');
const bob = tokenFor('bob', 'user');
const service = tokenFor('svc', 'service');

async function createRun(base, body) {
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
/// The WebSocket event reduced to the fields an SSE event carries.
const wsEv = (m) => ({ seq: m.seq, type: m.type, data: m.data, ts: m.ts });

describe('runs over WebSocket', { timeout: 60_000 }, () => {
  let srv;
  before(async () => { srv = await startServer({}); });
  after(async () => { if (srv) await srv.stop(); });

  test('a synthetic run followed over WebSocket and SSE at once: identical events, complete included', async () => {
    const id = await createRun(srv.url, { kind: 'synthetic', input: { count: 300, size: 64, interval_ms: 1 } });
    const topic = `run:${id}`;
    const ws = await connect(srv.port, alice, { name: 'alice' });
    const sse = openSse(`${srv.url}/v1/runs/${id}/events`, { token: alice });
    try {
      const ack = await ws.ok({ op: 'subscribe', topic });
      assert.equal(ack.topic, topic);
      assert.equal(ack.recovered, true);
      assert.ok(Number.isInteger(ack.last_seq) && ack.last_seq >= 0 && ack.last_seq <= 301, JSON.stringify(ack));
      const done = await ws.waitFor((c) => c.events(topic).some((e) => e.type === 'complete'),
        { timeoutMs: 15_000, what: 'the complete event' });
      assert.ok(done);
      assert.equal(await sse.waitEnd({ timeoutMs: 15_000 }), 'end', sse.describe());
      // Anything after the terminal event would be a bug: a ping round trip flushes the stream.
      await ws.ok({ op: 'ping' });

      const viaWs = ws.events(topic).map(wsEv);
      const viaSse = sse.events.map((e) => ({ seq: e.json.seq, type: e.json.type, data: e.json.data, ts: e.json.ts }));
      assert.deepEqual(viaWs.map((e) => e.seq), range(1, 301));
      assert.deepEqual(viaWs, viaSse, 'WebSocket and SSE carry the same events');
      assert.equal(viaWs.at(-1).type, 'complete');
      assert.ok(viaWs.slice(0, 300).every((e) => e.type === 'delta'));
      for (const m of ws.events(topic)) {
        assert.deepEqual(Object.keys(m).sort(), ['data', 'op', 'seq', 'topic', 'ts', 'type'], JSON.stringify(m));
      }
    } finally {
      sse.destroy();
      await closeAll([ws]);
    }
  });

  test('producer appends over HTTP and publish over WebSocket: WebSocket and SSE followers agree', async () => {
    const id = await createRun(srv.url, { kind: 'external', input: {} });
    const topic = `run:${id}`;
    const reader = await connect(srv.port, alice, { name: 'alice' });
    const producer = await connect(srv.port, service, { name: 'svc' });
    const sse = openSse(`${srv.url}/v1/runs/${id}/events`, { token: alice });
    try {
      await reader.ok({ op: 'subscribe', topic });
      await sse.response;
      let expected = 0;
      for (let round = 0; round < 10; round++) {
        expected = await append(srv.url, id, deltas(expected + 1, expected + 9));
        const pub = await producer.ok({ op: 'publish', topic, type: 'tool.call', data: { round, nested: [1, 'x', null] } });
        assert.deepEqual(Object.keys(pub).sort(), ['op', 'ref', 'seq']);
        assert.equal(pub.seq, expected + 1, 'publish acks the seq it got');
        expected = pub.seq;
      }
      const c = await api(srv.url, 'POST', `/v1/runs/${id}/complete`, { token: service, body: { data: { ok: true } } });
      assert.equal(c.status, 200, c.text);
      assert.equal(await sse.waitEnd(), 'end', sse.describe());
      await reader.waitFor((x) => x.events(topic).some((e) => e.type === 'complete'), { what: 'complete' });
      await reader.ok({ op: 'ping' });

      const viaWs = reader.events(topic).map(wsEv);
      assert.deepEqual(viaWs.map((e) => e.seq), range(1, 101));
      assert.deepEqual(viaWs, sse.events.map((e) => ({ seq: e.json.seq, type: e.json.type, data: e.json.data, ts: e.json.ts })));
      assert.deepEqual(viaWs[9], { seq: 10, type: 'tool.call', data: { round: 0, nested: [1, 'x', null] }, ts: viaWs[9].ts });
      assert.deepEqual(viaWs.at(-1).type, 'complete');
      const state = await api(srv.url, 'GET', `/v1/runs/${id}`, { token: alice });
      assert.equal(state.json.last_seq, 101, state.text);
      assert.equal(state.json.status, 'completed');
      // A finished run rejects publish as it rejects appends (409).
      const late = await producer.request({ op: 'publish', topic, type: 'delta', data: 1 });
      assert.equal(wsErrorShape(late, { ref: late.ref, code: 'conflict' }), null);
    } finally {
      sse.destroy();
      await closeAll([reader, producer]);
    }
  });

  test('subscribe with after resumes exactly; unsubscribe stops delivery and frees the topic', async () => {
    const id = await createRun(srv.url, { kind: 'external', input: {} });
    const topic = `run:${id}`;
    const ws = await connect(srv.port, alice, { name: 'alice' });
    try {
      await ws.ok({ op: 'subscribe', topic });
      await append(srv.url, id, deltas(1, 20));
      await ws.waitForEvents(topic, 20);
      const unsub = await ws.ok({ op: 'unsubscribe', topic });
      assert.deepEqual(Object.keys(unsub).sort(), ['op', 'ref']);
      assert.equal((await ws.ok({ op: 'unsubscribe', topic })).op, 'ack', 'unsubscribe is idempotent');
      await append(srv.url, id, deltas(21, 40));  // nobody follows on this connection

      const ack = await ws.ok({ op: 'subscribe', topic, after: 30 });
      assert.deepEqual({ ...ack, ref: 'x' }, { op: 'ack', ref: 'x', topic, last_seq: 40, recovered: true });
      await append(srv.url, id, deltas(41, 50));
      assert.equal((await api(srv.url, 'POST', `/v1/runs/${id}/complete`, { token: service })).status, 200);
      await ws.waitFor((x) => x.events(topic).some((e) => e.type === 'complete'), { what: 'complete' });
      await ws.ok({ op: 'ping' });
      assert.deepEqual(ws.seqs(topic), [...range(1, 20), ...range(31, 51)],
        'nothing while unsubscribed, then exactly 31.. after after=30');
      assert.deepEqual(ws.events(topic).slice(0, 40).map((e) => e.data.i), [...range(1, 20), ...range(31, 50)]);

      // A finished run: after=37 gives exactly the remaining events, then the subscription ends.
      const late = await connect(srv.port, alice, { name: 'late' });
      try {
        const a2 = await late.ok({ op: 'subscribe', topic, after: 37 });
        assert.equal(a2.last_seq, 51);
        assert.equal(a2.recovered, true);
        await late.waitFor((x) => x.events(topic).some((e) => e.type === 'complete'), { what: 'complete' });
        await late.ok({ op: 'ping' });
        assert.deepEqual(late.seqs(topic), range(38, 51));
        // The ended subscription is gone: subscribing again is not a conflict.
        const again = await late.ok({ op: 'subscribe', topic, after: 50 });
        assert.equal(again.last_seq, 51);
        await late.waitFor((x) => x.events(topic).length === 15, { what: 'event 51 again' });
        assert.deepEqual(late.seqs(topic), [...range(38, 51), 51]);
      } finally {
        await closeAll([late]);
      }
    } finally {
      await closeAll([ws]);
    }
  });

  // after = 2^64-1 is a valid uint64 and past the end: nothing is owed, so the ack says recovered
  // and no gap is counted (replay_ring::after once computed after + 1 and wrapped to 0).
  test('a position past the end (2^64-1) is recovered with nothing owed and no gap', async () => {
    const id = await createRun(srv.url, { kind: 'external', input: {} });
    const topic = `run:${id}`;
    await append(srv.url, id, deltas(1, 1));
    const gaps0 = (await metricSum(srv.url, /^relay_gaps_total$/)).sum;
    const ws = await connect(srv.port, alice, { name: 'alice' });
    try {
      ws.send(`{"op":"subscribe","topic":"${topic}","after":18446744073709551615,"ref":"max"}`);
      const answer = await ws.waitForMessage((m) => m.ref === 'max', { what: 'the answer' });
      assert.equal(answer.op, 'ack');
      assert.equal(answer.last_seq, 1);
      assert.equal(answer.recovered, true);
      assert.equal((await metricSum(srv.url, /^relay_gaps_total$/)).sum, gaps0, 'no gap counted');
      const pong = await ws.request({ op: 'ping' });
      assert.equal(pong.op, 'pong');
      assert.equal(ws.log.filter((m) => m.op === 'gap' || m.op === 'event').length, 0);
    } finally {
      await closeAll([ws]);
    }
  });

  test('publish: services only; bad publishes and others\' runs answer errors on an open connection', async () => {
    const id = await createRun(srv.url, { kind: 'external', input: {} });
    const topic = `run:${id}`;
    const owner = await connect(srv.port, alice, { name: 'alice' });
    const other = await connect(srv.port, bob, { name: 'bob' });
    const svc = await connect(srv.port, service, { name: 'svc' });
    try {
      await owner.ok({ op: 'subscribe', topic });
      const denied = await owner.request({ op: 'publish', topic, type: 'delta', data: { by: 'user' }, ref: 'u-1' });
      assert.equal(wsErrorShape(denied, { ref: 'u-1', code: 'forbidden' }), null);
      const ok = await svc.ok({ op: 'publish', topic, type: 'delta', data: { by: 'service' } });
      assert.equal(ok.seq, 1, 'the user\'s publish appended nothing');
      const nodata = await svc.ok({ op: 'publish', topic, type: 'delta' });
      assert.equal(nodata.seq, 2);
      await owner.waitForEvents(topic, 2);
      assert.deepEqual(owner.events(topic).map((e) => [e.seq, e.type, e.data]), [[1, 'delta', { by: 'service' }], [2, 'delta', null]]);

      const cases = [
        [{ op: 'publish', topic, type: 'complete', data: 1 }, 'bad_request'],  // reserved type
        [{ op: 'publish', topic, type: 'Bad Type', data: 1 }, 'bad_request'],
        [{ op: 'publish', topic, data: 1 }, 'bad_request'],                   // type missing
        [{ op: 'publish', topic: 'room:lobby', type: 'delta', data: 1 }, 'bad_request'],
        [{ op: 'publish', topic: 'run:', type: 'delta' }, 'bad_request'],
        [{ op: 'publish', topic: 'run:AAAAAAAAAAAAAAAAAAAAAAAA', type: 'delta', data: 1 }, 'not_found'],
      ];
      for (const [op, code] of cases) {
        const ref = `c-${code}-${Math.random().toString(36).slice(2)}`;
        const e = await svc.request({ ...op, ref });
        assert.equal(wsErrorShape(e, { ref, code }), null, `${JSON.stringify(op).slice(0, 100)}`);
      }

      // Another user's run: not_found (or forbidden), with the topic; the owner's run is untouched.
      const foreign = await other.request({ op: 'subscribe', topic, ref: 'b-1' });
      assert.ok(['not_found', 'forbidden'].includes(foreign.code), JSON.stringify(foreign));
      assert.equal(wsErrorShape(foreign, { ref: 'b-1' }), null);
      assert.equal(foreign.topic, topic);
      const missing = await other.request({ op: 'subscribe', topic: 'run:doesNotExist123', ref: 'b-2' });
      assert.equal(wsErrorShape(missing, { ref: 'b-2', code: 'not_found' }), null);
      assert.equal(missing.topic, 'run:doesNotExist123');
      assert.equal((await other.ok({ op: 'ping', ref: 'still-open' })).ref, 'still-open');
      assert.equal(other.events(topic).length, 0);
      // auth with a token of another role for the same subject changes what the connection may do.
      const promoted = await connect(srv.port, tokenFor('worker', 'user'), { name: 'worker' });
      try {
        const before = await promoted.request({ op: 'publish', topic, type: 'delta', data: 'w', ref: 'w-1' });
        assert.ok(['forbidden', 'not_found'].includes(before.code), JSON.stringify(before));
        assert.equal(wsErrorShape(before, { ref: 'w-1' }), null);
        await promoted.ok({ op: 'auth', token: tokenFor('worker', 'service') });
        assert.equal((await promoted.ok({ op: 'publish', topic, type: 'delta', data: 'w' })).seq, 3);
        await promoted.ok({ op: 'auth', token: tokenFor('worker', 'user') });
        const after = await promoted.request({ op: 'publish', topic, type: 'delta', data: 'w', ref: 'w-2' });
        assert.equal(after.op, 'error', JSON.stringify(after));
      } finally {
        await closeAll([promoted]);
      }
      // The service connection is still open and its run still takes publishes.
      assert.equal((await svc.ok({ op: 'publish', topic, type: 'delta', data: 3 })).seq, 4);
    } finally {
      await closeAll([owner, other, svc]);
    }
  });
});

describe('runs over WebSocket, a position older than the ring (memory only)', { timeout: 60_000 }, () => {
  let srv;
  before(async () => { srv = await startServer({ 'runs.ring_capacity': 50, 'storage.durability': 'none' }); });
  after(async () => { if (srv) await srv.stop(); });

  test('ring 50, 200 events, after=3 → ack recovered:false, gap {4..150}, then 151..200 and complete', async () => {
    const id = await createRun(srv.url, { kind: 'external', input: {} });
    const topic = `run:${id}`;
    for (let i = 1; i <= 200; i += 50) assert.equal(await append(srv.url, id, deltas(i, i + 49)), i + 49);
    const ws = await connect(srv.port, alice, { name: 'alice' });
    const sse = openSse(`${srv.url}/v1/runs/${id}/events`, { token: alice, headers: { 'last-event-id': '3' } });
    try {
      const mark = ws.log.length;
      const ack = await ws.ok({ op: 'subscribe', topic, after: 3, ref: 'resume' });
      assert.deepEqual(ack, { op: 'ack', ref: 'resume', topic, last_seq: 200, recovered: false });
      await ws.waitForEvents(topic, 50);
      await sse.waitForEvents(51, { what: 'gap + 151..200 over SSE' });  // both read before the ring moves on
      const c = await api(srv.url, 'POST', `/v1/runs/${id}/complete`, { token: service });
      assert.equal(c.status, 200, c.text);
      await ws.waitFor((x) => x.events(topic).some((e) => e.type === 'complete'), { what: 'complete' });
      await ws.ok({ op: 'ping' });

      const after = ws.log.slice(mark).filter((m) => m.op !== 'pong');
      assert.equal(after[0], ack, 'the ack comes first');
      assert.deepEqual(after[1], { op: 'gap', topic, from: 4, to: 150 }, 'then the gap');
      assert.deepEqual(after.slice(2).map((m) => [m.op, m.seq]), range(151, 201).map((s) => ['event', s]),
        'then 151..200 and the terminal event');
      assert.equal(after.at(-1).type, 'complete');
      assert.deepEqual(after.slice(2, 52).map((m) => m.data.i), range(151, 200));

      // SSE from the same position says the same.
      assert.equal(await sse.waitEnd(), 'end', sse.describe());
      assert.deepEqual(sse.events[0].json, { from: 4, to: 150 });
      assert.deepEqual(sse.seqs(), ws.seqs(topic));

      // A position inside the ring: no gap, recovered.
      const mark2 = ws.log.length;
      await ws.ok({ op: 'unsubscribe', topic });
      const ok = await ws.ok({ op: 'subscribe', topic, after: 160 });
      assert.equal(ok.recovered, true);
      await ws.waitFor((x) => x.log.slice(mark2).filter((m) => m.op === 'event').length === 41, { what: '161..201' });
      await ws.ok({ op: 'ping' });
      const again = ws.log.slice(mark2).filter((m) => m.op === 'event' || m.op === 'gap');
      assert.deepEqual(again.map((m) => m.seq), range(161, 201));
    } finally {
      sse.destroy();
      await closeAll([ws]);
    }
  });
});
