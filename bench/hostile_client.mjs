#!/usr/bin/env node
// bench/hostile_client.mjs — a bounded attacker for bench/run-hostile-bench (loopback only).
//
//   node bench/hostile_client.mjs --port P --mode flood|slowloris [--source 127.0.0.2]
//        [--conns N] [--seconds S]
//
// flood:     keeps N connection attempts in flight from one source address; each sends
//            `GET /health`, and is replaced by a new one as soon as it is answered or closed.
// slowloris: keeps N connections open from one source address, each trickling a request head
//            one byte per second (never finishing it); a connection the server closes is replaced.
// Stops after S seconds or at SIGTERM (and never connects anywhere but 127.0.0.0/8), then prints
//   HOSTILE mode=... conns=... ran_s=... attempts_per_s=... attempts=... answered_429=...
//           answered_other=... closed_unanswered=... errors=...
import net from 'node:net';

const args = Object.fromEntries(process.argv.slice(2).reduce((acc, a, i, all) => {
  if (a.startsWith('--')) acc.push([a.slice(2), all[i + 1]]);
  return acc;
}, []));
const port = Number(args.port);
const mode = args.mode ?? 'flood';
const source = args.source ?? '127.0.0.2';
const conns = Math.min(Number(args.conns ?? 500), 5000);
const seconds = Math.min(Number(args.seconds ?? 10), 120);
const host = '127.0.0.1';
if (!port || !['flood', 'slowloris'].includes(mode) || !source.startsWith('127.')) {
  console.error('usage: hostile_client.mjs --port P --mode flood|slowloris [--source 127.x.y.z] [--conns N] [--seconds S]');
  process.exit(2);
}

const stats = { attempts: 0, answered_429: 0, answered_other: 0, closed_unanswered: 0, errors: 0 };
const deadline = Date.now() + seconds * 1000;
let stopping = false;
const live = new Set();
const head = 'GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n';
const trickle = 'X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n';

function open() {
  if (stopping || Date.now() > deadline) return;
  stats.attempts++;
  const sock = net.connect({ host, port, localAddress: source });
  live.add(sock);
  let got = '';
  let timer = null;
  let i = 0;
  sock.setNoDelay(true);
  sock.on('connect', () => {
    if (mode === 'flood') {
      sock.write(head + '\r\n');
    } else {
      sock.write(head);
      timer = setInterval(() => { sock.write(trickle[i++ % trickle.length]); }, 1000);
    }
  });
  sock.on('data', (d) => {
    got += d.toString('latin1');
    if (got.includes('\r\n\r\n')) sock.destroy();
  });
  sock.on('error', () => { stats.errors++; });
  sock.on('close', () => {
    if (timer) clearInterval(timer);
    live.delete(sock);
    if (/^HTTP\/1\.1 429 /.test(got)) stats.answered_429++;
    else if (got.startsWith('HTTP/')) stats.answered_other++;
    else stats.closed_unanswered++;
    // A slowloris reconnects a little later (it would rather hold than spin); a flood at once.
    if (mode === 'flood') setImmediate(open);
    else setTimeout(open, 50);
  });
}

const started = Date.now();
function finish() {
  if (stopping) return;
  stopping = true;
  for (const s of live) s.destroy();
  const ran = (Date.now() - started) / 1000;
  console.log(`HOSTILE mode=${mode} source=${source} conns=${conns} ran_s=${ran.toFixed(1)} ` +
    `attempts_per_s=${Math.round(stats.attempts / ran)} ` +
    Object.entries(stats).map(([k, v]) => `${k}=${v}`).join(' '));
  setTimeout(() => process.exit(0), 100);
}
for (let i = 0; i < conns; i++) open();
setTimeout(finish, seconds * 1000);
// run-hostile-bench stops it by its PID (SIGTERM) once the normal clients are done.
process.on('SIGTERM', finish);
