// Resume: a client that drops mid-run and comes back with Last-Event-ID or ?after= gets every
// event exactly once, in order; a position older than the replay ring gets a `gap` first.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { api, startServer, tokenFor } from './lib/server.mjs';
import { openSse, range } from './lib/sse.mjs';

const alice = tokenFor('alice', 'user');
const service = tokenFor('producer', 'service');

/// Asserts that `list` is exactly [from..to].
function assertExactly(list, from, to, what) {
  const want = range(from, to);
  if (list.length === want.length && list.every((v, i) => v === want[i])) return;
  const seen = new Set();
  const dups = list.filter((v) => (seen.has(v) ? true : (seen.add(v), false)));
  const holes = want.filter((v) => !seen.has(v));
  assert.fail(`${what}: expected ${from}..${to} (${want.length}), got ${list.length} events; ` +
              `duplicates ${JSON.stringify(dups.slice(0, 20))}, holes ${JSON.stringify(holes.slice(0, 20))}, ` +
              `first out of order at ${list.findIndex((v, i) => v !== want[i])}`);
}

/// Every event frame carries id == data.seq and event == data.type.
function assertFramesConsistent(events) {
  for (const e of events) {
    if (e.event === 'gap') continue;
    assert.equal(e.hasId, true);
    assert.equal(String(e.json.seq), e.id);
    assert.equal(e.json.type, e.event);
  }
}

describe('resume with the default ring', { timeout: 90_000 }, () => {
  let srv;
  before(async () => { srv = await startServer(); });
  after(async () => { if (srv) await srv.stop(); });

  test('producer-fed run of 300 events: drop, resume by Last-Event-ID, drop, resume by ?after=', async () => {
    const N = 300;
    const run = (await api(srv.url, 'POST', '/v1/runs', { token: alice, body: { kind: 'external', input: {} } })).json;
    const url = `${srv.url}/v1/runs/${run.id}/events`;

    // The producer appends concurrently with the clients, in batches of 1–3 events.
    let produced = 0;
    let producerError = null;
    const producer = (async () => {
      let i = 0;
      while (produced < N) {
        const n = Math.min(N - produced, 1 + (i++ % 3));
        const body = Array.from({ length: n }, (_, j) => ({ type: 'delta', data: { n: produced + j + 1 } }));
        const res = await api(srv.url, 'POST', `/v1/runs/${run.id}/events`, { token: service, body: n === 1 ? body[0] : body });
        if (res.status !== 202) throw new Error(`append: ${res.status} ${res.text}`);
        produced += n;
        if (res.json.last_seq !== produced) throw new Error(`last_seq ${res.json.last_seq}, expected ${produced}`);
        // Yield so the clients' sockets are served between appends.
        await new Promise((r) => setImmediate(r));
      }
      const c = await api(srv.url, 'POST', `/v1/runs/${run.id}/complete`, { token: service, body: { data: 'end' } });
      if (c.status !== 200) throw new Error(`complete: ${c.status} ${c.text}`);
    })().catch((e) => { producerError = e; });

    const received = [];
    // 1) From the start; dropped by the client after 70 events.
    const c1 = openSse(url, { token: alice, destroyAfterEvents: 70 });
    await c1.waitEnd({ timeoutMs: 20_000 });
    assert.equal(c1.endReason, 'destroyed', c1.describe());
    assert.equal(c1.events.length, 70);
    assertFramesConsistent(c1.events);
    received.push(...c1.seqs());

    // 2) Resume with Last-Event-ID; dropped after 110 more.
    const c2 = openSse(url, { token: alice, headers: { 'last-event-id': c1.lastId }, destroyAfterEvents: 110 });
    await c2.waitEnd({ timeoutMs: 20_000 });
    assert.equal(c2.endReason, 'destroyed', c2.describe());
    assertFramesConsistent(c2.events);
    assert.ok(!c2.events.some((e) => e.event === 'gap'), 'no gap within the ring');
    received.push(...c2.seqs());

    // 3) Resume with ?after= to the end of the run; the server closes after `complete`.
    const c3 = openSse(`${url}?after=${c2.lastId}`, { token: alice });
    assert.equal(await c3.waitEnd({ timeoutMs: 30_000 }), 'end', c3.describe());
    assertFramesConsistent(c3.events);
    assert.ok(!c3.events.some((e) => e.event === 'gap'), 'no gap within the ring');
    received.push(...c3.seqs());
    await producer;
    assert.equal(producerError, null, String(producerError));

    assertExactly(received, 1, N + 1, 'concatenated seq list');
    assert.equal(c3.events.at(-1).event, 'complete');
    assert.equal(c3.events.at(-1).json.data, 'end');
    // Every resumed stream starts with the retry field too.
    for (const c of [c1, c2, c3]) assert.deepEqual(c.items[0], { kind: 'retry', value: 2000 });

    const got = await api(srv.url, 'GET', `/v1/runs/${run.id}`, { token: alice });
    assert.equal(got.json.last_seq, N + 1);
  });

  test('synthetic run of 300 events: drop twice and resume each time', async () => {
    const N = 300;
    const res = await api(srv.url, 'POST', '/v1/runs',
      { token: alice, body: { kind: 'synthetic', input: { count: N, size: 64, interval_ms: 2 } } });
    assert.equal(res.status, 201, res.text);
    const url = `${srv.url}/v1/runs/${res.json.id}/events`;
    const received = [];
    const c1 = openSse(url, { token: alice, destroyAfterEvents: 100 });
    await c1.waitEnd({ timeoutMs: 20_000 });
    assert.equal(c1.endReason, 'destroyed', c1.describe());
    received.push(...c1.seqs());
    const c2 = openSse(url, { token: alice, headers: { 'Last-Event-ID': c1.lastId }, destroyAfterEvents: 100 });
    await c2.waitEnd({ timeoutMs: 20_000 });
    assert.equal(c2.endReason, 'destroyed', c2.describe());
    received.push(...c2.seqs());
    const c3 = openSse(`${url}?after=${c2.lastId}`, { token: alice });
    assert.equal(await c3.waitEnd({ timeoutMs: 30_000 }), 'end', c3.describe());
    received.push(...c3.seqs());
    for (const c of [c1, c2, c3]) assertFramesConsistent(c.events);
    assertExactly(received, 1, N + 1, 'concatenated seq list');
    assert.equal(c3.events.at(-1).event, 'complete');
  });

  test('Last-Event-ID wins over ?after=', async () => {
    const run = (await api(srv.url, 'POST', '/v1/runs', { token: alice, body: { kind: 'external', input: {} } })).json;
    const body = Array.from({ length: 10 }, (_, i) => ({ type: 'delta', data: i + 1 }));
    assert.equal((await api(srv.url, 'POST', `/v1/runs/${run.id}/events`, { token: service, body })).status, 202);
    assert.equal((await api(srv.url, 'POST', `/v1/runs/${run.id}/complete`, { token: service })).status, 200);
    const s = openSse(`${srv.url}/v1/runs/${run.id}/events?after=2`, { token: alice, headers: { 'Last-Event-ID': '7' } });
    assert.equal(await s.waitEnd(), 'end', s.describe());
    assert.deepEqual(s.seqs(), [8, 9, 10, 11]);
    const a = openSse(`${srv.url}/v1/runs/${run.id}/events?after=9`, { token: alice });
    assert.equal(await a.waitEnd(), 'end', a.describe());
    assert.deepEqual(a.seqs(), [10, 11]);
  });

  test('a resumed client that is live receives later events exactly once', async () => {
    const run = (await api(srv.url, 'POST', '/v1/runs', { token: alice, body: { kind: 'external', input: {} } })).json;
    const url = `${srv.url}/v1/runs/${run.id}/events`;
    const post = async (from, n) => {
      const body = Array.from({ length: n }, (_, i) => ({ type: 'delta', data: from + i }));
      const r = await api(srv.url, 'POST', `/v1/runs/${run.id}/events`, { token: service, body });
      assert.equal(r.status, 202, r.text);
    };
    await post(1, 20);
    const c1 = openSse(url, { token: alice, destroyAfterEvents: 12 });
    await c1.waitEnd();
    await post(21, 20);  // appended while nobody listens
    const c2 = openSse(url, { token: alice, headers: { 'Last-Event-ID': '12' } });
    await c2.waitForEvents(28, { what: 'replay of 13..40' });
    await post(41, 20);  // live after the replay
    await c2.waitForEvents(48, { what: 'live 41..60' });
    await api(srv.url, 'POST', `/v1/runs/${run.id}/complete`, { token: service });
    assert.equal(await c2.waitEnd(), 'end', c2.describe());
    assertExactly([...c1.seqs(), ...c2.seqs()], 1, 61, 'seq list');
    assert.deepEqual(c2.events.slice(0, 48).map((e) => e.json.data), range(13, 60));
  });
});

describe('resume from a position older than the ring (memory only: storage.durability none)', { timeout: 60_000 }, () => {
  let srv;
  before(async () => { srv = await startServer({ 'runs.ring_capacity': 50, 'storage.durability': 'none' }); });
  after(async () => { if (srv) await srv.stop(); });

  test('ring 50, 200 events, Last-Event-ID: 3 → gap {4..150}, then 151..200 and the terminal event', async () => {
    const run = (await api(srv.url, 'POST', '/v1/runs', { token: alice, body: { kind: 'external', input: {} } })).json;
    const url = `${srv.url}/v1/runs/${run.id}/events`;

    // A client that reads the first 3 events, then goes away.
    const early = openSse(url, { token: alice, destroyAfterEvents: 3 });
    await early.response;
    for (let i = 0; i < 200; i += 20) {
      if (i === 20) await early.waitEnd();  // it has its 3 events before the ring wraps
      const body = Array.from({ length: 20 }, (_, j) => ({ type: 'delta', data: i + j + 1 }));
      const r = await api(srv.url, 'POST', `/v1/runs/${run.id}/events`, { token: service, body });
      assert.equal(r.status, 202, r.text);
      assert.equal(r.json.last_seq, i + 20);
    }
    await early.waitEnd();
    assert.deepEqual(early.seqs(), [1, 2, 3]);
    assert.equal(early.lastId, '3');

    const s = openSse(url, { token: alice, headers: { 'Last-Event-ID': early.lastId } });
    await s.waitForEvents(51, { what: 'gap + 151..200' });
    const gap = s.events[0];
    assert.equal(gap.event, 'gap', `first event is a gap: ${s.describe()}`);
    assert.equal(gap.hasId, false, 'a gap frame carries no id');
    assert.deepEqual(gap.json, { from: 4, to: 150 });
    const firstItems = s.items.filter((i) => i.kind !== 'comment');
    assert.deepEqual(firstItems[0], { kind: 'retry', value: 2000 });
    assert.equal(firstItems[1], gap, 'the gap is the first thing after retry');

    const c = await api(srv.url, 'POST', `/v1/runs/${run.id}/complete`, { token: service });
    assert.equal(c.status, 200, c.text);
    assert.equal(await s.waitEnd(), 'end', s.describe());
    assert.deepEqual(s.seqs(), range(151, 201));
    assert.equal(s.events.length, 52);
    assert.equal(s.events.at(-1).event, 'complete');
    assertFramesConsistent(s.events);
    assert.deepEqual(s.events.slice(1, 51).map((e) => e.json.data), range(151, 200));

    // Same through ?after= once the run is over: the ring now holds 152..201.
    const a = openSse(`${url}?after=3`, { token: alice });
    assert.equal(await a.waitEnd(), 'end', a.describe());
    assert.equal(a.events[0].event, 'gap');
    assert.deepEqual(a.events[0].json, { from: 4, to: 151 });
    assert.deepEqual(a.seqs(), range(152, 201));

    // From the beginning (position 0): gap {1..151}.
    const z = openSse(url, { token: alice });
    assert.equal(await z.waitEnd(), 'end', z.describe());
    assert.deepEqual(z.events[0].json, { from: 1, to: 151 });
    assert.deepEqual(z.seqs(), range(152, 201));

    // A position inside the ring: no gap.
    const inside = openSse(url, { token: alice, headers: { 'Last-Event-ID': '180' } });
    assert.equal(await inside.waitEnd(), 'end', inside.describe());
    assert.deepEqual(inside.events.map((e) => e.event === 'gap' ? 'gap' : Number(e.id)), range(181, 201));
  });

  test('synthetic run of 200 with ring 50: a client resuming from 3 gets a gap, the rest, no duplicates', async () => {
    const res = await api(srv.url, 'POST', '/v1/runs',
      { token: alice, body: { kind: 'synthetic', input: { count: 200, size: 8, interval_ms: 0 } } });
    assert.equal(res.status, 201, res.text);
    const url = `${srv.url}/v1/runs/${res.json.id}/events`;
    // Wait for the run to finish, so the ring position is known: it holds 152..201.
    const done = openSse(`${url}?after=200`, { token: alice });
    assert.equal(await done.waitEnd({ timeoutMs: 20_000 }), 'end', done.describe());
    assert.deepEqual(done.events.map((e) => e.event), ['complete']);
    assert.deepEqual(done.seqs(), [201]);
    const s = openSse(url, { token: alice, headers: { 'Last-Event-ID': '3' } });
    assert.equal(await s.waitEnd(), 'end', s.describe());
    assert.equal(s.events[0].event, 'gap');
    assert.deepEqual(s.events[0].json, { from: 4, to: 151 });
    assert.deepEqual(s.seqs(), range(152, 201));
  });
});
