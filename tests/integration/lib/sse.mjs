// A small Server-Sent Events client over raw node:http for black-box tests: it parses frames
// (id / event / data / retry / comments) as the WHATWG spec does, records everything in arrival
// order, can wait on conditions with deadlines, and can be destroyed mid-stream (optionally right
// after its k-th event, ignoring whatever else arrived in the same chunk).

import http from 'node:http';
import https from 'node:https';

/// Incremental SSE parser. Feed it decoded text; it calls onItem for every complete item:
///   {kind: 'retry', value}            a `retry:` field with a decimal value
///   {kind: 'comment', text}           a line starting with ':'
///   {kind: 'event', id, hasId, event, data, json}   a dispatched event (blank line, data present)
/// `id` is the id field of this frame (hasId tells whether it had one). A partial frame at the end
/// of the stream is never dispatched.
export class SseParser {
  constructor(onItem, { keepData = true } = {}) {
    this.onItem = onItem;
    this.keepData = keepData;
    this.buf = '';
    this.reset();
  }

  reset() {
    this.data = null;   // string lines joined with \n, null: no data field yet
    this.event = '';
    this.id = undefined;
    this.dataLength = 0;
  }

  push(text) {
    this.buf += text;
    let start = 0;
    for (;;) {
      const nl = this.buf.indexOf('\n', start);
      if (nl < 0) break;
      let line = this.buf.slice(start, nl);
      if (line.endsWith('\r')) line = line.slice(0, -1);
      start = nl + 1;
      if (this.line(line) === false) { this.buf = ''; return; }
    }
    this.buf = this.buf.slice(start);
  }

  /// Returns false when the consumer asked to stop.
  line(line) {
    if (line === '') {
      if (this.data === null) { this.reset(); return true; }
      const item = { kind: 'event', id: this.id, hasId: this.id !== undefined, event: this.event || 'message' };
      if (this.keepData) {
        item.data = this.data;
        try { item.json = JSON.parse(this.data); } catch { item.json = undefined; }
      } else {
        item.dataLength = this.dataLength;
      }
      this.reset();
      return this.onItem(item);
    }
    if (line.startsWith(':')) {
      return this.onItem({ kind: 'comment', text: line.slice(1).replace(/^ /, '') });
    }
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    switch (field) {
      case 'data':
        if (this.keepData) {
          this.data = this.data === null ? value : `${this.data}\n${value}`;
        } else {
          this.dataLength += (this.data === null ? 0 : 1) + value.length;
          this.data = '';  // present, content not kept
        }
        break;
      case 'event': this.event = value; break;
      case 'id': if (!value.includes('\0')) this.id = value; break;
      case 'retry':
        if (/^\d+$/.test(value)) return this.onItem({ kind: 'retry', value: Number(value) });
        break;
      default: break;  // unknown fields are ignored
    }
    return true;
  }
}

export class SseClient {
  /// url: full http URL. opts: headers, token (Authorization: Bearer), keepData (default true),
  /// destroyAfterEvents (destroy the socket right after that many events), onEvent(item, client),
  /// tls (https URLs: options of https.request, e.g. {ca}).
  constructor(url, { headers = {}, token, keepData = true, destroyAfterEvents, onEvent, tls = {} } = {}) {
    this.url = url;
    this.items = [];
    this.events = [];
    this.status = null;
    this.headers = null;
    this.body = '';           // the body of a non-200 answer
    this.endReason = null;    // 'end' (server closed the stream cleanly), 'error', 'destroyed'
    this.error = null;
    this.destroyed = false;
    this.waiters = new Set();
    this.onEvent = onEvent;
    this.destroyAfterEvents = destroyAfterEvents;

    // Like a browser's EventSource: HTTP/1.1 keep-alive (agent:false would otherwise send close).
    const h = { accept: 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive', ...headers };
    if (token) h.authorization = `Bearer ${token}`;

    let resolveResponse, resolveEnded;
    this.response = new Promise((r) => { resolveResponse = r; });
    this.ended = new Promise((r) => { resolveEnded = r; });
    const end = (reason, err) => {
      if (this.endReason) return;
      this.endReason = reason;
      if (err) this.error = err;
      resolveResponse({ status: this.status, headers: this.headers, body: this.body, error: err });
      resolveEnded(reason);
      this.check();
    };
    this._end = end;

    this.parser = new SseParser((item) => {
      if (this.destroyed) return false;
      this.items.push(item);
      if (item.kind === 'event') {
        this.events.push(item);
        if (this.onEvent) this.onEvent(item, this);
        if (this.destroyAfterEvents !== undefined && this.events.length >= this.destroyAfterEvents) {
          this.destroy();
          return false;
        }
      }
      return true;
    }, { keepData });

    const client = url.startsWith('https:') ? https : http;
    this.req = client.request(url, { method: 'GET', headers: h, agent: false, ...tls }, (res) => {
      this.res = res;
      this.status = res.statusCode;
      this.headers = res.headers;
      res.setEncoding('utf8');
      if (res.statusCode !== 200) {
        res.on('data', (d) => { this.body += d; });
        res.on('end', () => end('end'));
        res.on('error', (e) => end('error', e));
        return;
      }
      resolveResponse({ status: this.status, headers: this.headers });
      res.on('data', (d) => {
        if (this.destroyed) return;
        this.parser.push(d);
        this.check();
      });
      res.on('end', () => end(this.destroyed ? 'destroyed' : 'end'));
      res.on('aborted', () => end(this.destroyed ? 'destroyed' : 'error', new Error('aborted')));
      res.on('error', (e) => end(this.destroyed ? 'destroyed' : 'error', e));
      res.on('close', () => end(this.destroyed ? 'destroyed' : 'error', new Error('closed without end')));
    });
    this.req.on('error', (e) => end(this.destroyed ? 'destroyed' : 'error', e));
    this.req.end();
  }

  /// The seq list of the events that carry one (from the JSON data, checked against the id).
  seqs() {
    return this.events.filter((e) => e.event !== 'gap').map((e) => Number(e.id));
  }

  get lastId() {
    for (let i = this.events.length - 1; i >= 0; i--) if (this.events[i].hasId) return this.events[i].id;
    return undefined;
  }

  destroy() {
    if (this.destroyed) return;
    this.destroyed = true;
    this.req.destroy();
    if (this.res) this.res.destroy();
    this._end('destroyed');
  }

  check() {
    for (const w of [...this.waiters]) {
      let ok = false;
      try { ok = w.pred(this); } catch (e) { w.reject(e); this.waiters.delete(w); continue; }
      if (ok) { w.resolve(this); this.waiters.delete(w); } else if (this.endReason) {
        w.reject(new Error(`stream ended (${this.endReason}${this.error ? ': ' + this.error.message : ''}) ` +
                           `before ${w.what}; ${this.describe()}`));
        this.waiters.delete(w);
      }
    }
  }

  /// Resolves when pred(client) holds; rejects on timeout or when the stream ends first.
  waitFor(pred, { timeoutMs = 10_000, what = 'condition' } = {}) {
    return new Promise((resolve, reject) => {
      const w = {
        pred, what,
        resolve: (v) => { clearTimeout(w.timer); resolve(v); },
        reject: (e) => { clearTimeout(w.timer); reject(e); },
      };
      w.timer = setTimeout(() => {
        this.waiters.delete(w);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; ${this.describe()}`));
      }, timeoutMs);
      this.waiters.add(w);
      this.check();
    });
  }

  waitForEvents(n, opts = {}) {
    return this.waitFor((c) => c.events.length >= n, { what: `${n} events`, ...opts });
  }

  /// Resolves with the end reason; rejects if the stream is still open after timeoutMs.
  async waitEnd({ timeoutMs = 10_000 } = {}) {
    let timer;
    const t = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`stream not closed within ${timeoutMs} ms; ${this.describe()}`)), timeoutMs);
    });
    try { return await Promise.race([this.ended, t]); } finally { clearTimeout(timer); }
  }

  describe() {
    const ev = this.events;
    const last = ev.slice(-3).map((e) => `${e.event}#${e.id ?? '-'}`).join(',');
    return `status=${this.status} events=${ev.length} last=[${last}] end=${this.endReason}` +
           (this.body ? ` body=${this.body.slice(0, 300)}` : '');
  }
}

export function openSse(url, opts) {
  return new SseClient(url, opts);
}

/// [1, 2, …, n]
export const range = (from, to) => Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);
