// Browser-facing headers: CORS with the http.cors_origins allow-list (preflights answered, listed
// origins echoed on every answer including SSE streams and errors, other origins refused on
// preflight and on WebSocket upgrades) and the security headers on every kind of HTTP answer.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { errorShape, metricSum, nodeRequest, rawRequest, startServer, tokenFor } from './lib/server.mjs';
import { openSse } from './lib/sse.mjs';
import { connect } from './lib/ws.mjs';

const APP = 'https://app.example';
const DEV = 'http://localhost:3000';
const EVIL = 'https://evil.example';
const MAX_AGE = 321;

const alice = tokenFor('alice', 'user');

/// One request over node:http (which, unlike fetch, sends Origin as given).
const request = nodeRequest;

/// The security headers every answer carries (`cache`: the expected Cache-Control).
function assertSecurityHeaders(h, what, { cache = 'no-store' } = {}) {
  assert.equal(h['x-content-type-options'], 'nosniff', `${what}: X-Content-Type-Options`);
  assert.equal(h['x-frame-options'], 'DENY', `${what}: X-Frame-Options`);
  assert.match(h['content-security-policy'] || '', /frame-ancestors 'none'/, `${what}: CSP`);
  assert.equal(h['referrer-policy'], 'no-referrer', `${what}: Referrer-Policy`);
  assert.equal(h['cache-control'], cache, `${what}: Cache-Control`);
  assert.equal(h['strict-transport-security'], undefined, `${what}: no HSTS without TLS`);
}

function assertCorsFor(h, origin, what) {
  assert.equal(h['access-control-allow-origin'], origin, `${what}: Access-Control-Allow-Origin`);
  assert.match(h.vary || '', /\bOrigin\b/i, `${what}: Vary: Origin`);
  assert.equal(h['access-control-allow-credentials'], undefined, `${what}: never credentials`);
}

function assertNoCors(h, what) {
  assert.equal(h['access-control-allow-origin'], undefined, `${what}: no Access-Control-Allow-Origin`);
}

describe('CORS with an allow-list', () => {
  let srv;
  let runId;
  before(async () => {
    srv = await startServer({ 'http.cors_origins': `${APP}, ${DEV}`, 'http.cors_max_age_s': MAX_AGE });
    const r = await request(srv.port, 'POST', '/v1/runs', { token: alice, body: { kind: 'external' } });
    assert.equal(r.status, 201, r.text);
    runId = r.json.id;
  });
  after(async () => { if (srv) await srv.stop(); });

  test('a preflight from a listed origin is answered 204 with methods, headers and max-age', async () => {
    for (const origin of [APP, DEV]) {
      const r = await request(srv.port, 'OPTIONS', `/v1/runs/${runId}/events`, {
        headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type' },
      });
      assert.equal(r.status, 204, r.text);
      assertCorsFor(r.headers, origin, `preflight ${origin}`);
      const methods = r.headers['access-control-allow-methods'].split(/\s*,\s*/);
      for (const m of ['GET', 'POST']) assert.ok(methods.includes(m), `methods ${methods}`);
      const allowed = r.headers['access-control-allow-headers'].toLowerCase().split(/\s*,\s*/);
      for (const hd of ['authorization', 'content-type', 'last-event-id']) assert.ok(allowed.includes(hd), `headers ${allowed}`);
      assert.equal(r.headers['access-control-max-age'], String(MAX_AGE));
      assertSecurityHeaders(r.headers, 'preflight');
    }
  });

  test('a preflight from another origin is refused 403 in the error shape and counted', async () => {
    const before = (await metricSum(srv.url, /^relay_cors_refusals_total$/)).sum;
    for (const origin of [EVIL, 'https://app.example:444', 'https://app.example.evil.example', 'null']) {
      const r = await request(srv.port, 'OPTIONS', '/v1/runs', {
        headers: { origin, 'access-control-request-method': 'POST' },
      });
      assert.equal(r.status, 403, `${origin}: ${r.text}`);
      assert.equal(errorShape(r), null, errorShape(r));
      assert.equal(r.json.error.code, 'forbidden');
      assertNoCors(r.headers, `preflight ${origin}`);
      assertSecurityHeaders(r.headers, `refused preflight ${origin}`);
    }
    const m = await metricSum(srv.url, /^relay_cors_refusals_total$/);
    assert.ok(m.found, 'relay_cors_refusals_total is exported');
    assert.equal(m.sum - before, 4);
  });

  test('every kind of answer echoes a listed origin and carries the security headers', async () => {
    const o = { origin: APP };
    const cases = [
      ['JSON 201', await request(srv.port, 'POST', '/v1/runs', { headers: o, token: alice, body: { kind: 'external' } }), 201],
      ['JSON 200', await request(srv.port, 'GET', `/v1/runs/${runId}`, { headers: o, token: alice }), 200],
      ['health', await request(srv.port, 'GET', '/health', { headers: o }), 200],
      ['metrics', await request(srv.port, 'GET', '/metrics', { headers: o }), 200],
      ['401', await request(srv.port, 'GET', `/v1/runs/${runId}`, { headers: o }), 401],
      ['404 route', await request(srv.port, 'GET', '/nowhere', { headers: o }), 404],
      ['404 run', await request(srv.port, 'GET', '/v1/runs/nosuchrun', { headers: o, token: alice }), 404],
      ['405', await request(srv.port, 'DELETE', '/v1/runs', { headers: o, token: alice }), 405],
      ['400 body', await request(srv.port, 'POST', '/v1/runs', { headers: o, token: alice, body: '{not json' }), 400],
      ['ws without upgrade', await request(srv.port, 'GET', '/v1/ws', { headers: o, token: alice }), 400],
    ];
    for (const [what, r, status] of cases) {
      assert.equal(r.status, status, `${what}: ${r.text}`);
      assertCorsFor(r.headers, APP, what);
      assertSecurityHeaders(r.headers, what);
      if (status >= 400) assert.equal(errorShape(r), null, `${what}: ${errorShape(r)}`);
    }
    // Retry-After and WWW-Authenticate are readable by the page.
    assert.match(cases[4][1].headers['access-control-expose-headers'] || '', /WWW-Authenticate/i);
  });

  test('an SSE stream and a refused stream carry them too', async () => {
    const s = openSse(`${srv.url}/v1/runs/${runId}/events`, { token: alice, headers: { origin: DEV } });
    const r = await s.response;
    assert.equal(r.status, 200, s.describe());
    assertCorsFor(r.headers, DEV, 'SSE');
    assertSecurityHeaders(r.headers, 'SSE', { cache: 'no-cache' });
    assert.equal(r.headers['content-type'], 'text/event-stream');
    s.destroy();

    // The node refuses the subscription after the handover: the answer is an ordinary error.
    const bad = openSse(`${srv.url}/v1/runs/nosuchrun/events`, { token: alice, headers: { origin: DEV } });
    const br = await bad.response;
    assert.equal(br.status, 404, bad.describe());
    assertCorsFor(br.headers, DEV, 'refused SSE');
    assertSecurityHeaders(br.headers, 'refused SSE');
  });

  test('answers to an unlisted origin have no CORS headers but the security headers', async () => {
    const r = await request(srv.port, 'GET', `/v1/runs/${runId}`, { headers: { origin: EVIL }, token: alice });
    assert.equal(r.status, 200);
    assertNoCors(r.headers, 'unlisted origin');
    assert.match(r.headers.vary || '', /\bOrigin\b/i, 'Vary: Origin even when not echoed (shared caches)');
    assertSecurityHeaders(r.headers, 'unlisted origin');
    const s = openSse(`${srv.url}/v1/runs/${runId}/events`, { token: alice, headers: { origin: EVIL } });
    const sr = await s.response;
    assert.equal(sr.status, 200);
    assertNoCors(sr.headers, 'SSE, unlisted origin');
    s.destroy();
  });

  test('raw answers to malformed requests carry the security headers', async () => {
    const r = await rawRequest(srv.port, 'GARBAGE\r\n\r\n');
    assert.equal(r.status, 400, r.raw);
    assertSecurityHeaders(r.headers, 'malformed request');
  });

  test('a WebSocket from another origin is refused 403; listed origins and non-browsers connect', async () => {
    const before = (await metricSum(srv.url, /^relay_cors_refusals_total$/)).sum;
    await assert.rejects(connect(srv.port, alice, { headers: { origin: EVIL } }), (err) => {
      assert.equal(err.status, 403, err.message);
      assert.equal(err.json?.error?.code, 'forbidden', err.body);
      return true;
    });
    assert.equal((await metricSum(srv.url, /^relay_cors_refusals_total$/)).sum - before, 1);
    const listed = await connect(srv.port, alice, { headers: { origin: APP } });
    const plain = await connect(srv.port, alice);  // the `ws` package sends no Origin
    await listed.ok({ op: 'ping' });
    await plain.ok({ op: 'ping' });
    await listed.end();
    await plain.end();
  });
});

describe('CORS off (the default)', () => {
  let srv;
  before(async () => { srv = await startServer(); });
  after(async () => { if (srv) await srv.stop(); });

  test('no CORS headers, preflights are not answered, security headers stay', async () => {
    const r = await request(srv.port, 'GET', '/health', { headers: { origin: APP } });
    assert.equal(r.status, 200);
    assertNoCors(r.headers, 'health');
    assert.equal(r.headers.vary, undefined);
    assertSecurityHeaders(r.headers, 'health');
    const p = await request(srv.port, 'OPTIONS', '/v1/runs', { headers: { origin: APP, 'access-control-request-method': 'POST' } });
    assert.notEqual(p.status, 204, 'no preflight answer without an allow-list');
    assertNoCors(p.headers, 'preflight');
    // WebSocket upgrades are not checked without an allow-list (tokens, not cookies, authenticate).
    const c = await connect(srv.port, alice, { headers: { origin: EVIL } });
    await c.end();
  });
});

describe('CORS with *', () => {
  let srv;
  before(async () => { srv = await startServer({ 'http.cors_origins': '*' }); });
  after(async () => { if (srv) await srv.stop(); });

  test('every origin gets *, never with credentials', async () => {
    const r = await request(srv.port, 'GET', '/health', { headers: { origin: EVIL } });
    assert.equal(r.headers['access-control-allow-origin'], '*');
    assert.equal(r.headers['access-control-allow-credentials'], undefined);
    const p = await request(srv.port, 'OPTIONS', '/v1/runs', { headers: { origin: 'null', 'access-control-request-method': 'POST' } });
    assert.equal(p.status, 204);
    assert.equal(p.headers['access-control-allow-origin'], '*');
  });
});

describe('a bad http.cors_origins', () => {
  test('stops start-up with the entry named', async () => {
    await assert.rejects(startServer({ 'http.cors_origins': 'https://ok.example https://bad.example/path' }), (err) => {
      assert.match(err.message, /http\.cors_origins/);
      assert.match(err.message, /bad\.example\/path/);
      assert.match(err.message, /"code":2/);  // exit 2: a bad option
      return true;
    });
  });
});
