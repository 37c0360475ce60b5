// WebSocket errors and limits (GET /v1/ws): bad ops answer `error` in the contract shape (ref
// echoed) and the connection stays open; frames over ws.max_message_bytes close with 1009;
// subscriptions past ws.max_subscriptions answer too_large; upgrade refusals (401, 400, 426);
// token expiry and `auth`; heartbeat timeout; server stop closes with 1001.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { api, errorShape, mintToken, rawRequest, startServer, tokenFor } from './lib/server.mjs';
import { clientFrame, closeAll, connect, rawConnect, wsErrorShape } from './lib/ws.mjs';

const alice = tokenFor('alice', 'user');
const upgradeHead = (path, extra = '') =>
  `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
  `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n${extra}\r\n`;

describe('WebSocket errors and limits', { timeout: 60_000 }, () => {
  let srv;
  before(async () => { srv = await startServer({}); });
  after(async () => { if (srv) await srv.stop(); });

  test('bad input answers error in the contract shape, ref echoed, and the connection stays open', async () => {
    const ws = await connect(srv.port, alice, { name: 'alice' });
    try {
      assert.deepEqual(Object.keys(ws.hello).sort(), ['heartbeat_ms', 'node', 'op', 'session_id']);
      assert.equal(ws.hello.heartbeat_ms, 25000);
      assert.equal(ws.hello.node, 'relay-1');
      assert.match(ws.hello.session_id, /^\S{8,}$/);

      // Without a ref: the answer is the next error, and it has no ref.
      for (const text of ['not json', '{"op":', '[1,2]', '42', '"subscribe"', 'null', '{"op":"ping","ref":7}']) {
        const mark = ws.log.length;
        ws.send(text);
        const e = await ws.waitForMessage((m) => m.op === 'error', { from: mark, what: `the error for ${text}` });
        assert.equal(wsErrorShape(e, { code: 'bad_request' }), null, `for ${text}`);
      }
      {
        const mark = ws.log.length;
        ws.send(Buffer.from('{"op":"ping"}'), { binary: true });
        const e = await ws.waitForMessage((m) => m.op === 'error', { from: mark, what: 'the error for a binary frame' });
        assert.equal(wsErrorShape(e, { code: 'bad_request' }), null);
      }

      await ws.ok({ op: 'join', room: 'errors.room' });
      const cases = [
        [{ op: 'nope' }, 'bad_request'],
        [{ op: 7 }, 'bad_request'],
        [{}, 'bad_request'],
        [{ op: 'join' }, 'bad_request'],                               // room missing
        [{ op: 'join', room: 'bad room' }, 'bad_request'],
        [{ op: 'join', room: 'x'.repeat(129) }, 'bad_request'],
        [{ op: 'join', room: 'errors.room' }, 'conflict'],              // already joined
        [{ op: 'subscribe', topic: 'room:errors.room' }, 'conflict'],   // already following
        [{ op: 'leave' }, 'bad_request'],
        [{ op: 'send', room: 'errors.room' }, 'bad_request'],           // neither text nor data
        [{ op: 'send', text: 'hi' }, 'bad_request'],                   // room missing
        [{ op: 'send', room: 'errors.room', text: 'x'.repeat(16385) }, 'too_large'],
        [{ op: 'subscribe' }, 'bad_request'],
        [{ op: 'subscribe', topic: 'chan:1' }, 'bad_request'],
        [{ op: 'subscribe', topic: 'room:ok', after: -1 }, 'bad_request'],
        [{ op: 'subscribe', topic: 'room:ok', after: 'x' }, 'bad_request'],
        [{ op: 'subscribe', topic: 'run:missingRun0000' }, 'not_found'],
        [{ op: 'unsubscribe' }, 'bad_request'],
        [{ op: 'auth' }, 'bad_request'],
        [{ op: 'auth', token: 'not.a.token' }, 'unauthorized'],
        [{ op: 'auth', token: tokenFor('mallory') }, 'forbidden'],      // another subject
      ];
      for (const [i, [op, code]] of cases.entries()) {
        const ref = `case-${i}`;
        const e = await ws.request({ ...op, ref });
        assert.equal(wsErrorShape(e, { ref, code }), null, `case ${i}: ${JSON.stringify(op).slice(0, 100)}`);
        if (op.op === 'subscribe' && code === 'not_found') assert.equal(e.topic, op.topic, JSON.stringify(e));
      }
      // The ref of a longer-than-allowed ref cannot be echoed, but the answer is still an error.
      {
        const mark = ws.log.length;
        ws.send({ op: 'ping', ref: 'r'.repeat(10_000) });
        const e = await ws.waitForMessage((m) => m.op === 'error' || m.op === 'pong', { from: mark, what: 'the answer to a long ref' });
        if (e.op === 'error') assert.equal(wsErrorShape(e, { code: 'bad_request' }), null);
        else assert.equal(e.ref, 'r'.repeat(10_000));
      }

      // Still open, still working: ping, a fresh token, the room.
      assert.deepEqual(await ws.request({ op: 'ping', ref: 'p' }), { op: 'pong', ref: 'p' });
      assert.deepEqual(await ws.request({ op: 'auth', token: tokenFor('alice'), ref: 'a' }), { op: 'ack', ref: 'a' });
      const sent = await ws.ok({ op: 'send', room: 'errors.room', text: 'fine' });
      await ws.waitFor((x) => x.events('room:errors.room').some((e) => e.seq === sent.seq), { what: 'own message' });
      assert.equal(ws.close, null);
      assert.deepEqual(ws.badFrames, []);
      for (const m of ws.ops('error')) assert.equal(wsErrorShape(m, { ref: m.ref }), null);
    } finally {
      await closeAll([ws]);
    }
  });

  test('a frame of exactly ws.max_message_bytes is read; one byte more closes with 1009; so does 70 KB', async () => {
    const a = await connect(srv.port, alice, { name: 'edge' });
    const b = await connect(srv.port, alice, { name: 'over' });
    const c = await connect(srv.port, alice, { name: '70k' });
    try {
      const frame = (n, ref) => {
        const head = `{"op":"ping","ref":"${ref}","pad":"`;
        const s = head + 'x'.repeat(n - head.length - 2) + '"}';
        assert.equal(Buffer.byteLength(s), n);
        return s;
      };
      a.send(frame(65536, 'edge'));
      const answer = await a.waitForMessage((m) => m.ref === 'edge', { what: 'the answer to a 64 KiB frame' });
      assert.deepEqual(answer, { op: 'pong', ref: 'edge' }, 'read and answered (unknown fields are ignored)');
      assert.equal((await a.ok({ op: 'ping' })).op, 'pong');

      b.send(frame(65537, 'over'));
      const closed = await b.waitClose({ timeoutMs: 5_000 });
      assert.equal(closed.code, 1009, JSON.stringify(closed));
      assert.ok(!b.log.some((m) => m.ref === 'over'), 'no answer to the refused frame');

      c.send(JSON.stringify({ op: 'send', room: 'r', text: 'x'.repeat(70_000) }));
      assert.equal((await c.waitClose({ timeoutMs: 5_000 })).code, 1009);
      // The others are unaffected.
      assert.equal((await a.ok({ op: 'ping' })).op, 'pong');
    } finally {
      await closeAll([a, b, c]);
    }
  });

  test('hostile frames close with the RFC 6455 code; fragmented messages are reassembled', async () => {
    const TEXT = 1, CONT = 0, CLOSE = 8, PING = 9;
    const cases = [
      ['an unmasked frame', clientFrame(TEXT, '{"op":"ping"}', { mask: false }), 1002],
      ['a reserved opcode', clientFrame(3, 'x'), 1002],
      ['RSV bits', clientFrame(TEXT, '{"op":"ping"}', { rsv: 0x40 }), 1002],
      ['a continuation without a message', clientFrame(CONT, 'x'), 1002],
      ['a fragmented ping', clientFrame(PING, 'x', { fin: false }), 1002],
      ['a ping over 125 bytes', clientFrame(PING, 'x'.repeat(126)), 1002],
      ['close code 5', clientFrame(CLOSE, Buffer.from([0x00, 0x05])), 1002],
      ['a 1-byte close payload', clientFrame(CLOSE, Buffer.from([0x03])), 1002],
      ['a text message inside a fragmented one',
        Buffer.concat([clientFrame(TEXT, '{"op":', { fin: false }), clientFrame(TEXT, '{"op":"ping"}')]), 1002],
      ['text that is not UTF-8', clientFrame(TEXT, Buffer.from([0x7b, 0xff, 0xfe, 0x7d])), 1007],
      ['fragments adding up past 64 KiB',
        Buffer.concat([clientFrame(TEXT, 'x'.repeat(40_000), { fin: false }), clientFrame(CONT, 'x'.repeat(30_000))]), 1009],
      ['a 2^63-byte length', Buffer.from([0x81, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4]), 1009],
    ];
    await Promise.all(cases.map(async ([what, bytes, code]) => {
      const c = await rawConnect(srv.port, alice);
      try {
        assert.equal(c.status, 101, what);
        c.send(bytes);
        const close = await c.waitFrame((f) => f.opcode === CLOSE, { what: `the close frame for ${what}` });
        assert.equal(close.code, code, `${what}: ${close.code} ${close.reason}`);
        assert.equal(c.frames.at(-1), close, `${what}: nothing after the close frame`);
        assert.ok(c.frames.every((f) => !f.masked), `${what}: server frames are not masked`);
        // The server ends the TCP connection (we half-close after its FIN), bounded.
        let timer;
        await Promise.race([c.closed, new Promise((_, rej) => { timer = setTimeout(() => rej(new Error(`${what}: still open`)), 3_000); })]);
        clearTimeout(timer);
      } finally {
        c.sock.destroy();
      }
    }));

    // A message in two fragments with a ping between them: pong (control) first, then the answer.
    const c = await rawConnect(srv.port, alice);
    try {
      c.send(Buffer.concat([clientFrame(TEXT, '{"op":"pi', { fin: false }), clientFrame(PING, 'hb'),
        clientFrame(CONT, 'ng","ref":"frag"}')]));
      const answer = await c.waitFrame((f) => f.json?.ref === 'frag', { what: 'the pong op' });
      assert.deepEqual(answer.json, { op: 'pong', ref: 'frag' });
      const pong = c.frames.find((f) => f.opcode === 10);
      assert.ok(pong, `a pong frame: ${c.describe()}`);
      assert.equal(pong.payload.toString(), 'hb', 'the pong echoes the ping payload');
      assert.ok(c.frames.indexOf(pong) < c.frames.indexOf(answer));
      // A client close: the server echoes the code and ends the connection.
      c.send(clientFrame(CLOSE, Buffer.concat([Buffer.from([0x0f, 0xa0]), Buffer.from('done')])));  // 4000
      const echoed = await c.waitFrame((f) => f.opcode === CLOSE, { what: 'the echoed close' });
      assert.equal(echoed.code, 4000);
      let timer;
      await Promise.race([c.closed, new Promise((_, rej) => { timer = setTimeout(() => rej(new Error('still open after the close handshake')), 3_000); })]);
      clearTimeout(timer);
    } finally {
      c.sock.destroy();
    }
  });

  test('upgrade refusals: 401 without or with a bad token, 400 without upgrade headers, 426 for another version', async () => {
    const bad = {
      missing: null,
      malformed: 'abc',
      expired: mintToken({ sub: 'alice', ttlS: -60 }),
      wrongSecret: mintToken({ sub: 'alice', secret: 'another-secret' }),
      algNone: mintToken({ sub: 'alice', header: { alg: 'none' } }),
      noSub: mintToken({}),
    };
    for (const [what, token] of Object.entries(bad)) {
      const err = await connect(srv.port, token, { name: what }).then(
        (c) => { c.ws.terminate(); return null; }, (e) => e);
      assert.ok(err, `${what}: the upgrade succeeded`);
      assert.equal(err.status, 401, `${what}: ${err.message}`);
      assert.equal(errorShape({ json: err.json, text: err.body }), null, `${what}: ${err.body}`);
      assert.equal(err.json.error.code, 'unauthorized');
    }
    // The token in the Authorization header works as well as in the query.
    const viaHeader = await connect(srv.port, null, { name: 'header', headers: { authorization: `Bearer ${alice}` } });
    assert.equal((await viaHeader.ok({ op: 'ping' })).op, 'pong');
    assert.equal((await viaHeader.end()).code, 1000, 'the server answers a client close with its code');

    const plain = await api(srv.url, 'GET', '/v1/ws', { token: alice });
    assert.equal(plain.status, 400, plain.text);
    assert.equal(errorShape(plain), null);
    assert.equal(plain.json.error.code, 'bad_request');

    const v14 = await rawRequest(srv.port, upgradeHead(`/v1/ws?access_token=${alice}`, 'Sec-WebSocket-Version: 14\r\n'));
    assert.equal(v14.status, 426, v14.raw.slice(0, 300));
    assert.equal(v14.headers['sec-websocket-version'], '13', 'a 426 names the supported version');

    const noKey = await rawRequest(srv.port,
      `GET /v1/ws?access_token=${alice} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n` +
      'Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n');
    assert.equal(noKey.status, 400, noKey.raw.slice(0, 300));

    const post = await api(srv.url, 'POST', '/v1/ws', { token: alice, body: {} });
    assert.ok(post.status === 405 || post.status === 400, post.text);
    assert.equal(errorShape(post), null);
  });

  test('token expiry closes with 1008 unless the client sent a fresh token with auth', async () => {
    const s2 = await startServer({ 'ws.heartbeat_ms': 100, 'ws.timeout_ms': 5000 });
    let stale, renewed;
    try {
      const short = mintToken({ sub: 'alice', ttlS: 1 });
      stale = await connect(s2.port, short, { name: 'stale' });
      renewed = await connect(s2.port, short, { name: 'renewed' });
      assert.deepEqual(await renewed.request({ op: 'auth', token: tokenFor('alice'), ref: 'fresh' }), { op: 'ack', ref: 'fresh' });
      const closed = await stale.waitClose({ timeoutMs: 5_000 });
      assert.equal(closed.code, 1008, JSON.stringify(closed));
      assert.match(closed.reason, /expired/);
      assert.equal(renewed.close, null, renewed.describe());
      assert.equal((await renewed.ok({ op: 'ping' })).op, 'pong');
    } finally {
      await closeAll([stale, renewed]);
      await s2.stop();
    }
  });

  test('a peer that answers no pings is closed after ws.timeout_ms; one that answers stays', async () => {
    const s2 = await startServer({ 'ws.heartbeat_ms': 100, 'ws.timeout_ms': 400 });
    let silent, alive;
    try {
      const t0 = Date.now();
      silent = await connect(s2.port, alice, { name: 'silent', wsOptions: { autoPong: false } });
      alive = await connect(s2.port, alice, { name: 'alive' });
      assert.equal(alive.hello.heartbeat_ms, 100);
      const closed = await silent.waitClose({ timeoutMs: 5_000 });
      assert.equal(closed.code, 1001, JSON.stringify(closed));
      assert.equal(closed.reason, 'heartbeat timeout');
      assert.ok(silent.pings >= 2, `the silent peer was pinged (${silent.pings})`);
      assert.ok(Date.now() - t0 >= 380, `closed after ${Date.now() - t0} ms, before the 400 ms timeout`);
      // The answering peer outlives three timeouts (counted in server pings).
      await alive.waitFor((c) => c.pings >= 14, { timeoutMs: 5_000, what: '14 pings' });
      assert.equal(alive.close, null);
      assert.equal((await alive.ok({ op: 'ping' })).op, 'pong');
    } finally {
      await closeAll([silent, alive]);
      await s2.stop();
    }
  });

  test('server stop closes every connection with 1001 and exits 0', async () => {
    const s2 = await startServer({});
    const a = await connect(s2.port, alice, { name: 'a' });
    const b = await connect(s2.port, alice, { name: 'b' });
    const run = await api(s2.url, 'POST', '/v1/runs', { token: alice, body: { kind: 'external', input: {} } });
    await a.ok({ op: 'subscribe', topic: `run:${run.json.id}` });
    await b.ok({ op: 'join', room: 'stopping' });
    await s2.stop();
    assert.equal((await a.waitClose({ timeoutMs: 5_000 })).code, 1001);
    assert.equal((await b.waitClose({ timeoutMs: 5_000 })).code, 1001);
  });
});

describe('WebSocket subscription limit', { timeout: 30_000 }, () => {
  let srv;
  before(async () => { srv = await startServer({ 'ws.max_subscriptions': 3 }); });
  after(async () => { if (srv) await srv.stop(); });

  test('past ws.max_subscriptions subscribe and join answer too_large; unsubscribing frees a slot', async () => {
    const ws = await connect(srv.port, alice, { name: 'alice' });
    try {
      await ws.ok({ op: 'subscribe', topic: 'room:l1' });
      await ws.ok({ op: 'join', room: 'l2' });
      await ws.ok({ op: 'subscribe', topic: 'room:l3' });
      const over = await ws.request({ op: 'subscribe', topic: 'room:l4', ref: 'over' });
      assert.equal(wsErrorShape(over, { ref: 'over', code: 'too_large' }), null);
      const overJoin = await ws.request({ op: 'join', room: 'l4', ref: 'over-join' });
      assert.equal(wsErrorShape(overJoin, { ref: 'over-join', code: 'too_large' }), null);
      const members = await api(srv.url, 'GET', '/v1/rooms/l4/presence', { token: alice });
      assert.deepEqual(members.json, { members: [] }, 'a refused join leaves no presence');
      // join of a room already followed adds presence only: no extra slot needed.
      const j3 = await ws.ok({ op: 'join', room: 'l3' });
      assert.equal(j3.topic, 'room:l3');

      await ws.ok({ op: 'unsubscribe', topic: 'room:l1' });
      await ws.ok({ op: 'subscribe', topic: 'room:l4' });
      const sent = await ws.ok({ op: 'send', room: 'l4', text: 'counted' });
      await ws.waitFor((x) => x.events('room:l4').some((e) => e.seq === sent.seq), { what: 'the l4 message' });
      assert.equal(ws.close, null);
    } finally {
      await closeAll([ws]);
    }
  });
});
