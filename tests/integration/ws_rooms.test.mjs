// Rooms over WebSocket (GET /v1/ws): concurrent sends fan out to every member in one seq order,
// a member that drops resumes with `join {after}` and ends with every message exactly once,
// client_msg_id deduplication, presence (joined / left on leave and on disconnect) and the
// presence endpoint.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { api, startServer, tokenFor, waitUntil } from './lib/server.mjs';
import { range } from './lib/sse.mjs';
import { closeAll, connect } from './lib/ws.mjs';

let srv;
const alice = tokenFor('alice', 'user');
const bob = tokenFor('bob', 'user');
const carol = tokenFor('carol', 'user');

before(async () => { srv = await startServer({}); });
after(async () => { if (srv) await srv.stop(); });

const messageKeys = (m) => ({ seq: m.seq, message_id: m.data.message_id });

/// Checks one client's view of a room: message events only, seqs strictly increasing and
/// contiguous from `first`, well-formed.
function checkRoomEvents(events, topic, first, count, who) {
  assert.equal(events.length, count, `${who}: ${events.length} events, expected ${count}`);
  for (const [i, e] of events.entries()) {
    if (e.topic !== topic || e.type !== 'message' || e.seq !== first + i ||
        typeof e.ts !== 'number' || typeof e.data?.message_id !== 'string') {
      assert.fail(`${who}: event #${i} is ${JSON.stringify(e)}, expected a message of ${topic} with seq ${first + i}`);
    }
  }
}

describe('rooms over WebSocket', { timeout: 60_000 }, () => {
  test('three members send 100 messages each concurrently: all 300 reach everyone in one seq order', async () => {
    const room = 'ws.fanout';
    const topic = `room:${room}`;
    const names = ['alice', 'bob', 'carol'];
    const clients = await Promise.all([alice, bob, carol].map((t, i) => connect(srv.port, t, { name: names[i] })));
    try {
      for (const c of clients) {
        const ack = await c.ok({ op: 'join', room });
        assert.deepEqual({ ...ack, ref: undefined }, { op: 'ack', ref: undefined, topic, last_seq: 0, recovered: true });
      }
      // Fire every send without waiting, then await all answers.
      const pending = clients.map((c, k) => range(0, 99).map((i) =>
        c.request({ op: 'send', room, text: `${names[k]}-${i}`, client_msg_id: `${names[k]}/${i}` }, { timeoutMs: 15_000 })));
      const acks = await Promise.all(pending.map((p) => Promise.all(p)));
      for (const [k, list] of acks.entries()) {
        for (const a of list) {
          assert.equal(a.op, 'ack', `${names[k]}: ${JSON.stringify(a)}`);
          assert.match(a.message_id, /^[A-Za-z0-9_-]{16,}$/);
          assert.equal(typeof a.seq, 'number');
        }
        // One connection's sends take effect in order.
        for (let i = 1; i < list.length; i++) {
          assert.ok(list[i].seq > list[i - 1].seq, `${names[k]}: ack ${i} seq ${list[i].seq} after ${list[i - 1].seq}`);
        }
      }
      const allAcks = acks.flat();
      assert.deepEqual(allAcks.map((a) => a.seq).sort((x, y) => x - y), range(1, 300), 'the acks cover seqs 1..300');

      await Promise.all(clients.map((c) => c.waitForEvents(topic, 300, { timeoutMs: 15_000 })));
      // A sentinel after everything: whatever a member got before it is all it will get of 1..300.
      const sentinel = await clients[0].ok({ op: 'send', room, text: 'sentinel' });
      assert.equal(sentinel.seq, 301);
      await Promise.all(clients.map((c) => c.waitFor((x) => x.events(topic).some((e) => e.seq === 301),
        { what: 'the sentinel' })));

      const views = clients.map((c) => c.events(topic).slice(0, 300));
      for (const [k, c] of clients.entries()) {
        checkRoomEvents(c.events(topic), topic, 1, 301, names[k]);
      }
      for (const k of [1, 2]) {
        assert.deepEqual(views[k].map(messageKeys), views[0].map(messageKeys), `${names[k]} and alice saw different lists`);
      }
      const ids = new Set(views[0].map((e) => e.data.message_id));
      assert.equal(ids.size, 300, '300 distinct message ids');
      const bySeq = new Map(views[0].map((e) => [e.seq, e]));
      for (const a of allAcks) {
        assert.equal(bySeq.get(a.seq)?.data.message_id, a.message_id, `ack ${JSON.stringify(a)} matches its event`);
      }
      for (const [k, name] of names.entries()) {
        const own = views[0].filter((e) => e.data.user === name);
        assert.deepEqual(own.map((e) => e.data.text), range(0, 99).map((i) => `${name}-${i}`), `${name}'s texts in send order`);
        assert.deepEqual(own.map((e) => e.data.client_msg_id), range(0, 99).map((i) => `${name}/${i}`));
        assert.deepEqual(own.map((e) => e.seq), acks[k].map((a) => a.seq));
      }
      for (const c of clients) assert.deepEqual(c.badFrames, [], `${c.name}: non-JSON frames`);
    } finally {
      await closeAll(clients);
    }
  });

  test('a member that drops mid-way rejoins with after = its last seq and gets every message exactly once', async () => {
    const room = 'ws.resume';
    const topic = `room:${room}`;
    const DROP_AT = 100;
    const a = await connect(srv.port, alice, { name: 'alice' });
    const b = await connect(srv.port, bob, { name: 'bob' });
    // carol drops the connection right after her 100th event (what else arrived is ignored).
    const c1 = await connect(srv.port, carol, {
      name: 'carol#1',
      onMessage: (m, c) => { if (m.op === 'event' && c.events(topic).length === DROP_AT) c.crash(); },
    });
    let c2;
    try {
      for (const c of [a, b, c1]) await c.ok({ op: 'join', room });
      const burst = (from, to) => Promise.all([a, b].flatMap((c, k) => range(from, to).map((i) =>
        c.ok({ op: 'send', room, text: `${k}:${i}` }, { timeoutMs: 15_000 }))));

      await burst(0, 74);  // 150 messages; carol drops at 100 while they are in flight
      await waitUntil(() => c1.frozen && c1.close, { timeoutMs: 10_000, what: 'carol#1 to drop' });
      const seen = c1.seqs(topic);
      assert.deepEqual(seen, range(1, DROP_AT), 'carol#1 got 1..100 before she dropped');

      c2 = await connect(srv.port, carol, { name: 'carol#2' });
      const ack = await c2.ok({ op: 'join', room, after: seen.at(-1) });
      assert.equal(ack.topic, topic);
      assert.equal(ack.last_seq, 150, 'the room had 150 messages when carol came back');
      assert.equal(ack.recovered, true);

      await burst(75, 149);  // 150 more, live
      await Promise.all([a, b].map((c) => c.waitForEvents(topic, 300, { timeoutMs: 15_000 })));
      await c2.waitForEvents(topic, 300 - DROP_AT, { timeoutMs: 15_000 });
      const sentinel = await a.ok({ op: 'send', room, text: 'sentinel' });
      await c2.waitFor((x) => x.events(topic).some((e) => e.seq === sentinel.seq), { what: 'the sentinel' });

      checkRoomEvents(c2.events(topic), topic, DROP_AT + 1, 301 - DROP_AT, 'carol#2');
      const carolAll = [...c1.events(topic), ...c2.events(topic)].slice(0, 300);
      assert.deepEqual(carolAll.map(messageKeys), a.events(topic).slice(0, 300).map(messageKeys),
        'carol\'s two connections together saw exactly what alice saw');
      assert.deepEqual(b.events(topic).slice(0, 300).map(messageKeys), a.events(topic).slice(0, 300).map(messageKeys));
      assert.deepEqual(carolAll.map((e) => e.seq), range(1, 300));

      // alice and bob saw carol#1 leave (the connection died) and carol#2 join.
      await a.waitForMessage((m) => m.op === 'presence' && m.left?.session_id === c1.sessionId, { what: 'carol#1 left' });
      const rejoined = await a.waitForMessage((m) => m.op === 'presence' && m.joined?.session_id === c2.sessionId,
        { what: 'carol#2 joined' });
      assert.deepEqual(rejoined, { op: 'presence', room, joined: { user: 'carol', session_id: c2.sessionId } });
    } finally {
      await closeAll([a, b, c1, c2]);
    }
  });

  test('ops of a connection take effect in order; join starts at "now" unless after is given', async () => {
    const room = 'ws.order';
    const topic = `room:${room}`;
    const before0 = await api(srv.url, 'POST', `/v1/rooms/${room}/messages`, { token: bob, body: { text: 'before' } });
    assert.equal(before0.status, 202, before0.text);
    assert.equal(before0.json.seq, 1);
    const a = await connect(srv.port, alice, { name: 'alice' });
    const late = await connect(srv.port, carol, { name: 'carol' });
    try {
      // join, send, ping written at once: the send is in the room after the join took effect.
      const [joined, sent, pong] = await Promise.all([
        a.request({ op: 'join', room, ref: 'j' }),
        a.request({ op: 'send', room, text: 'mine', ref: 's' }),
        a.request({ op: 'ping', ref: 'p' }),
      ]);
      assert.deepEqual(joined, { op: 'ack', ref: 'j', topic, last_seq: 1, recovered: true });
      assert.deepEqual(sent, { op: 'ack', ref: 's', message_id: sent.message_id, seq: 2 });
      assert.deepEqual(pong, { op: 'pong', ref: 'p' });
      const answers = a.log.filter((m) => m.ref);
      assert.deepEqual(answers.map((m) => m.ref), ['j', 's', 'p'], 'answers in op order');
      await a.waitForEvents(topic, 1);
      const mark = a.log.length;
      // leave, then a message over HTTP: not delivered; join with after gets exactly it.
      await a.ok({ op: 'leave', room });
      const http = await api(srv.url, 'POST', `/v1/rooms/${room}/messages`, { token: bob, body: { text: 'while away' } });
      assert.equal(http.json.seq, 3);
      const again = await a.ok({ op: 'join', room, after: 2 });
      assert.equal(again.last_seq, 3);
      await a.waitForEvents(topic, 2);
      await a.ok({ op: 'ping' });
      assert.deepEqual(a.events(topic).map((e) => [e.seq, e.data.text]), [[2, 'mine'], [3, 'while away']],
        'not the message from before the first join; the one while away exactly once');
      assert.ok(a.log.slice(mark).filter((m) => m.op === 'event').every((e) => e.seq === 3));

      // subscribe (no presence) with after 0 replays the room from its start.
      const sub = await late.ok({ op: 'subscribe', topic, after: 0 });
      assert.equal(sub.last_seq, 3);
      await late.waitForEvents(topic, 3);
      assert.deepEqual(late.events(topic).map((e) => e.data.text), ['before', 'mine', 'while away']);
      assert.equal(late.ops('presence').length, 0);
      assert.ok(!a.log.some((m) => m.op === 'presence' && m.joined?.session_id === late.sessionId),
        'a subscribe is not a join');
    } finally {
      await closeAll([a, late]);
    }
  });

  test('a retried send with the same client_msg_id yields one event and the same answer', async () => {
    const room = 'ws.dedup';
    const topic = `room:${room}`;
    const observer = await connect(srv.port, carol, { name: 'observer' });
    const a1 = await connect(srv.port, alice, { name: 'alice#1' });
    const a2 = await connect(srv.port, alice, { name: 'alice#2' });
    const b = await connect(srv.port, bob, { name: 'bob' });
    try {
      await observer.ok({ op: 'join', room });
      const strip = ({ message_id, seq }) => ({ message_id, seq });
      const first = await a1.ok({ op: 'send', room, text: 'once', client_msg_id: 'm-1' });
      const retry = await a1.ok({ op: 'send', room, text: 'once', client_msg_id: 'm-1' });
      assert.deepEqual(Object.keys(retry).sort(), ['message_id', 'op', 'ref', 'seq']);
      assert.deepEqual(strip(retry), strip(first), 'the retry answers the first reply');
      // Two retries at once, and one from another connection of the same user.
      const [r2, r3, r4] = await Promise.all([
        a1.ok({ op: 'send', room, text: 'once', client_msg_id: 'm-1' }),
        a1.ok({ op: 'send', room, text: 'once', client_msg_id: 'm-1' }),
        a2.ok({ op: 'send', room, text: 'once', client_msg_id: 'm-1' }),
      ]);
      for (const r of [r2, r3, r4]) assert.deepEqual(strip(r), strip(first));
      // Over HTTP the same user's retry is the same message too.
      const http = await api(srv.url, 'POST', `/v1/rooms/${room}/messages`,
        { token: alice, body: { text: 'once', client_msg_id: 'm-1' } });
      assert.equal(http.status, 202, http.text);
      assert.deepEqual(http.json, strip(first));

      const other = await b.ok({ op: 'send', room, text: 'mine', client_msg_id: 'm-1' });
      assert.notEqual(other.message_id, first.message_id, 'another user is not deduplicated');
      assert.equal(other.seq, first.seq + 1, 'the retries appended nothing');

      await observer.waitFor((x) => x.events(topic).some((e) => e.seq === other.seq), { what: 'bob\'s message' });
      const seen = observer.events(topic).map((e) => ({ seq: e.seq, ...e.data }));
      assert.deepEqual(seen, [
        { seq: first.seq, message_id: first.message_id, user: 'alice', text: 'once', client_msg_id: 'm-1' },
        { seq: other.seq, message_id: other.message_id, user: 'bob', text: 'mine', client_msg_id: 'm-1' },
      ]);
    } finally {
      await closeAll([observer, a1, a2, b]);
    }
  });

  // Presence is announced per user: `joined` when a user's first session joins, `left` when its
  // last session leaves (the room actor's rule); a further session of a present user only
  // changes the session count of the presence endpoint.
  test('presence: joined and left (leave op and disconnect) reach the others; the endpoint counts sessions', async () => {
    const room = 'ws.presence';
    const topic = `room:${room}`;
    const presence = async () => {
      const res = await api(srv.url, 'GET', `/v1/rooms/${room}/presence`, { token: carol });
      assert.equal(res.status, 200, res.text);
      return Object.fromEntries(res.json.members.map((m) => [m.user, m.sessions]));
    };
    const a = await connect(srv.port, alice, { name: 'alice#1' });
    const b = await connect(srv.port, bob, { name: 'bob' });
    const a2 = await connect(srv.port, alice, { name: 'alice#2' });
    const c = await connect(srv.port, carol, { name: 'carol' });
    assert.notEqual(a.sessionId, a2.sessionId, 'every connection has its own session id');
    const isJoin = (sid) => (m) => m.op === 'presence' && m.joined?.session_id === sid;
    const isLeft = (sid) => (m) => m.op === 'presence' && m.left?.session_id === sid;
    const sessionsIn = (x) => x.ops('presence').map((m) => `${m.joined ? '+' : '-'}${(m.joined ?? m.left).session_id}`);
    try {
      await a.ok({ op: 'join', room });
      assert.deepEqual(await presence(), { alice: 1 });

      await b.ok({ op: 'join', room });
      const bJoined = await a.waitForMessage(isJoin(b.sessionId), { what: 'bob joined' });
      assert.deepEqual(bJoined, { op: 'presence', room, joined: { user: 'bob', session_id: b.sessionId } });

      await a2.ok({ op: 'join', room });  // alice is present already: not announced
      assert.deepEqual(await presence(), { alice: 2, bob: 1 });
      await c.ok({ op: 'join', room });
      const cJoined = await b.waitForMessage(isJoin(c.sessionId), { what: 'carol joined (at bob)' });
      assert.deepEqual(cJoined, { op: 'presence', room, joined: { user: 'carol', session_id: c.sessionId } });
      await a.waitForMessage(isJoin(c.sessionId), { what: 'carol joined (at alice#1)' });
      await a2.waitForMessage(isJoin(c.sessionId), { what: 'carol joined (at alice#2)' });
      // carol's join came after bob's own and alice#2's: bob was told about neither.
      assert.deepEqual(sessionsIn(b), [`+${c.sessionId}`], 'bob sees only carol\'s join');
      assert.deepEqual(sessionsIn(a), [`+${b.sessionId}`, `+${c.sessionId}`]);
      assert.deepEqual(sessionsIn(c), [], 'a session never sees its own join');
      assert.deepEqual(await presence(), { alice: 2, bob: 1, carol: 1 });

      // leave: an ack, a `left` for the others, and bob is no longer a member.
      const leaveAck = await b.ok({ op: 'leave', room, ref: 'bye' });
      assert.deepEqual(leaveAck, { op: 'ack', ref: 'bye' });
      const bLeft = await a.waitForMessage(isLeft(b.sessionId), { what: 'bob left' });
      assert.deepEqual(bLeft, { op: 'presence', room, left: { user: 'bob', session_id: b.sessionId } });
      await c.waitForMessage(isLeft(b.sessionId), { what: 'bob left (at carol)' });
      assert.deepEqual(await presence(), { alice: 2, carol: 1 });
      assert.equal((await b.ok({ op: 'leave', room })).op, 'ack', 'leave is idempotent');

      // Join again, then the connection closes: `left` as well.
      const sinceRejoin = a.log.length;
      await b.ok({ op: 'join', room });
      await a.waitForMessage(isJoin(b.sessionId), { from: sinceRejoin, what: 'bob joined again' });
      assert.equal((await presence()).bob, 1);
      await b.end();
      await a.waitForMessage(isLeft(b.sessionId), { from: sinceRejoin, what: 'bob left by disconnecting' });
      await waitUntil(async () => (await presence()).bob === undefined, { timeoutMs: 5_000, what: 'bob gone' });

      // alice#2 drops without a close handshake: alice counts one session and stays present.
      a2.crash();
      await waitUntil(async () => (await presence()).alice === 1, { timeoutMs: 5_000, what: 'alice: 1 session' });
      const beforeCarolLeft = a.log.length;
      await c.end();
      await a.waitForMessage(isLeft(c.sessionId), { what: 'carol left by disconnecting' });
      assert.ok(!a.log.some(isLeft(a2.sessionId)), 'alice is still present: no left for alice#2');
      assert.deepEqual(sessionsIn(a).slice(-1), [`-${c.sessionId}`]);
      assert.ok(a.log.length > beforeCarolLeft);
      assert.deepEqual(await presence(), { alice: 1 });

      // Room events still reach the remaining member; presence frames carry no seq.
      const sent = await a.ok({ op: 'send', room, text: 'still here' });
      await a.waitFor((x) => x.events(topic).some((e) => e.seq === sent.seq), { what: 'own message' });
      for (const m of a.ops('presence')) assert.ok(!('seq' in m), JSON.stringify(m));

      // The last session leaves: the room's presence is empty.
      await a.end();
      await waitUntil(async () => Object.keys(await presence()).length === 0, { timeoutMs: 5_000, what: 'empty presence' });
    } finally {
      await closeAll([a, b, a2, c]);
    }
  });
});
