#!/usr/bin/env python3
"""Seeds the fuzz corpora under fuzz/corpus/<target>.

- codec_decode: every raw string literal r#"..."# in src/ and tests/ that starts with `{` or
  `[` (the frames the test suite writes; in format! strings `{{`/`}}` are unescaped and
  placeholders filled with 7), and a few frames for what the tests name in prose only (deep
  nesting, escapes in member names, numbers out of range, string ids).
- handshake: the test suite's responses (src/core/handshake.rs), as the target reads them:
  a flags byte, four seed bytes, then the response with `{ACCEPT}` and `{PAD}` placeholders.
- timer_wheel: operation scripts (see fuzz/fuzz_targets/timer_wheel.rs for the encoding).
- engine: scripts of pseudo-random bytes (seeded), from 64 bytes to 16 KB: every two bytes are
  one choice of src/core/sim/random.rs.

Each input is one file named by its SHA-1, as libFuzzer names its own. Rerunning adds only
what is missing.
"""
import hashlib
import pathlib
import random
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
LITERAL = re.compile(r'r#"(.*?)"#', re.S)


def frames():
    for path in sorted(list((ROOT / "src").rglob("*.rs")) + list((ROOT / "tests").rglob("*.rs"))):
        for text in LITERAL.findall(path.read_text()):
            if not text.lstrip().startswith(("{", "[")):
                continue
            if "{{" in text:
                # A format! string: unescape the braces, fill the placeholders.
                text = re.sub(r"\{[a-z_0-9:?]*\}", "7", text.replace("{{", "\x00").replace("}}", "\x01"))
                text = text.replace("\x00", "{").replace("\x01", "}")
            yield text


EXTRA_FRAMES = [
    '{"id":1,"message":' + "[" * 127 + "]" * 127 + "}",
    '{"id":1,"message":' + "[" * 128 + "]" * 128 + "}",
    '{"jsonrpc":"2.0","id":1,"result":' + "{\"a\":" * 130 + "1" + "}" * 130 + "}",
    '{"mes\\u0073age":1,"id":2}',
    '{"jsonrpc":"2\\u002e0","id":1,"result":1}',
    '{"jsonrpc":"2.0","id":"\\u0035","result":1}',
    '{"jsonrpc":"2.0","id":"18446744073709551615","result":1}',
    '{"jsonrpc":"2.0","id":18446744073709551616,"result":1}',
    '{"id":0,"message":1e999}',
    '{"id":1,"message":"\\ud800"}',
    '{"\\ud800":1,"id":1}',
    '{"jsonrpc":"2.0","method":null,"id":1,"result":2}',
    '{"jsonrpc":"2.0","method":"m","params":{"subscription":null,"result":null}}',
    '{"jsonrpc":"2.0","method":"m","params":{"subscription":1,"subscription":2}}',
    '{"jsonrpc":"2.0","id":1,"error":{"code":-9223372036854775808,"message":"min"}}',
    '{"jsonrpc":"2.0","id":1,"error":{"code":9223372036854775808,"message":"over"}}',
    '{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"m","data":null}}',
    '[{"jsonrpc":"2.0","id":"1","result":1},{"jsonrpc":"2.0","id":"01","result":1}]',
    '[[],{},"x",1,null]',
    '\u00a0{"id":1}',
    ' \t\r\n{"id" : 3 , "message" : [ ] } ',
]

KEY_ACCEPT_101 = (
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Accept: {ACCEPT}\r\n"
)

HANDSHAKE = [
    # (flags, response); flags: bits 0-1 subprotocols offered, 2 extension offered, 3+4 request
    # not all written, 5 close at the end, 6-7 chunking.
    (0x00, KEY_ACCEPT_101 + "\r\n"),
    (0x40, KEY_ACCEPT_101 + "\r\n"),
    (0x80, KEY_ACCEPT_101 + "X-Extra: 1\r\n\r\n\x81\x05hello"),
    (0xC0, (KEY_ACCEPT_101 + "\r\n").replace("\r\n", "\n") + "tail"),
    (0x80, KEY_ACCEPT_101.replace("Connection: Upgrade", "Connection: Upgrade, keep-alive") + "\r\n"),
    (0x80, KEY_ACCEPT_101.replace("Connection: Upgrade", "Connection: close") + "Connection: upgrade\r\n\r\n"),
    (0x00, KEY_ACCEPT_101.replace("Upgrade: websocket", "upgrade: WebSocket") + "\r\n"),
    (0x80, KEY_ACCEPT_101 + "X-Pad: {PAD}{PAD}{PAD}{PAD}{PAD}{PAD}{PAD}{PAD}{PAD}{PAD}{PAD}{PAD}{PAD}{PAD}{PAD}\r\n\r\n"),
    (0xC0, KEY_ACCEPT_101 + "X-Pad: " + "{PAD}" * 16 + "\r\n\r\n"),
    (0x20, "HTTP/1.1 101 Switching Protocols\r\n" + "X-Pad: " + "{PAD}" * 17),
    (0x00, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
    (0x00, "HTTP/1.1 403\r\n\r\n"),
    (0x00, "HTTP/1.0 101 Switching Protocols\r\n\r\n"),
    (0x00, KEY_ACCEPT_101.replace("{ACCEPT}", "AAAAAAAAAAAAAAAAAAAAAAAAAAA=") + "\r\n"),
    (0x00, KEY_ACCEPT_101 + "Sec-WebSocket-Accept: {ACCEPT}\r\n\r\n"),
    (0x00, KEY_ACCEPT_101 + "Sec-WebSocket-Accept: AAAA\r\n\r\n"),
    (0x00, KEY_ACCEPT_101.replace("Upgrade: websocket\r\n", "") + "\r\n"),
    (0x00, KEY_ACCEPT_101.replace("Upgrade: websocket", "Upgrade: h2c") + "\r\n"),
    (0x00, KEY_ACCEPT_101 + "Upgrade: h2c\r\n\r\n"),
    (0x00, KEY_ACCEPT_101.replace("Connection: Upgrade\r\n", "") + "\r\n"),
    (0x02, KEY_ACCEPT_101 + "Sec-WebSocket-Protocol: b\r\n\r\n"),
    (0x03, KEY_ACCEPT_101 + "Sec-WebSocket-Protocol: b\r\nSec-WebSocket-Protocol: b\r\n\r\n"),
    (0x00, KEY_ACCEPT_101 + "Sec-WebSocket-Protocol: chat\r\n\r\n"),
    (0x01, KEY_ACCEPT_101 + "Sec-WebSocket-Protocol: chat\r\n\r\n"),
    (0x02, KEY_ACCEPT_101 + "Sec-WebSocket-Protocol: c\r\n\r\n"),
    (0x02, KEY_ACCEPT_101 + "\r\n"),
    (0x02, KEY_ACCEPT_101 + "Sec-WebSocket-Protocol: a\r\nSec-WebSocket-Protocol: b\r\n\r\n"),
    (0x02, KEY_ACCEPT_101 + "Sec-WebSocket-Protocol: A\r\n\r\n"),
    (0x00, KEY_ACCEPT_101 + "Sec-WebSocket-Extensions: \r\n\r\n"),
    (0x00, KEY_ACCEPT_101 + "Sec-WebSocket-Extensions: , \r\n\r\n"),
    (0x00, KEY_ACCEPT_101 + "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10\r\n\r\n"),
    (0x04, KEY_ACCEPT_101 + "Sec-WebSocket-Extensions: x-a\r\n\r\n"),
    (0x00, "SSH-2.0-OpenSSH_9.6\r\n"),
    (0x00, "\r\n"),
    (0x00, "HTTP/1.1 101 Switching Protocols\r\nno colon here\r\n\r\n"),
    (0x00, "HTTP/9.9 101 Switching Protocols\r\n\r\n"),
    (0x00, "HTTP/1.1 1O1 Switching Protocols\r\n\r\n"),
    (0x00, "HTTP/1.1 101 Switching Protocols\r\nUpgrade:\x01websocket\r\n\r\n"),
    (0x00, "HTTP/1.1 101 Switching Protocols\r\n Upgrade: websocket\r\n\r\n"),
    (0x00, KEY_ACCEPT_101 + "X-A: 1\r\n" * 125 + "\r\n"),
    (0x00, KEY_ACCEPT_101 + "X-A: 1\r\n" * 120 + "\r\n"),
    (0x20, "HTTP/1.1 101"),
    (0x38, KEY_ACCEPT_101 + "\r\n"),
    (0x80, KEY_ACCEPT_101 + "Sec-WebSocket-Accept:  {ACCEPT} \t\r\n\r\n"),
]


def timer_scripts():
    """Operation scripts: arm (tag 0, scale, 4 bytes), cancel (3, pick), advance (4, scale,
    4 bytes), partial poll (6, scale, 4 bytes, polls), to next deadline (7)."""
    def arm(scale, v):
        return bytes([0, scale]) + v.to_bytes(4, "little")

    def advance(scale, v):
        return bytes([4, scale]) + v.to_bytes(4, "little")

    yield arm(0, 10) + arm(0, 64) + arm(0, 4096) + advance(0, 100) + bytes([7, 7, 7])
    yield b"".join(arm(0, n) for n in range(0, 200, 7)) + bytes([3, 0, 3, 5]) + advance(0, 300)
    yield arm(0x20 | 15, 0xFFFFFFFF) + arm(0xC0, 5) + bytes([7]) + advance(0x2F, 0xFFFF) + bytes([7])
    yield advance(0, 1000) + arm(0x80, 500) + arm(0x80, 200) + bytes([6, 0, 5, 0, 0, 0, 2]) + bytes([7])
    yield b"".join(arm(s, 0x12345678) for s in range(32)) + bytes([7]) * 40
    yield arm(0, 63) + arm(0, 64) + arm(0, 65) + arm(0, 4095) + arm(0, 4096) + arm(0, 262144) + bytes([7]) * 10
    yield arm(0, 5) + advance(0, 5) + bytes([3, 0]) + arm(0, 9) + bytes([3, 0, 7])
    yield bytes([6, 0, 100, 0, 0, 0, 1]) + arm(0x20 | 8, 0xFFFFFF) + bytes([6, 0x2F, 0xFF, 0xFF, 0, 0, 1, 7])


def engine_scripts():
    rng = random.Random(15)
    for size in (64, 256, 1024, 4096, 8192, 16000):
        yield bytes(rng.getrandbits(8) for _ in range(size))


def write(target, inputs):
    out = ROOT / "fuzz" / "corpus" / target
    out.mkdir(parents=True, exist_ok=True)
    added = 0
    for data in inputs:
        path = out / hashlib.sha1(data).hexdigest()
        if not path.exists():
            path.write_bytes(data)
            added += 1
    print(f"{target}: {added} inputs added")


def main():
    write("codec_decode", [f.encode() for f in sorted(set(frames()) | set(EXTRA_FRAMES))])
    write(
        "handshake",
        [bytes([flags, 1, 2, 3, 4]) + text.encode("latin-1") for flags, text in HANDSHAKE],
    )
    write("timer_wheel", list(timer_scripts()))
    write("engine", list(engine_scripts()))


if __name__ == "__main__":
    main()
