// The client behind scripts/chat: node scripts/chat.mjs WS_URL TOKEN ROOM.
// Joins the room (resuming after the last seq seen when the connection drops), prints messages and
// presence, sends each stdin line as a message with a client_msg_id (so a resend is not doubled).

import { createRequire } from 'node:module';
import readline from 'node:readline';

const require = createRequire(new URL('../tests/integration/package.json', import.meta.url));
const WebSocket = require('ws');

const [url, token, room] = process.argv.slice(2);
let lastSeq = null;
let socket = null;
let counter = 0;

function connect() {
  socket = new WebSocket(`${url}?access_token=${encodeURIComponent(token)}`);
  socket.on('message', (raw) => {
    const m = JSON.parse(raw.toString());
    if (m.op === 'hello') {
      socket.send(JSON.stringify({ op: 'join', room, ref: 'join', ...(lastSeq !== null && { after: lastSeq }) }));
    } else if (m.op === 'event' && m.type === 'message') {
      lastSeq = m.seq;
      console.log(`#${m.seq} ${m.data.user}: ${m.data.text ?? JSON.stringify(m.data.data)}`);
    } else if (m.op === 'presence') {
      const who = m.joined ?? m.left;
      console.log(`* ${who.user} ${m.joined ? 'joined' : 'left'}`);
    } else if (m.op === 'ack' && m.ref === 'join') {
      if (lastSeq === null) lastSeq = m.last_seq;
      console.log(`* joined ${room} (last seq ${m.last_seq}); type a line to send it`);
    } else if (m.op === 'gap') {
      console.log(`* messages ${m.from}..${m.to} are no longer retained`);
    } else if (m.op === 'error') {
      console.log(`! ${m.code}: ${m.message}`);
    }
  });
  socket.on('close', (code, reason) => {
    console.log(`* connection closed (${code} ${reason}); reconnecting in 1 s`);
    setTimeout(connect, 1000);
  });
  socket.on('error', (err) => console.log(`! ${err.message}`));
}

connect();
readline.createInterface({ input: process.stdin }).on('line', (text) => {
  if (!text.trim() || socket?.readyState !== WebSocket.OPEN) return;
  socket.send(JSON.stringify({ op: 'send', room, text, client_msg_id: `${process.pid}-${++counter}` }));
});
