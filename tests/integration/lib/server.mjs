// Starts and stops the relay binary for black-box tests, mints tokens, and talks HTTP to it.
//
// RELAY_BIN: path of the relay executable (default ../../build/relay relative to tests/integration).
// RELAY_FAULT_BIN: the relay-fault-test executable (relay with POST /v1/admin/fault/<topic>; default
// beside RELAY_BIN), for the supervision tests: startServer(flags, { bin: RELAY_FAULT_BIN }).
// Every server listens on 127.0.0.1 with an ephemeral port and runs in a fresh temporary working
// directory (so no config file or data of the repository leaks in). stop() sends SIGTERM to the PID
// it started and requires exit code 0 (clean shutdown is part of the contract); only past a
// deadline does it SIGKILL, and then it throws. kill9() is a crash on purpose: SIGKILL to that PID.
// A test that restarts "the same" server passes an absolute --storage.path (its own temp dir).

import { spawn, execFile } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const TESTS_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const RELAY_BIN = process.env.RELAY_BIN
  ? path.resolve(process.env.RELAY_BIN)
  : path.resolve(TESTS_DIR, '../../build/relay');
export const RELAY_FAULT_BIN = process.env.RELAY_FAULT_BIN
  ? path.resolve(process.env.RELAY_FAULT_BIN)
  : path.join(path.dirname(RELAY_BIN), 'relay-fault-test');

/// The HS256 secret every test server is started with (tokens are minted locally with it).
export const SECRET = 'integration-test-secret-6f1c2d9a8b7e4f30';

const live = new Set();  // child processes not yet reaped: SIGKILLed (by PID) if the test process dies
process.on('exit', () => {
  for (const child of live) {
    try { process.kill(child.pid, 'SIGKILL'); } catch { /* already gone */ }
  }
});

function tail(text, n = 6000) {
  return text.length > n ? '…' + text.slice(-n) : text;
}

/// Starts `relay --port 0 --host 127.0.0.1 --auth.jwt_secret=SECRET --key=value…`.
/// flags: {"runs.ring_capacity": 50, ...}. Resolves {port, url, pid, output(), stop(), kill9()}.
export async function startServer(flags = {}, { readyTimeoutMs = 10_000, bin = RELAY_BIN } = {}) {
  if (!existsSync(bin)) {
    throw new Error(`relay binary not found at ${bin} (set RELAY_BIN / RELAY_FAULT_BIN)`);
  }
  const all = { 'auth.jwt_secret': SECRET, ...flags };
  const args = ['--port', '0', '--host', '127.0.0.1'];
  for (const [k, v] of Object.entries(all)) args.push(`--${k}=${v}`);

  const cwd = mkdtempSync(path.join(os.tmpdir(), 'relay-it-'));
  const child = spawn(bin, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  let out = '';
  const append = (chunk) => {
    out += chunk.toString('utf8');
    if (out.length > 2_000_000) out = out.slice(-1_000_000);
  };
  child.stdout.on('data', append);
  child.stderr.on('data', append);

  let exitInfo = null;
  const exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      exitInfo = { code, signal };
      live.delete(child);
      resolve(exitInfo);
    });
  });
  child.on('error', (err) => append(`\n[spawn error] ${err.message}\n`));

  const port = await new Promise((resolve, reject) => {
    const re = /relay listening host=(\S+) port=(\d+)/;
    const timer = setTimeout(() => {
      cleanup();
      try { process.kill(child.pid, 'SIGKILL'); } catch { /* gone */ }
      reject(new Error(`relay did not print its listening line within ${readyTimeoutMs} ms\n` +
                       `args: ${args.join(' ')}\noutput:\n${tail(out)}`));
    }, readyTimeoutMs);
    const check = () => {
      const m = re.exec(out);
      if (m) { cleanup(); resolve(Number(m[2])); }
    };
    const onExit = () => {
      cleanup();
      reject(new Error(`relay exited before it was ready (${JSON.stringify(exitInfo)})\n` +
                       `args: ${args.join(' ')}\noutput:\n${tail(out)}`));
    };
    function cleanup() {
      clearTimeout(timer);
      child.stdout.off('data', check);
      child.stderr.off('data', check);
      child.off('exit', onExit);
    }
    child.stdout.on('data', check);
    child.stderr.on('data', check);
    child.on('exit', onExit);
    check();
  });

  let stopped = null;
  const server = {
    port,
    pid: child.pid,
    url: `http://127.0.0.1:${port}`,
    output: () => out,
    exited: () => exitInfo,
    /// SIGTERM, wait up to `deadlineMs`, SIGKILL past it. Throws unless the exit was code 0.
    stop: async ({ deadlineMs = 10_000 } = {}) => {
      if (stopped) return stopped;
      stopped = (async () => {
        if (exitInfo) {
          throw new Error(`relay had already exited (${JSON.stringify(exitInfo)}) before stop()\n` +
                          `output:\n${tail(out)}`);
        }
        process.kill(child.pid, 'SIGTERM');
        let timer;
        const timedOut = new Promise((resolve) => { timer = setTimeout(() => resolve(null), deadlineMs); });
        const info = await Promise.race([exited, timedOut]);
        clearTimeout(timer);
        try {
          if (!info) {
            try { process.kill(child.pid, 'SIGKILL'); } catch { /* gone */ }
            await exited;
            throw new Error(`relay did not exit within ${deadlineMs} ms of SIGTERM (killed)\n` +
                            `output:\n${tail(out)}`);
          }
          if (info.code !== 0) {
            throw new Error(`relay exited with ${JSON.stringify(info)} after SIGTERM, expected code 0\n` +
                            `output:\n${tail(out)}`);
          }
          return info;
        } finally {
          rmSync(cwd, { recursive: true, force: true });
        }
      })();
      return stopped;
    },
    /// A crash: SIGKILL to the PID this handle started (nothing else), then waits (bounded) for
    /// its exit and removes its working directory. Resolves {code, signal}. stop() afterwards
    /// resolves the same, so an after() hook may call stop() on a killed server.
    kill9: async ({ deadlineMs = 10_000 } = {}) => {
      if (stopped) return stopped;
      stopped = (async () => {
        if (!exitInfo) {
          try { process.kill(child.pid, 'SIGKILL'); } catch { /* exited meanwhile */ }
        }
        let timer;
        const timedOut = new Promise((resolve) => { timer = setTimeout(() => resolve(null), deadlineMs); });
        const info = await Promise.race([exited, timedOut]);
        clearTimeout(timer);
        rmSync(cwd, { recursive: true, force: true });
        if (!info) throw new Error(`relay (pid ${child.pid}) did not exit within ${deadlineMs} ms of SIGKILL`);
        return info;
      })();
      return stopped;
    },
  };
  return server;
}

// ---------------------------------------------------------------------------------------------
// Tokens

export function b64url(input) {
  return Buffer.from(input).toString('base64url');
}

/// Mints a JWT. Defaults: HS256 with SECRET, exp in an hour. `header`/`claims` override fields;
/// `alg: 'none'` gives an unsigned token (empty signature part).
export function mintToken({ sub, role, ttlS = 3600, secret = SECRET, header = {}, claims = {} } = {}) {
  const now = Math.floor(Date.now() / 1000);
  const h = { alg: 'HS256', typ: 'JWT', ...header };
  const c = { iat: now, exp: now + ttlS, ...claims };
  if (sub !== undefined) c.sub = sub;
  if (role !== undefined) c.role = role;
  const signingInput = `${b64url(JSON.stringify(h))}.${b64url(JSON.stringify(c))}`;
  if (h.alg === 'none') return `${signingInput}.`;
  const sig = createHmac('sha256', secret).update(signingInput).digest('base64url');
  return `${signingInput}.${sig}`;
}

export const tokenFor = (sub, role = 'user') => mintToken({ sub, role });

/// `relay token --sub NAME --role ROLE [--ttl S] [--kid K] [--rooms P,...] [--key PEM]
/// --auth.jwt_secret=SECRET` → the printed JWT.
export function relayToken({ sub, role = 'user', ttlS, secret = SECRET, kid, rooms, keyPath }) {
  const args = ['token', '--sub', sub, '--role', role];
  if (ttlS !== undefined) args.push('--ttl', String(ttlS));
  if (kid !== undefined) args.push('--kid', kid);
  if (rooms !== undefined) args.push('--rooms', rooms.join(','));
  if (keyPath !== undefined) args.push('--key', keyPath);
  args.push(`--auth.jwt_secret=${secret}`);
  const cwd = mkdtempSync(path.join(os.tmpdir(), 'relay-it-'));
  return new Promise((resolve, reject) => {
    execFile(RELAY_BIN, args, { cwd, timeout: 10_000 }, (err, stdout, stderr) => {
      rmSync(cwd, { recursive: true, force: true });
      if (err) reject(new Error(`relay ${args.join(' ')} failed: ${err.message}\n${stderr}`));
      else resolve(stdout.trim());
    });
  });
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// fetch() wrapper: {status, headers, text, json}. `body` objects are sent as JSON; strings and
/// Buffers as they are. `token` goes into Authorization: Bearer.
export async function api(base, method, urlPath, { token, body, headers = {}, timeoutMs = 10_000 } = {}) {
  const h = { ...headers };
  if (token) h.authorization = `Bearer ${token}`;
  let payload;
  if (body !== undefined) {
    if (typeof body === 'string' || Buffer.isBuffer(body) || body instanceof Uint8Array) {
      payload = body;
    } else {
      payload = JSON.stringify(body);
    }
    if (!Object.keys(h).some((k) => k.toLowerCase() === 'content-type')) {
      h['content-type'] = 'application/json';
    }
  }
  const res = await fetch(base + urlPath, {
    method,
    headers: h,
    body: payload,
    signal: AbortSignal.timeout(timeoutMs),
  });
  const text = await res.text();
  let json;
  try { json = text.length ? JSON.parse(text) : undefined; } catch { json = undefined; }
  return { status: res.status, headers: res.headers, text, json };
}

/// One request over node:http, or node:https trusting only `ca` when it is given (unlike fetch,
/// it sends Origin and other headers as given), on a fresh connection. A string body is sent as
/// it is, anything else as JSON. Resolves {status, headers, text, json}.
export function nodeRequest(port, method, urlPath, { headers = {}, body, token, ca } = {}) {
  return new Promise((resolve, reject) => {
    const h = { ...headers };
    if (token) h.authorization = `Bearer ${token}`;
    let payload;
    if (body !== undefined) {
      payload = typeof body === 'string' ? body : JSON.stringify(body);
      h['content-type'] = 'application/json';
      h['content-length'] = Buffer.byteLength(payload);
    }
    const options = { host: '127.0.0.1', port, method, path: urlPath, headers: h, agent: false, timeout: 5_000 };
    const req = (ca ? https : http).request(ca ? { ...options, ca } : options, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => {
        let json;
        try { json = text ? JSON.parse(text) : undefined; } catch { json = undefined; }
        resolve({ status: res.statusCode, headers: res.headers, text, json });
      });
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${urlPath}: no answer within 5 s`)));
    req.on('error', reject);
    req.end(payload);
  });
}

/// Sends raw bytes over a fresh TCP connection and reads one HTTP response (until Content-Length
/// is satisfied, or the peer closes). Resolves {status, headers, body, raw, closed}.
export function rawRequest(port, bytes, { timeoutMs = 5_000, localAddress } = {}) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port, localAddress });
    let buf = Buffer.alloc(0);
    let done = false;
    const timer = setTimeout(() => finish(new Error(
      `no complete response within ${timeoutMs} ms; got: ${JSON.stringify(buf.toString('latin1').slice(0, 500))}`)), timeoutMs);
    function finish(err, closed = false) {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) return reject(err);
      const raw = buf.toString('latin1');
      const headEnd = raw.indexOf('\r\n\r\n');
      const head = headEnd >= 0 ? raw.slice(0, headEnd) : raw;
      const lines = head.split('\r\n');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] || '');
      const headers = {};
      for (const line of lines.slice(1)) {
        const i = line.indexOf(':');
        if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
      }
      resolve({
        status: m ? Number(m[1]) : null,
        headers,
        body: headEnd >= 0 ? buf.subarray(headEnd + 4).toString('utf8') : '',  // latin1: index == byte
        raw,
        closed,
      });
    }
    function complete() {
      const raw = buf.toString('latin1');
      const headEnd = raw.indexOf('\r\n\r\n');
      if (headEnd < 0) return false;
      const m = /\r\ncontent-length:\s*(\d+)/i.exec(raw.slice(0, headEnd));
      if (!m) return false;
      return buf.length >= headEnd + 4 + Number(m[1]);
    }
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      if (complete()) finish(null, false);
    });
    sock.on('end', () => finish(null, true));
    sock.on('close', () => finish(null, true));
    sock.on('error', (err) => {
      // A reset after the answer was read is fine; without an answer it is the result.
      if (buf.length) finish(null, true);
      else finish(err);
    });
    sock.write(bytes);
  });
}

/// Polls `fn` (async, returns truthy when done) until it holds or the deadline passes.
export async function waitUntil(fn, { timeoutMs = 10_000, intervalMs = 20, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/// GET /metrics and sum the samples of every metric whose name matches `re` (labels ignored).
export async function metricSum(base, re) {
  const res = await fetch(`${base}/metrics`, { signal: AbortSignal.timeout(5_000) });
  const text = await res.text();
  let sum = 0;
  let found = false;
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (m && re.test(m[1])) { sum += Number(m[3]); found = true; }
  }
  return { sum, found, text };
}

/// Asserts the contract's error body: exactly {"error": {"code", "message"}} with the given code.
export function errorShape(res) {
  const b = res.json;
  if (!b || typeof b !== 'object' || Array.isArray(b)) return `body is not a JSON object: ${JSON.stringify(res.text)}`;
  const keys = Object.keys(b);
  if (keys.length !== 1 || keys[0] !== 'error') return `body keys ${JSON.stringify(keys)}, expected ["error"]: ${res.text}`;
  const e = b.error;
  if (!e || typeof e !== 'object') return `error is not an object: ${res.text}`;
  if (typeof e.code !== 'string') return `error.code is not a string: ${res.text}`;
  if (typeof e.message !== 'string') return `error.message is not a string: ${res.text}`;
  return null;
}
