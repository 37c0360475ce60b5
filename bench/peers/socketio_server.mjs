// bench/peers/socketio_server.mjs — the Socket.IO 4 peer of bench/run-peers-bench: chat rooms the
// way the backends Relay replaces run them (`socket.join(room)`, `io.to(room).emit`), websocket
// transport only. Each room numbers its messages (seq 1, 2, 3 …) so that the load generator checks
// loss and duplicates exactly as it does against Relay, whose room actor assigns the seq.
//
//   emit("join", room, ack)             → ack({ room, last_seq })
//   emit("send", { room, text, data }, ack) → every member of the room gets
//                                         "message" { room, seq, user, text, data }; ack({ seq })
// usage: node socketio_server.mjs [--port N] (default 0: any free port; the listening line prints it)
import http from 'node:http';
import { Server } from 'socket.io';

const httpServer = http.createServer();
const io = new Server(httpServer, {
  transports: ['websocket'],
  serveClient: false,
  perMessageDeflate: false,
  maxHttpBufferSize: 64 * 1024,
});
const seqs = new Map(); // room → last seq

io.on('connection', (socket) => {
  socket.on('join', (room, ack) => {
    socket.join(room);
    if (typeof ack === 'function') ack({ room, last_seq: seqs.get(room) ?? 0 });
  });
  socket.on('send', (msg, ack) => {
    const seq = (seqs.get(msg.room) ?? 0) + 1;
    seqs.set(msg.room, seq);
    io.to(msg.room).emit('message', { room: msg.room, seq, user: socket.id, text: msg.text, data: msg.data });
    if (typeof ack === 'function') ack({ seq });
  });
});

const port = Number(process.argv[process.argv.indexOf('--port') + 1] || 0) || 0;
httpServer.listen(port, '127.0.0.1', () =>
  console.log(`socketio_server listening host=127.0.0.1 port=${httpServer.address().port}`));
process.on('SIGTERM', () => process.exit(0));
