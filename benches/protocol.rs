//! Criterion benchmarks: the per-message cost of the protocol layer on the relay's hot
//! path. Splitting a byte stream into whole frames (a backend reply of many DataRows, a
//! client's extended-protocol batch), and forwarding whole frames from a backend read
//! buffer into the client output buffer the way the relay does, so the proxy's own
//! overhead per row can be compared with a plain copy of the same bytes.
use std::hint::black_box;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use pgshard::protocol::frontend::{decode_bind, decode_execute, decode_parse, decode_target};
use pgshard::protocol::split_frame;

/// The relay's limit for a backend message (Postgres' own DataRow limit).
const MAX_BACKEND_MESSAGE: usize = 1 << 30;
/// A client message limit like the default `max_message_size`.
const MAX_CLIENT_MESSAGE: usize = 1 << 26;
/// Rows in the benchmarked backend reply.
const ROWS: usize = 1000;
/// Client batches (Parse/Bind/Describe/Execute/Sync) in one input buffer.
const BATCHES: usize = 100;
/// The relay hands its output to the client socket once this much is buffered.
const OUT_FLUSH_BYTES: usize = 64 * 1024;

/// Append one tagged message: tag, length word, body.
fn message(buf: &mut BytesMut, tag: u8, body: &[u8]) {
    buf.put_u8(tag);
    buf.put_i32(i32::try_from(body.len() + 4).expect("small message"));
    buf.put_slice(body);
}

/// A text-format DataRow of three columns (bigint, text, numeric): ~100 bytes on the
/// wire, like a narrow OLTP row.
fn data_row(i: usize) -> Vec<u8> {
    let fields = [
        format!("{}", 1_000_000 + i),
        format!("account holder number {i:010} of the demo table"),
        format!("{}.{:02}", i * 10, i % 100),
    ];
    let mut body = Vec::new();
    body.put_i16(fields.len() as i16);
    for f in &fields {
        body.put_i32(f.len() as i32);
        body.put_slice(f.as_bytes());
    }
    body
}

/// RowDescription + `ROWS` DataRows + CommandComplete + ReadyForQuery; returns the bytes
/// and the number of messages.
fn backend_reply() -> (BytesMut, usize) {
    let mut buf = BytesMut::new();
    let mut desc = Vec::new();
    desc.put_i16(3);
    for (name, oid) in [("aid", 20u32), ("name", 25), ("balance", 1700)] {
        desc.put_slice(name.as_bytes());
        desc.put_u8(0);
        desc.put_u32(16_400); // table oid
        desc.put_i16(1); // column number
        desc.put_u32(oid);
        desc.put_i16(-1); // type size
        desc.put_i32(-1); // type modifier
        desc.put_i16(0); // text format
    }
    message(&mut buf, b'T', &desc);
    for i in 0..ROWS {
        message(&mut buf, b'D', &data_row(i));
    }
    message(&mut buf, b'C', format!("SELECT {ROWS}\0").as_bytes());
    message(&mut buf, b'Z', b"I");
    (buf, ROWS + 3)
}

/// `BATCHES` times Parse/Bind/Describe/Execute/Sync of a one-parameter point select, as
/// a driver sends it for an unnamed statement; returns the bytes and the message count.
fn client_batches() -> (BytesMut, usize) {
    let sql = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
    let mut buf = BytesMut::new();
    for i in 0..BATCHES {
        let mut parse = Vec::new();
        parse.put_slice(b"\0");
        parse.put_slice(sql.as_bytes());
        parse.put_u8(0);
        parse.put_i16(1);
        parse.put_u32(23); // int4
        message(&mut buf, b'P', &parse);

        let value = format!("{}", 1 + i * 977);
        let mut bind = Vec::new();
        bind.put_slice(b"\0\0"); // unnamed portal, unnamed statement
        bind.put_i16(1);
        bind.put_i16(0); // text parameters
        bind.put_i16(1);
        bind.put_i32(value.len() as i32);
        bind.put_slice(value.as_bytes());
        bind.put_i16(1);
        bind.put_i16(1); // binary results
        message(&mut buf, b'B', &bind);

        message(&mut buf, b'D', b"P\0");
        let mut execute = Vec::new();
        execute.put_u8(0);
        execute.put_i32(0);
        message(&mut buf, b'E', &execute);
        message(&mut buf, b'S', b"");
    }
    (buf, BATCHES * 5)
}

/// Split every frame off `input`; returns the frame count (consumed so the work stays).
fn split_all(mut input: BytesMut, max: usize) -> usize {
    let mut n = 0;
    while let Some(frame) = split_frame(&mut input, max).expect("valid stream") {
        black_box(frame.tag());
        n += 1;
    }
    n
}

/// Split and look into every client message the way the extended-protocol session does.
fn split_and_decode(mut input: BytesMut) -> usize {
    let mut n = 0;
    while let Some(frame) = split_frame(&mut input, MAX_CLIENT_MESSAGE).expect("valid stream") {
        let body = frame.body();
        match frame.tag() {
            b'P' => {
                black_box(decode_parse(body).expect("Parse"));
            }
            b'B' => {
                black_box(decode_bind(body).expect("Bind"));
            }
            b'D' => {
                black_box(decode_target(body, "Describe").expect("Describe"));
            }
            b'E' => {
                black_box(decode_execute(body).expect("Execute"));
            }
            _ => {}
        }
        n += 1;
    }
    n
}

/// The relay's forwarding of a reply: split each whole frame off the backend read buffer
/// and append its bytes to the client output buffer, handing the output off (here:
/// clearing it) once it reaches the flush threshold.
fn forward_frames(mut input: BytesMut, out: &mut BytesMut) -> usize {
    let mut n = 0;
    while let Some(frame) = split_frame(&mut input, MAX_BACKEND_MESSAGE).expect("valid stream") {
        if out.len() >= OUT_FLUSH_BYTES {
            black_box(&out[..]);
            out.clear();
        }
        out.extend_from_slice(frame.as_bytes());
        n += 1;
    }
    black_box(&out[..]);
    out.clear();
    n
}

/// The floor: the same bytes copied into the output in flush-sized chunks, with no
/// framing at all (what a byte-level relay such as socat pays).
fn copy_bytes(input: BytesMut, out: &mut BytesMut) -> usize {
    for chunk in input.chunks(OUT_FLUSH_BYTES) {
        out.extend_from_slice(chunk);
        black_box(&out[..]);
        out.clear();
    }
    input.len()
}

fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_secs(1))
}

fn bench(c: &mut Criterion) {
    let (reply, reply_msgs) = backend_reply();
    let (batch, batch_msgs) = client_batches();
    assert_eq!(split_all(reply.clone(), MAX_BACKEND_MESSAGE), reply_msgs);
    assert_eq!(split_all(batch.clone(), MAX_CLIENT_MESSAGE), batch_msgs);
    assert_eq!(split_and_decode(batch.clone()), batch_msgs);
    let mut out = BytesMut::with_capacity(16 * 1024);
    assert_eq!(forward_frames(reply.clone(), &mut out), reply_msgs);

    // The input buffer is cloned outside the timed part (iter_batched), as each run
    // consumes it.
    for (unit, throughput) in [
        ("msgs", Throughput::Elements(reply_msgs as u64)),
        ("bytes", Throughput::Bytes(reply.len() as u64)),
    ] {
        let mut group = c.benchmark_group(format!("protocol/split_frame/{unit}"));
        group.throughput(throughput);
        group.bench_function("backend reply 1000 DataRows", |b| {
            b.iter_batched(
                || reply.clone(),
                |input| split_all(input, MAX_BACKEND_MESSAGE),
                BatchSize::SmallInput,
            )
        });
        group.finish();
    }

    let mut group = c.benchmark_group("protocol/split_frame/msgs");
    group.throughput(Throughput::Elements(batch_msgs as u64));
    group.bench_function("client batch P/B/D/E/S x100", |b| {
        b.iter_batched(
            || batch.clone(),
            |input| split_all(input, MAX_CLIENT_MESSAGE),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("client batch P/B/D/E/S x100 + decode", |b| {
        b.iter_batched(|| batch.clone(), split_and_decode, BatchSize::SmallInput)
    });
    group.finish();

    for (unit, throughput) in [
        ("msgs", Throughput::Elements(reply_msgs as u64)),
        ("bytes", Throughput::Bytes(reply.len() as u64)),
    ] {
        let mut group = c.benchmark_group(format!("protocol/forward/{unit}"));
        group.throughput(throughput);
        group.bench_function("split_frame + extend_from_slice", |b| {
            let mut out = BytesMut::with_capacity(16 * 1024);
            b.iter_batched(
                || reply.clone(),
                |input| forward_frames(input, &mut out),
                BatchSize::SmallInput,
            )
        });
        group.bench_function("plain copy (no framing, floor)", |b| {
            let mut out = BytesMut::with_capacity(16 * 1024);
            b.iter_batched(
                || reply.clone(),
                |input| copy_bytes(input, &mut out),
                BatchSize::SmallInput,
            )
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench
}
criterion_main!(benches);
