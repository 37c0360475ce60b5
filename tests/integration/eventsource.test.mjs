// A real client: the npm `eventsource` package (pinned in package-lock.json) follows a run through
// a TCP proxy. Mid-run the proxy cuts the connection (to the client it looks like the server dropped
// it); EventSource reconnects on its own, after the server's `retry:` delay, sending Last-Event-ID,
// and ends with every event exactly once. The token travels as ?access_token= as a browser's would.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';

import { EventSource } from 'eventsource';

import { api, startServer, tokenFor, waitUntil } from './lib/server.mjs';
import { range } from './lib/sse.mjs';

const alice = tokenFor('alice', 'user');
const service = tokenFor('producer', 'service');
let srv;

before(async () => { srv = await startServer(); });
after(async () => { if (srv) await srv.stop(); });

/// A TCP proxy on 127.0.0.1 that records each connection's request head and can cut them all.
async function startProxy(targetPort) {
  const conns = [];
  const server = net.createServer((client) => {
    const upstream = net.connect({ host: '127.0.0.1', port: targetPort });
    const c = { client, upstream, head: '', bytesDown: 0 };
    conns.push(c);
    client.on('data', (d) => {
      if (!c.head.includes('\r\n\r\n')) c.head += d.toString('latin1');
      upstream.write(d);
    });
    upstream.on('data', (d) => { c.bytesDown += d.length; client.write(d); });
    client.on('end', () => upstream.end());
    upstream.on('end', () => client.end());
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: server.address().port,
    conns,
    /// Cuts every open connection in both directions.
    dropAll() { for (const c of conns) { c.client.destroy(); c.upstream.destroy(); } },
    requests() {
      return conns.filter((c) => c.head).map((c) => {
        const lines = c.head.split('\r\n\r\n')[0].split('\r\n');
        const headers = {};
        for (const l of lines.slice(1)) {
          const i = l.indexOf(':');
          if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
        }
        return { line: lines[0], headers };
      });
    },
    close() {
      for (const c of conns) { c.client.destroy(); c.upstream.destroy(); }
      return new Promise((r) => server.close(r));
    },
  };
}

describe('npm eventsource through a dropping proxy', { timeout: 60_000 }, () => {
  test('reconnects by itself with Last-Event-ID and ends with every event exactly once', async () => {
    const N = 120;       // delta events
    const DROP_AT = 40;  // the proxy cuts the stream once the client has this many
    const created = await api(srv.url, 'POST', '/v1/runs', { token: alice, body: { kind: 'external', input: {} } });
    assert.equal(created.status, 201, created.text);
    const id = created.json.id;
    const proxy = await startProxy(srv.port);

    const seqs = [];
    const types = [];
    const errors = [];
    const gaps = [];
    const bad = [];  // inconsistencies seen inside listeners (asserted afterwards)
    let opens = 0;
    let lastBeforeDrop = null;
    let dropped = false;
    let completeResolve;
    const completed = new Promise((r) => { completeResolve = r; });

    const es = new EventSource(
      `http://127.0.0.1:${proxy.port}/v1/runs/${id}/events?access_token=${encodeURIComponent(alice)}`);
    const onEvent = (ev) => {
      let data;
      try { data = JSON.parse(ev.data); } catch { bad.push(`not JSON: ${ev.data}`); return; }
      if (String(data.seq) !== ev.lastEventId) bad.push(`seq ${data.seq} but lastEventId ${ev.lastEventId}`);
      if (data.type !== ev.type) bad.push(`type ${data.type} in an '${ev.type}' event`);
      seqs.push(data.seq);
      types.push(ev.type);
      if (!dropped && seqs.length >= DROP_AT) {
        // The "server" drops the client mid-run: cut the TCP connection under EventSource.
        dropped = true;
        lastBeforeDrop = data.seq;
        proxy.dropAll();
      }
      if (ev.type === 'complete') {
        es.close();  // otherwise EventSource would reconnect after the server ends the stream
        completeResolve();
      }
    };
    es.addEventListener('delta', onEvent);
    es.addEventListener('complete', onEvent);
    es.addEventListener('gap', (ev) => gaps.push(ev.data));
    es.addEventListener('message', (ev) => errors.push(`unexpected unnamed event: ${ev.data}`));
    es.onopen = () => { opens++; };
    es.onerror = (ev) => { errors.push(`error: ${ev.message ?? ''}`); };

    try {
      await waitUntil(() => opens >= 1, { what: 'EventSource to open' });
      // Produce concurrently: 2 events per POST, so the drop lands while the run is live.
      let produced = 0;
      while (produced < N) {
        const body = [{ type: 'delta', data: produced + 1 }, { type: 'delta', data: produced + 2 }];
        const r = await api(srv.url, 'POST', `/v1/runs/${id}/events`, { token: service, body });
        assert.equal(r.status, 202, r.text);
        produced += 2;
        // Let the client keep up before the drop, so it happens mid-run rather than after the end.
        if (!dropped) await waitUntil(() => dropped || seqs.length >= produced, { what: 'client to follow the run' });
      }
      assert.equal(dropped, true, 'the proxy dropped the connection mid-run');
      // Complete only after EventSource came back (it waits the server's retry: 2000 first).
      await waitUntil(() => opens >= 2, { timeoutMs: 15_000, what: 'EventSource to reconnect' });
      const c = await api(srv.url, 'POST', `/v1/runs/${id}/complete`, { token: service, body: { data: { ok: true } } });
      assert.equal(c.status, 200, c.text);

      let timer;
      await Promise.race([completed, new Promise((_, rej) => {
        timer = setTimeout(() => rej(new Error(`no complete event within 15 s; seqs=${seqs.length} errors=${errors}`)), 15_000);
      })]);
      clearTimeout(timer);
    } finally {
      es.close();
      await proxy.close();
    }

    assert.deepEqual(bad, []);
    assert.deepEqual(seqs, range(1, N + 1), 'every event exactly once, in order');
    assert.deepEqual(types, [...Array(N).fill('delta'), 'complete']);
    assert.deepEqual(gaps, []);
    assert.equal(opens, 2, 'one open, one reconnect');
    assert.ok(errors.length >= 1 && errors.every((e) => e.startsWith('error')), `errors: ${JSON.stringify(errors)}`);

    const reqs = proxy.requests();
    assert.equal(reqs.length, 2, `two requests through the proxy: ${JSON.stringify(reqs)}`);
    assert.match(reqs[0].line, new RegExp(`^GET /v1/runs/${id}/events\\?access_token=`));
    assert.equal(reqs[0].headers['last-event-id'], undefined, 'the first request has no Last-Event-ID');
    assert.equal(reqs[1].headers['last-event-id'], String(lastBeforeDrop),
      `the reconnect carries Last-Event-ID: ${lastBeforeDrop}`);
    assert.ok(lastBeforeDrop >= DROP_AT && lastBeforeDrop < N, `dropped mid-run at ${lastBeforeDrop}`);
    assert.match(reqs[1].headers.accept || '', /text\/event-stream/);
  });
});
