// The hostile-client suite (issue 5): one row per attack. Each row starts a fresh server with the
// limits it needs set low, feeds a ledger run events that are acknowledged, attacks, asserts the
// exact answer and the refusal counted in /metrics (relay_refused_total{reason}), and then checks
// that the server still serves a normal client: a new event is acknowledged, an SSE replay of the
// ledger run holds every acknowledged event exactly once, and a WebSocket client gets its pong.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';

import { api, errorShape, metricSum, rawRequest, startServer, tokenFor, waitUntil } from './lib/server.mjs';
import { openSse, range } from './lib/sse.mjs';
import { clientFrame, closeAll, connect, rawConnect, wsErrorShape } from './lib/ws.mjs';

const carol = tokenFor('carol', 'user');        // the normal client
const ledgerProducer = tokenFor('ledger', 'service');
const mallory = tokenFor('mallory', 'user');     // the attacker (a user)
const evilService = tokenFor('evil-svc', 'service');

const STATUS = { bad_request: 400, not_found: 404, too_large: 413, rate_limited: 429, unavailable: 503 };
// The address of the connection-bucket row's attacker (another loopback address, its own bucket).
const ATTACKER = '127.0.0.2';
// The shun row's attacker.
const REPEAT_OFFENDER = '127.0.0.5';

function expectError(res, code, what) {
  const ctx = `${what} → ${res.status} ${res.text ?? res.body}`;
  assert.equal(res.status, STATUS[code], ctx);
  const shaped = res.json ? res : { json: safeJson(res.body), text: res.body };
  assert.equal(errorShape(shaped), null, ctx);
  assert.equal(shaped.json.error.code, code, ctx);
}

function safeJson(text) {
  try { return JSON.parse(text); } catch { return undefined; }
}

function header(res, name) {
  return res.headers?.get ? res.headers.get(name) : res.headers?.[name];
}

async function refused(srv, reason) {
  const res = await fetch(`${srv.url}/metrics`, { signal: AbortSignal.timeout(5_000) });
  const text = await res.text();
  const m = new RegExp(`^relay_refused_total\\{reason="${reason}"\\} (\\S+)$`, 'm').exec(text);
  assert.ok(m, `relay_refused_total{reason="${reason}"} is exported`);
  return Number(m[1]);
}

/// Opens a socket, writes `head`, then one byte of `trickle` every `everyMs` until the server
/// closes it. Resolves {closedAfterMs, got} (got: what the server sent before closing).
function trickle(port, head, trickleBytes, { everyMs = 200, maxMs = 15_000, delayMs = 0 } = {}) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const sock = net.connect({ host: '127.0.0.1', port });
    let got = '';
    let i = 0;
    let timer;
    const guard = setTimeout(() => { clearInterval(timer); sock.destroy(); reject(new Error(`still open after ${maxMs} ms`)); }, maxMs);
    sock.on('connect', () => setTimeout(() => {
      if (sock.destroyed) return;
      if (head) sock.write(head);
      timer = setInterval(() => {
        if (sock.destroyed) return;
        sock.write(trickleBytes[i % trickleBytes.length]);
        i++;
      }, everyMs);
    }, delayMs));
    sock.on('data', (d) => { got += d.toString('latin1'); });
    sock.on('error', () => { /* close follows */ });
    sock.on('close', () => {
      clearInterval(timer);
      clearTimeout(guard);
      resolve({ closedAfterMs: Date.now() - started, got, sent: i });
    });
  });
}

/// True when a TCP connection from `localAddress` is established within `ms` (a shunned address's
/// SYN is dropped: no answer at all, where an accepted one takes microseconds on loopback).
function connectsWithin(port, localAddress, ms) {
  return new Promise((resolve) => {
    const sock = net.connect({ host: '127.0.0.1', port, localAddress });
    const timer = setTimeout(() => { sock.destroy(); resolve(false); }, ms);
    sock.on('connect', () => { clearTimeout(timer); sock.destroy(); resolve(true); });
    sock.on('error', () => { clearTimeout(timer); resolve(false); });
  });
}

async function shunnedClients(srv) {
  const { sum, found } = await metricSum(srv.url, /^relay_shunned_clients$/);
  assert.ok(found, 'relay_shunned_clients is exported');
  return sum;
}

/// A server for one row: its flags over low defaults, and a ledger run with acknowledged events.
async function setup(flags) {
  const srv = await startServer({ 'storage.durability': 'none', ...flags });
  const run = await api(srv.url, 'POST', '/v1/runs', {
    token: ledgerProducer, body: { kind: 'external', owner: 'carol', inactivity_s: 600 },
  });
  assert.equal(run.status, 201, run.text);
  const ledger = { id: run.json.id, acked: [] };
  const a = await api(srv.url, 'POST', `/v1/runs/${ledger.id}/events`, {
    token: ledgerProducer, body: range(1, 5).map((i) => ({ type: 'delta', data: { i } })),
  });
  assert.equal(a.status, 202, a.text);
  ledger.acked.push(...range(1, a.json.last_seq));
  return { srv, ledger };
}

/// After the attack: the server serves a normal client and lost no acknowledged event.
async function assertStillServes({ srv, ledger }, what) {
  const h = await api(srv.url, 'GET', '/health');
  assert.equal(h.status, 200, `${what}: /health ${h.text}`);
  const a = await api(srv.url, 'POST', `/v1/runs/${ledger.id}/events`, {
    token: ledgerProducer, body: { type: 'delta', data: { after: what } },
  });
  assert.equal(a.status, 202, `${what}: a normal append ${a.text}`);
  ledger.acked.push(a.json.last_seq);
  const s = openSse(`${srv.url}/v1/runs/${ledger.id}/events`, { token: carol });
  try {
    await s.waitForEvents(ledger.acked.length, { timeoutMs: 5_000, what: `${what}: the ledger replay` });
    assert.deepEqual(s.seqs().slice(0, ledger.acked.length), range(1, ledger.acked.length),
      `${what}: every acknowledged event, exactly once, in order`);
    assert.deepEqual(ledger.acked, range(1, ledger.acked.length));
  } finally {
    s.destroy();
  }
  const ws = await connect(srv.port, carol, { name: 'carol' });
  try {
    const pong = await ws.request({ op: 'ping' });
    assert.equal(pong.op, 'pong', `${what}: a normal WebSocket client`);
  } finally {
    await closeAll([ws]);
  }
}

const HEAD_LIMIT = 4096;
const BODY_LIMIT = 16 * 1024;

// ---- the rows ------------------------------------------------------------------------------------
// Each: name, flags (config for its server), attack(ctx) asserting the exact answer, and the
// refusal reason (with how many) it must have counted.
const rows = [
  {
    name: 'request head over limits.header_bytes → 413 too_large',
    flags: { 'limits.header_bytes': HEAD_LIMIT },
    reason: 'header_too_large', count: 1,
    async attack({ srv }) {
      const res = await rawRequest(srv.port,
        `GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(2 * HEAD_LIMIT)}\r\n\r\n`);
      expectError(res, 'too_large', 'oversized head');
    },
  },
  {
    name: 'body over limits.body_bytes → 413 too_large, nothing appended',
    flags: { 'limits.body_bytes': BODY_LIMIT },
    reason: 'body_too_large', count: 1,
    async attack({ srv, ledger }) {
      const body = JSON.stringify({ type: 'delta', data: 'x'.repeat(2 * BODY_LIMIT) });
      const res = await api(srv.url, 'POST', `/v1/runs/${ledger.id}/events`, { token: ledgerProducer, body });
      expectError(res, 'too_large', 'oversized body');
    },
  },
  {
    name: 'event data over runs.max_data_bytes → 413 too_large, nothing appended',
    flags: { 'runs.max_data_bytes': 1024 },
    reason: 'data_too_large', count: 1,
    async attack({ srv, ledger }) {
      const res = await api(srv.url, 'POST', `/v1/runs/${ledger.id}/events`,
        { token: ledgerProducer, body: [{ type: 'delta', data: 1 }, { type: 'delta', data: 'y'.repeat(2048) }] });
      expectError(res, 'too_large', 'oversized data');
    },
  },
  {
    name: 'WebSocket message over ws.max_message_bytes → close 1009',
    flags: { 'ws.max_message_bytes': 4096 },
    reason: 'frame_too_large', count: 1,
    async attack({ srv }) {
      const raw = await rawConnect(srv.port, mallory);
      raw.send(clientFrame(1, JSON.stringify({ op: 'ping', pad: 'p'.repeat(5000) })));
      const close = await raw.waitFrame((f) => f.opcode === 8, { what: 'the close frame' });
      assert.equal(close.code, 1009);
      raw.sock.destroy();
    },
  },
  {
    name: 'request head trickled a byte at a time (slowloris) → closed at limits.header_timeout_s from accept, unanswered',
    flags: { 'limits.header_timeout_s': 2 },
    reason: 'header_timeout', count: 1,
    async attack({ srv }) {
      // The first byte comes 1.2 s after connecting: the deadline still counts from the accept.
      const r = await trickle(srv.port, 'GET /health HTTP/1.1\r\nHost: x\r\n', ['X', '-', 'a', ':', ' ', 'b', '\r', '\n'],
        { delayMs: 1_200 });
      assert.equal(r.got, '', 'no answer to a head that never completed');
      assert.ok(r.closedAfterMs >= 1_800 && r.closedAfterMs < 2_900, `closed after ${r.closedAfterMs} ms (deadline 2 s after accept, not moved by ${r.sent} bytes)`);
    },
  },
  {
    name: 'a connection that sends nothing → closed at limits.header_timeout_s',
    flags: { 'limits.header_timeout_s': 1 },
    reason: 'header_timeout', count: 1,
    async attack({ srv }) {
      const r = await trickle(srv.port, '', [''], { everyMs: 100 });
      assert.equal(r.got, '');
      assert.ok(r.closedAfterMs >= 800 && r.closedAfterMs < 3_000, `closed after ${r.closedAfterMs} ms`);
    },
  },
  {
    name: 'a declared body trickled a byte at a time → closed at limits.body_timeout_s, nothing appended',
    flags: { 'limits.header_timeout_s': 30, 'limits.body_timeout_s': 2 },
    reason: 'body_timeout', count: 1,
    async attack({ srv, ledger }) {
      const head = `POST /v1/runs/${ledger.id}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${ledgerProducer}\r\n` +
        'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n';
      const r = await trickle(srv.port, head, [' ']);
      assert.equal(r.got, '');
      assert.ok(r.closedAfterMs >= 1_800 && r.closedAfterMs < 4_000, `closed after ${r.closedAfterMs} ms`);
    },
  },
  {
    name: 'a WebSocket upgrade trickled a byte at a time → closed at the handshake deadline, no 101',
    flags: { 'limits.header_timeout_s': 2 },
    reason: 'header_timeout', count: 1,
    async attack({ srv }) {
      const upgrade = `GET /v1/ws?access_token=${mallory} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n';
      const r = await trickle(srv.port, '', (upgrade + 'X-Pad: 1\r\n'.repeat(100)).split(''), { everyMs: 50 });
      assert.doesNotMatch(r.got, /101/);
      assert.ok(r.closedAfterMs >= 1_800 && r.closedAfterMs < 4_000, `closed after ${r.closedAfterMs} ms`);
    },
  },
  {
    name: 'a WebSocket frame trickled a byte at a time → close 1001 at ws.timeout_ms',
    flags: { 'ws.heartbeat_ms': 300, 'ws.timeout_ms': 1500 },
    reason: 'ws_timeout', count: 1,
    async attack({ srv }) {
      const raw = await rawConnect(srv.port, mallory);
      const started = Date.now();
      const frame = clientFrame(1, JSON.stringify({ op: 'ping', pad: 'z'.repeat(1000) }));
      let i = 0;
      const timer = setInterval(() => { if (i < frame.length - 1) raw.send(frame.subarray(i, ++i)); }, 100);
      try {
        const close = await raw.waitFrame((f) => f.opcode === 8, { timeoutMs: 6_000, what: 'the close frame' });
        assert.equal(close.code, 1001);
        const after = Date.now() - started;
        assert.ok(after >= 1_300 && after < 4_000, `closed after ${after} ms, ${i} bytes trickled`);
      } finally {
        clearInterval(timer);
        raw.sock.destroy();
      }
    },
  },
  {
    name: 'invalid UTF-8 in a WebSocket text frame → close 1007',
    flags: {},
    async attack({ srv }) {
      const raw = await rawConnect(srv.port, mallory);
      raw.send(clientFrame(1, Buffer.from([0x7b, 0xc3, 0x28, 0x7d])));
      const close = await raw.waitFrame((f) => f.opcode === 8, { what: 'the close frame' });
      assert.equal(close.code, 1007);
      raw.sock.destroy();
    },
  },
  {
    name: 'invalid UTF-8 in an HTTP JSON body → 400 bad_request',
    flags: {},
    async attack({ srv, ledger }) {
      const body = Buffer.concat([Buffer.from('{"type":"delta","data":"'), Buffer.from([0xff, 0xfe]), Buffer.from('"}')]);
      const res = await api(srv.url, 'POST', `/v1/runs/${ledger.id}/events`, { token: ledgerProducer, body });
      expectError(res, 'bad_request', 'invalid UTF-8');
    },
  },
  {
    name: 'deeply nested JSON (HTTP and WebSocket) → 400 bad_request / error op, connection open',
    flags: {},
    async attack({ srv, ledger }) {
      const deep = '['.repeat(20_000) + ']'.repeat(20_000);
      const res = await api(srv.url, 'POST', `/v1/runs/${ledger.id}/events`,
        { token: ledgerProducer, body: `{"type":"delta","data":${deep}}` });
      expectError(res, 'bad_request', 'nested data');
      const ws = await connect(srv.port, mallory, { name: 'mallory' });
      try {
        // The op cannot be read, so neither can its ref: the answer is an error without one.
        const mark = ws.log.length;
        ws.send(`{"op":"send","room":"r","data":${'['.repeat(10_000)}${']'.repeat(10_000)},"ref":"deep"}`);
        const e = await ws.waitForMessage((m) => m.op === 'error', { from: mark });
        assert.equal(wsErrorShape(e, { code: 'bad_request' }), null);
        assert.equal((await ws.request({ op: 'ping' })).op, 'pong');
      } finally {
        await closeAll([ws]);
      }
    },
  },
  {
    name: 'huge numbers (data 1e999999, a 30-digit Last-Event-ID) → 400 bad_request',
    flags: {},
    async attack({ srv, ledger }) {
      const res = await api(srv.url, 'POST', `/v1/runs/${ledger.id}/events`,
        { token: ledgerProducer, body: '{"type":"delta","data":1e999999}' });
      expectError(res, 'bad_request', 'huge number');
      const s = openSse(`${srv.url}/v1/runs/${ledger.id}/events`,
        { token: carol, headers: { 'last-event-id': '123456789012345678901234567890' } });
      try {
        const r = await s.response;
        assert.equal(r.status, 400);
      } finally {
        s.destroy();
      }
    },
  },
  {
    name: 'wrong content types: a form-encoded or binary body → 400 bad_request',
    flags: {},
    async attack({ srv, ledger }) {
      const form = await api(srv.url, 'POST', `/v1/runs/${ledger.id}/events`,
        { token: ledgerProducer, body: 'type=delta&data=1', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
      expectError(form, 'bad_request', 'form body');
      const bin = await api(srv.url, 'POST', '/v1/rooms/lobby/messages',
        { token: mallory, body: Buffer.from([0, 1, 2, 3, 0xff]), headers: { 'content-type': 'application/octet-stream' } });
      expectError(bin, 'bad_request', 'binary body');
    },
  },
  {
    name: '10 000 subscribe ops on one connection → ws.max_subscriptions acks, the rest error too_large; still open',
    flags: { 'ws.max_subscriptions': 32 },
    reason: 'subscriptions', count: 10_000 - 32,
    async attack({ srv }) {
      const ws = await connect(srv.port, mallory, { name: 'mallory' });
      try {
        for (let i = 0; i < 10_000; i++) ws.send({ op: 'subscribe', topic: `room:flood-${i}`, ref: `s${i}` });
        await ws.waitFor((c) => c.log.filter((m) => typeof m.ref === 'string' && m.ref.startsWith('s')).length >= 10_000,
          { timeoutMs: 20_000, what: '10 000 answers' });
        const answers = ws.log.filter((m) => typeof m.ref === 'string' && m.ref.startsWith('s'));
        assert.equal(answers.filter((m) => m.op === 'ack').length, 32);
        const errors = answers.filter((m) => m.op === 'error');
        assert.equal(errors.length, 10_000 - 32);
        assert.equal(wsErrorShape(errors[0], { ref: errors[0].ref, code: 'too_large' }), null);
        assert.equal((await ws.request({ op: 'ping' })).op, 'pong');
      } finally {
        await closeAll([ws]);
      }
    },
  },
  {
    name: 'rooms joined past ws.max_rooms → error too_large, no presence, still open',
    flags: { 'ws.max_rooms': 3 },
    reason: 'rooms', count: 1,
    async attack({ srv }) {
      const ws = await connect(srv.port, mallory, { name: 'mallory' });
      try {
        for (const r of ['a', 'b', 'c']) await ws.ok({ op: 'join', room: r });
        const over = await ws.request({ op: 'join', room: 'd', ref: 'over' });
        assert.equal(wsErrorShape(over, { ref: 'over', code: 'too_large' }), null);
        const p = await api(srv.url, 'GET', '/v1/rooms/d/presence', { token: mallory });
        assert.deepEqual(p.json, { members: [] });
        await ws.ok({ op: 'leave', room: 'a' });
        await ws.ok({ op: 'join', room: 'd' });  // leaving frees a slot
      } finally {
        await closeAll([ws]);
      }
    },
  },
  {
    name: 'a flood of 300 connections from one address → past limits.max_connections_per_ip 429 at once',
    flags: { 'limits.max_connections_per_ip': 40, 'limits.header_timeout_s': 5, 'rate.connections_per_s': 0 },
    reason: 'connections_per_ip', count: 'answered',
    async attack(ctx) {
      const { srv } = ctx;
      const socks = [];
      const answers = [];
      try {
        await Promise.all(range(1, 300).map(() => new Promise((resolve, reject) => {
          const sock = net.connect({ host: '127.0.0.1', port: srv.port });
          socks.push(sock);
          let got = '';
          sock.on('data', (d) => {
            got += d.toString('latin1');
            if (/\r\n\r\n[\s\S]*\}/.test(got)) { answers.push(got); resolve(); }
          });
          sock.on('error', () => resolve());
          // The admitted ones hear nothing (they send no request): the server closes them at
          // limits.header_timeout_s (5 s); the guard only bounds the wait should it not.
          const guard = setTimeout(() => reject(new Error('an admitted connection outlived the head deadline')), 10_000);
          sock.on('close', () => { clearTimeout(guard); resolve(); });
        })));
        // 40 admitted (less the few kept-alive connections of the row's own HTTP client), the
        // other 260 refused at once.
        assert.ok(answers.length >= 260 && answers.length <= 265, `429 answers: ${answers.length}`);
        for (const a of answers) {
          assert.match(a, /^HTTP\/1\.1 429 /);
          assert.match(a, /\r\nRetry-After: \d+\r\n/i);
          const body = JSON.parse(a.slice(a.indexOf('\r\n\r\n') + 4));
          assert.equal(body.error.code, 'rate_limited');
        }
        ctx.answered = answers.length;
      } finally {
        for (const s of socks) s.destroy();
      }
      // Their slots are freed as they close: a normal client gets in again.
      await waitUntil(async () => (await api(srv.url, 'GET', '/health').catch(() => ({}))).status === 200,
        { timeoutMs: 5_000, what: 'the flood to drain' });
    },
  },
  {
    name: 'connection attempts past rate.connections_* → 429 with Retry-After',
    flags: { 'rate.connections_per_s': 5, 'rate.connections_burst': 10 },
    reason: 'rate_connections', count: 'answered',
    async attack(ctx) {
      const { srv } = ctx;
      // From another loopback address, whose bucket is its own: spend its burst and one more.
      // The normal client's check below (from 127.0.0.1) then shows that one address's refusals
      // leave the others' buckets alone; nothing has to refill for it.
      let refusedRes;
      let n = 0;
      for (; n < 20 && !refusedRes; n++) {
        const res = await rawRequest(srv.port, 'GET /health HTTP/1.1\r\nHost: x\r\n\r\n', { localAddress: ATTACKER });
        if (res.status === 429) refusedRes = res;
        else assert.equal(res.status, 200);
      }
      assert.ok(refusedRes, 'refused within the burst');
      assert.equal(refusedRes.headers['retry-after'], '1');
      assert.equal(safeJson(refusedRes.body).error.code, 'rate_limited');
      ctx.answered = 1;
    },
  },
  {
    name: 'an address that ignores its 429s past limits.shun_after is shunned for limits.shun_s, then served again',
    flags: {
      'rate.connections_per_s': 5, 'rate.connections_burst': 10,
      'limits.shun_after': 20, 'limits.shun_s': 2,
    },
    reason: 'shunned', count: 1,
    async attack({ srv }) {
      // Requests one after another, as a client that never honours Retry-After: the burst is
      // served, then 429s, then past 20 of those (its shun bucket) the kernel drops its SYNs.
      const statuses = [];
      for (let i = 0; i < 60; i++) {
        const res = await rawRequest(srv.port, 'GET /health HTTP/1.1\r\nHost: x\r\n\r\n',
          { localAddress: REPEAT_OFFENDER, timeoutMs: 1_000 }).catch(() => null);
        if (!res) break;  // no answer: the shun (asserted below)
        statuses.push(res.status);
      }
      assert.ok(statuses.length < 60, `shunned before 60 attempts: ${statuses}`);
      assert.equal(await connectsWithin(srv.port, REPEAT_OFFENDER, 500), false, 'its SYN is dropped');
      const served = statuses.filter((s) => s === 200).length;
      const refusedCount = statuses.filter((s) => s === 429).length;
      assert.equal(served + refusedCount, statuses.length, `only 200 and 429: ${statuses}`);
      assert.ok(served >= 10 && served <= 15, `served: the burst of 10 and what refilled: ${statuses}`);
      assert.ok(refusedCount >= 20 && refusedCount <= 25, `429s: the 20 of limits.shun_after, then the shun: ${statuses}`);
      assert.equal(await shunnedClients(srv), 1);
      // Another address is not touched while the offender is shunned.
      assert.ok(await connectsWithin(srv.port, '127.0.0.1', 5_000));
      const h = await rawRequest(srv.port, 'GET /health HTTP/1.1\r\nHost: x\r\n\r\n');
      assert.equal(h.status, 200);
      // After limits.shun_s the filter is gone and the address is answered again.
      await waitUntil(async () => (await shunnedClients(srv)) === 0,
        { timeoutMs: 6_000, what: 'the shun to end' });
      const again = await rawRequest(srv.port, 'GET /health HTTP/1.1\r\nHost: x\r\n\r\n', { localAddress: REPEAT_OFFENDER });
      assert.ok([200, 429].includes(again.status), `answered again: ${again.status}`);
    },
  },
  {
    name: 'runs.max_active_per_user: the next create → 429 rate_limited; finishing one frees a slot',
    flags: { 'runs.max_active_per_user': 3 },
    reason: 'active_runs', count: 1,
    async attack({ srv }) {
      const ids = [];
      for (let i = 0; i < 3; i++) {
        const r = await api(srv.url, 'POST', '/v1/runs', { token: mallory, body: { kind: 'external' } });
        assert.equal(r.status, 201, r.text);
        ids.push(r.json.id);
      }
      const over = await api(srv.url, 'POST', '/v1/runs', { token: mallory, body: { kind: 'external' } });
      expectError(over, 'rate_limited', 'a fourth active run');
      assert.equal(header(over, 'retry-after'), '1');
      const c = await api(srv.url, 'POST', `/v1/runs/${ids[0]}/cancel`, { token: mallory });
      assert.equal(c.status, 200, c.text);
      const again = await waitUntil(async () => {
        const r = await api(srv.url, 'POST', '/v1/runs', { token: mallory, body: { kind: 'external' } });
        return r.status === 201 ? r : null;
      }, { timeoutMs: 3_000, what: 'a slot after the cancel' });
      assert.equal(again.status, 201);
    },
  },
  {
    name: 'run creations past rate.runs_* → 429 with Retry-After',
    flags: { 'rate.runs_per_s': 1, 'rate.runs_burst': 3 },
    reason: 'rate_runs', count: 1,
    async attack({ srv }) {
      for (let i = 0; i < 3; i++) {
        const r = await api(srv.url, 'POST', '/v1/runs', { token: mallory, body: { kind: 'external' } });
        assert.equal(r.status, 201, r.text);
      }
      const over = await api(srv.url, 'POST', '/v1/runs', { token: mallory, body: { kind: 'external' } });
      expectError(over, 'rate_limited', 'a fourth create');
      assert.equal(header(over, 'retry-after'), '1');
    },
  },
  {
    name: 'producer events past rate.events_* (counted in events): a POST of 16 refused appends none; WebSocket publish → error rate_limited, open',
    flags: { 'rate.events_per_s': 1, 'rate.events_burst': 20 },
    reason: 'rate_events', count: 2,
    async attack({ srv }) {
      const run = await api(srv.url, 'POST', '/v1/runs', { token: evilService, body: { kind: 'external', owner: 'mallory' } });
      const batch = range(1, 16).map((i) => ({ type: 'delta', data: i }));
      const first = await api(srv.url, 'POST', `/v1/runs/${run.json.id}/events`, { token: evilService, body: batch });
      assert.equal(first.status, 202, first.text);
      assert.equal(first.json.last_seq, 16);
      const second = await api(srv.url, 'POST', `/v1/runs/${run.json.id}/events`, { token: evilService, body: batch });
      expectError(second, 'rate_limited', 'a second batch of 16 (4 tokens left)');
      const wait = Number(header(second, 'retry-after'));
      assert.ok(wait >= 12 && wait <= 13, `Retry-After ${wait} (12 tokens missing at 1/s)`);
      const info = await api(srv.url, 'GET', `/v1/runs/${run.json.id}`, { token: evilService });
      assert.equal(info.json.last_seq, 16, 'the refused batch appended nothing');
      const ws = await connect(srv.port, evilService, { name: 'evil' });
      try {
        for (let i = 0; i < 4; i++) await ws.ok({ op: 'publish', topic: `run:${run.json.id}`, type: 'delta', data: i });
        const over = await ws.request({ op: 'publish', topic: `run:${run.json.id}`, type: 'delta', data: 'x', ref: 'p' });
        assert.equal(wsErrorShape(over, { ref: 'p', code: 'rate_limited' }), null);
        assert.equal((await ws.request({ op: 'ping' })).op, 'pong');
        assert.equal(ws.close, null);
      } finally {
        await closeAll([ws]);
      }
      const end = await api(srv.url, 'GET', `/v1/runs/${run.json.id}`, { token: evilService });
      assert.equal(end.json.last_seq, 20);
    },
  },
  {
    name: 'room messages past rate.messages_* → 429 over HTTP, error rate_limited over WebSocket (open)',
    flags: { 'rate.messages_per_s': 1, 'rate.messages_burst': 3 },
    reason: 'rate_messages', count: 2,
    async attack({ srv }) {
      for (let i = 0; i < 3; i++) {
        const r = await api(srv.url, 'POST', '/v1/rooms/spam/messages', { token: mallory, body: { text: `m${i}` } });
        assert.equal(r.status, 202, r.text);
      }
      const over = await api(srv.url, 'POST', '/v1/rooms/spam/messages', { token: mallory, body: { text: 'over' } });
      expectError(over, 'rate_limited', 'a fourth message');
      assert.equal(header(over, 'retry-after'), '1');
      const ws = await connect(srv.port, mallory, { name: 'mallory' });
      try {
        const e = await ws.request({ op: 'send', room: 'spam', text: 'over', ref: 'm' });
        assert.equal(wsErrorShape(e, { ref: 'm', code: 'rate_limited' }), null);
        assert.equal((await ws.request({ op: 'ping' })).op, 'pong');
      } finally {
        await closeAll([ws]);
      }
      const bob = await api(srv.url, 'POST', '/v1/rooms/spam/messages', { token: carol, body: { text: 'hi' } });
      assert.equal(bob.status, 202, 'another user has its own bucket');
    },
  },
  {
    name: 'a user reading another user\'s run → 404 (GET, SSE, WebSocket subscribe)',
    flags: {},
    async attack({ srv, ledger }) {
      const get = await api(srv.url, 'GET', `/v1/runs/${ledger.id}`, { token: mallory });
      expectError(get, 'not_found', 'GET');
      const s = openSse(`${srv.url}/v1/runs/${ledger.id}/events`, { token: mallory });
      try {
        assert.equal((await s.response).status, 404);
        assert.equal(s.events.length, 0);
      } finally {
        s.destroy();
      }
      const ws = await connect(srv.port, mallory, { name: 'mallory' });
      try {
        const e = await ws.request({ op: 'subscribe', topic: `run:${ledger.id}`, ref: 'peek' });
        assert.equal(wsErrorShape(e, { ref: 'peek', code: 'not_found' }), null);
        assert.equal(ws.events(`run:${ledger.id}`).length, 0);
      } finally {
        await closeAll([ws]);
      }
    },
  },
];

describe('hostile clients', { timeout: 180_000 }, () => {
  for (const row of rows) {
    test(row.name, async () => {
      const ctx = await setup(row.flags);
      try {
        const before = row.reason ? await refused(ctx.srv, row.reason) : 0;
        await row.attack(ctx);
        if (row.reason) {
          const want = row.count === 'answered' ? ctx.answered : row.count;
          await waitUntil(async () => (await refused(ctx.srv, row.reason)) - before >= want,
            { timeoutMs: 3_000, what: `relay_refused_total{reason="${row.reason}"} +${want}` });
          assert.equal((await refused(ctx.srv, row.reason)) - before, want, `${row.reason} counted exactly`);
        }
        await assertStillServes(ctx, row.name);
      } finally {
        await ctx.srv.stop();
      }
    });
  }
});
