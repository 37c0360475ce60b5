// bench/peers/sse_hub.mjs — the Node SSE hub peer of bench/run-peers-bench: Node's `http` module,
// one in-memory buffer of the last 2 000 messages per channel and Last-Event-ID replay — the
// NestJS/RxJS `ReplaySubject` pattern that the backends Relay replaces use for streamed runs.
//
//   POST /pub?id=CH   body = one message; the hub numbers it (integer SSE ids 1, 2, 3 …): 202 {"last_seq"}
//   GET  /sub/CH      SSE: the retained messages after Last-Event-ID (or ?after=N; none: all retained,
//                     as a ReplaySubject does), then live ones
// usage: node sse_hub.mjs [--port N] (default 0: any free port; the listening line prints it)
import http from 'node:http';

const KEEP = 2000;
const channels = new Map(); // id → { seq, buf: [{ seq, frame }], subs: Set<ServerResponse> }
const channel = (id) => {
  if (!channels.has(id)) channels.set(id, { seq: 0, buf: [], subs: new Set() });
  return channels.get(id);
};

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://127.0.0.1');
  if (req.method === 'POST' && url.pathname === '/pub') {
    const ch = channel(url.searchParams.get('id') ?? '');
    const parts = [];
    req.on('data', (d) => parts.push(d));
    req.on('end', () => {
      const seq = ++ch.seq;
      const frame = `id: ${seq}\ndata: ${Buffer.concat(parts).toString()}\n\n`;
      ch.buf.push({ seq, frame });
      if (ch.buf.length > KEEP) ch.buf.shift();
      for (const sub of ch.subs) sub.write(frame);
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
