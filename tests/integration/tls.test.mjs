// TLS: the HTTPS/WSS listener (tls.cert_path, tls.key_path, tls.port) with a self-signed
// certificate made here by the openssl command line. The same API over HTTPS, SSE over TLS, wss,
// HSTS on TLS answers only; and hostile handshakes: plain HTTP to the TLS port, a client that
// never starts the handshake (closed by tls.handshake_timeout_s), old protocol versions; all
// counted, none of them hurting the next client. Bad certificate files stop start-up.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';

import WebSocket from 'ws';

import { metricSum, nodeRequest, startServer, tokenFor, waitUntil } from './lib/server.mjs';
import { openSse, range } from './lib/sse.mjs';
import { WsClient } from './lib/ws.mjs';

const HANDSHAKE_TIMEOUT_S = 1;

const alice = tokenFor('alice', 'user');
const service = tokenFor('producer', 'service');

let dir;
let certPath;
let keyPath;
let ca;

/// A self-signed P-256 certificate for 127.0.0.1 and localhost, valid for a day.
function makeCertificate(d, name) {
  const cert = path.join(d, `${name}.crt`);
  const key = path.join(d, `${name}.key`);
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=relay-test',
    '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
  ], { stdio: 'pipe', timeout: 20_000 });
  return { cert, key };
}

/// One HTTPS request trusting only the test's certificate. Resolves {status, headers, text, json}.
const httpsRequest = (port, method, urlPath, opts = {}) => nodeRequest(port, method, urlPath, { ...opts, ca });

/// Opens a TCP connection and resolves how it ended: {closedAfterMs, data} (bounded by timeoutMs).
function rawTcp(port, bytes, { timeoutMs = 8_000 } = {}) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const sock = net.connect({ host: '127.0.0.1', port });
    let data = Buffer.alloc(0);
    const timer = setTimeout(() => { sock.destroy(); reject(new Error(`still open after ${timeoutMs} ms`)); }, timeoutMs);
    sock.on('connect', () => { if (bytes) sock.write(bytes); });
    sock.on('data', (d) => { data = Buffer.concat([data, d]); });
    sock.on('error', () => { /* a reset ends it too */ });
    sock.on('close', () => { clearTimeout(timer); resolve({ closedAfterMs: Date.now() - started, data }); });
  });
}

before(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'relay-tls-'));
  ({ cert: certPath, key: keyPath } = makeCertificate(dir, 'server'));
  ca = readFileSync(certPath);
});
after(() => { if (dir) rmSync(dir, { recursive: true, force: true }); });

describe('the TLS listener', () => {
  let srv;
  let tlsPort;
  before(async () => {
    srv = await startServer({
      'tls.cert_path': certPath, 'tls.key_path': keyPath, 'tls.port': 0,
      'tls.handshake_timeout_s': HANDSHAKE_TIMEOUT_S, 'sse.heartbeat_s': 1,
    });
    const m = /relay listening host=\S+ port=\d+ node=\S+ tls_port=(\d+)/.exec(srv.output());
    assert.ok(m, `the listening line names the TLS port:\n${srv.output()}`);
    tlsPort = Number(m[1]);
    assert.notEqual(tlsPort, srv.port);
  });
  after(async () => { if (srv) await srv.stop(); });

  test('serves the HTTP API over HTTPS with HSTS, and plain HTTP without it', async () => {
    const h = await httpsRequest(tlsPort, 'GET', '/health');
    assert.equal(h.status, 200, h.text);
    assert.equal(h.json.status, 'ok');
    assert.equal(h.headers['strict-transport-security'], 'max-age=31536000');
    assert.equal(h.headers['x-content-type-options'], 'nosniff');
    const created = await httpsRequest(tlsPort, 'POST', '/v1/runs', { token: alice, body: { kind: 'external' } });
    assert.equal(created.status, 201, created.text);
    const got = await httpsRequest(tlsPort, 'GET', `/v1/runs/${created.json.id}`, { token: alice });
    assert.equal(got.status, 200, got.text);
    assert.equal(got.json.owner, 'alice');
    const denied = await httpsRequest(tlsPort, 'GET', `/v1/runs/${created.json.id}`);
    assert.equal(denied.status, 401);
    assert.equal(denied.headers['strict-transport-security'], 'max-age=31536000', 'errors carry HSTS too');
    // The plain listener goes on serving, without HSTS (browsers ignore it there anyway).
    const plain = await fetch(`${srv.url}/health`);
    assert.equal(plain.status, 200);
    assert.equal(plain.headers.get('strict-transport-security'), null);
    const m = await metricSum(srv.url, /^relay_tls_handshakes_total$/);
    assert.ok(m.found && m.sum >= 4, `relay_tls_handshakes_total = ${m.sum}`);
  });

  test('several requests share one keep-alive TLS connection', async () => {
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca });
    try {
      const sockets = new Set();
      for (let i = 0; i < 5; i++) {
        await new Promise((resolve, reject) => {
          const req = https.request({ host: '127.0.0.1', port: tlsPort, path: '/health', agent, timeout: 5_000 }, (res) => {
            sockets.add(res.socket);
            res.resume();
            res.on('end', () => { assert.equal(res.statusCode, 200); resolve(); });
          });
          req.on('error', reject);
          req.end();
        });
      }
      assert.equal(sockets.size, 1, 'one connection for all five requests');
    } finally {
      agent.destroy();
    }
  });

  test('streams a run over SSE on TLS, resumes by Last-Event-ID, and ends after complete', async () => {
    const run = await httpsRequest(tlsPort, 'POST', '/v1/runs', { token: service, body: { kind: 'external', owner: 'alice' } });
    assert.equal(run.status, 201, run.text);
    const id = run.json.id;
    const url = `https://127.0.0.1:${tlsPort}/v1/runs/${id}/events`;
    const s = openSse(url, { token: alice, tls: { ca } });
    const r = await s.response;
    assert.equal(r.status, 200, s.describe());
    assert.equal(r.headers['strict-transport-security'], 'max-age=31536000');
    const a = await httpsRequest(tlsPort, 'POST', `/v1/runs/${id}/events`, {
      token: service, body: range(1, 5).map((i) => ({ type: 'delta', data: { i, text: 'x'.repeat(3000) } })),
    });
    assert.equal(a.status, 202, a.text);
    await s.waitForEvents(5);
    assert.deepEqual(s.seqs(), range(1, 5));
    s.destroy();

    const resumed = openSse(url, { token: alice, tls: { ca }, headers: { 'last-event-id': '3' } });
    assert.equal((await resumed.response).status, 200);
    const c = await httpsRequest(tlsPort, 'POST', `/v1/runs/${id}/complete`, { token: service, body: { data: 'done' } });
    assert.equal(c.status, 200, c.text);
    assert.equal(await resumed.waitEnd(), 'end', resumed.describe());
    assert.deepEqual(resumed.seqs(), [4, 5, 6]);
    assert.equal(resumed.events.at(-1).event, 'complete');
    // Heartbeats on an idle TLS stream arrive like on plain ones.
    const idle = openSse(`https://127.0.0.1:${tlsPort}/v1/rooms/tls-idle/events`, { token: alice, tls: { ca } });
    await idle.waitFor((x) => x.items.some((i) => i.kind === 'comment' && i.text === 'hb'), { timeoutMs: 5_000, what: 'a heartbeat' });
    idle.destroy();
  });

  test('serves WebSocket over wss: join, send, receive', async () => {
    const open = (name) => {
      const ws = new WebSocket(`wss://127.0.0.1:${tlsPort}/v1/ws?access_token=${alice}`, { ca, handshakeTimeout: 5_000 });
      const c = new WsClient(ws, { name });
      return c.waitFor((x) => x.hello, { timeoutMs: 5_000, what: 'hello' }).then(() => c);
    };
    const a = await open('wss-a');
    const b = await open('wss-b');
    await a.ok({ op: 'join', room: 'tls-room' });
    await b.ok({ op: 'join', room: 'tls-room' });
    // More than one TLS record and relay chunk each way.
    const text = 'y'.repeat(16_000);
    const pad = 'z'.repeat(30_000);
    const sent = await a.ok({ op: 'send', room: 'tls-room', text, data: { pad } });
    const ev = await b.waitForMessage((m) => m.op === 'event' && m.topic === 'room:tls-room' && m.seq === sent.seq);
    assert.equal(ev.data.text, text);
    assert.equal(ev.data.data.pad, pad);
    assert.deepEqual(await a.ok({ op: 'ping' }).then((p) => p.op), 'pong');
    await a.end();
    await b.end();
  });

  test('plain HTTP to the TLS port fails the handshake, is counted, and harms nobody', async () => {
    const before = (await metricSum(srv.url, /^relay_tls_handshake_failures_total$/)).sum;
    const r = await rawTcp(tlsPort, 'GET /health HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.ok(!r.data.toString('latin1').includes('"status":"ok"'), 'no API answer in clear text');
    await waitUntil(async () => (await metricSum(srv.url, /^relay_tls_handshake_failures_total$/)).sum >= before + 1,
      { what: 'the failed handshake counted' });
    assert.equal((await httpsRequest(tlsPort, 'GET', '/health')).status, 200);
  });

  test('a client that never sends its ClientHello is closed by the handshake deadline', async () => {
    const before = (await metricSum(srv.url, /^relay_tls_handshake_failures_total$/)).sum;
    const silent = await rawTcp(tlsPort, null, { timeoutMs: (HANDSHAKE_TIMEOUT_S + 5) * 1000 });
    assert.ok(silent.closedAfterMs >= HANDSHAKE_TIMEOUT_S * 1000 - 100, `closed after ${silent.closedAfterMs} ms`);
    const m = await metricSum(srv.url, /^relay_tls_handshake_failures_total$/);
    assert.equal(m.sum, before + 1);
    assert.equal((await httpsRequest(tlsPort, 'GET', '/health')).status, 200);
  });

  test('TLS 1.0 and 1.1 are refused', async () => {
    for (const version of ['TLSv1', 'TLSv1.1']) {
      const err = await new Promise((resolve) => {
        const sock = tls.connect({ host: '127.0.0.1', port: tlsPort, ca, minVersion: version, maxVersion: version, timeout: 5_000 });
        sock.on('secureConnect', () => { sock.destroy(); resolve(null); });
        sock.on('error', (e) => resolve(e));
        sock.on('timeout', () => { sock.destroy(); resolve(new Error('timeout')); });
      });
      assert.ok(err, `${version} was accepted`);
    }
    const ok = await new Promise((resolve, reject) => {
      const sock = tls.connect({ host: '127.0.0.1', port: tlsPort, ca, minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' });
      sock.on('secureConnect', () => { const p = sock.getProtocol(); sock.destroy(); resolve(p); });
      sock.on('error', reject);
    });
    assert.equal(ok, 'TLSv1.2');
  });
});

describe('stopping with TLS clients connected', () => {
  test('SIGTERM closes wss (1001) and SSE streams over TLS and exits 0', async () => {
    const srv = await startServer({ 'tls.cert_path': certPath, 'tls.key_path': keyPath, 'tls.port': 0 });
    try {
      const tlsPort = Number(/tls_port=(\d+)/.exec(srv.output())[1]);
      const ws = new WebSocket(`wss://127.0.0.1:${tlsPort}/v1/ws?access_token=${alice}`, { ca, handshakeTimeout: 5_000 });
      const c = new WsClient(ws, { name: 'wss-stop' });
      await c.waitFor((x) => x.hello, { timeoutMs: 5_000, what: 'hello' });
      await c.ok({ op: 'join', room: 'stop-room' });
      const s = openSse(`https://127.0.0.1:${tlsPort}/v1/rooms/stop-room/events`, { token: alice, tls: { ca } });
      assert.equal((await s.response).status, 200, s.describe());
      // A client in the middle of nothing: TCP open, no ClientHello yet.
      const silent = net.connect({ host: '127.0.0.1', port: tlsPort });
      silent.on('error', () => {});
      await new Promise((resolve) => silent.on('connect', resolve));
      await srv.stop({ deadlineMs: 8_000 });  // throws unless the exit code is 0
      assert.equal((await c.waitClose({ timeoutMs: 5_000 })).code, 1001);
      assert.ok(['end', 'error'].includes(await s.waitEnd({ timeoutMs: 5_000 })));
      silent.destroy();
    } finally {
      await srv.stop().catch(() => {});
    }
  });
});

describe('TLS start-up errors', () => {
  test('a missing or bad certificate or key stops start-up with the file named', async () => {
    const garbage = path.join(dir, 'garbage.pem');
    writeFileSync(garbage, 'not a certificate\n');
    const other = makeCertificate(dir, 'other');
    const cases = [
      [{ 'tls.cert_path': path.join(dir, 'missing.crt'), 'tls.key_path': keyPath }, /tls\.cert_path.*missing\.crt/],
      [{ 'tls.cert_path': garbage, 'tls.key_path': keyPath }, /tls\.cert_path.*garbage\.pem/],
      [{ 'tls.cert_path': certPath, 'tls.key_path': garbage }, /tls\.key_path.*garbage\.pem/],
      [{ 'tls.cert_path': certPath, 'tls.key_path': other.key }, /tls\.key_path.*other\.key.*(mismatch|does not match)/],
      [{ 'tls.cert_path': certPath }, /tls\.key_path is required/],
    ];
    for (const [flags, re] of cases) {
      await assert.rejects(startServer({ ...flags, 'tls.port': 0 }), (err) => {
        assert.match(err.message, /relay exited before it was ready \(\{"code":1/, err.message);
        assert.match(err.message, re);
        return true;
      }, JSON.stringify(flags));
    }
  });
});
