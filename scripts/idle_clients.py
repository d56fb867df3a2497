#!/usr/bin/env python3
"""Open many idle client connections to a Postgres-protocol server and measure the
server's memory while they are held.

Each connection sends a StartupMessage, logs in (trust, cleartext, MD5 or
SCRAM-SHA-256), reads until ReadyForQuery and then stays open without sending anything.
Once all are open, the resident memory of the server process (VmRSS and VmHWM from
/proc/PID/status) is read; a fresh connection then runs one query to show the server
still answers, and everything is closed.

Python standard library only. Output: human-readable lines, and one final line
`RESULT key=value ...` for scripts.

Usage: idle_clients.py --port PORT --pid PID [--clients N] [--user U] [--password P]
       [--database D] [--concurrency C] [--query SQL] [--hold SECONDS]
       [--warm-sql SQL]

With --warm-sql every connection runs that query once before it goes idle, the way
pooled application connections sit idle after use: the session's buffers have then been
written to, so their pages count in the resident size.
"""

import argparse
import asyncio
import base64
import hashlib
import hmac
import os
import struct
import sys
import time


class ProtocolError(Exception):
    """The server said something this client does not expect (or an ErrorResponse)."""


def status_kib(pid, field):
    """A `kB` field (VmRSS, VmHWM) of /proc/PID/status, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def startup_message(user, database):
    params = b"".join(
        k.encode() + b"\0" + v.encode() + b"\0"
        for k, v in (("user", user), ("database", database), ("application_name", "idle_clients"))
    ) + b"\0"
    body = struct.pack("!i", 196608) + params
    return struct.pack("!i", len(body) + 4) + body


def message(tag, body):
    return tag + struct.pack("!i", len(body) + 4) + body


def error_text(body):
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode(errors="replace")
    return f"{fields.get('M', '?')} (SQLSTATE {fields.get('C', '?')})"


async def read_message(reader):
    head = await reader.readexactly(5)
    tag = head[:1]
    (length,) = struct.unpack("!i", head[1:])
    if length < 4:
        raise ProtocolError(f"bad length {length} for message {tag!r}")
    body = await reader.readexactly(length - 4)
    if tag == b"E":
        raise ProtocolError(error_text(body))
    return tag, body


class Scram:
    """Client side of SCRAM-SHA-256 (RFC 5802/7677), no channel binding. The salted
    password is cached per (salt, iterations): the server keeps one verifier per user,
    so thousands of logins pay for PBKDF2 once."""

    salted_cache = {}

    def __init__(self, password):
        self.password = password.encode()
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        self.first_bare = f"n=,r={self.nonce}"

    def initial(self):
        return ("n,," + self.first_bare).encode()

    def final(self, server_first):
        server_first = server_first.decode()
        attrs = dict(part.split("=", 1) for part in server_first.split(","))
        if not attrs["r"].startswith(self.nonce):
            raise ProtocolError("SCRAM: server nonce does not extend ours")
        salt = base64.b64decode(attrs["s"])
        iterations = int(attrs["i"])
        key = (salt, iterations)
        salted = Scram.salted_cache.get(key)
        if salted is None:
            salted = hashlib.pbkdf2_hmac("sha256", self.password, salt, iterations)
            Scram.salted_cache[key] = salted
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={attrs['r']}"
        auth_message = f"{self.first_bare},{server_first},{without_proof}".encode()
        signature = hmac.digest(stored_key, auth_message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.digest(salted, b"Server Key", "sha256")
        self.expected = base64.b64encode(hmac.digest(server_key, auth_message, "sha256"))
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final):
        if server_final.strip() != b"v=" + self.expected:
            raise ProtocolError("SCRAM: wrong server signature")


async def login(host, port, user, password, database):
    """Connect and log in; returns (reader, writer) after the first ReadyForQuery."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(startup_message(user, database))
        await writer.drain()
        scram = None
        while True:
            tag, body = await read_message(reader)
            if tag == b"R":
                (code,) = struct.unpack("!i", body[:4])
                data = body[4:]
                if code == 0:
                    pass
                elif code == 3:
                    writer.write(message(b"p", password.encode() + b"\0"))
                elif code == 5:
                    inner = hashlib.md5(password.encode() + user.encode()).hexdigest()
                    outer = hashlib.md5(inner.encode() + data[:4]).hexdigest()
                    writer.write(message(b"p", b"md5" + outer.encode() + b"\0"))
                elif code == 10:
                    if b"SCRAM-SHA-256" not in data.split(b"\0"):
                        raise ProtocolError(f"no SCRAM-SHA-256 among {data!r}")
                    scram = Scram(password)
                    first = scram.initial()
                    writer.write(message(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first))
                elif code == 11 and scram is not None:
                    writer.write(message(b"p", scram.final(data)))
                elif code == 12 and scram is not None:
                    scram.verify(data)
                else:
                    raise ProtocolError(f"unsupported authentication request {code}")
                await writer.drain()
            elif tag == b"Z":
                return reader, writer
            # ParameterStatus, BackendKeyData, NoticeResponse: nothing to do
    except BaseException:
        writer.close()
        raise


async def query(host, port, user, password, database, sql):
    """Run one simple query on a fresh connection; returns (rows, command tag)."""
    reader, writer = await login(host, port, user, password, database)
    try:
        return await run_query(reader, writer, sql)
    finally:
        writer.write(message(b"X", b""))
        writer.close()


async def run_query(reader, writer, sql):
    """Run one simple query on an open connection; returns (rows, command tag)."""
    writer.write(message(b"Q", sql.encode() + b"\0"))
    await writer.drain()
    rows, tag_text = [], ""
    while True:
        tag, body = await read_message(reader)
        if tag == b"D":
            (n,) = struct.unpack("!h", body[:2])
            pos, row = 2, []
            for _ in range(n):
                (length,) = struct.unpack("!i", body[pos : pos + 4])
                pos += 4
                if length < 0:
                    row.append(None)
                else:
                    row.append(body[pos : pos + length].decode())
                    pos += length
            rows.append(row)
        elif tag == b"C":
            tag_text = body.rstrip(b"\0").decode()
        elif tag == b"Z":
            return rows, tag_text


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True, help="server process to measure")
    ap.add_argument("--clients", type=int, default=10000)
    ap.add_argument("--user", default="app")
    ap.add_argument("--password", default="app")
    ap.add_argument("--database", default="app")
    ap.add_argument("--concurrency", type=int, default=200, help="logins in flight at once")
    ap.add_argument("--query", default="SELECT count(*) FROM accounts")
    ap.add_argument("--hold", type=float, default=2.0, help="seconds to wait before measuring")
    ap.add_argument("--warm-sql", help="query each connection runs once before idling")
    a = ap.parse_args()
    creds = (a.host, a.port, a.user, a.password, a.database)

    # One login and query first: the server's pools and caches are warm, so the
    # baseline is a serving proxy, not a freshly started one.
    rows, tag = await query(*creds, a.query)
    base_rss, base_hwm = status_kib(a.pid, "VmRSS"), status_kib(a.pid, "VmHWM")
    print(f"baseline:   VmRSS {base_rss} KiB, VmHWM {base_hwm} KiB (after one query: {tag})")

    gate = asyncio.Semaphore(a.concurrency)
    errors = {}

    async def one():
        async with gate:
            try:
                conn = await asyncio.wait_for(login(*creds), timeout=60)
                if a.warm_sql:
                    await asyncio.wait_for(run_query(*conn, a.warm_sql), timeout=60)
                return conn
            except Exception as e:  # counted and summarised, not fatal
                key = f"{type(e).__name__}: {e}"
                errors[key] = errors.get(key, 0) + 1
                return None

    started = time.monotonic()
    results = await asyncio.gather(*(one() for _ in range(a.clients)))
    conns = [c for c in results if c is not None]
    elapsed = time.monotonic() - started
    warm = f", each after one {a.warm_sql!r}" if a.warm_sql else ""
    print(f"opened:     {len(conns)} of {a.clients} idle connections in {elapsed:.1f} s{warm}")
    for key, n in sorted(errors.items(), key=lambda kv: -kv[1])[:5]:
        print(f"  failed {n}x: {key}")

    await asyncio.sleep(a.hold)
    # Idle means idle: the server must not have closed any of them.
    closed = sum(1 for r, _ in conns if r.at_eof())
    rss, hwm = status_kib(a.pid, "VmRSS"), status_kib(a.pid, "VmHWM")
    per_client = (rss - base_rss) / len(conns) if conns else 0.0
    print(f"idle:       VmRSS {rss} KiB ({rss / 1024:.1f} MiB), VmHWM {hwm} KiB ({hwm / 1024:.1f} MiB)")
    print(f"per client: {per_client:.1f} KiB (VmRSS growth / open connections); closed by server: {closed}")

    ok = False
    try:
        rows, tag = await asyncio.wait_for(query(*creds, a.query), timeout=30)
        ok = True
        print(f"query:      {a.query!r} -> {rows} ({tag}) with {len(conns)} clients idle")
    except Exception as e:
        print(f"query:      FAILED with {len(conns)} clients idle: {type(e).__name__}: {e}")

    for _, w in conns:
        try:
            w.write(message(b"X", b""))
            w.close()
        except Exception:
            pass
    await asyncio.sleep(0.5)

    print(
        f"RESULT clients={a.clients} opened={len(conns)} closed_by_server={closed} "
        f"baseline_rss_kib={base_rss} idle_rss_kib={rss} idle_hwm_kib={hwm} "
        f"per_client_kib={per_client:.1f} query_ok={int(ok)}"
    )
    return 0 if ok and len(conns) == a.clients and closed == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
