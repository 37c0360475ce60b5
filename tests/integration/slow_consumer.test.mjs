// A reader that stops reading is closed as a slow consumer once its outbound queue passes
// sse.outbound_limit_bytes, while 50 fast readers of the same run receive every event exactly once.
//
// Kernel socket buffers on loopback absorb a few MB for the paused reader (tcp_wmem max 4 MiB plus
// the receiver's initial window), so the run carries ~8.5 MB per subscriber: 4000 events of ~2 KB.
// The producer stays at most WINDOW events ahead of the slowest fast reader, so a fast reader never
// has more than ~WINDOW × 2.1 KB (< the 64 KiB limit) outstanding — it cannot be dropped for being
// slow by the Node test process itself.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';

import { api, metricSum, startServer, tokenFor, waitUntil } from './lib/server.mjs';
import { openSse, SseParser } from './lib/sse.mjs';

const LIMIT = 64 * 1024;
const FAST = 50;
const EVENTS = 4000;
const BATCH = 10;
const WINDOW = 20;

const alice = tokenFor('alice', 'user');
const service = tokenFor('producer', 'service');
let srv;

before(async () => { srv = await startServer({ 'sse.outbound_limit_bytes': LIMIT }); });
after(async () => { if (srv) await srv.stop(); });

/// A raw TCP SSE reader that reads the response head and first event, then stops reading.
function slowReader(port, path, token) {
  const sock = net.connect({ host: '127.0.0.1', port });
  const state = { sock, raw: '', events: [], closedBy: null, error: null, paused: false };
  const parser = new SseParser((item) => { if (item.kind === 'event') state.events.push(item); return true; });
  let headDone = false;
  let resolveReady;
  state.ready = new Promise((r) => { resolveReady = r; });
  state.closed = new Promise((resolve) => {
    sock.on('end', () => { state.closedBy = state.closedBy || 'end'; resolve(); });
    sock.on('close', () => { state.closedBy = state.closedBy || 'close'; resolve(); });
    sock.on('error', (e) => { state.error = e; state.closedBy = state.closedBy || `error ${e.code}`; resolve(); });
  });
  sock.setEncoding('latin1');  // bytes 1:1, decoded per frame below
  sock.on('data', (d) => {
    if (!headDone) {
      state.raw += d;
      const i = state.raw.indexOf('\r\n\r\n');
      if (i < 0) return;
      headDone = true;
      state.status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(state.raw)?.[1]);
      const rest = state.raw.slice(i + 4);
      state.chunked = /\r\ntransfer-encoding:\s*chunked/i.test(state.raw.slice(0, i));
      state.body = rest;
    } else {
      state.body += d;
    }
    if (!state.paused && state.body.includes('\nid: 1\n')) {
      state.paused = true;
      sock.pause();  // from here on the reader reads nothing
      resolveReady();
    }
  });
  sock.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n` +
             `Authorization: Bearer ${token}\r\n\r\n`);
  state.finish = () => {
    // Parse what arrived: undo chunked framing if any, then SSE. Only complete frames count.
    let body = state.body;
    if (state.chunked) {
      let out = '';
      let pos = 0;
      for (;;) {
        const nl = body.indexOf('\r\n', pos);
        if (nl < 0) break;
        const size = parseInt(body.slice(pos, nl), 16);
        if (!Number.isFinite(size) || size === 0) break;
        out += body.slice(nl + 2, nl + 2 + size);
        pos = nl + 2 + size + 2;
        if (pos > body.length) break;
      }
      body = out;
    }
    parser.push(Buffer.from(body, 'latin1').toString('utf8'));
    return state.events;
  };
  return state;
}

describe('slow consumer', { timeout: 180_000 }, () => {
  test(`a paused reader is dropped past ${LIMIT} B while ${FAST} fast readers get all ${EVENTS} events`, async () => {
    const created = await api(srv.url, 'POST', '/v1/runs', { token: alice, body: { kind: 'external', input: {} } });
    assert.equal(created.status, 201, created.text);
    const id = created.json.id;
    const path = `/v1/runs/${id}/events`;
    const dropsBefore = (await metricSum(srv.url, /slow_consumer/)).sum;

    const slow = slowReader(srv.port, path, alice);
    const fast = Array.from({ length: FAST }, (_, i) =>
      openSse(`${srv.url}${path}`, { token: alice, keepData: i === 0 }));
    await Promise.all(fast.map((f) => f.response));
    for (const f of fast) assert.equal(f.status, 200, f.describe());

    const pad = 'x'.repeat(2000);
    const post = async (from, n) => {
      const body = Array.from({ length: n }, (_, j) => ({ type: 'delta', data: { i: from + j, pad } }));
      const r = await api(srv.url, 'POST', `/v1/runs/${id}/events`, { token: service, body });
      assert.equal(r.status, 202, r.text);
      assert.equal(r.json.last_seq, from + n - 1);
    };
    const minReceived = () => fast.reduce((m, f) => Math.min(m, f.events.length), Infinity);
    const checkFastAlive = () => {
      const dead = fast.find((f) => f.endReason);
      if (dead) throw new Error(`a fast reader's stream ended early: ${dead.describe()}`);
    };

    // Event 1 proves every subscription is live (and lets the slow reader pause after it).
    await post(1, 1);
    await waitUntil(() => { checkFastAlive(); return minReceived() >= 1; }, { what: 'event 1 at every fast reader' });
    await Promise.race([slow.ready, slow.closed]);
    assert.equal(slow.status, 200, `slow reader: ${slow.raw.slice(0, 300)}`);
    assert.equal(slow.paused, true, `slow reader got event 1 before pausing (closed: ${slow.closedBy})`);

    const t0 = Date.now();
    for (let next = 2; next <= EVENTS; next += BATCH) {
      const n = Math.min(BATCH, EVENTS - next + 1);
      // Stay within WINDOW events of the slowest fast reader.
      await waitUntil(() => { checkFastAlive(); return minReceived() >= next - 1 - WINDOW + n; },
        { timeoutMs: 20_000, intervalMs: 1, what: `fast readers to reach ${next - 1 - WINDOW + n}` });
      await post(next, n);
    }
    const produceMs = Date.now() - t0;

    // The slow reader must have been dropped by now: the counter moved.
    const drops = await waitUntil(async () => {
      const m = await metricSum(srv.url, /slow_consumer/);
      return m.found && m.sum > dropsBefore ? m : null;
    }, { timeoutMs: 10_000, intervalMs: 100, what: 'the slow-consumer metric to count the drop' })
      .catch(async (e) => {
        const m = await metricSum(srv.url, /slow_consumer/);
        const names = [...new Set(m.text.split('\n').filter((l) => /^relay_/.test(l)).map((l) => l.split(/[{ ]/)[0]))];
        throw new Error(`${e.message}; found=${m.found} sum=${m.sum}; metrics: ${names.join(', ')}`);
      });
    assert.ok(drops.sum >= dropsBefore + 1);

    const done = await api(srv.url, 'POST', `/v1/runs/${id}/complete`, { token: service });
    assert.equal(done.status, 200, done.text);

    // Every fast reader: 1..EVENTS+1 exactly once, in order, then the server closed the stream.
    await Promise.all(fast.map((f) => f.waitEnd({ timeoutMs: 30_000 })));
    for (const [k, f] of fast.entries()) {
      assert.equal(f.endReason, 'end', `fast reader ${k}: ${f.describe()}`);
      assert.equal(f.events.length, EVENTS + 1, `fast reader ${k}: ${f.describe()}`);
      for (let i = 0; i < f.events.length; i++) {
        if (f.events[i].id !== String(i + 1)) assert.fail(`fast reader ${k}: event #${i} has id ${f.events[i].id}`);
      }
      assert.equal(f.events[EVENTS].event, 'complete');
    }
    for (let i = 0; i < EVENTS; i++) {
      if (fast[0].events[i].json.data.i !== i + 1) assert.fail(`data of seq ${i + 1}: ${fast[0].events[i].data.slice(0, 80)}`);
    }

    // The slow reader: read what the kernel still holds; the server has closed the connection, and
    // what arrived is an in-order prefix of the run that stops well before its end.
    slow.sock.resume();
    let timer;
    await Promise.race([slow.closed, new Promise((_, rej) => {
      timer = setTimeout(() => rej(new Error('the slow reader\'s connection is still open after it drained')), 20_000);
    })]);
    clearTimeout(timer);
    const got = slow.finish();
    assert.ok(slow.closedBy === 'end' || slow.closedBy === 'close' || /ECONNRESET/.test(slow.closedBy), slow.closedBy);
    const ids = got.map((e) => Number(e.id));
    assert.ok(ids.length >= 1 && ids.length < EVENTS, `slow reader got ${ids.length} events`);
    for (let i = 0; i < ids.length; i++) if (ids[i] !== i + 1) assert.fail(`slow reader: event #${i} has id ${ids[i]}`);
    assert.ok(!got.some((e) => e.event === 'complete'), 'the slow reader never got the terminal event');
    // Some context in the test output.
    console.log(`# produced ${EVENTS} events in ${produceMs} ms; slow reader got ${ids.length} before being dropped (${slow.closedBy})`);
  });

  test('the server still serves new clients afterwards', async () => {
    const res = await api(srv.url, 'POST', '/v1/runs',
      { token: alice, body: { kind: 'synthetic', input: { count: 10, size: 8, interval_ms: 0 } } });
    assert.equal(res.status, 201, res.text);
    const s = openSse(`${srv.url}/v1/runs/${res.json.id}/events`, { token: alice });
    assert.equal(await s.waitEnd(), 'end', s.describe());
    assert.equal(s.events.length, 11);
  });
});
