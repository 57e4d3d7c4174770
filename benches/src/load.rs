//! The load both cluster benchmarks drive — one-key updates of random keys from many
//! concurrent tasks, each timed — its table, and the free ports their processes listen on.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::embedded::Point;
use crate::report::{quantile_us, record};

/// `clients` tasks doing `update(key, value)` of random keys of `keys` for `duration`, each
/// timed; `update` answers how many times it had to retry.
pub(crate) async fn one_key_updates<F, Fut>(
    clients: usize,
    keys: u64,
    duration: Duration,
    update: F,
) -> anyhow::Result<Point>
where
    F: Fn(String, String) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<u64>> + Send + 'static,
{
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients as u64)
        .map(|t| {
            let update = update.clone();
            tokio::spawn(async move {
                let mut rng = ChaCha8Rng::seed_from_u64(300 + t);
                let mut p = Point::new();
                while start.elapsed() < duration {
                    let key = format!("user{:08}", rng.random_range(0..keys));
                    let value = format!("{}", rng.random::<u64>());
                    let began = Instant::now();
                    p.aborts += update(key, value).await?;
                    record(&mut p.latency, began.elapsed());
                    p.ops += 1;
                }
                Ok::<Point, anyhow::Error>(p)
            })
        })
        .collect();
    let mut points = Vec::new();
    for t in tasks {
        points.push(t.await??);
    }
    Ok(Point::merge(points, start.elapsed()))
}

/// Prints the table header [`row`] fills.
pub(crate) fn header() {
    println!(
        "{:>8} {:>12} {:>9} {:>10} {:>10}",
        "clients", "commits/s", "aborts", "p50 µs", "p99 µs"
    );
}

/// Prints one measured point as a table row.
pub(crate) fn row(clients: usize, p: &Point) {
    println!(
        "{clients:>8} {:>12.0} {:>9} {:>10.1} {:>10.1}",
        p.rate(),
        p.aborts,
        quantile_us(&p.latency, 0.5),
        quantile_us(&p.latency, 0.99)
    );
}

/// `n` distinct ports free on 127.0.0.1 now (all bound at once, so none repeats).
pub(crate) fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?)
}
