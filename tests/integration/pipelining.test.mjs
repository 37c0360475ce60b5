// HTTP/1.1 pipelining: requests sent back to back on one connection are answered in order, the
// answers to already-buffered requests share writes, and nothing waits on bytes the client has
// not sent yet (a partial request, a stream's head, a malformed request behind valid ones).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';

import { api, metricSum, startServer, tokenFor } from './lib/server.mjs';

const service = tokenFor('svc-pipe', 'service');

/// A raw connection that splits what it receives into HTTP/1.1 answers (Content-Length framed;
/// an answer without one is the rest of the connection, e.g. an SSE stream).
function rawConnection(port) {
  const sock = net.connect({ host: '127.0.0.1', port });
  const state = { buf: Buffer.alloc(0), answers: [], tail: null, closed: false, waiters: new Set() };
  const check = () => {
    for (;;) {
      const raw = state.buf.toString('latin1');
      const headEnd = raw.indexOf('\r\n\r\n');
      if (headEnd < 0 || state.tail !== null) break;
      const head = raw.slice(0, headEnd);
      const m = /\r\ncontent-length:\s*(\d+)/i.exec(head);
      if (!m) {
        state.tail = { head, rest: () => state.buf.subarray(headEnd + 4).toString('utf8') };
        break;
      }
      const end = headEnd + 4 + Number(m[1]);
      if (state.buf.length < end) break;
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]);
      const body = state.buf.subarray(headEnd + 4, end).toString('utf8');
      state.answers.push({ status, head, body, json: body ? JSON.parse(body) : undefined });
      state.buf = state.buf.subarray(end);
    }
    for (const w of [...state.waiters]) if (w.pred()) { state.waiters.delete(w); w.resolve(); }
  };
  sock.on('data', (d) => { state.buf = Buffer.concat([state.buf, d]); check(); });
  sock.on('close', () => { state.closed = true; check(); });
  sock.on('error', () => {});
  const ready = new Promise((resolve, reject) => { sock.once('connect', resolve); sock.once('error', reject); });
  return {
    state,
    ready,
    write: (s) => sock.write(s),
    /// Resolves once pred() holds; rejects after timeoutMs with what was received.
    until(pred, what, timeoutMs = 5_000) {
      if (pred()) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const w = { pred, resolve };
        state.waiters.add(w);
        setTimeout(() => {
          if (!state.waiters.delete(w)) return;
          reject(new Error(`${what}: not within ${timeoutMs} ms; answers ${state.answers.length}, ` +
            `pending ${JSON.stringify(state.buf.toString('latin1').slice(0, 300))}`));
        }, timeoutMs);
      });
    },
    destroy: () => sock.destroy(),
  };
}

const append = (id, data) => {
  const body = JSON.stringify({ type: 'delta', data });
  return `POST /v1/runs/${id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${service}\r\n` +
    `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
};

describe('HTTP pipelining', { timeout: 60_000 }, () => {
  let srv;
  before(async () => { srv = await startServer(); });
  after(async () => { if (srv) await srv.stop(); });

  async function newRun() {
    const r = await api(srv.url, 'POST', '/v1/runs', { token: service, body: { kind: 'external', owner: 'alice' } });
    assert.equal(r.status, 201, r.text);
    return r.json.id;
  }

  test('pipelined appends are answered in order, with far fewer writes than answers', async () => {
    const id = await newRun();
    const c = rawConnection(srv.port);
    try {
      await c.ready;
      const N = 24;
      const writesBefore = (await metricSum(srv.url, /^relay_writes_total$/)).sum;
      let batch = '';
      for (let i = 0; i < N; i++) batch += append(id, i);
      batch += `GET /v1/runs/${id} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${service}\r\n\r\n`;
      c.write(batch);
      await c.until(() => c.state.answers.length === N + 1, 'every answer');
      assert.deepEqual(c.state.answers.slice(0, N).map((a) => [a.status, a.json?.last_seq]),
        Array.from({ length: N }, (_, i) => [202, i + 1]), 'the appends, in order');
      assert.equal(c.state.answers[N].status, 200);
      assert.equal(c.state.answers[N].json.last_seq, N);
      // The metrics answer that took `writesBefore` is one write; the rest are the pipeline's.
      const writes = (await metricSum(srv.url, /^relay_writes_total$/)).sum - writesBefore - 1;
      assert.ok(writes >= 1 && writes <= N / 3, `${writes} writes for ${N + 1} answers`);
      // The connection is still good for the next request.
      c.write(append(id, 'after'));
      await c.until(() => c.state.answers.length === N + 2, 'the answer after the pipeline');
      assert.equal(c.state.answers[N + 1].json.last_seq, N + 1);
    } finally {
      c.destroy();
    }
  });

  test('answers are not held back for a pipelined request that is not all there yet', async () => {
    const id = await newRun();
    const c = rawConnection(srv.port);
    try {
      await c.ready;
      const second = append(id, 'second');
      const cut = second.indexOf('\r\n\r\n') - 5;  // in the middle of the second request's head
      c.write(append(id, 'first') + second.slice(0, cut));
      // The client may wait for the first answer before it sends the rest: it must come.
      await c.until(() => c.state.answers.length === 1, 'the first answer before the second request is complete');
      assert.deepEqual([c.state.answers[0].status, c.state.answers[0].json.last_seq], [202, 1]);
      c.write(second.slice(cut));
      await c.until(() => c.state.answers.length === 2, 'the second answer');
      assert.deepEqual([c.state.answers[1].status, c.state.answers[1].json.last_seq], [202, 2]);
    } finally {
      c.destroy();
    }
  });

  test('the answers before a stream go out before the stream head, and the stream carries the events', async () => {
    const id = await newRun();
    const c = rawConnection(srv.port);
    try {
      await c.ready;
      c.write(append(id, 'a') + append(id, 'b') +
        `GET /v1/runs/${id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${service}\r\n\r\n`);
      await c.until(() => c.state.tail && /id: 2\n/.test(c.state.tail.rest()), 'the stream with both events');
      assert.deepEqual(c.state.answers.map((a) => [a.status, a.json.last_seq]), [[202, 1], [202, 2]]);
      assert.match(c.state.tail.head, /^HTTP\/1\.1 200 /);
      assert.match(c.state.tail.head, /content-type: text\/event-stream/i);
    } finally {
      c.destroy();
    }
  });

  test('a malformed request behind valid ones: their answers, then 400, then the close', async () => {
    const id = await newRun();
    const c = rawConnection(srv.port);
    try {
      await c.ready;
      c.write(append(id, 'x') + append(id, 'y') + 'BROKEN\r\n\r\n');
      await c.until(() => c.state.answers.length === 3 && c.state.closed, 'two answers, a 400 and the close');
      assert.deepEqual(c.state.answers.map((a) => a.status), [202, 202, 400]);
      assert.deepEqual(c.state.answers.slice(0, 2).map((a) => a.json.last_seq), [1, 2]);
      assert.equal(c.state.answers[2].json.error.code, 'bad_request');
    } finally {
      c.destroy();
    }
  });
});
