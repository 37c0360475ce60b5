// bench/peers/sse_hub.mjs — the Node SSE hub peer of bench/run-peers-bench: Node's `http` module,
// one in-memory buffer of the last 2 000 messages per channel and Last-Event-ID replay — the
// NestJS/RxJS `ReplaySubject` pattern that the backends Relay replaces use for streamed runs.
//
//   POST /runs        a new channel for a short run (the churn scenario): 201 {"id"}
//   POST /pub?id=CH   body = one message; the hub numbers it (integer SSE ids 1, 2, 3 …): 202 {"last_seq"}
//                     a {"type":"complete"} message ends the channel: dropped RUN_TTL_S later (as Relay
//                     keeps a finished run for runs.ttl_s = 600 s so late clients can replay it)
//   GET  /sub/CH      SSE: the retained messages after Last-Event-ID (or ?after=N; none: all retained,
//                     as a ReplaySubject does), then live ones
// usage: node sse_hub.mjs [--port N] (default 0: any free port; the listening line prints it)
import http from 'node:http';

const KEEP = 2000;
const RUN_TTL_S = 600;
let runs = 0;
const channels = new Map(); // id → { seq, buf: [{ seq, frame }], subs: Set<ServerResponse> }
const channel = (id) => {
  if (!channels.has(id)) channels.set(id, { seq: 0, buf: [], subs: new Set() });
  return channels.get(id);
};

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://127.0.0.1');
  if (req.method === 'POST' && url.pathname === '/runs') {
    const id = `run-${++runs}`;
    channel(id);
    req.resume();
    res.writeHead(201, { 'content-type': 'application/json' }).end(`{"id":"${id}"}`);
  } else if (req.method === 'POST' && url.pathname === '/pub') {
    const id = url.searchParams.get('id') ?? '';
    const ch = channel(id);
    const parts = [];
    req.on('data', (d) => parts.push(d));
    req.on('end', () => {
      const seq = ++ch.seq;
      const data = Buffer.concat(parts).toString();
      const frame = `id: ${seq}\ndata: ${data}\n\n`;
      ch.buf.push({ seq, frame });
      if (ch.buf.length > KEEP) ch.buf.shift();
      for (const sub of ch.subs) sub.write(frame);
      if (data.startsWith('{"type":"complete"')) setTimeout(() => channels.delete(id), RUN_TTL_S * 1000).unref();
      res.writeHead(202, { 'content-type': 'application/json' }).end(`{"last_seq":${seq}}`);
    });
  } else if (req.method === 'GET' && url.pathname.startsWith('/sub/')) {
    const ch = channel(decodeURIComponent(url.pathname.slice(5)));
    const after = Number(req.headers['last-event-id'] ?? url.searchParams.get('after') ?? 0) || 0;
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    res.write('retry: 2000\n\n' + ch.buf.filter((m) => m.seq > after).map((m) => m.frame).join(''));
    ch.subs.add(res);
    req.on('close', () => ch.subs.delete(res));
  } else {
    res.writeHead(404).end();
  }
});
server.keepAliveTimeout = 300_000; // the producer's connection idles while subscribers drain
const port = Number(process.argv[process.argv.indexOf('--port') + 1] || 0) || 0;
server.listen(port, '127.0.0.1', () =>
  console.log(`sse_hub listening host=127.0.0.1 port=${server.address().port}`));
process.on('SIGTERM', () => process.exit(0));
