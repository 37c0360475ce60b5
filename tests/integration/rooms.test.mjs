// Rooms over HTTP: posting messages (seq, message_id, client_msg_id dedup), the room's SSE stream
// (from "now" by default, resume with Last-Event-ID / after), presence. WebSocket comes next.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { api, errorShape, startServer, tokenFor } from './lib/server.mjs';
import { openSse, range } from './lib/sse.mjs';

let srv;
const alice = tokenFor('alice', 'user');
const bob = tokenFor('bob', 'user');

before(async () => { srv = await startServer({}); });
after(async () => { if (srv) await srv.stop(); });

async function post(token, room, body) {
  const res = await api(srv.url, 'POST', `/v1/rooms/${room}/messages`, { token, body });
  assert.equal(res.status, 202, res.text);
  assert.match(res.json.message_id, /^[A-Za-z0-9_-]{16,}$/);
  assert.equal(typeof res.json.seq, 'number');
  return res.json;
}

describe('rooms over HTTP', { timeout: 60_000 }, () => {
  test('messages get consecutive seqs and a retried client_msg_id yields the same answer', async () => {
    const room = 'lobby.seq';
    const a = await post(alice, room, { text: 'hello' });
    const b = await post(bob, room, { text: 'hi', data: { mood: 'ok' }, client_msg_id: 'c-1' });
    const again = await post(bob, room, { text: 'hi', data: { mood: 'ok' }, client_msg_id: 'c-1' });
    assert.equal(b.seq, a.seq + 1);
    assert.deepEqual(again, b, 'a retry answers the first reply');
    const other = await post(alice, room, { text: 'hi', client_msg_id: 'c-1' });  // another user
    assert.equal(other.seq, b.seq + 1, 'the retry appended nothing; another user is not deduplicated');
  });

  test('the room stream starts at "now", delivers message events, and resumes by seq', async () => {
    const room = 'lobby:stream';
    await post(alice, room, { text: 'before anyone listens' });
    const url = `${srv.url}/v1/rooms/${room}/events`;
    const live = openSse(url, { token: bob });
    await live.waitFor((c) => c.status === 200, { what: 'stream open' });
    const sent = [];
    for (let i = 0; i < 20; i++) sent.push(await post(alice, room, { text: `m${i}`, client_msg_id: `id-${i}` }));
    await live.waitForEvents(20);
    assert.deepEqual(live.seqs(), sent.map((m) => m.seq), 'only messages after subscribing, in order');
    const first = live.events[0];
    assert.equal(first.event, 'message');
    assert.equal(first.json.type, 'message');
    assert.deepEqual(first.json.data, { message_id: sent[0].message_id, user: 'alice', text: 'm0', client_msg_id: 'id-0' });
    live.destroy();

    // A reconnecting member resumes after the last seq it saw: every later message exactly once.
    const resumed = openSse(url, { token: bob, headers: { 'last-event-id': String(sent[9].seq) } });
    await resumed.waitForEvents(10);
    assert.deepEqual(resumed.seqs(), range(sent[10].seq, sent[19].seq));
    resumed.destroy();
    const fromStart = openSse(`${url}?after=0`, { token: bob });
    await fromStart.waitForEvents(21);
    assert.deepEqual(fromStart.seqs(), range(1, 21), 'after=0 replays the whole ring');
    fromStart.destroy();
  });

  test('presence of a room nobody joined is empty; bad input answers the contract shape', async () => {
    const p = await api(srv.url, 'GET', '/v1/rooms/quiet-room/presence', { token: alice });
    assert.equal(p.status, 200, p.text);
    assert.deepEqual(p.json, { members: [] });

    const empty = await api(srv.url, 'POST', '/v1/rooms/r1/messages', { token: alice, body: {} });
    assert.equal(empty.status, 400, empty.text);
    assert.equal(errorShape(empty), null);
    assert.equal(empty.json.error.code, "bad_request");
    const badId = await api(srv.url, 'POST', '/v1/rooms/bad%20id/messages', { token: alice, body: { text: 'x' } });
    assert.equal(badId.status, 404, badId.text);
    const anon = await api(srv.url, 'POST', '/v1/rooms/r1/messages', { body: { text: 'x' } });
    assert.equal(anon.status, 401, anon.text);
    const big = await api(srv.url, 'POST', '/v1/rooms/r1/messages', { token: alice, body: { text: 'x'.repeat(20000) } });
    assert.equal(big.status, 413, big.text);
    assert.equal(big.json.error.code, 'too_large');
  });
});
