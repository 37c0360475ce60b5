// Auth depth (issue 5): RS256 beside HS256, kid rotation, HS/RS confusion, alg none, expired and
// forged tokens (each answered exactly while normal clients keep being served), the `rooms`
// claim over HTTP, SSE and WebSocket, token expiry on live connections (WebSocket 1008 unless
// refreshed with the `auth` op, SSE stream end), and the audit log's lines.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, generateKeyPairSync, sign } from 'node:crypto';
import http from 'node:http';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { RELAY_FAULT_BIN, SECRET, api, b64url, errorShape, mintToken, relayToken, startServer, tokenFor, waitUntil } from './lib/server.mjs';
import { openSse } from './lib/sse.mjs';
import { closeAll, connect, wsErrorShape } from './lib/ws.mjs';

const HS2_SECRET = 'second-hs256-secret-for-rotation-91b3';
const rs1 = generateKeyPairSync('rsa', { modulusLength: 2048 });
const rsOther = generateKeyPairSync('rsa', { modulusLength: 2048 });
const rs1Pem = rs1.publicKey.export({ type: 'spki', format: 'pem' });

/// An RS256 token signed with `privateKey` (RSASSA-PKCS1-v1_5, SHA-256).
function rsToken({ sub, role = 'user', ttlS = 3600, privateKey = rs1.privateKey, header = {}, claims = {} }) {
  const now = Math.floor(Date.now() / 1000);
  const h = { alg: 'RS256', typ: 'JWT', ...header };
  const c = { sub, role, iat: now, exp: now + ttlS, ...claims };
  const input = `${b64url(JSON.stringify(h))}.${b64url(JSON.stringify(c))}`;
  return `${input}.${sign('sha256', Buffer.from(input), privateKey).toString('base64url')}`;
}

/// GET /v1/runs?status=active: 200 for any valid token; the probe of "is this token accepted".
const probe = (srv, token) => api(srv.url, 'GET', '/v1/runs?status=active', { token });

function assertRefused(res, code, what) {
  assert.equal(res.status, code === 'unauthorized' ? 401 : 403, `${what}: ${res.status} ${res.text}`);
  assert.equal(errorShape(res), null, what);
  assert.equal(res.json.error.code, code, what);
}

function auditLines(file) {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

describe('auth depth', { timeout: 120_000 }, () => {
  let srv, dir, auditFile;
  before(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'relay-auth-'));
    writeFileSync(path.join(dir, 'rs1.pem'), rs1Pem);
    writeFileSync(path.join(dir, 'hs2.key'), HS2_SECRET + '\n');
    auditFile = path.join(dir, 'audit.log');
    // relay-fault-test: relay plus one admin endpoint, so that admin actions can be audited.
    srv = await startServer({
      'auth.jwt_keys': `rs-1=RS256:${path.join(dir, 'rs1.pem')}, hs-2=HS256:${path.join(dir, 'hs2.key')}`,
      'audit.path': auditFile,
      'audit.auth_failures_per_min': 1000,
    }, { bin: RELAY_FAULT_BIN });
  });
  after(async () => {
    if (srv) await srv.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('expired, forged, alg:none and tampered tokens get 401 each; normal clients keep being served', async () => {
    const good = tokenFor('alice');
    const ws = await connect(srv.port, good, { name: 'bystander' });
    try {
      const parts = good.split('.');
      const tampered = [parts[0], b64url(JSON.stringify({ sub: 'alice', role: 'admin', exp: 9999999999 })), parts[2]].join('.');
      const cases = {
        expired: mintToken({ sub: 'alice', ttlS: -60 }),
        forged: mintToken({ sub: 'alice', secret: 'not-the-secret' }),
        alg_none: mintToken({ sub: 'alice', header: { alg: 'none' } }),
        alg_none_signed: mintToken({ sub: 'alice', header: { alg: 'none' } }) + createHmac('sha256', SECRET).update('x').digest('base64url'),
        tampered,
        garbage: 'a.b.c',
      };
      for (const [what, token] of Object.entries(cases)) {
        assertRefused(await probe(srv, token), 'unauthorized', what);
        // The bystander is still served between the attacks.
        assert.equal((await ws.ok({ op: 'ping' })).op, 'pong');
        assert.equal((await probe(srv, good)).status, 200);
      }
      const upgrade = await connect(srv.port, cases.alg_none).catch((e) => e);
      assert.equal(upgrade.status, 401, String(upgrade));
    } finally {
      await closeAll([ws]);
    }
  });

  test('RS256 with the configured public key; another key and the HS/RS confusion are refused', async () => {
    assert.equal((await probe(srv, rsToken({ sub: 'alice', header: { kid: 'rs-1' } }))).status, 200);
    assert.equal((await probe(srv, rsToken({ sub: 'alice' }))).status, 200, 'without kid: every RS256 key is tried');
    assertRefused(await probe(srv, rsToken({ sub: 'alice', privateKey: rsOther.privateKey, header: { kid: 'rs-1' } })), 'unauthorized', 'other RSA key');
    // The confusion attack: HS256 "signed" with the public key's PEM text as the HMAC secret.
    for (const header of [{ kid: 'rs-1' }, {}]) {
      const t = mintToken({ sub: 'alice', role: 'admin', secret: rs1Pem, header });
      assertRefused(await probe(srv, t), 'unauthorized', `HS256 with the public key as secret ${JSON.stringify(header)}`);
    }
    // An RS256 header on a token MACed with a configured HS256 secret.
    const rsHeaderHsMac = mintToken({ sub: 'alice', secret: HS2_SECRET, header: { alg: 'RS256', kid: 'hs-2' } });
    assertRefused(await probe(srv, rsHeaderHsMac), 'unauthorized', 'RS256 header, HMAC signature');
    // A WebSocket with an RS256 token.
    const ws = await connect(srv.port, rsToken({ sub: 'alice', header: { kid: 'rs-1' } }), { name: 'rs' });
    await closeAll([ws]);
  });

  test('relay token mints what the server accepts: RS256 with --key, --kid, --rooms', async () => {
    const keyPath = path.join(dir, 'rs1-private.pem');
    writeFileSync(keyPath, rs1.privateKey.export({ type: 'pkcs8', format: 'pem' }));
    const rs = await relayToken({ sub: 'erin', keyPath, kid: 'rs-1', rooms: ['team-*'] });
    const header = JSON.parse(Buffer.from(rs.split('.')[0], 'base64url'));
    assert.deepEqual(header, { alg: 'RS256', typ: 'JWT', kid: 'rs-1' });
    assert.equal((await probe(srv, rs)).status, 200);
    const post = (token, room) => api(srv.url, 'POST', `/v1/rooms/${room}/messages`, { token, body: { text: 'hi' } });
    assert.equal((await post(rs, 'team-x')).status, 202);
    assertRefused(await post(rs, 'secret'), 'forbidden', 'outside --rooms');
    // HS256 with the kid of the rotation's second secret.
    const hs = await relayToken({ sub: 'erin', kid: 'hs-2', secret: HS2_SECRET });
    assert.equal((await probe(srv, hs)).status, 200);
    // A key the server does not have: the token is refused, not the command.
    const otherPath = path.join(dir, 'other-private.pem');
    writeFileSync(otherPath, rsOther.privateKey.export({ type: 'pkcs1', format: 'pem' }));
    assertRefused(await probe(srv, await relayToken({ sub: 'erin', keyPath: otherPath, kid: 'rs-1' })), 'unauthorized', 'other key');
    // A public key is not a signing key: the command fails.
    await assert.rejects(relayToken({ sub: 'erin', keyPath: path.join(dir, 'rs1.pem') }), /not a PEM RSA private key/);
  });

  test('kid rotation: two keys valid at once, the kid picks the key, unknown kids are refused', async () => {
    assert.equal((await probe(srv, mintToken({ sub: 'alice', secret: HS2_SECRET, header: { kid: 'hs-2' } }))).status, 200);
    assert.equal((await probe(srv, mintToken({ sub: 'alice' }))).status, 200, 'auth.jwt_secret still works');
    assert.equal((await probe(srv, mintToken({ sub: 'alice', secret: HS2_SECRET }))).status, 200, 'no kid: every HS256 key');
    assertRefused(await probe(srv, mintToken({ sub: 'alice', secret: SECRET, header: { kid: 'hs-2' } })), 'unauthorized', 'kid of another key');
    assertRefused(await probe(srv, mintToken({ sub: 'alice', header: { kid: 'retired' } })), 'unauthorized', 'unknown kid');
  });

  test('the rooms claim restricts rooms over HTTP, SSE and WebSocket (403 / forbidden)', async () => {
    const limited = mintToken({ sub: 'carol', claims: { rooms: ['team-*', 'lobby'] } });
    const post = (room) => api(srv.url, 'POST', `/v1/rooms/${room}/messages`, { token: limited, body: { text: 'hi' } });
    assert.equal((await post('team-a')).status, 202);
    assert.equal((await post('lobby')).status, 202);
    assertRefused(await post('secret'), 'forbidden', 'post');
    assertRefused(await api(srv.url, 'GET', '/v1/rooms/secret/messages', { token: limited }), 'forbidden', 'history');
    assertRefused(await api(srv.url, 'GET', '/v1/rooms/secret/presence', { token: limited }), 'forbidden', 'presence');
    assert.equal((await api(srv.url, 'GET', '/v1/rooms/team-a/messages', { token: limited })).status, 200);
    const sse = openSse(`${srv.url}/v1/rooms/secret/events`, { token: limited });
    const r = await sse.response;
    assert.equal(r.status, 403);
    sse.destroy();

    const ws = await connect(srv.port, limited, { name: 'carol' });
    try {
      for (const op of [{ op: 'join', room: 'secret' }, { op: 'send', room: 'secret', text: 'x' },
                        { op: 'subscribe', topic: 'room:secret' }]) {
        const e = await ws.request({ ...op, ref: `no-${op.op}` });
        assert.equal(wsErrorShape(e, { code: 'forbidden', ref: `no-${op.op}` }), null, JSON.stringify(op));
      }
      await ws.ok({ op: 'join', room: 'team-b' });
      await ws.ok({ op: 'send', room: 'team-b', text: 'allowed' });
      // An empty list allows no room; a malformed claim makes the token invalid.
      assertRefused(await api(srv.url, 'POST', '/v1/rooms/lobby/messages',
        { token: mintToken({ sub: 'dan', claims: { rooms: [] } }), body: { text: 'x' } }), 'forbidden', 'empty rooms');
      assertRefused(await probe(srv, mintToken({ sub: 'dan', claims: { rooms: 'lobby' } })), 'unauthorized', 'rooms not a list');
      assertRefused(await probe(srv, mintToken({ sub: 'dan', claims: { rooms: Array(33).fill('a') } })), 'unauthorized', 'too many patterns');
      // A pathological pattern costs nothing: answered at once.
      const evil = mintToken({ sub: 'dan', claims: { rooms: ['a*'.repeat(40) + 'b'] } });
      const t0 = Date.now();
      assertRefused(await api(srv.url, 'POST', `/v1/rooms/${'a'.repeat(128)}/messages`, { token: evil, body: { text: 'x' } }), 'forbidden', 'pathological');
      assert.ok(Date.now() - t0 < 2000);
    } finally {
      await closeAll([ws]);
    }
  });

  test('an auth op that narrows the rooms claim leaves and unfollows the rooms it no longer covers', async () => {
    const wide = mintToken({ sub: 'erin', claims: { rooms: ['team-*', 'ops-*'] } });
    const narrow = mintToken({ sub: 'erin', claims: { rooms: ['team-*'] } });
    const frank = tokenFor('frank');
    let erin, watcher;
    try {
      erin = await connect(srv.port, wide, { name: 'erin' });
      watcher = await connect(srv.port, frank, { name: 'frank' });
      await watcher.ok({ op: 'join', room: 'ops-x' });
      await watcher.ok({ op: 'subscribe', topic: 'room:ops-y' });
      await erin.ok({ op: 'join', room: 'team-x' });
      await erin.ok({ op: 'join', room: 'ops-x' });
      await erin.ok({ op: 'subscribe', topic: 'room:ops-y' });
      await watcher.waitForMessage((m) => m.op === 'presence' && m.joined?.session_id === erin.sessionId,
        { what: 'erin joined ops-x' });

      assert.deepEqual(await erin.request({ op: 'auth', token: narrow, ref: 'narrow' }), { op: 'ack', ref: 'narrow' });
      const dropped = await erin.waitFor((c) => (c.ops('error').length >= 2 ? c.ops('error') : null),
        { what: 'an error op for each excluded room' });
      assert.deepEqual(dropped.map((e) => e.topic).sort(), ['room:ops-x', 'room:ops-y']);
      for (const e of dropped) {
        assert.equal(wsErrorShape(e, { code: 'forbidden' }), null, JSON.stringify(e));
        assert.equal(e.ref, undefined, 'unsolicited: no ref');
      }
      // Left (presence) and no longer followed; the room the claim still covers is untouched.
      await watcher.waitForMessage((m) => m.op === 'presence' && m.room === 'ops-x' && m.left?.session_id === erin.sessionId,
        { what: 'erin left ops-x' });
      const members = await api(srv.url, 'GET', '/v1/rooms/ops-x/presence', { token: frank });
      assert.ok(!JSON.stringify(members.json).includes(erin.sessionId), members.text);
      for (const room of ['ops-x', 'ops-y', 'team-x']) {
        assert.equal((await api(srv.url, 'POST', `/v1/rooms/${room}/messages`, { token: frank, body: { text: `after ${room}` } })).status, 202);
      }
      await watcher.waitFor((c) => c.events('room:ops-x').length && c.events('room:ops-y').length,
        { what: 'frank to see both ops messages' });
      await erin.waitFor((c) => c.events('room:team-x').some((m) => m.data?.text === 'after team-x'),
        { what: 'erin to get the team-x message' });
      assert.equal((await erin.ok({ op: 'ping' })).op, 'pong');
      assert.deepEqual([erin.events('room:ops-x').length, erin.events('room:ops-y').length], [0, 0], erin.describe());
      // Joining an excluded room again is refused; the allowed one still works.
      assert.equal(wsErrorShape(await erin.request({ op: 'join', room: 'ops-x', ref: 'again' }), { code: 'forbidden', ref: 'again' }), null);
      await erin.ok({ op: 'send', room: 'team-x', text: 'still here' });
    } finally {
      await closeAll([erin, watcher].filter(Boolean));
    }
  });

  test('a keep-alive connection has its repeated token verified once, and refused past its exp', async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    // One GET on the agent's single socket: the status and whether the socket was reused.
    const get = (token) => new Promise((resolve, reject) => {
      const req = http.get(`${srv.url}/v1/runs?status=active`, { agent, headers: { authorization: `Bearer ${token}` }, timeout: 5_000 }, (res) => {
        let body = '';
        res.on('data', (d) => { body += d; });
        res.on('end', () => resolve({ status: res.status ?? res.statusCode, reused: req.reusedSocket, body }));
      });
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', reject);
    });
    const verifications = async () => {
      const m = await api(srv.url, 'GET', '/metrics');
      return Number(/^relay_token_verifications_total (\d+)$/m.exec(m.text)[1]);
    };
    try {
      const token = mintToken({ sub: 'gina', ttlS: 2 });
      const before = await verifications();
      const answers = [];
      for (let i = 0; i < 10; i++) answers.push(await get(token));
      assert.deepEqual(answers.map((a) => a.status), Array(10).fill(200));
      assert.deepEqual(answers.slice(1).map((a) => a.reused), Array(9).fill(true), 'one connection');
      assert.equal(await verifications() - before, 1, 'the signature is checked once per connection');
      // Past exp, the same bytes on the same connection are refused like on a new one.
      await waitUntil(() => Date.now() / 1000 > JSON.parse(Buffer.from(token.split('.')[1], 'base64url')).exp + 1.2,
        { timeoutMs: 5_000, what: 'the token to be past its expiry' });
      const late = await get(token);
      assert.equal(late.reused, true);
      assert.equal(late.status, 401, late.body);
      assert.match(JSON.parse(late.body).error.message, /expired/);
      // Another token on the connection is verified in full (a forged one is refused).
      const forged = await get(mintToken({ sub: 'gina', secret: 'not-the-secret' }));
      assert.equal(forged.status, 401);
      assert.equal((await get(mintToken({ sub: 'gina' }))).status, 200);
    } finally {
      agent.destroy();
    }
  });

  test('token expiry: the WebSocket gets error + 1008 unless refreshed with auth; the SSE stream ends', async () => {
    // Heartbeats stay at 25 s: the close comes from the expiry timer, not the next ping.
    const short = mintToken({ sub: 'alice', ttlS: 1 });
    let stale, renewed, sse;
    try {
      stale = await connect(srv.port, short, { name: 'stale' });
      renewed = await connect(srv.port, short, { name: 'renewed' });
      await stale.ok({ op: 'join', room: 'expiry' });
      assert.deepEqual(await renewed.request({ op: 'auth', token: mintToken({ sub: 'alice', ttlS: 60 }), ref: 'r' }), { op: 'ack', ref: 'r' });
      // Another subject's token is refused and changes nothing.
      const other = await renewed.request({ op: 'auth', token: tokenFor('mallory'), ref: 'm' });
      assert.equal(wsErrorShape(other, { code: 'forbidden', ref: 'm' }), null);
      sse = openSse(`${srv.url}/v1/rooms/expiry/events`, { token: short });
      assert.equal((await sse.response).status, 200);

      const t0 = Date.now();
      const closed = await stale.waitClose({ timeoutMs: 6_000 });
      assert.equal(closed.code, 1008, JSON.stringify(closed));
      assert.match(closed.reason, /expired/);
      const why = stale.ops('error').at(-1);
      assert.equal(wsErrorShape(why, { code: 'unauthorized' }), null, stale.describe());
      assert.ok(Date.now() - t0 < 6_000);
      assert.equal(await sse.waitEnd({ timeoutMs: 6_000 }), 'end', sse.describe());

      // The refreshed connection outlives the first token (ttl 1 s) and still works.
      await waitUntil(() => Date.now() / 1000 > JSON.parse(Buffer.from(short.split('.')[1], 'base64url')).exp + 1.2,
        { timeoutMs: 5_000, what: 'the short token to be past its expiry' });
      assert.equal(renewed.close, null, renewed.describe());
      assert.equal((await renewed.ok({ op: 'ping' })).op, 'pong');
      const m = await api(srv.url, 'GET', '/metrics');
      assert.match(m.text, /relay_token_expiries_total [1-9]/);
    } finally {
      if (sse) sse.destroy();
      await closeAll([stale, renewed]);
    }
  });

  test('the audit log records on-behalf creates, service appends, finishes and admin actions', async () => {
    const svc = tokenFor('svc-1', 'service');
    const created = await api(srv.url, 'POST', '/v1/runs', { token: svc, body: { kind: 'external', owner: 'alice' } });
    assert.equal(created.status, 201, created.text);
    const id = created.json.id;
    // A malformed first append reaches no run: no line, and the next append is still the first.
    assert.equal((await api(srv.url, 'POST', `/v1/runs/${id}/events`, { token: svc, body: { data: 1 } })).status, 400);
    for (let i = 0; i < 3; i++) {
      const a = await api(srv.url, 'POST', `/v1/runs/${id}/events`, { token: svc, body: { type: 'delta', data: i } });
      assert.equal(a.status, 202, a.text);
    }
    assert.equal((await api(srv.url, 'POST', `/v1/runs/${id}/complete`, { token: svc, body: {} })).status, 200);
    // A refused action is audited with its outcome.
    assert.equal((await api(srv.url, 'POST', '/v1/runs/nope/cancel', { token: svc })).status, 404);
    // WebSocket publishes: the first per (sub, run) is audited, with its outcome too.
    const wsRun = await api(srv.url, 'POST', '/v1/runs', { token: tokenFor('svc-2', 'service'), body: { kind: 'external' } });
    assert.equal(wsRun.status, 201, wsRun.text);
    const producer = await connect(srv.port, tokenFor('svc-2', 'service'), { name: 'svc-2' });
    try {
      await producer.ok({ op: 'publish', topic: `run:${wsRun.json.id}`, type: 'delta', data: 1 });
      await producer.ok({ op: 'publish', topic: `run:${wsRun.json.id}`, type: 'delta', data: 2 });
      const missing = await producer.request({ op: 'publish', topic: 'run:gone', type: 'delta', data: 1, ref: 'g' });
      assert.equal(wsErrorShape(missing, { ref: 'g', code: 'not_found' }), null);
    } finally {
      await closeAll([producer]);
    }
    // A user's own run is not audited.
    assert.equal((await api(srv.url, 'POST', '/v1/runs', { token: tokenFor('alice'), body: { kind: 'external' } })).status, 201);
    const denied = await api(srv.url, 'POST', '/v1/admin/fault/run:nope', { token: tokenFor('alice') });
    assertRefused(denied, 'forbidden', 'admin endpoint with a user token');
    const admin = await api(srv.url, 'POST', '/v1/admin/fault/run:nope', { token: tokenFor('root', 'admin') });
    assert.notEqual(admin.status, 403, admin.text);

    const lines = await waitUntil(() => {
      const l = auditLines(auditFile);
      return l.some((x) => x.event === 'admin.action') ? l : null;
    }, { timeoutMs: 5_000, what: 'the admin.action audit line' });
    for (const l of lines) assert.match(l.ts, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    const forRun = lines.filter((l) => l.run === id);
    // Lines are written when the action's outcome is known: `result` is "ok" or the error code.
    assert.deepEqual(lines.filter((l) => l.event === 'run.create').map(({ ts, ...rest }) => rest),
      [{ event: 'run.create', sub: 'svc-1', role: 'service', owner: 'alice', ip: '127.0.0.1', run: id, result: 'ok' }]);
    assert.deepEqual(forRun.map((l) => [l.event, l.sub, l.result]),
      [['run.create', 'svc-1', 'ok'], ['run.append', 'svc-1', 'ok'], ['run.complete', 'svc-1', 'ok']],
      'one line for the first append only');
    assert.deepEqual(lines.filter((l) => l.run === 'nope').map((l) => [l.event, l.sub, l.result]),
      [['run.cancel', 'svc-1', 'not_found']]);
    assert.deepEqual(lines.filter((l) => l.sub === 'svc-2').map((l) => [l.event, l.run, l.result]),
      [['run.append', wsRun.json.id, 'ok'], ['run.append', 'gone', 'not_found']]);
    assert.deepEqual(lines.filter((l) => l.event.startsWith('admin.')).map((l) => [l.event, l.sub, l.path, l.status]),
      [['admin.denied', 'alice', '/v1/admin/fault/run:nope', undefined],
        ['admin.action', 'root', '/v1/admin/fault/run:nope', String(admin.status)]]);
    assert.equal(lines.filter((l) => l.event === 'auth.failures').length, 0, 'threshold 1000 not reached');
  });
});

describe('audit of auth failures', { timeout: 60_000 }, () => {
  test('one line per IP when its failures in a minute reach the threshold, not one per failure', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'relay-audit-'));
    const file = path.join(dir, 'audit.log');
    const srv = await startServer({ 'audit.path': file, 'audit.auth_failures_per_min': 3 });
    try {
      for (let i = 0; i < 12; i++) {
        const r = await probe(srv, mintToken({ sub: 'x', secret: 'wrong' }));
        assert.equal(r.status, 401);
      }
      const lines = await waitUntil(() => {
        const l = auditLines(file).filter((x) => x.event === 'auth.failures');
        return l.length ? l : null;
      }, { timeoutMs: 5_000, what: 'the auth.failures line' });
      // Twelve failures in (at most) two minute windows: one line per window reaching 3.
      assert.ok(lines.length >= 1 && lines.length <= 2, JSON.stringify(lines));
      assert.deepEqual({ ...lines[0], ts: undefined },
        { ts: undefined, event: 'auth.failures', ip: '127.0.0.1', count: '3', window_s: '60', last_reason: 'bad signature' });
      const m = await api(srv.url, 'GET', '/metrics');
      assert.match(m.text, /relay_auth_failures_total 12\b/);
    } finally {
      await srv.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
