// Interop test server on Node's `ws` package: see ../README.md for the protocol.
//
//   node tests/interop/node/server.js <envelope|jsonrpc> <port>
//
// Binds 127.0.0.1, prints the bound port alone on the first line of stdout, and exits when
// stdin closes.
'use strict';

const { WebSocketServer } = require('ws');

const [protocol, portArg] = process.argv.slice(2);
if (!['envelope', 'jsonrpc'].includes(protocol) || portArg === undefined) {
  console.error('usage: server.js <envelope|jsonrpc> <port>');
  process.exit(2);
}

const wss = new WebSocketServer({
  host: '127.0.0.1',
  port: Number(portArg),
  maxPayload: 64 * 1024 * 1024,
  perMessageDeflate: false,
});
wss.on('listening', () => process.stdout.write(`${wss.address().port}\n`));
wss.on('error', (e) => {
  console.error(`server error: ${e.message}`);
  process.exit(1);
});
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();

const jsonrpc = protocol === 'jsonrpc';

/** The answer to request `id` with result `r`, or with error `e`. */
function answer(id, r) {
  return JSON.stringify(jsonrpc ? { jsonrpc: '2.0', id, result: r } : { id, message: r });
}
function failure(id, e) {
  return JSON.stringify(jsonrpc ? { jsonrpc: '2.0', id, error: e } : { id, message: { error: e } });
}
function push(params) {
  return JSON.stringify(jsonrpc ? { jsonrpc: '2.0', method: 'push', params } : { push: params });
}

const KNOWN = ['echo', 'delay', 'shuffle', 'push', 'ping', 'close', 'silent', 'error'];

/**
 * What a request asks for: the payload's `op` if it names a known one, else the JSON-RPC
 * method, else (envelope) `echo`. Unknown ops come back as such only in JSON-RPC.
 */
function opOf(p, method) {
  if (p !== null && typeof p === 'object' && KNOWN.includes(p.op)) return p.op;
  if (jsonrpc) return method;
  return 'echo';
}

/** Fisher-Yates. */
function shuffle(items) {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [items[i], items[j]] = [items[j], items[i]];
  }
  return items;
}

wss.on('connection', (ws) => {
  const held = []; // shuffle requests waiting for their batch
  let pongs = 0;
  let pings = 0; // numbers every ping's payload, as the Python server must
  const pongWaiters = [];
  ws.on('pong', () => {
    pongs += 1;
    while (pongWaiters.length > 0 && pongWaiters[0].upTo <= pongs) pongWaiters.shift().resolve();
  });
  const send = (text) => {
    if (ws.readyState === ws.OPEN) ws.send(text);
  };

  /** Runs request `id` with payload `p`; `op` from the payload, or the JSON-RPC method. */
  function run(id, method, p) {
    const op = opOf(p, method);
    if (!KNOWN.includes(op)) {
      send(failure(id, { code: -32601, message: `Method not found: ${op}` }));
      return;
    }
    // The op's fields, whatever the payload is.
    const q = p !== null && typeof p === 'object' ? p : {};
    switch (op) {
      case 'delay':
        setTimeout(() => send(answer(id, p)), Number(q.ms) || 0);
        return;
      case 'shuffle':
        held.push([id, p]);
        if (held.length >= (Number(q.batch) || 1)) {
          for (const [hid, hp] of shuffle(held.splice(0))) send(answer(hid, hp));
        }
        return;
      case 'push': {
        const count = Number(q.count) || 0;
        const before = Math.floor(count / 2);
        for (let i = 0; i < before; i++) send(push({ i }));
        send(answer(id, p));
        for (let i = before; i < count; i++) send(push({ i }));
        return;
      }
      case 'ping': {
        const count = Number(q.count) || 0;
        const upTo = pongs + count;
        new Promise((resolve) => {
          if (count === 0) resolve();
          else pongWaiters.push({ upTo, resolve });
        }).then(() => send(answer(id, { pongs: count })));
        for (let i = 0; i < count; i++) ws.ping(Buffer.from(`ping ${pings++}`));
        return;
      }
      case 'close':
        ws.close(Number(q.code) || 1000, String(q.reason || ''));
        return;
      case 'silent':
        return;
      case 'error':
        send(failure(id, { code: q.code ?? -32000, message: q.message ?? 'error', data: q.data }));
        return;
      default: // echo
        send(answer(id, p));
    }
  }

  /** One element of a JSON-RPC batch: echo and error only, answered at once. */
  function batchAnswer(req) {
    if (!req || typeof req !== 'object' || req.jsonrpc !== '2.0') {
      return { jsonrpc: '2.0', id: null, error: { code: -32600, message: 'Invalid Request' } };
    }
    if (req.id === undefined) return null; // a notification: no answer
    const p = req.params;
    const op = opOf(p, req.method);
    if (!KNOWN.includes(op)) {
      return { jsonrpc: '2.0', id: req.id, error: { code: -32601, message: `Method not found: ${op}` } };
    }
    if (op === 'error') {
      const q = p !== null && typeof p === 'object' ? p : {};
      return { jsonrpc: '2.0', id: req.id, error: { code: q.code ?? -32000, message: q.message ?? 'error', data: q.data } };
    }
    return { jsonrpc: '2.0', id: req.id, result: p };
  }

  ws.on('message', (data, isBinary) => {
    if (isBinary) {
      send(data);
      return;
    }
    const text = data.toString('utf8');
    let msg;
    try {
      msg = JSON.parse(text);
    } catch (e) {
      if (jsonrpc) {
        send(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32700, message: 'Parse error' } }));
      } else {
        send(text);
      }
      return;
    }
    if (jsonrpc) {
      if (Array.isArray(msg)) {
        const answers = msg.map(batchAnswer).filter((a) => a !== null);
        if (msg.length === 0) {
          send(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32600, message: 'Invalid Request' } }));
        } else if (answers.length > 0) {
          send(JSON.stringify(answers));
        }
        return;
      }
      if (msg === null || typeof msg !== 'object' || msg.jsonrpc !== '2.0' || typeof msg.method !== 'string') {
        send(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32600, message: 'Invalid Request' } }));
        return;
      }
      if (msg.id === undefined) {
        send(JSON.stringify({ jsonrpc: '2.0', method: 'echo', params: msg.params }));
        return;
      }
      run(msg.id, msg.method, msg.params);
    } else {
      if (msg === null || typeof msg !== 'object' || msg.id === undefined) {
        send(text); // not a request: sent back unchanged
        return;
      }
      run(msg.id, undefined, msg.message);
    }
  });
});
