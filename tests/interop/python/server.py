"""Interop test server on Python's `websockets` package: see ../README.md for the protocol.

    python tests/interop/python/server.py <envelope|jsonrpc> <port>

Binds 127.0.0.1, prints the bound port alone on the first line of stdout, and exits when stdin
closes.
"""

import asyncio
import itertools
import json
import random
import sys

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

KNOWN = ("echo", "delay", "shuffle", "push", "ping", "close", "silent", "error")


class Protocol:
    def __init__(self, jsonrpc):
        self.jsonrpc = jsonrpc

    def answer(self, id, result):
        if self.jsonrpc:
            return json.dumps({"jsonrpc": "2.0", "id": id, "result": result})
        return json.dumps({"id": id, "message": result})

    def failure(self, id, error):
        if self.jsonrpc:
            return json.dumps({"jsonrpc": "2.0", "id": id, "error": error})
        return json.dumps({"id": id, "message": {"error": error}})

    def push(self, params):
        if self.jsonrpc:
            return json.dumps({"jsonrpc": "2.0", "method": "push", "params": params})
        return json.dumps({"push": params})

    def op_of(self, p, method):
        """The payload's `op` if it names a known one, else the JSON-RPC method, else echo."""
        if isinstance(p, dict) and p.get("op") in KNOWN:
            return p["op"]
        return method if self.jsonrpc else "echo"


def error_object(q):
    error = {"code": q.get("code", -32000), "message": q.get("message", "error")}
    if "data" in q:
        error["data"] = q["data"]
    return error


async def connection(ws, proto):
    held = []  # shuffle requests waiting for their batch
    tasks = set()
    pings = itertools.count()  # ping payloads must differ while their pongs are awaited

    async def send(text):
        try:
            await ws.send(text)
        except ConnectionClosed:
            pass

    def later(coro):
        task = asyncio.ensure_future(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def delayed(id, p, ms):
        await asyncio.sleep(ms / 1000)
        await send(proto.answer(id, p))

    async def pinged(id, count):
        waiters = [await ws.ping(f"ping {next(pings)}".encode()) for _ in range(count)]
        try:
            await asyncio.gather(*waiters)
        except ConnectionClosed:
            return
        await send(proto.answer(id, {"pongs": count}))

    async def run(id, method, p):
        op = proto.op_of(p, method)
        if op not in KNOWN:
            await send(proto.failure(id, {"code": -32601, "message": f"Method not found: {op}"}))
            return
        q = p if isinstance(p, dict) else {}
        if op == "delay":
            later(delayed(id, p, float(q.get("ms", 0))))
        elif op == "shuffle":
            held.append((id, p))
            if len(held) >= int(q.get("batch", 1)):
                batch = held[:]
                held.clear()
                random.shuffle(batch)
                for hid, hp in batch:
                    await send(proto.answer(hid, hp))
        elif op == "push":
            count = int(q.get("count", 0))
            before = count // 2
            for i in range(before):
                await send(proto.push({"i": i}))
            await send(proto.answer(id, p))
            for i in range(before, count):
                await send(proto.push({"i": i}))
        elif op == "ping":
            later(pinged(id, int(q.get("count", 0))))
        elif op == "close":
            later(ws.close(int(q.get("code", 1000)), str(q.get("reason", ""))))
        elif op == "silent":
            pass
        elif op == "error":
            await send(proto.failure(id, error_object(q)))
        else:
            await send(proto.answer(id, p))

    def batch_answer(req):
        """One element of a JSON-RPC batch: echo and error only, answered at once."""
        if not isinstance(req, dict) or req.get("jsonrpc") != "2.0":
            return {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Invalid Request"}}
        if "id" not in req:
            return None  # a notification: no answer
        p = req.get("params")
        op = proto.op_of(p, req.get("method"))
        if op not in KNOWN:
            return {"jsonrpc": "2.0", "id": req["id"], "error": {"code": -32601, "message": f"Method not found: {op}"}}
        if op == "error":
            return {"jsonrpc": "2.0", "id": req["id"], "error": error_object(p if isinstance(p, dict) else {})}
        return {"jsonrpc": "2.0", "id": req["id"], "result": p}

    invalid = json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Invalid Request"}})
    try:
        async for data in ws:
            if isinstance(data, bytes):
                await send(data)
                continue
            try:
                msg = json.loads(data)
            except ValueError:
                if proto.jsonrpc:
                    await send(json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}}))
                else:
                    await send(data)
                continue
            if proto.jsonrpc:
                if isinstance(msg, list):
                    if not msg:
                        await send(invalid)
                        continue
                    answers = [a for a in map(batch_answer, msg) if a is not None]
                    if answers:
                        await send(json.dumps(answers))
                    continue
                if not isinstance(msg, dict) or msg.get("jsonrpc") != "2.0" or not isinstance(msg.get("method"), str):
                    await send(invalid)
                    continue
                if "id" not in msg:
                    await send(json.dumps({"jsonrpc": "2.0", "method": "echo", "params": msg.get("params")}))
                    continue
                await run(msg["id"], msg["method"], msg.get("params"))
            else:
                if not isinstance(msg, dict) or "id" not in msg:
                    await send(data)  # not a request: sent back unchanged
                    continue
                await run(msg["id"], None, msg.get("message"))
    except ConnectionClosed:
        pass
    finally:
        for task in list(tasks):
            task.cancel()


async def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("envelope", "jsonrpc"):
        sys.exit("usage: server.py <envelope|jsonrpc> <port>")
    proto = Protocol(sys.argv[1] == "jsonrpc")
    loop = asyncio.get_running_loop()
    stdin_closed = loop.create_future()

    def stdin_readable():
        if not sys.stdin.buffer.read1(4096) and not stdin_closed.done():
            stdin_closed.set_result(None)

    loop.add_reader(sys.stdin.fileno(), stdin_readable)
    async with serve(
        lambda ws: connection(ws, proto),
        "127.0.0.1",
        int(sys.argv[2]),
        max_size=64 * 1024 * 1024,
        ping_interval=None,
        compression=None,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        print(port, flush=True)
        await stdin_closed


if __name__ == "__main__":
    asyncio.run(main())
