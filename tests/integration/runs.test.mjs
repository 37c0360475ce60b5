// Runs end to end: create → stream over SSE while a producer appends → complete; run state, the
// list of active runs, idempotency keys, synthetic runs, fail and cancel, and the `relay token`
// subcommand. Black box: only the HTTP contract of ../../shared/PROTOCOL.md (in the steering repo).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { api, relayToken, startServer, tokenFor } from './lib/server.mjs';
import { openSse, range } from './lib/sse.mjs';

let srv;
const alice = tokenFor('alice', 'user');
const bob = tokenFor('bob', 'user');
const service = tokenFor('worker-1', 'service');

before(async () => { srv = await startServer({ 'sse.heartbeat_s': 1 }); });
after(async () => { if (srv) await srv.stop(); });

const RUN_ID = /^[A-Za-z0-9_-]{16,}$/;  // URL-safe, ≥ 96 random bits

async function createRun(token, body) {
  const res = await api(srv.url, 'POST', '/v1/runs', { token, body });
  assert.ok(res.status === 201 || res.status === 200, `create: ${res.status} ${res.text}`);
  return res;
}

function assertEventFrame(ev, seq, type) {
  assert.equal(ev.hasId, true, `frame ${seq} has an id line`);
  assert.equal(ev.id, String(seq), 'id line is the seq');
  assert.equal(ev.event, type, `event line of seq ${seq}`);
  assert.ok(ev.json, `data of seq ${seq} is one line of JSON: ${ev.data}`);
  assert.equal(ev.json.seq, seq);
  assert.equal(ev.json.type, type);
  assert.equal(typeof ev.json.ts, 'number');
  assert.ok(Object.hasOwn(ev.json, 'data'), `event ${seq} has a data member`);
}

describe('runs', { timeout: 60_000 }, () => {
  test('relay token prints a JWT the server accepts', async () => {
    const tok = await relayToken({ sub: 'tokencli', role: 'user', ttlS: 600 });
    assert.match(tok, /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/, `token output: ${JSON.stringify(tok)}`);
    const payload = JSON.parse(Buffer.from(tok.split('.')[1], 'base64url').toString());
    assert.equal(payload.sub, 'tokencli');
    assert.ok(payload.exp > Date.now() / 1000 && payload.exp <= Date.now() / 1000 + 601, `exp ${payload.exp}`);
    const created = await api(srv.url, 'POST', '/v1/runs', { token: tok, body: { kind: 'external', input: {} } });
    assert.equal(created.status, 201, created.text);
    const got = await api(srv.url, 'GET', `/v1/runs/${created.json.id}`, { token: tok });
    assert.equal(got.status, 200, got.text);
    assert.equal(got.json.owner, 'tokencli');

    const svc = await relayToken({ sub: 'svc-cli', role: 'service' });
    const appended = await api(srv.url, 'POST', `/v1/runs/${created.json.id}/events`,
      { token: svc, body: { type: 'delta', data: 1 } });
    assert.equal(appended.status, 202, appended.text);
  });

  test('health and metrics answer', async () => {
    const h = await api(srv.url, 'GET', '/health');
    assert.equal(h.status, 200, h.text);
    assert.equal(h.json.status, 'ok');
    assert.equal(typeof h.json.node, 'string');
    assert.equal(typeof h.json.uptime_s, 'number');
    const m = await api(srv.url, 'GET', '/metrics');
    assert.equal(m.status, 200);
    assert.match(m.headers.get('content-type') || '', /^text\/plain/);
    assert.match(m.text, /^# (HELP|TYPE) relay_/m);
  });

  test('create → stream while a service appends 20 events → complete', async () => {
    const t0 = Date.now();
    const created = await api(srv.url, 'POST', '/v1/runs',
      { token: alice, body: { kind: 'external', input: { prompt: 'hello' } } });
    assert.equal(created.status, 201, created.text);
    assert.match(created.headers.get('content-type') || '', /^application\/json/);
    const run = created.json;
    assert.match(run.id, RUN_ID);
    assert.equal(run.status, 'running');
    assert.equal(typeof run.created_at, 'number');
    assert.ok(Math.abs(run.created_at - t0) < 60_000, `created_at ${run.created_at} is ms since epoch`);
    assert.ok(run.events_url.endsWith(`/v1/runs/${run.id}/events`), run.events_url);

    const before = await api(srv.url, 'GET', `/v1/runs/${run.id}`, { token: alice });
    assert.equal(before.status, 200, before.text);
    assert.equal(before.json.status, 'running');
    assert.equal(before.json.last_seq, 0);
    assert.equal(before.json.kind, 'external');
    assert.equal(before.json.owner, 'alice');
    assert.equal(before.json.ended_at ?? undefined, undefined, 'no ended_at while running');

    const sse = openSse(`${srv.url}/v1/runs/${run.id}/events`, { token: alice });
    const head = await sse.response;
    assert.equal(head.status, 200, sse.describe());
    assert.match(head.headers['content-type'], /^text\/event-stream/);
    // Wait until the stream is really open (its first bytes: the retry field).
    await sse.waitFor((c) => c.items.length >= 1, { what: 'the retry line' });

    // 20 events: singles and arrays, every JSON kind as data.
    const payloads = [
      { text: 'Hello' }, 'plain string', 42, -1.5, true, false, null, [1, 'two', { three: 3 }],
      { nested: { deep: { deeper: [null, { x: 'y' }] } } }, 'üñíçødé ✓ 日本語 🚀',
      'line one\nline two\r\nline three', 'quotes " and \\ backslashes', { empty: {} }, [],
      '', 0, { big: 'x'.repeat(4000) }, { 'key with spaces': 'v' }, 1e21, { done: 'almost' },
    ];
    const types = payloads.map((_, i) => (i % 3 === 0 ? 'delta' : i % 3 === 1 ? 'tool.call' : 'step_2-x'));
    const batches = [[0], [1, 2, 3], [4], [5, 6], [7, 8, 9, 10, 11], [12], [13, 14, 15], [16], [17, 18, 19]];
    const asArray = new Set([1, 3, 4, 6, 8]);  // batch indexes sent as arrays (some of length 1 stay objects)
    let expectedLast = 0;
    for (const [bi, batch] of batches.entries()) {
      const items = batch.map((i) => ({ type: types[i], data: payloads[i] }));
      const body = asArray.has(bi) || items.length > 1 ? items : items[0];
      const res = await api(srv.url, 'POST', `/v1/runs/${run.id}/events`, { token: service, body });
      expectedLast += items.length;
      assert.equal(res.status, 202, `append batch ${bi}: ${res.text}`);
      assert.deepEqual(res.json, { last_seq: expectedLast });
    }
    assert.equal(expectedLast, 20);
    await sse.waitForEvents(20, { what: '20 live events' });

    const mid = await api(srv.url, 'GET', `/v1/runs/${run.id}`, { token: alice });
    assert.equal(mid.json.last_seq, 20);
    assert.equal(mid.json.status, 'running');

    const done = await api(srv.url, 'POST', `/v1/runs/${run.id}/complete`,
      { token: service, body: { data: { result: 'ok', tokens: 20 } } });
    assert.equal(done.status, 200, done.text);

    const reason = await sse.waitEnd({ timeoutMs: 10_000 });
    assert.equal(reason, 'end', `the server ends the stream after complete (${sse.describe()})`);

    // Exact stream: retry first, then seq 1..21 in order, nothing else but heartbeats.
    assert.deepEqual(sse.items[0], { kind: 'retry', value: 2000 });
    const evs = sse.events;
    assert.deepEqual(evs.map((e) => Number(e.id)), range(1, 21));
    for (let i = 0; i < 20; i++) {
      assertEventFrame(evs[i], i + 1, types[i]);
      assert.deepEqual(evs[i].json.data, payloads[i], `data of seq ${i + 1} round-trips`);
      assert.ok(evs[i].json.ts >= t0 - 5_000 && evs[i].json.ts <= Date.now() + 5_000, `ts ${evs[i].json.ts}`);
    }
    assertEventFrame(evs[20], 21, 'complete');
    assert.deepEqual(evs[20].json.data, { result: 'ok', tokens: 20 });
    for (const it of sse.items.slice(1)) {
      assert.ok(it.kind === 'event' || (it.kind === 'comment' && it.text === 'hb'), JSON.stringify(it));
    }

    const after = await api(srv.url, 'GET', `/v1/runs/${run.id}`, { token: alice });
    assert.equal(after.status, 200, after.text);
    assert.equal(after.json.id, run.id);
    assert.equal(after.json.status, 'completed');
    assert.equal(after.json.last_seq, 21);
    assert.equal(after.json.owner, 'alice');
    assert.equal(after.json.kind, 'external');
    assert.equal(after.json.created_at, run.created_at);
    assert.equal(typeof after.json.ended_at, 'number');
    assert.ok(after.json.ended_at >= run.created_at);

    // A late client replays the whole run from the ring and is closed after the terminal event.
    const late = openSse(`${srv.url}/v1/runs/${run.id}/events`, { token: service });
    assert.equal(await late.waitEnd(), 'end', late.describe());
    assert.deepEqual(late.events.map((e) => Number(e.id)), range(1, 21));
    assert.deepEqual(late.events.map((e) => e.data), evs.map((e) => e.data), 'replayed frames are identical');
  });

  test('the owner (a user) may cancel its run; appending, completing and failing need the service role', async () => {
    // PROTOCOL.md, roles: a user may create, read and stream its own runs; a service may append
    // events to any run and complete/fail any run; cancel: owner or service.
    const run = (await createRun(bob, { kind: 'external', input: {} })).json;
    for (const [op, body] of [['events', [{ type: 'delta', data: 'a' }]], ['complete', { data: 1 }], ['fail', { error: { code: 'x' } }]]) {
      const r = await api(srv.url, 'POST', `/v1/runs/${run.id}/${op}`, { token: bob, body });
      assert.equal(r.status, 403, `${op} by the owning user: ${r.text}`);
      assert.equal(r.json.error.code, 'forbidden');
    }
    const a = await api(srv.url, 'POST', `/v1/runs/${run.id}/events`,
      { token: service, body: [{ type: 'delta', data: 'a' }, { type: 'delta', data: 'b' }] });
    assert.equal(a.status, 202, a.text);
    assert.deepEqual(a.json, { last_seq: 2 });
    const c = await api(srv.url, 'POST', `/v1/runs/${run.id}/cancel`, { token: bob });
    assert.equal(c.status, 200, c.text);
    const sse = openSse(`${srv.url}/v1/runs/${run.id}/events?access_token=${bob}`);
    assert.equal(await sse.waitEnd(), 'end', sse.describe());
    assert.deepEqual(sse.events.map((e) => [Number(e.id), e.event]), [[1, 'delta'], [2, 'delta'], [3, 'cancelled']]);
  });

  test('complete without a body carries data null', async () => {
    const run = (await createRun(bob, { kind: 'external', input: {} })).json;
    const c = await api(srv.url, 'POST', `/v1/runs/${run.id}/complete`, { token: service });
    assert.equal(c.status, 200, c.text);
    const sse = openSse(`${srv.url}/v1/runs/${run.id}/events?access_token=${bob}`);
    assert.equal(await sse.waitEnd(), 'end', sse.describe());
    assert.deepEqual(sse.events.map((e) => [Number(e.id), e.event]), [[1, 'complete']]);
    assert.equal(sse.events[0].json.data, null);
  });

  test('fail appends `error` with the error object; cancel appends `cancelled`', async () => {
    const r1 = (await createRun(alice, { kind: 'external', input: {} })).json;
    const s1 = openSse(`${srv.url}/v1/runs/${r1.id}/events`, { token: alice });
    await s1.response;
    await api(srv.url, 'POST', `/v1/runs/${r1.id}/events`, { token: service, body: { type: 'delta', data: 'x' } });
    const f = await api(srv.url, 'POST', `/v1/runs/${r1.id}/fail`,
      { token: service, body: { error: { code: 'model_overloaded', message: 'try later' } } });
    assert.equal(f.status, 200, f.text);
    assert.equal(await s1.waitEnd(), 'end', s1.describe());
    assert.deepEqual(s1.events.map((e) => [Number(e.id), e.event]), [[1, 'delta'], [2, 'error']]);
    assert.deepEqual(s1.events[1].json.data, { code: 'model_overloaded', message: 'try later' });
    const g1 = await api(srv.url, 'GET', `/v1/runs/${r1.id}`, { token: alice });
    assert.equal(g1.json.status, 'failed');
    assert.equal(g1.json.last_seq, 2);

    const r2 = (await createRun(alice, { kind: 'external', input: {} })).json;
    const s2 = openSse(`${srv.url}/v1/runs/${r2.id}/events`, { token: alice });
    await s2.response;
    const c = await api(srv.url, 'POST', `/v1/runs/${r2.id}/cancel`, { token: alice });
    assert.equal(c.status, 200, c.text);
    assert.equal(await s2.waitEnd(), 'end', s2.describe());
    assert.deepEqual(s2.events.map((e) => [Number(e.id), e.event]), [[1, 'cancelled']]);
    const g2 = await api(srv.url, 'GET', `/v1/runs/${r2.id}`, { token: alice });
    assert.equal(g2.json.status, 'cancelled');
    assert.equal(g2.json.last_seq, 1);
    assert.equal(typeof g2.json.ended_at, 'number');
  });

  test('GET /v1/runs?status=active lists the caller\'s running runs, newest first', async () => {
    const carol = tokenFor('carol', 'user');
    const ids = [];
    let prevCreated = 0;
    for (let i = 0; i < 3; i++) {
      // Distinct created_at values, so "newest first" has one right answer.
      while (Date.now() <= prevCreated + 1) await new Promise((r) => setTimeout(r, 2));
      const r = (await createRun(carol, { kind: 'external', input: { i } })).json;
      ids.push(r.id);
      prevCreated = r.created_at;
    }
    const other = (await createRun(bob, { kind: 'external', input: {} })).json;
    const fin = await api(srv.url, 'POST', `/v1/runs/${ids[1]}/complete`, { token: service });
    assert.equal(fin.status, 200, fin.text);

    const listOf = (res) => (Array.isArray(res.json) ? res.json : res.json && res.json.runs);

    const active = await api(srv.url, 'GET', '/v1/runs?status=active', { token: carol });
    assert.equal(active.status, 200, active.text);
    const runs = listOf(active);
    assert.ok(Array.isArray(runs), `a list of runs: ${active.text}`);
    assert.deepEqual(runs.map((r) => r.id), [ids[2], ids[0]]);
    for (const r of runs) {
      assert.equal(r.status, 'running');
      assert.equal(r.owner, 'carol');
      assert.equal(r.kind, 'external');
      assert.equal(typeof r.created_at, 'number');
      assert.equal(typeof r.last_seq, 'number');
    }

    const all = await api(srv.url, 'GET', '/v1/runs', { token: carol });
    assert.equal(all.status, 200, all.text);
    assert.deepEqual(listOf(all).map((r) => r.id), [ids[2], ids[1], ids[0]]);
    assert.ok(!listOf(all).some((r) => r.id === other.id), 'another user\'s run is not listed');
  });

  test('idempotency key: same run (200) while active, a new one after it completed', async () => {
    const key = `idem-${Date.now()}`;
    const first = await api(srv.url, 'POST', '/v1/runs',
      { token: alice, body: { kind: 'external', input: {}, idempotency_key: key } });
    assert.equal(first.status, 201, first.text);
    const again = await api(srv.url, 'POST', '/v1/runs',
      { token: alice, body: { kind: 'external', input: {}, idempotency_key: key } });
    assert.equal(again.status, 200, again.text);
    assert.equal(again.json.id, first.json.id);
    assert.equal(again.json.status, 'running');
    assert.equal(again.json.created_at, first.json.created_at);
    assert.equal(again.json.events_url, first.json.events_url);

    // Keys are per owner: bob's run with the same key is another run.
    const bobs = await api(srv.url, 'POST', '/v1/runs',
      { token: bob, body: { kind: 'external', input: {}, idempotency_key: key } });
    assert.equal(bobs.status, 201, bobs.text);
    assert.notEqual(bobs.json.id, first.json.id);

    // A service creating on behalf of alice with the key finds alice's run.
    const onBehalf = await api(srv.url, 'POST', '/v1/runs',
      { token: service, body: { kind: 'external', input: {}, idempotency_key: key, owner: 'alice' } });
    assert.equal(onBehalf.status, 200, onBehalf.text);
    assert.equal(onBehalf.json.id, first.json.id);

    const done = await api(srv.url, 'POST', `/v1/runs/${first.json.id}/complete`, { token: service });
    assert.equal(done.status, 200, done.text);

    const next = await api(srv.url, 'POST', '/v1/runs',
      { token: alice, body: { kind: 'external', input: {}, idempotency_key: key } });
    assert.equal(next.status, 201, next.text);
    assert.notEqual(next.json.id, first.json.id);
    assert.equal(next.json.status, 'running');
  });

  test('a service creates a run on behalf of a user, who then sees it', async () => {
    const res = await api(srv.url, 'POST', '/v1/runs',
      { token: service, body: { kind: 'external', input: {}, owner: 'dave' } });
    assert.equal(res.status, 201, res.text);
    const dave = tokenFor('dave', 'user');
    const got = await api(srv.url, 'GET', `/v1/runs/${res.json.id}`, { token: dave });
    assert.equal(got.status, 200, got.text);
    assert.equal(got.json.owner, 'dave');
  });

  test('synthetic run streams input.count deltas, then complete', async () => {
    const count = 25;
    const res = await api(srv.url, 'POST', '/v1/runs',
      { token: alice, body: { kind: 'synthetic', input: { count, size: 16, interval_ms: 5 } } });
    assert.equal(res.status, 201, res.text);
    const sse = openSse(`${srv.url}/v1/runs/${res.json.id}/events`, { token: alice });
    assert.equal(await sse.waitEnd({ timeoutMs: 15_000 }), 'end', sse.describe());
    assert.deepEqual(sse.items[0], { kind: 'retry', value: 2000 });
    assert.deepEqual(sse.events.map((e) => Number(e.id)), range(1, count + 1));
    for (let i = 0; i < count; i++) assertEventFrame(sse.events[i], i + 1, 'delta');
    assertEventFrame(sse.events[count], count + 1, 'complete');
    const got = await api(srv.url, 'GET', `/v1/runs/${res.json.id}`, { token: alice });
    assert.equal(got.json.status, 'completed');
    assert.equal(got.json.kind, 'synthetic');
    assert.equal(got.json.last_seq, count + 1);
  });

  test('many concurrent subscribers of one run all see the same stream', async () => {
    const run = (await createRun(alice, { kind: 'external', input: {} })).json;
    const subs = Array.from({ length: 10 }, () => openSse(`${srv.url}/v1/runs/${run.id}/events`, { token: alice }));
    await Promise.all(subs.map((s) => s.response));
    for (let i = 0; i < 10; i++) {
      const r = await api(srv.url, 'POST', `/v1/runs/${run.id}/events`,
        { token: service, body: Array.from({ length: 5 }, (_, j) => ({ type: 'delta', data: i * 5 + j })) });
      assert.equal(r.status, 202, r.text);
    }
    await api(srv.url, 'POST', `/v1/runs/${run.id}/complete`, { token: service });
    for (const s of subs) {
      assert.equal(await s.waitEnd(), 'end', s.describe());
      assert.deepEqual(s.events.map((e) => Number(e.id)), range(1, 51));
      assert.deepEqual(s.events.slice(0, 50).map((e) => e.json.data), range(0, 49));
    }
  });

  test('an idle stream gets `: hb` comments (sse.heartbeat_s=1) and still delivers events', async () => {
    const run = (await createRun(alice, { kind: 'external', input: {} })).json;
    const s = openSse(`${srv.url}/v1/runs/${run.id}/events`, { token: alice });
    await s.waitFor((c) => c.items.filter((i) => i.kind === 'comment').length >= 2,
      { timeoutMs: 5_000, what: 'two heartbeats' });
    for (const c of s.items.filter((i) => i.kind === 'comment')) assert.equal(c.text, 'hb');
    assert.equal(s.events.length, 0);
    assert.equal((await api(srv.url, 'POST', `/v1/runs/${run.id}/events`, { token: service, body: { type: 'delta', data: 'after hb' } })).status, 202);
    await s.waitForEvents(1);
    assert.equal(s.events[0].json.data, 'after hb');
    assert.equal((await api(srv.url, 'POST', `/v1/runs/${run.id}/cancel`, { token: alice })).status, 200);
    assert.equal(await s.waitEnd(), 'end', s.describe());
    assert.deepEqual(s.seqs(), [1, 2]);
  });
});

describe('shutdown', { timeout: 30_000 }, () => {
  test('SIGTERM with open streams: the streams are closed and relay exits 0', async () => {
    const own = await startServer();
    let stopped = false;
    try {
      const run = (await api(own.url, 'POST', '/v1/runs', { token: alice, body: { kind: 'external', input: {} } })).json;
      await api(own.url, 'POST', `/v1/runs/${run.id}/events`, { token: service, body: { type: 'delta', data: 1 } });
      const subs = Array.from({ length: 3 }, () => openSse(`${own.url}/v1/runs/${run.id}/events`, { token: alice }));
      await Promise.all(subs.map((c) => c.waitForEvents(1)));
      // An idle keep-alive connection too.
      assert.equal((await api(own.url, 'GET', '/health')).status, 200);
      const info = await own.stop({ deadlineMs: 10_000 });  // throws unless exit code 0
      stopped = true;
      assert.deepEqual(info, { code: 0, signal: null });
      for (const c of subs) {
        const reason = await c.waitEnd({ timeoutMs: 5_000 });
        assert.ok(reason === 'end' || reason === 'error', reason);
        assert.deepEqual(c.seqs(), [1], 'what was sent before the stop arrived in full');
      }
    } finally {
      if (!stopped) await own.stop().catch(() => {});
    }
  });
});
