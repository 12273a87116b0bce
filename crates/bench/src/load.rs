//! Drives calls under a load and measures them; see the crate docs.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tonic::Status;
use tonic::transport::{Channel, Endpoint};

/// Longest latency a histogram holds; longer calls are recorded as this.
const MAX_LATENCY_US: u64 = 60_000_000;

/// How calls are started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Each worker starts its next call when the last one returns: the most the system
    /// does at this concurrency.
    Closed,
    /// Calls start on a fixed schedule of `per_second` in all, spread over the workers;
    /// a call's latency counts from when it was due, so time spent waiting for a worker
    /// behind schedule is latency too.
    Open {
        /// Calls started per second, all workers together.
        per_second: f64,
    },
}

/// A load: how many connections, how many calls in flight on each, for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    /// TCP connections (HTTP/2 channels), each its own.
    pub connections: usize,
    /// Calls in flight on each connection.
    pub in_flight: usize,
    /// Time run but not measured first (connections warm, pools full, caches primed).
    pub warmup: Duration,
    /// Time measured.
    pub measure: Duration,
    /// Closed or open loop.
    pub mode: Mode,
}

impl Load {
    /// A closed-loop load of `connections × in_flight` for `measure`, after a warmup of a
    /// fifth of it.
    pub fn closed(connections: usize, in_flight: usize, measure: Duration) -> Self {
        Self {
            connections,
            in_flight,
            warmup: measure / 5,
            measure,
            mode: Mode::Closed,
        }
    }

    /// The same load at a fixed rate of `per_second` calls.
    pub fn at_rate(self, per_second: f64) -> Self {
        Self {
            mode: Mode::Open { per_second },
            ..self
        }
    }

    /// Workers, one per call in flight.
    pub fn workers(&self) -> usize {
        self.connections.max(1) * self.in_flight.max(1)
    }
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// The load it ran under.
    pub load: Load,
    /// Calls that succeeded within the measured window.
    pub ok: u64,
    /// Calls that failed, by gRPC code (`Unavailable`, …).
    pub errors: BTreeMap<String, u64>,
    /// Latency of the successful calls, in microseconds.
    pub latency: Histogram<u64>,
}

impl Report {
    /// The report of a run that did not happen (a scenario left out): no calls.
    pub fn skipped(load: &Load) -> Self {
        Self {
            load: *load,
            ok: 0,
            errors: BTreeMap::new(),
            latency: histogram(),
        }
    }

    /// Successful calls per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.load.measure.as_secs_f64().max(f64::EPSILON)
    }

    /// Failed calls.
    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Whether the run is a measurement at all: calls succeeded and none failed.
    pub fn succeeded(&self) -> bool {
        self.ok > 0 && self.failed() == 0
    }

    /// The latency at quantile `q` (0 to 1).
    pub fn quantile(&self, q: f64) -> Duration {
        Duration::from_micros(self.latency.value_at_quantile(q.clamp(0.0, 1.0)))
    }

    /// The slowest call.
    pub fn max(&self) -> Duration {
        Duration::from_micros(self.latency.max())
    }

    /// This run's rate as a share of `limit`'s (same load, same machine).
    pub fn ratio_to(&self, limit: &Report) -> f64 {
        self.rate() / limit.rate().max(f64::EPSILON)
    }
}

/// `connections` channels to `url`, each its own TCP connection.
pub async fn connect(
    url: &str,
    connections: usize,
) -> Result<Vec<Channel>, tonic::transport::Error> {
    let endpoint = Endpoint::from_shared(url.to_owned())?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5));
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections.max(1) {
        channels.push(endpoint.connect().await?);
    }
    Ok(channels)
}

/// What one worker saw.
struct Tally {
    ok: u64,
    errors: BTreeMap<String, u64>,
    latency: Histogram<u64>,
}

/// An empty latency histogram (microseconds, three significant figures up to a minute).
pub fn histogram() -> Histogram<u64> {
    // Three significant figures from 1 µs to a minute; the bounds are constants, so this
    // cannot fail.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
        .unwrap_or_else(|e| unreachable!("histogram bounds: {e}"))
}

impl Tally {
    fn new() -> Self {
        Self {
            ok: 0,
            errors: BTreeMap::new(),
            latency: histogram(),
        }
    }

    /// Adds a worker's tally; `None` is a worker that panicked and lost its tally, so the
    /// run cannot be reported as fast.
    fn absorb(&mut self, tally: Option<Tally>) {
        match tally {
            Some(tally) => {
                self.ok += tally.ok;
                for (code, n) in tally.errors {
                    *self.errors.entry(code).or_default() += n;
                }
                let _ = self.latency.add(&tally.latency);
            }
            None => *self.errors.entry("WorkerPanicked".to_owned()).or_default() += 1,
        }
    }

    fn record(&mut self, took: Duration, result: Result<(), Status>) {
        match result {
            Ok(()) => {
                self.ok += 1;
                let us = u64::try_from(took.as_micros()).unwrap_or(MAX_LATENCY_US);
                let _ = self.latency.record(us.clamp(1, MAX_LATENCY_US));
            }
            Err(status) => {
                *self
                    .errors
                    .entry(format!("{:?}", status.code()))
                    .or_default() += 1;
            }
        }
    }
}

/// Runs `call` under `load`, the workers spread over `channels`; `call` gets a channel and
/// the worker's sequence number (for unique keys) and says whether the call succeeded.
pub async fn run<F, Fut>(load: &Load, channels: &[Channel], call: F) -> Report
where
    F: Fn(Channel, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Status>> + Send + 'static,
{
    let call = Arc::new(call);
    let workers = load.workers();
    let start = Instant::now();
    let measure_from = start + load.warmup;
    let end = measure_from + load.measure;
    let mut tasks = Vec::with_capacity(workers);
    for worker in 0..workers {
        let Some(channel) = channels.get(worker % channels.len().max(1)).cloned() else {
            break;
        };
        let call = Arc::clone(&call);
        let mode = load.mode;
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::new();
            // Sequence numbers unique across workers.
            let mut seq = worker as u64;
            let mut k: u32 = 0;
            loop {
                let due = match mode {
                    Mode::Closed => Instant::now(),
                    Mode::Open { per_second } => {
                        let first = Duration::from_secs_f64(worker as f64 / per_second);
                        let period = Duration::from_secs_f64(workers as f64 / per_second);
                        let due = start + first + period * k;
                        tokio::time::sleep_until(due.into()).await;
                        due
                    }
                };
                if due >= end {
                    break;
                }
                let result = call(channel.clone(), seq).await;
                if due >= measure_from {
                    tally.record(due.elapsed(), result);
                }
                seq += workers as u64;
                k = k.saturating_add(1);
            }
            tally
        }));
    }
    let mut total = Tally::new();
    for task in tasks {
        total.absorb(task.await.ok());
    }
    Report {
        load: *load,
        ok: total.ok,
        errors: total.errors,
        latency: total.latency,
    }
}

/// Runs `call` closed loop on `load.connections` OS threads (one call at a time each; the
/// in-process work, no network), for work such as local token verification; `call` gets
/// the sequence number and says whether the call succeeded.
pub fn run_in_process<F>(load: &Load, call: F) -> Report
where
    F: Fn(u64) -> Result<(), Status> + Sync,
{
    let threads = load.connections.max(1);
    let start = Instant::now();
    let measure_from = start + load.warmup;
    let end = measure_from + load.measure;
    let tallies: Vec<std::thread::Result<Tally>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let call = &call;
                scope.spawn(move || {
                    let mut tally = Tally::new();
                    let mut seq = thread as u64;
                    loop {
                        let due = Instant::now();
                        if due >= end {
                            break;
                        }
                        let result = call(seq);
                        if due >= measure_from {
                            tally.record(due.elapsed(), result);
                        }
                        seq += threads as u64;
                    }
                    tally
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    });
    let mut total = Tally::new();
    for tally in tallies {
        total.absorb(tally.ok());
    }
    Report {
        load: Load {
            in_flight: 1,
            ..*load
        },
        ok: total.ok,
        errors: total.errors,
        latency: total.latency,
    }
}
