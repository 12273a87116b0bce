//! Measuring helpers shared by the workspace's benchmarks (`make bench`).

use std::time::{Duration, Instant};

use tonic::transport::Channel;

/// The `p` quantile (0 to 1) of `samples`, which it sorts; zero when there are none.
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort();
    let index = ((samples.len() - 1) as f64 * p.clamp(0.0, 1.0)).round() as usize;
    samples[index]
}

/// `d` in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The floor every figure is set against: the p50 of `calls` gRPC health checks on
/// `channel`, one unary round trip that touches nothing.
pub async fn health_floor(channel: Channel, calls: usize) -> Duration {
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let started = Instant::now();
        health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .unwrap_or_else(|e| panic!("health check: {e}"));
        samples.push(started.elapsed());
    }
    percentile(&mut samples, 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let mut samples: Vec<_> = (1..=100).rev().map(Duration::from_millis).collect();
        assert_eq!(percentile(&mut samples, 0.5), Duration::from_millis(51));
        assert_eq!(percentile(&mut samples, 0.95), Duration::from_millis(95));
        assert_eq!(percentile(&mut samples, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&mut [], 0.5), Duration::ZERO);
        assert!((ms(Duration::from_micros(1500)) - 1.5).abs() < 1e-9);
    }
}
