// Interop test server on the `rpc-websockets` package's own JSON-RPC 2.0 `Server` (not our
// protocol of ../README.md: rpc-websockets decides the wire format).
//
//   node tests/interop/node/rpc_websockets_server.js [port]     # port 0 (default) = any free
//
// Binds 127.0.0.1, prints the bound port alone on the first line of stdout, and exits when
// stdin closes.
//
// What rpc-websockets 10.0.1 does on the wire (node_modules/rpc-websockets/dist/index.cjs,
// `Server`, `_runMethod`):
// - an answer is `{"jsonrpc":"2.0","result":R,"id":N}`; a method returning `undefined` gets
//   an answer without `result` (JSON.stringify drops it), so every method here returns a value;
// - it treats a falsy id as "no id": after running the method it does `if (!message.id) return;`
//   (index.cjs:853; and index.cjs:836 when the method throws), so a request with id 0 is run
//   but never answered. Errors found before the method runs (unknown method, bad params) are
//   answered with `id: message.id || null` (index.cjs:725-827): id 0 comes back as null;
// - a method that throws an `Error` is answered `{"code":-32000,"message":<error.name>,
//   "data":<error.message>}`; one that throws anything else is answered with that thing as the
//   error object (index.cjs:836-849); an unknown method gets -32601 "Method not found";
// - events: a client subscribes with the request `rpc.on` (params: event names; result
//   `{"<name>":"ok"}`, or "provided event invalid") and leaves with `rpc.off`; an event is
//   sent as `{"notification":"<name>","params":P}`, which has neither `jsonrpc` nor `method`
//   (index.cjs:490-516), so it is not a JSON-RPC 2.0 notification;
// - a batch (an array) is run one request after the other and answered with one array.
'use strict';

const { Server } = require('rpc-websockets');

const portArg = process.argv[2] ?? '0';
if (!/^\d+$/.test(portArg)) {
  console.error('usage: rpc_websockets_server.js [port]');
  process.exit(2);
}

const server = new Server({ host: '127.0.0.1', port: Number(portArg), perMessageDeflate: false });
server.on('listening', () => process.stdout.write(`${server.wss.address().port}\n`));
server.on('error', (e) => {
  console.error(`server error: ${e.message}`);
  process.exit(1);
});
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();

// sum([a, b, ...]): the sum of the numbers.
server.register('sum', (params) => {
  if (!Array.isArray(params) || !params.every((x) => typeof x === 'number')) {
    throw server.createError(-32602, 'sum takes an array of numbers', params ?? null);
  }
  return params.reduce((a, b) => a + b, 0);
});

// echo(P): P (null without params).
server.register('echo', (params) => params ?? null);

// void(): returns nothing; rpc-websockets then answers {"jsonrpc":"2.0","id":N}, with no result.
server.register('void', () => undefined);

// fail({code, message, data}): throws that error object; rpc-websockets answers it as is
// (createError makes a missing data null).
server.register('fail', (params) => {
  const p = params ?? {};
  throw server.createError(p.code ?? -32000, p.message ?? 'failed', p.data);
});

// throw([text]): throws an Error; rpc-websockets answers -32000 with the Error's name and text.
server.register('throw', (params) => {
  throw new Error(Array.isArray(params) ? String(params[0]) : 'thrown');
});

// hold({batch, value}): answers `value` once `batch` hold calls are waiting, all of them at
// once in the reverse of their arrival order (deterministically out of order).
const held = [];
server.register('hold', (params) => {
  const p = params ?? {};
  return new Promise((resolve) => {
    held.push(() => resolve(p.value ?? null));
    if (held.length >= (Number(p.batch) || 1)) {
      // Once this call too is waiting for its promise.
      const batch = held.splice(0).reverse();
      setImmediate(() => batch.forEach((release) => release()));
    }
  });
});

// The event `tick`, emitted by the request tick(P) to its subscribers (before the answer),
// with P as its params; answers true.
server.event('tick');
server.register('tick', (params) => {
  server.emit('tick', params ?? {});
  return true;
});
