// Errors as the contract spells them: 401/403/404/409/413/400 with the body
// {"error":{"code","message"}}, hostile raw requests, and a normal client still served afterwards.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';

import { api, b64url, errorShape, mintToken, rawRequest, SECRET, startServer, tokenFor } from './lib/server.mjs';
import { openSse, range } from './lib/sse.mjs';

const BODY_LIMIT = 16 * 1024;  // limits.body_bytes
const DATA_LIMIT = 1024;       // runs.max_data_bytes

let srv;
const alice = tokenFor('alice', 'user');
const bob = tokenFor('bob', 'user');
const admin = tokenFor('root', 'admin');
const service = tokenFor('producer', 'service');
let aliceRun;      // running, owned by alice
let doneRun;       // completed, owned by alice, 2 deltas + complete

before(async () => {
  srv = await startServer({
    'limits.body_bytes': BODY_LIMIT,
    'runs.max_data_bytes': DATA_LIMIT,
    'limits.header_timeout_s': 3,  // a stalled request is dropped quickly
  });
  aliceRun = (await api(srv.url, 'POST', '/v1/runs', { token: alice, body: { kind: 'external', input: {} } })).json;
  doneRun = (await api(srv.url, 'POST', '/v1/runs', { token: alice, body: { kind: 'external', input: {} } })).json;
  assert.ok(aliceRun && aliceRun.id && doneRun && doneRun.id, 'setup runs created');
  const a = await api(srv.url, 'POST', `/v1/runs/${doneRun.id}/events`,
    { token: service, body: [{ type: 'delta', data: 1 }, { type: 'delta', data: 2 }] });
  assert.equal(a.status, 202, a.text);
  const c = await api(srv.url, 'POST', `/v1/runs/${doneRun.id}/complete`, { token: service, body: { data: 'fin' } });
  assert.equal(c.status, 200, c.text);
});
after(async () => { if (srv) await srv.stop(); });

/// A token with exactly this header and payload, correctly signed with SECRET.
function signed(header, payload) {
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}`;
  return `${input}.${createHmac('sha256', SECRET).update(input).digest('base64url')}`;
}

const STATUS = { bad_request: 400, unauthorized: 401, forbidden: 403, not_found: 404, conflict: 409, too_large: 413 };

function expectError(res, code, what = '') {
  const ctx = `${what} → ${res.status} ${res.text}`;
  assert.equal(res.status, STATUS[code], ctx);
  const bad = errorShape(res);
  assert.equal(bad, null, `${ctx}: ${bad}`);
  assert.equal(res.json.error.code, code, ctx);
  assert.match(res.headers.get ? res.headers.get('content-type') || '' : res.headers['content-type'] || '',
    /^application\/json/, `${what}: content-type`);
}

/// The non-2xx answer of an SSE endpoint: a JSON error, not a stream.
async function sseError(url, opts) {
  const s = openSse(url, opts);
  const r = await s.response;
  await s.waitEnd({ timeoutMs: 5_000 }).catch(() => {});
  s.destroy();
  let json;
  try { json = JSON.parse(s.body); } catch { json = undefined; }
  return { status: r.status, headers: r.headers || {}, text: s.body, json };
}

describe('401 unauthorized', { timeout: 60_000 }, () => {
  const now = () => Math.floor(Date.now() / 1000);
  const forged = () => {
    // A valid alice token with the payload swapped for one claiming admin, old signature kept.
    const [h, , sig] = alice.split('.');
    return `${h}.${b64url(JSON.stringify({ sub: 'alice', role: 'admin', exp: now() + 3600 }))}.${sig}`;
  };
  const cases = [
    ['missing token', undefined],
    ['empty bearer', ''],
    ['not a JWT', 'not-a-jwt'],
    ['two parts', 'abc.def'],
    ['bad base64 in header', '!!!.eyJzdWIiOiJ4In0.c2ln'],
    ['JSON garbage parts', `${b64url('{not json')}.${b64url('[1,2')}.${b64url('sig')}`],
    ['expired', () => mintToken({ sub: 'alice', role: 'user', claims: { exp: now() - 120 } })],
    ['not yet valid (nbf)', () => mintToken({ sub: 'alice', role: 'user', claims: { nbf: now() + 3600 } })],
    ['wrong signature (other secret)', () => mintToken({ sub: 'alice', role: 'user', secret: `${SECRET}-other` })],
    ['forged payload', forged],
    ['alg none', () => mintToken({ sub: 'alice', role: 'admin', header: { alg: 'none' } })],
    ['alg none with a signature', () => `${mintToken({ sub: 'alice', header: { alg: 'none' } })}c2ln`],
    ['alg HS512 header', () => mintToken({ sub: 'alice', header: { alg: 'HS512' } })],
    ['missing sub', () => mintToken({ role: 'user' })],
    ['missing exp', () => signed({ alg: 'HS256', typ: 'JWT' }, { sub: 'alice' })],
    ['sub not a string', () => signed({ alg: 'HS256', typ: 'JWT' }, { sub: 42, exp: now() + 3600 })],
    ['exp not a number', () => signed({ alg: 'HS256', typ: 'JWT' }, { sub: 'alice', exp: 'tomorrow' })],
    ['payload not an object', () => signed({ alg: 'HS256', typ: 'JWT' }, [1, 2])],
  ];

  for (const [name, tok] of cases) {
    test(name, async () => {
      const token = typeof tok === 'function' ? tok() : tok;
      const headers = token === undefined ? {} : { authorization: `Bearer ${token}` };
      expectError(await api(srv.url, 'POST', '/v1/runs', { headers, body: { kind: 'external', input: {} } }),
        'unauthorized', `${name}: POST /v1/runs`);
      expectError(await api(srv.url, 'GET', `/v1/runs/${aliceRun.id}`, { headers }), 'unauthorized', `${name}: GET run`);
      expectError(await api(srv.url, 'GET', '/v1/runs?status=active', { headers }), 'unauthorized', `${name}: list`);
      expectError(await api(srv.url, 'POST', `/v1/runs/${aliceRun.id}/events`,
        { headers, body: { type: 'delta', data: 1 } }), 'unauthorized', `${name}: append`);
      expectError(await sseError(`${srv.url}/v1/runs/${aliceRun.id}/events`, { headers }), 'unauthorized', `${name}: SSE`);
      if (token !== undefined) {
        expectError(await sseError(`${srv.url}/v1/runs/${aliceRun.id}/events?access_token=${encodeURIComponent(token)}`),
          'unauthorized', `${name}: SSE ?access_token=`);
      }
    });
  }

  test('another scheme (Basic) is no bearer token', async () => {
    const headers = { authorization: `Basic ${Buffer.from('alice:pw').toString('base64')}` };
    expectError(await api(srv.url, 'GET', `/v1/runs/${aliceRun.id}`, { headers }), 'unauthorized', 'Basic');
  });

  test('nothing was appended by the rejected requests', async () => {
    const got = await api(srv.url, 'GET', `/v1/runs/${aliceRun.id}`, { token: alice });
    assert.equal(got.status, 200, got.text);
    assert.equal(got.json.last_seq, 0);
    assert.equal(got.json.status, 'running');
  });
});


describe('403 / 404: roles and ownership', { timeout: 60_000 }, () => {
  test('a user may not create a run for someone else (owner)', async () => {
    expectError(await api(srv.url, 'POST', '/v1/runs',
      { token: alice, body: { kind: 'external', input: {}, owner: 'bob' } }), 'forbidden', 'user sets owner');
  });

  test('another user\'s run is not found (GET, SSE, list)', async () => {
    expectError(await api(srv.url, 'GET', `/v1/runs/${aliceRun.id}`, { token: bob }), 'not_found', 'GET as bob');
    expectError(await sseError(`${srv.url}/v1/runs/${aliceRun.id}/events`, { token: bob }), 'not_found', 'SSE as bob');
    expectError(await sseError(`${srv.url}/v1/runs/${aliceRun.id}/events?access_token=${bob}`), 'not_found', 'SSE as bob (query)');
    const list = await api(srv.url, 'GET', '/v1/runs', { token: bob });
    assert.equal(list.status, 200, list.text);
    const runs = Array.isArray(list.json) ? list.json : list.json.runs;
    assert.ok(!runs.some((r) => r.id === aliceRun.id), 'bob does not list alice\'s runs');
  });

  test('another user may not append to, complete, fail or cancel the run (403 or 404)', async () => {
    const tries = [
      ['events', { type: 'delta', data: 'intruder' }],
      ['complete', { data: 'x' }],
      ['fail', { error: { code: 'x' } }],
      ['cancel', undefined],
    ];
    for (const [op, body] of tries) {
      const res = await api(srv.url, 'POST', `/v1/runs/${aliceRun.id}/${op}`, { token: bob, body });
      assert.ok(res.status === 403 || res.status === 404, `${op} as bob → ${res.status} ${res.text}`);
      expectError(res, res.status === 403 ? 'forbidden' : 'not_found', `${op} as bob`);
    }
    const got = await api(srv.url, 'GET', `/v1/runs/${aliceRun.id}`, { token: alice });
    assert.equal(got.json.status, 'running');
    assert.equal(got.json.last_seq, 0);
  });

  test('an admin may read anyone\'s run', async () => {
    const got = await api(srv.url, 'GET', `/v1/runs/${aliceRun.id}`, { token: admin });
    assert.equal(got.status, 200, got.text);
    assert.equal(got.json.owner, 'alice');
  });

  test('unknown runs and unknown paths: 404', async () => {
    const ghost = 'AAAAAAAAAAAAAAAAAAAAAA';
    expectError(await api(srv.url, 'GET', `/v1/runs/${ghost}`, { token: alice }), 'not_found', 'GET ghost');
    expectError(await api(srv.url, 'GET', `/v1/runs/${ghost}`, { token: admin }), 'not_found', 'GET ghost (admin)');
    expectError(await api(srv.url, 'POST', `/v1/runs/${ghost}/events`, { token: service, body: { type: 'delta', data: 1 } }),
      'not_found', 'append ghost');
    expectError(await api(srv.url, 'POST', `/v1/runs/${ghost}/complete`, { token: service }), 'not_found', 'complete ghost');
    expectError(await api(srv.url, 'POST', `/v1/runs/${ghost}/cancel`, { token: service }), 'not_found', 'cancel ghost');
    expectError(await sseError(`${srv.url}/v1/runs/${ghost}/events`, { token: alice }), 'not_found', 'SSE ghost');
    for (const p of ['/v1/nope', '/', '/v2/runs', `/v1/runs/${aliceRun.id}/nope`, `/v1/runs/${aliceRun.id}/events/x`,
      '/v1/runs/bad%20id', '/v1/runs/..%2F..%2Fetc%2Fpasswd', '/healthz']) {
      expectError(await api(srv.url, 'GET', p, { token: alice }), 'not_found', `GET ${p}`);
    }
  });

  test('a known path with another method: 405 with the error body', async () => {
    const res = await api(srv.url, 'DELETE', `/v1/runs/${aliceRun.id}`, { token: alice });
    assert.equal(res.status, 405, res.text);
    assert.equal(errorShape(res), null, errorShape(res));
    assert.ok(res.headers.get('allow'), 'an Allow header');
  });
});

describe('409 conflict: terminal runs', { timeout: 60_000 }, () => {
  test('append, complete, fail and cancel on a completed run', async () => {
    expectError(await api(srv.url, 'POST', `/v1/runs/${doneRun.id}/events`,
      { token: service, body: { type: 'delta', data: 3 } }), 'conflict', 'append to completed');
    expectError(await api(srv.url, 'POST', `/v1/runs/${doneRun.id}/events`,
      { token: service, body: [{ type: 'delta', data: 3 }, { type: 'delta', data: 4 }] }), 'conflict', 'append an array to completed');
    expectError(await api(srv.url, 'POST', `/v1/runs/${doneRun.id}/complete`, { token: service }), 'conflict', 'complete twice');
    expectError(await api(srv.url, 'POST', `/v1/runs/${doneRun.id}/fail`,
      { token: service, body: { error: { code: 'late' } } }), 'conflict', 'fail after complete');
    expectError(await api(srv.url, 'POST', `/v1/runs/${doneRun.id}/cancel`, { token: alice }), 'conflict', 'cancel after complete');

    // The topic is intact: the same three events, then the stream closes.
    const s = openSse(`${srv.url}/v1/runs/${doneRun.id}/events`, { token: alice });
    assert.equal(await s.waitEnd(), 'end', s.describe());
    assert.deepEqual(s.events.map((e) => [Number(e.id), e.event, e.json.data]), [[1, 'delta', 1], [2, 'delta', 2], [3, 'complete', 'fin']]);
    const got = await api(srv.url, 'GET', `/v1/runs/${doneRun.id}`, { token: alice });
    assert.equal(got.json.status, 'completed');
    assert.equal(got.json.last_seq, 3);
  });

  test('append to a cancelled run', async () => {
    const r = (await api(srv.url, 'POST', '/v1/runs', { token: alice, body: { kind: 'external', input: {} } })).json;
    assert.equal((await api(srv.url, 'POST', `/v1/runs/${r.id}/cancel`, { token: alice })).status, 200);
    expectError(await api(srv.url, 'POST', `/v1/runs/${r.id}/events`, { token: service, body: { type: 'delta', data: 1 } }),
      'conflict', 'append to cancelled');
  });
});

describe('413 too_large', { timeout: 60_000 }, () => {
  test('a body over limits.body_bytes (Content-Length)', async () => {
    const big = JSON.stringify([{ type: 'delta', data: 'x'.repeat(BODY_LIMIT) }]);
    expectError(await api(srv.url, 'POST', `/v1/runs/${aliceRun.id}/events`, { token: service, body: big }),
      'too_large', 'append body over limit');
    expectError(await api(srv.url, 'POST', '/v1/runs',
      { token: alice, body: { kind: 'external', input: { pad: 'y'.repeat(BODY_LIMIT + 10) } } }), 'too_large', 'create body over limit');
  });

  test('a chunked body over limits.body_bytes', async () => {
    const chunk = new TextEncoder().encode(' '.repeat(4096));
    let sent = 0;
    const stream = new ReadableStream({
      pull(controller) {
        if (sent >= BODY_LIMIT * 4) { controller.enqueue(new TextEncoder().encode('{}')); controller.close(); return; }
        sent += chunk.length;
        controller.enqueue(chunk);
      },
    });
    let res;
    try {
      const r = await fetch(`${srv.url}/v1/runs/${aliceRun.id}/events`, {
        method: 'POST', body: stream, duplex: 'half',
        headers: { authorization: `Bearer ${service}`, 'content-type': 'application/json' },
        signal: AbortSignal.timeout(10_000),
      });
      const text = await r.text();
      res = { status: r.status, headers: r.headers, text, json: JSON.parse(text) };
    } catch (e) {
      // The server may answer 413 and close before the whole body was sent; fetch then reports an error
      // on the upload. Then read the answer over a raw socket instead.
      res = null;
    }
    if (res === null) {
      const head = `POST /v1/runs/${aliceRun.id}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${service}\r\n` +
        'Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n';
      const body = `1000\r\n${' '.repeat(4096)}\r\n`.repeat(8);
      const r = await rawRequest(srv.port, head + body);
      res = { status: r.status, headers: r.headers, text: r.body, json: JSON.parse(r.body || 'null') };
    }
    expectError(res, 'too_large', 'chunked body over limit');
  });

  test('event data over runs.max_data_bytes, alone or inside an array; nothing appended', async () => {
    const big = 'z'.repeat(DATA_LIMIT + 100);  // body well under the body limit
    expectError(await api(srv.url, 'POST', `/v1/runs/${aliceRun.id}/events`,
      { token: service, body: { type: 'delta', data: big } }), 'too_large', 'data over max');
    expectError(await api(srv.url, 'POST', `/v1/runs/${aliceRun.id}/events`,
      { token: service, body: [{ type: 'delta', data: 'ok' }, { type: 'delta', data: { big } }] }), 'too_large', 'data over max in an array');
    const got = await api(srv.url, 'GET', `/v1/runs/${aliceRun.id}`, { token: alice });
    assert.equal(got.json.last_seq, 0, 'a rejected batch appends nothing');
    // Data just under the limit is fine.
    const ok = await api(srv.url, 'POST', `/v1/runs/${aliceRun.id}/events`,
      { token: service, body: { type: 'delta', data: 'a'.repeat(DATA_LIMIT - 10) } });
    assert.equal(ok.status, 202, ok.text);
    assert.deepEqual(ok.json, { last_seq: 1 });
  });
});

describe('400 bad_request', { timeout: 60_000 }, () => {
  let run;
  before(async () => {
    run = (await api(srv.url, 'POST', '/v1/runs', { token: alice, body: { kind: 'external', input: {} } })).json;
  });

  test('bad JSON and bad shapes on create', async () => {
    const bodies = [
      '{"kind":', 'not json', '', '[]', '42', '"external"', 'null',
      JSON.stringify({ kind: 'bogus', input: {} }),
      JSON.stringify({ kind: 7, input: {} }),
      JSON.stringify({ kind: 'synthetic', input: { count: -1, size: 8, interval_ms: 1 } }),
      JSON.stringify({ kind: 'synthetic', input: { count: 'ten', size: 8, interval_ms: 1 } }),
      JSON.stringify({ kind: 'synthetic', input: { count: 1e12, size: 8, interval_ms: 1 } }),
      JSON.stringify({ kind: 'external', input: {}, idempotency_key: 5 }),
      JSON.stringify({ kind: 'external', input: {}, inactivity_s: -5 }),
      JSON.stringify({ kind: 'external', input: {}, ttl_s: 'long' }),
      '{"kind":"external","input":{}}garbage',
    ];
    for (const b of bodies) {
      expectError(await api(srv.url, 'POST', '/v1/runs', { token: alice, body: b }), 'bad_request', `create ${b.slice(0, 60)}`);
    }
  });

  test('bad JSON, bad types and reserved types on append; nothing appended', async () => {
    const bodies = [
      '{"type":"delta","data":', '', '[]', '"delta"', '{"data":1}', '{"type":5,"data":1}',
      JSON.stringify({ type: 'Bad Type', data: 1 }), JSON.stringify({ type: '', data: 1 }),
      JSON.stringify({ type: 'x'.repeat(65), data: 1 }), JSON.stringify({ type: 'dé', data: 1 }),
      ...['status', 'complete', 'error', 'cancelled', 'gap', 'message'].map((t) => JSON.stringify({ type: t, data: 1 })),
      JSON.stringify([{ type: 'delta', data: 1 }, { type: 'NOPE', data: 2 }]),
      JSON.stringify([{ type: 'delta', data: 1 }, 7]),
    ];
    for (const b of bodies) {
      expectError(await api(srv.url, 'POST', `/v1/runs/${run.id}/events`, { token: service, body: b }),
        'bad_request', `append ${b.slice(0, 60)}`);
    }
    const got = await api(srv.url, 'GET', `/v1/runs/${run.id}`, { token: alice });
    assert.equal(got.json.last_seq, 0);
    assert.equal(got.json.status, 'running');
    const okType = await api(srv.url, 'POST', `/v1/runs/${run.id}/events`, { token: service, body: { type: 'a'.repeat(64), data: 1 } });
    assert.equal(okType.status, 202, `a 64-char type is valid: ${okType.text}`);
  });

  test('bad resume positions', async () => {
    for (const v of ['abc', '-1', '1.5', '0x10', '99999999999999999999999', '1 2']) {
      expectError(await sseError(`${srv.url}/v1/runs/${run.id}/events`, { token: alice, headers: { 'last-event-id': v } }),
        'bad_request', `Last-Event-ID: ${v}`);
      expectError(await sseError(`${srv.url}/v1/runs/${run.id}/events?after=${encodeURIComponent(v)}`, { token: alice }),
        'bad_request', `after=${v}`);
    }
  });
});

describe('hostile raw requests, then a normal client', { timeout: 60_000 }, () => {
  test('garbage and oversized requests are answered or closed, never crash the server', async () => {
    const attempts = [
      ['garbage line', 'GARBAGE\r\n\r\n'],
      ['binary junk', Buffer.from(Array.from({ length: 512 }, (_, i) => (i * 37) % 256))],
      ['bad version', 'GET /health HTTP/9.9\r\nHost: x\r\n\r\n'],
      ['huge header', `GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(64 * 1024)}\r\n\r\n`],
      ['bad chunk size', `POST /v1/runs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${alice}\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\n{}\r\n0\r\n\r\n`],
      ['NUL in target', 'GET /v1/runs/\0abc HTTP/1.1\r\nHost: x\r\n\r\n'],
      ['bad percent escape in token', `GET /v1/runs/${aliceRun.id}/events?access_token=%ZZ HTTP/1.1\r\nHost: x\r\n\r\n`],
    ];
    for (const [name, bytes] of attempts) {
      let r;
      try { r = await rawRequest(srv.port, bytes, { timeoutMs: 8_000 }); } catch (e) { r = { error: e.message }; }
      if (r.status !== null && r.status !== undefined) {
        assert.ok(r.status >= 400 && r.status < 500, `${name}: ${r.status} ${r.raw && r.raw.slice(0, 200)}`);
      } else {
        assert.ok(r.closed || r.error, `${name}: neither an answer nor a close: ${JSON.stringify(r).slice(0, 300)}`);
      }
    }
    // A declared body over the limit is refused from its Content-Length, without waiting for it.
    const decl = await rawRequest(srv.port,
      `POST /v1/runs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${alice}\r\nContent-Type: application/json\r\n` +
      'Content-Length: 99999999999\r\n\r\n{"kind":');
    assert.equal(decl.status, 413, decl.raw.slice(0, 300));
    assert.equal(JSON.parse(decl.body).error.code, 'too_large');
    // A request cut short, then closed.
    await rawRequest(srv.port, 'POST /v1/runs HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{"ki', { timeoutMs: 300 }).catch(() => {});
    // A target over 8 KiB.
    const long = await api(srv.url, 'GET', `/v1/runs/${'a'.repeat(10_000)}`, { token: alice });
    assert.ok(long.status >= 400 && long.status < 500, `long target: ${long.status}`);
    assert.equal(errorShape(long), null, errorShape(long));
  });

  test('after all of that a normal client is served', async () => {
    const h = await api(srv.url, 'GET', '/health');
    assert.equal(h.status, 200, h.text);
    const run = await api(srv.url, 'POST', '/v1/runs', { token: alice, body: { kind: 'external', input: {} } });
    assert.equal(run.status, 201, run.text);
    const s = openSse(`${srv.url}/v1/runs/${run.json.id}/events`, { token: alice });
    await s.response;
    const a = await api(srv.url, 'POST', `/v1/runs/${run.json.id}/events`,
      { token: service, body: range(1, 5).map((i) => ({ type: 'delta', data: i })) });
    assert.equal(a.status, 202, a.text);
    assert.equal((await api(srv.url, 'POST', `/v1/runs/${run.json.id}/complete`, { token: service })).status, 200);
    assert.equal(await s.waitEnd(), 'end', s.describe());
    assert.deepEqual(s.seqs(), range(1, 6));
    // The earlier runs are intact too.
    const d = await api(srv.url, 'GET', `/v1/runs/${doneRun.id}`, { token: alice });
    assert.equal(d.json.last_seq, 3);
    assert.equal(d.json.status, 'completed');
  });
});
