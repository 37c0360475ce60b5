// A small WebSocket client for black-box tests of GET /v1/ws, over the npm `ws` package (8.18.3).
//
// connect() resolves once the server's `hello` arrived. Every text frame is parsed and recorded in
// arrival order (`log`); tests wait on conditions over that log with deadlines (waitFor,
// waitForMessage, waitForEvents), send ops with a unique `ref` and await the answer carrying it
// (request), and read the close code the server sent (closed / waitClose).

import net from 'node:net';

import WebSocket from 'ws';

let refCounter = 0;
const nextRef = () => `r${++refCounter}`;

/// ws://127.0.0.1:port/v1/ws?access_token=token&…query
export function wsUrl(port, token, query = {}) {
  const q = new URLSearchParams();
  if (token !== undefined && token !== null) q.set('access_token', token);
  for (const [k, v] of Object.entries(query)) q.set(k, String(v));
  const s = q.toString();
  return `ws://127.0.0.1:${port}/v1/ws${s ? `?${s}` : ''}`;
}

export class WsClient {
  /// Use connect(); `ws` is a `ws` WebSocket that has not opened yet.
  constructor(ws, { name = 'ws', onMessage } = {}) {
    this.ws = ws;
    this.name = name;
    this.log = [];            // every parsed message, in arrival order
    this.rawTexts = 0;
    this.badFrames = [];      // frames that were not JSON objects (a contract violation)
    this.hello = null;
    this.close = null;        // {code, reason} once closed
    this.error = null;
    this.frozen = false;      // freeze(): later messages are not recorded (a simulated crash)
    this.onMessage = onMessage;
    this.waiters = new Set();
    let resolveClosed;
    this.closed = new Promise((r) => { resolveClosed = r; });
    ws.on('message', (data, isBinary) => {
      if (this.frozen) return;
      this.rawTexts++;
      let msg;
      try { msg = JSON.parse(isBinary ? data.toString('utf8') : data.toString()); } catch { msg = undefined; }
      if (isBinary || !msg || typeof msg !== 'object' || Array.isArray(msg)) {
        this.badFrames.push(String(data).slice(0, 200));
        this.check();
        return;
      }
      if (msg.op === 'hello' && !this.hello) this.hello = msg;
      this.log.push(msg);
      if (this.onMessage) this.onMessage(msg, this);
      this.check();
    });
    this.pings = 0;           // server ping frames seen (the `ws` client answers them itself)
    ws.on('ping', () => { this.pings++; this.check(); });
    ws.on('error', (e) => { this.error = e; });
    ws.on('close', (code, reason) => {
      this.close = { code, reason: reason.toString() };
      resolveClosed(this.close);
      this.check();
    });
  }

  get sessionId() { return this.hello?.session_id; }

  /// Sends an object as JSON (or a string / Buffer as it is), without waiting for anything.
  send(obj, opts) {
    this.ws.send(typeof obj === 'string' || Buffer.isBuffer(obj) ? obj : JSON.stringify(obj), opts);
  }

  /// Sends `op` with a fresh unique ref (unless it has one) and resolves with the answer that
  /// echoes it (ack, error or pong). Rejects on timeout or when the connection closes first.
  request(op, { timeoutMs = 5_000 } = {}) {
    const ref = op.ref ?? nextRef();
    const msg = { ...op, ref };
    this.send(msg);
    return this.waitForMessage((m) => m.ref === ref && m.op !== 'event',
      { timeoutMs, what: `the answer to ${JSON.stringify(msg).slice(0, 120)}` });
  }

  /// Like request(), but requires an ack (throws with the error answer otherwise).
  async ok(op, opts) {
    const a = await this.request(op, opts);
    if (a.op !== 'ack' && a.op !== 'pong') {
      throw new Error(`${this.name}: ${JSON.stringify(op).slice(0, 120)} answered ${JSON.stringify(a)}`);
    }
    return a;
  }

  /// Messages (op event) of `topic`, in arrival order.
  events(topic) { return this.log.filter((m) => m.op === 'event' && m.topic === topic); }
  seqs(topic) { return this.events(topic).map((m) => m.seq); }
  ops(op) { return this.log.filter((m) => m.op === op); }

  check() {
    for (const w of [...this.waiters]) {
      let v;
      try { v = w.pred(this); } catch (e) { this.waiters.delete(w); w.reject(e); continue; }
      if (v) { this.waiters.delete(w); w.resolve(v); } else if (this.close && !w.allowClosed) {
        this.waiters.delete(w);
        w.reject(new Error(`${this.name}: connection closed (${this.close.code} ${this.close.reason}) ` +
                           `before ${w.what}; ${this.describe()}`));
      }
    }
  }

  /// Resolves with the truthy value of pred(client); rejects on timeout or when the connection
  /// closes before it holds.
  waitFor(pred, { timeoutMs = 10_000, what = 'condition', allowClosed = false } = {}) {
    return new Promise((resolve, reject) => {
      const w = {
        pred, what, allowClosed,
        resolve: (v) => { clearTimeout(w.timer); resolve(v); },
        reject: (e) => { clearTimeout(w.timer); reject(e); },
      };
      w.timer = setTimeout(() => {
        this.waiters.delete(w);
        reject(new Error(`${this.name}: timed out after ${timeoutMs} ms waiting for ${what}; ${this.describe()}`));
      }, timeoutMs);
      this.waiters.add(w);
      this.check();
    });
  }

  /// The first logged message (from index `from`) for which pred(msg) holds.
  waitForMessage(pred, { from = 0, ...opts } = {}) {
    return this.waitFor((c) => {
      for (let i = from; i < c.log.length; i++) if (pred(c.log[i])) return c.log[i];
      return null;
    }, { what: 'a matching message', ...opts });
  }

  waitForEvents(topic, n, opts = {}) {
    return this.waitFor((c) => { const e = c.events(topic); return e.length >= n ? e : null; },
      { what: `${n} events of ${topic}`, ...opts });
  }

  /// Resolves {code, reason} when the connection is closed; rejects after timeoutMs.
  async waitClose({ timeoutMs = 10_000 } = {}) {
    let timer;
    const t = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${this.name}: not closed within ${timeoutMs} ms; ${this.describe()}`)), timeoutMs);
    });
    try { return await Promise.race([this.closed, t]); } finally { clearTimeout(timer); }
  }

  /// Stops recording messages (what arrives later is ignored) and kills the TCP connection.
  crash() {
    this.frozen = true;
    this.ws.terminate();
  }

  /// Polite close (1000) and wait for the close handshake (bounded).
  async end({ timeoutMs = 5_000 } = {}) {
    if (this.close) return this.close;
    try { this.ws.close(1000); } catch { /* closing already */ }
    return this.waitClose({ timeoutMs });
  }

  describe() {
    const last = this.log.slice(-3).map((m) => JSON.stringify(m).slice(0, 160)).join(' | ');
    return `[${this.name} session=${this.sessionId} messages=${this.log.length} ` +
           `close=${this.close ? `${this.close.code} ${this.close.reason}` : '-'}` +
           `${this.error ? ` error=${this.error.message}` : ''} last: ${last}]`;
  }
}

/// Opens /v1/ws with `token` in the access_token query (omit it with token null; put it in a
/// header with {headers: {authorization}}). Resolves the WsClient after `hello`; rejects when the
/// upgrade fails (err.status, err.body carry an HTTP answer) or no hello comes within timeoutMs.
export function connect(port, token, { query = {}, headers, timeoutMs = 5_000, name, wsOptions = {}, onMessage } = {}) {
  const ws = new WebSocket(wsUrl(port, token, query), { headers, handshakeTimeout: timeoutMs, ...wsOptions });
  const client = new WsClient(ws, { name, onMessage });
  return new Promise((resolve, reject) => {
    let settled = false;
    const timer = setTimeout(() => fail(new Error(`${client.name}: no hello within ${timeoutMs} ms; ${client.describe()}`)), timeoutMs);
    function fail(err) {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      try { ws.terminate(); } catch { /* not open */ }
      reject(err);
    }
    ws.on('unexpected-response', (req, res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      const done = () => {
        const err = new Error(`${client.name}: upgrade answered HTTP ${res.statusCode}: ${body.slice(0, 300)}`);
        err.status = res.statusCode;
        err.headers = res.headers;
        err.body = body;
        try { err.json = JSON.parse(body); } catch { err.json = undefined; }
        req.destroy();
        fail(err);
      };
      res.on('end', done);
      res.on('error', done);
    });
    ws.on('error', (e) => fail(e));
    ws.on('close', () => fail(new Error(`${client.name}: closed before hello; ${client.describe()}`)));
    client.waitFor((c) => c.hello, { timeoutMs: timeoutMs + 1_000, what: 'hello' }).then(() => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(client);
    }, fail);
  });
}

/// Contract shape of an error answer: {"op":"error","ref"?,"topic"?,"code","message"}, nothing else,
/// and a code of the contract's list. Returns null when fine, else what is wrong.
export const ERROR_CODES = ['bad_request', 'unauthorized', 'forbidden', 'not_found', 'conflict',
  'too_large', 'rate_limited', 'unavailable', 'internal'];
export function wsErrorShape(m, { ref, code } = {}) {
  if (!m || m.op !== 'error') return `not an error: ${JSON.stringify(m)}`;
  const extra = Object.keys(m).filter((k) => !['op', 'ref', 'topic', 'code', 'message'].includes(k));
  if (extra.length) return `unexpected keys ${JSON.stringify(extra)}: ${JSON.stringify(m)}`;
  if (typeof m.code !== 'string' || !ERROR_CODES.includes(m.code)) return `code not in the contract: ${JSON.stringify(m)}`;
  if (typeof m.message !== 'string' || m.message.length === 0) return `message is not a non-empty string: ${JSON.stringify(m)}`;
  if (ref !== undefined && m.ref !== ref) return `ref ${JSON.stringify(m.ref)}, expected ${JSON.stringify(ref)}: ${JSON.stringify(m)}`;
  if (ref === undefined && 'ref' in m) return `ref present though none was sent: ${JSON.stringify(m)}`;
  if (code !== undefined && m.code !== code) return `code ${m.code}, expected ${code}: ${JSON.stringify(m)}`;
  return null;
}

/// Closes every client (ignoring ones already closed), bounded.
export async function closeAll(clients) {
  await Promise.all(clients.filter(Boolean).map((c) => c.end().catch(() => c.ws.terminate())));
}

// ---------------------------------------------------------------------------------------------
// A raw WebSocket client over node:net for hostile input: it writes whatever bytes it is given
// (masked or not, any opcode) and parses the server's frames.

/// A client frame: opcode, payload (string or Buffer); mask (default true), fin (default true),
/// rsv (bits 0x70 of the first byte).
export function clientFrame(opcode, payload = '', { mask = true, fin = true, rsv = 0 } = {}) {
  const p = Buffer.from(payload);
  const head = [(fin ? 0x80 : 0) | rsv | opcode];
  const m = mask ? 0x80 : 0;
  if (p.length < 126) head.push(m | p.length);
  else if (p.length < 65536) head.push(m | 126, p.length >> 8, p.length & 255);
  else {
    head.push(m | 127);
    const len = Buffer.alloc(8);
    len.writeBigUInt64BE(BigInt(p.length));
    head.push(...len);
  }
  const key = Buffer.from([0x12, 0x34, 0x56, 0x78]);
  const body = mask ? Buffer.from(p.map((b, i) => b ^ key[i % 4])) : p;
  return Buffer.concat([Buffer.from(head), mask ? key : Buffer.alloc(0), body]);
}

/// Upgrades over a raw TCP connection. Resolves {sock, status, frames, closed, send(bytes),
/// waitFrame(pred, ms)} once the 101 answer and the hello arrived. frames: [{opcode, payload,
/// code?, reason?, text?}] of the server, in order; closed resolves when the socket closes.
export function rawConnect(port, token, { timeoutMs = 5_000 } = {}) {
  const sock = net.connect({ host: '127.0.0.1', port });
  const state = { sock, status: null, frames: [], ended: false, waiters: new Set() };
  let buf = Buffer.alloc(0);
  let headDone = false;
  state.closed = new Promise((resolve) => sock.on('close', () => { state.ended = true; check(); resolve(); }));
  sock.on('error', () => { /* close follows */ });
  function check() {
    for (const w of [...state.waiters]) {
      const f = state.frames.find(w.pred);
      if (f) { state.waiters.delete(w); clearTimeout(w.timer); w.resolve(f); } else if (state.ended) {
        state.waiters.delete(w); clearTimeout(w.timer);
        w.reject(new Error(`socket closed before ${w.what}; frames: ${state.describe()}`));
      }
    }
  }
  state.describe = () => JSON.stringify(state.frames.map((f) => f.opcode === 8 ? `close ${f.code} ${f.reason}` : `op${f.opcode} ${(f.text ?? '').slice(0, 80)}`));
  state.waitFrame = (pred, { timeoutMs: ms = 5_000, what = 'a frame' } = {}) => new Promise((resolve, reject) => {
    const w = { pred, what, resolve, reject };
    w.timer = setTimeout(() => { state.waiters.delete(w); reject(new Error(`timed out waiting for ${what}; frames: ${state.describe()}`)); }, ms);
    state.waiters.add(w);
    check();
  });
  state.send = (bytes) => sock.write(bytes);
  sock.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
    if (!headDone) {
      const i = buf.indexOf('\r\n\r\n');
      if (i < 0) return;
      headDone = true;
      state.head = buf.subarray(0, i).toString('latin1');
      state.status = Number(/^HTTP\/1\.1 (\d{3})/.exec(state.head)?.[1]);
      buf = buf.subarray(i + 4);
    }
    for (;;) {
      if (buf.length < 2) break;
      const opcode = buf[0] & 0x0f;
      let len = buf[1] & 0x7f;
      let o = 2;
      if (len === 126) { if (buf.length < 4) break; len = buf.readUInt16BE(2); o = 4; } else if (len === 127) {
        if (buf.length < 10) break;
        len = Number(buf.readBigUInt64BE(2)); o = 10;
      }
      if (buf.length < o + len) break;
      const payload = buf.subarray(o, o + len);
      const f = { opcode, fin: (buf[0] & 0x80) !== 0, masked: (buf[1] & 0x80) !== 0, payload };
      if (opcode === 8) {
        f.code = payload.length >= 2 ? payload.readUInt16BE(0) : null;
        f.reason = payload.subarray(2).toString('utf8');
      } else if (opcode === 1) {
        f.text = payload.toString('utf8');
        try { f.json = JSON.parse(f.text); } catch { f.json = undefined; }
      }
      state.frames.push(f);
      buf = buf.subarray(o + len);
    }
    check();
  });
  const url = new URL(wsUrl(port, token));
  sock.write(`GET ${url.pathname}${url.search} HTTP/1.1\r\n` +
             'Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
             'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
  return state.waitFrame((f) => f.json?.op === 'hello', { timeoutMs, what: 'hello' }).then(() => state, (e) => {
    sock.destroy();
    throw e;
  });
}
