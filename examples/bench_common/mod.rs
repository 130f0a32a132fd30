//! What `bench` and `bench_floor` share, so that both clients take the same flags, send the same
//! messages, check answers the same way and report the same JSON line.
//!
//! Not an example of its own: cargo only builds `examples/*.rs` and `examples/*/main.rs`.

#![allow(dead_code)] // each binary uses a different part

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// The flags both clients take.
#[derive(Debug, Clone)]
pub struct Args {
    pub url: String,
    pub requests: u64,
    pub inflight: usize,
    pub payload: usize,
    pub warmup: u64,
    /// `bench` only: `callback`, `handle` or `future`.
    pub mode: String,
    /// `bench` only: turn the loop with a zero timeout instead of sleeping in it.
    pub busy_poll: bool,
    /// `bench` only, `wss://`: a PEM file of the CA certificates to trust (instead of
    /// Mozilla's roots).
    pub ca: Option<String>,
}

pub const COMMON_USAGE: &str =
    "  --url URL          ws:// (or, for bench, wss://) address of an echo server (required)
  --requests N       measured calls (default 100000)
  --inflight K       calls kept in flight; 1 is strict ping-pong (default 1)
  --payload BYTES    length of each call's message, at least 16 (default 64)
  --warmup W         unmeasured calls made first (default 1000)";

/// Parses the flags (also as `--flag=value`); `Err` carries what is wrong, `Ok(None)` means
/// `--help`.
pub fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        url: String::new(),
        requests: 100_000,
        inflight: 1,
        payload: 64,
        warmup: 1_000,
        mode: "callback".into(),
        busy_poll: false,
        ca: None,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name.to_string(), Some(value.into())),
            _ => (arg, None),
        };
        let mut value = || -> Result<String, String> {
            inline
                .clone()
                .or_else(|| argv.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        fn number<T: std::str::FromStr>(name: &str, v: String) -> Result<T, String> {
            v.parse()
                .map_err(|_| format!("{name}: invalid number {v:?}"))
        }
        match name.as_str() {
            "-h" | "--help" => return Ok(None),
            "--url" => args.url = value()?,
            "--requests" => args.requests = number(&name, value()?)?,
            "--inflight" => args.inflight = number(&name, value()?)?,
            "--payload" => args.payload = number(&name, value()?)?,
            "--warmup" => args.warmup = number(&name, value()?)?,
            "--mode" => args.mode = value()?,
            "--busy-poll" => args.busy_poll = true,
            "--ca" => args.ca = Some(value()?),
            _ => return Err(format!("unknown argument {name:?}")),
        }
    }
    if args.url.is_empty() {
        return Err("--url is required".into());
    }
    if args.requests == 0 || args.inflight == 0 {
        return Err("--requests and --inflight must be at least 1".into());
    }
    if args.payload < 16 {
        return Err("--payload must be at least 16 (the call number takes 16 characters)".into());
    }
    Ok(Some(args))
}

/// The whole of a benchmark client's `main`: parses the flags (printing `usage` for `--help`,
/// exit status 2 for bad flags), runs, prints the JSON line `run` returns, or the error with
/// exit status 1.
pub fn main_with(
    name: &str,
    usage: &str,
    run: impl FnOnce(&Args) -> Result<String, String>,
) -> std::process::ExitCode {
    use std::process::ExitCode;
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{usage}");
            return ExitCode::SUCCESS;
        }
        Err(why) => {
            eprintln!("{name}: {why}\n\n{usage}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("{name}: {why}");
            ExitCode::FAILURE
        }
    }
}

/// Writes call `i`'s message into `out` (cleared first): `i` as 16 lowercase hex digits, then
/// `x` up to `len` characters.
pub fn write_message(out: &mut String, i: u64, len: usize) {
    out.clear();
    let _ = write!(out, "{i:016x}");
    out.extend(std::iter::repeat_n('x', len - 16));
}

/// Whether `text` is call `i`'s message of `len` characters.
pub fn is_message(text: &str, i: u64, len: usize) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == len
        && bytes[..16]
            .iter()
            .enumerate()
            .all(|(k, &b)| b == b"0123456789abcdef"[(i >> (60 - 4 * k) & 0xf) as usize])
        && bytes[16..].iter().all(|&b| b == b'x')
}

/// Whether `text` is call `i`'s message as a JSON string (in quotes).
pub fn is_quoted_message(text: &str, i: u64, len: usize) -> bool {
    text.len() == len + 2
        && text.starts_with('"')
        && text.ends_with('"')
        && is_message(&text[1..text.len() - 1], i, len)
}

/// Latencies in nanoseconds, 3 significant digits, up to an hour.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}

/// Records one call's latency.
pub fn record(hist: &mut Histogram<u64>, latency: Duration) {
    hist.saturating_record(latency.as_nanos().clamp(1, u64::MAX as u128) as u64);
}

/// This process's CPU time so far (user, system), all threads.
pub fn cpu_times() -> (Duration, Duration) {
    // SAFETY: `getrusage` only writes the `rusage` we hand it, which is plain old data that
    // zeroed memory initialises validly; RUSAGE_SELF is always a valid `who`.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return (Duration::ZERO, Duration::ZERO);
        }
        usage
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    (time(usage.ru_utime), time(usage.ru_stime))
}

/// A global allocator that counts allocations (and reallocations, which may move), to report
/// heap allocations per call.
pub struct CountingAlloc;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// Heap allocations made so far by the whole process.
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

// SAFETY: every method forwards to `System` unchanged, with the caller's arguments, so it keeps
// all of `System`'s guarantees; the counter is a relaxed atomic that never allocates.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as is (see the impl).
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as is (see the impl).
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as is (see the impl).
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is (see the impl).
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// What the measured phase cost; `finish` turns it into the JSON line.
pub struct Measure {
    start: Instant,
    cpu: (Duration, Duration),
    allocations: u64,
}

impl Measure {
    /// Starts the measured phase now.
    pub fn start() -> Self {
        Measure {
            cpu: cpu_times(),
            allocations: allocations(),
            start: Instant::now(),
        }
    }

    /// Ends the measured phase and returns the one JSON line.
    pub fn finish(
        self,
        client: &str,
        mode: Option<&str>,
        args: &Args,
        hist: &Histogram<u64>,
    ) -> String {
        let elapsed = self.start.elapsed();
        let allocations = allocations() - self.allocations;
        let (user, sys) = cpu_times();
        let user = user.saturating_sub(self.cpu.0);
        let sys = sys.saturating_sub(self.cpu.1);
        let n = args.requests as f64;
        let us = |q: f64| hist.value_at_quantile(q) as f64 / 1e3;
        let mut line = format!(
            "{{\"client\":\"{client}\",\"requests\":{},\"inflight\":{},\"payload\":{},\
             \"elapsed_s\":{:.6},\"rps\":{:.1},\"p50_us\":{:.2},\"p99_us\":{:.2},\
             \"p999_us\":{:.2},\"max_us\":{:.2},\"cpu_user_s\":{:.6},\"cpu_sys_s\":{:.6},\
             \"cpu_ns_per_req\":{:.1},\"allocs_per_req\":{:.3}",
            args.requests,
            args.inflight,
            args.payload,
            elapsed.as_secs_f64(),
            n / elapsed.as_secs_f64(),
            us(0.50),
            us(0.99),
            us(0.999),
            hist.max() as f64 / 1e3,
            user.as_secs_f64(),
            sys.as_secs_f64(),
            (user + sys).as_nanos() as f64 / n,
            allocations as f64 / n,
        );
        let transport = if args.url.starts_with("wss:") {
            "wss"
        } else {
            "ws"
        };
        let _ = write!(line, ",\"transport\":\"{transport}\"");
        if let Some(mode) = mode {
            let _ = write!(
                line,
                ",\"mode\":\"{mode}\",\"busy_poll\":{}",
                args.busy_poll
            );
        }
        line.push('}');
        line
    }
}
