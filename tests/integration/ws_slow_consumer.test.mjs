// A WebSocket client that stops reading is closed with 4001 once its outbound queue passes
// ws.outbound_limit_bytes, while the other members of the room keep receiving every message.
//
// Loopback kernel buffers absorb a few MB for the paused client before the server's own queue
// grows, so the flooder sends 12 KB messages until the server counts the drop (bounded). It stays
// at most WINDOW messages ahead of the slowest fast member, so a fast member never has more than
// ~WINDOW × 12 KB (< the 64 KiB limit) outstanding: the test process cannot make it slow.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { api, metricSum, startServer, tokenFor, waitUntil } from './lib/server.mjs';
import { closeAll, connect } from './lib/ws.mjs';

const LIMIT = 64 * 1024;
const TEXT = 12_000;
const WINDOW = 4;
const MAX_MESSAGES = 4000;  // ~48 MB: far more than loopback buffers can hold
const CHECK_EVERY = 16;

let srv;
before(async () => { srv = await startServer({ 'ws.outbound_limit_bytes': LIMIT }); });
after(async () => { if (srv) await srv.stop(); });

const drops = async () => (await metricSum(srv.url, /^relay_slow_consumer_drops_total$/));

describe('WebSocket slow consumer', { timeout: 60_000 }, () => {
  test(`a paused member is closed with 4001 past ${LIMIT} B while the others get every message`, async () => {
    const room = 'ws.flood';
    const topic = `room:${room}`;
    const before0 = await drops();
    assert.ok(before0.found, 'relay_slow_consumer_drops_total is exported');

    const slow = await connect(srv.port, tokenFor('slow'), { name: 'slow' });
    const fast = await Promise.all(['f1', 'f2'].map((n) => connect(srv.port, tokenFor(n), { name: n })));
    const flooder = await connect(srv.port, tokenFor('flooder'), { name: 'flooder' });
    try {
      for (const c of [slow, ...fast]) await c.ok({ op: 'join', room });
      const first = await flooder.ok({ op: 'send', room, text: 'first' });
      await Promise.all([slow, ...fast].map((c) => c.waitForEvents(topic, 1)));
      slow.ws.pause();  // from here on the slow member reads nothing

      const pad = 'x'.repeat(TEXT);
      const acked = [first.seq];
      const minFast = () => Math.min(...fast.map((c) => c.events(topic).length));
      let dropped = null;
      const t0 = Date.now();
      for (let i = 1; i <= MAX_MESSAGES && !dropped; i++) {
        await waitUntil(() => {
          for (const c of fast) if (c.close) throw new Error(`a fast member was closed: ${c.describe()}`);
          return minFast() >= acked.length - WINDOW;
        }, { timeoutMs: 10_000, intervalMs: 1, what: `fast members within ${WINDOW} of ${acked.length}` });
        const a = await flooder.ok({ op: 'send', room, text: `${i}:${pad}` });
        acked.push(a.seq);
        if (i % CHECK_EVERY === 0) {
          const m = await drops();
          if (m.sum > before0.sum) dropped = { at: i, sum: m.sum };
        }
      }
      const floodMs = Date.now() - t0;
      assert.ok(dropped, `no slow-consumer drop after ${MAX_MESSAGES} messages of ${TEXT} B`);
      assert.equal(dropped.sum, before0.sum + 1, 'exactly one connection was dropped');

      // Resume reading at once (the server closes a silent closing peer after a few seconds):
      // what the kernel held, then the close frame with 4001.
      slow.ws.resume();
      const closed = await slow.waitClose({ timeoutMs: 10_000 });
      assert.equal(closed.code, 4001, `${JSON.stringify(closed)}; ${slow.describe()}`);
      const got = slow.seqs(topic);
      assert.ok(got.length >= 1 && got.length < acked.length, `the slow member got ${got.length} of ${acked.length}`);
      assert.deepEqual(got, acked.slice(0, got.length), 'what the slow member got is an in-order prefix');

      // Every fast member: every message exactly once, in order, still connected.
      const last = await flooder.ok({ op: 'send', room, text: 'last' });
      acked.push(last.seq);
      await Promise.all(fast.map((c) => c.waitFor((x) => x.events(topic).some((e) => e.seq === last.seq),
        { timeoutMs: 10_000, what: 'the last message' })));
      for (const c of fast) {
        assert.deepEqual(c.seqs(topic), acked, `${c.name}: every message exactly once`);
        assert.equal(c.close, null);
        // They saw the slow member leave.
        await c.waitForMessage((m) => m.op === 'presence' && m.left?.session_id === slow.sessionId,
          { what: 'the slow member left' });
      }
      assert.equal(fast[0].events(topic)[5].data.text, `5:${pad}`);
      console.log(`flooded ${acked.length} messages in ${floodMs} ms; the slow member got ${got.length} ` +
                  `before it was closed (drop counted after ${dropped.at})`);
      assert.match(srv.output(), /ws slow_consumer .*limit=65536/);
    } finally {
      await closeAll([slow, ...fast, flooder]);
    }
  });

  test('the server still serves new connections afterwards', async () => {
    const ws = await connect(srv.port, tokenFor('late'), { name: 'late' });
    try {
      const res = await api(srv.url, 'POST', '/v1/runs',
        { token: tokenFor('late'), body: { kind: 'synthetic', input: { count: 10, size: 8, interval_ms: 0 } } });
      assert.equal(res.status, 201, res.text);
      const topic = `run:${res.json.id}`;
      await ws.ok({ op: 'subscribe', topic });
      await ws.waitFor((c) => c.events(topic).some((e) => e.type === 'complete'), { what: 'complete' });
      assert.deepEqual(ws.seqs(topic), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    } finally {
      await closeAll([ws]);
    }
  });
});
