//! Testing your own service against a simulated journaldb cluster under faults.
//!
//! The service under test (`svc`) keeps a counter in journaldb and answers `incr` requests
//! over TCP with the new value. A user host calls it 200 times. Meanwhile the driver cuts
//! the service off from one node, crashes another, and skews a clock. At the end the
//! example checks the service's own guarantee: the counter equals the increments the
//! service acknowledged (plus at most the ones whose outcome it could not know).
//!
//! ```bash
//! cargo run -p journaldb-sim --example own_service -- 7    # the seed; default 1
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use journaldb_sim::clock::SimClock;
use journaldb_sim::{Knobs, SimCluster};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const SERVICE_PORT: u16 = 9000;

/// The service: one journaldb transaction per `incr`.
async fn service(cluster: SimCluster, clock: Arc<SimClock>) -> turmoil::Result {
    let db = cluster.connect(clock, 42, Duration::from_secs(30)).await?;
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", SERVICE_PORT)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let db = db.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if line != "incr" {
                    let _ = write.write_all(b"error unknown request\n").await;
                    continue;
                }
                // `transact` retries conflicts and unavailability, and re-asks an unknown
                // commit's outcome; an error left means the outcome is unknown.
                let reply = match db
                    .transact(async |tx| {
                        let n: u64 = tx
                            .get("counter")
                            .await?
                            .map_or(0, |v| String::from_utf8_lossy(&v).parse().unwrap_or(0));
                        tx.put("counter", (n + 1).to_string())?;
                        Ok(n + 1)
                    })
                    .await
                {
                    Ok(n) => format!("ok {n}\n"),
                    Err(e) => format!("error {}\n", e.kind_name()),
                };
                if write.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

#[derive(Debug, Default)]
struct Tally {
    ok: AtomicU64,
    unknown: AtomicU64,
}

/// The user: 200 increments through the service, reconnecting when the connection fails.
async fn user(tally: Arc<Tally>) -> turmoil::Result {
    let mut done = 0;
    while done < 200 {
        let Ok(stream) = turmoil::net::TcpStream::connect(("svc", SERVICE_PORT)).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        while done < 200 {
            if write.write_all(b"incr\n").await.is_err() {
                break;
            }
            let answer = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await;
            done += 1;
            match answer {
                Ok(Ok(Some(line))) if line.starts_with("ok ") => {
                    tally.ok.fetch_add(1, Ordering::Relaxed);
                }
                // An error reply or no reply: the increment may or may not have happened.
                _ => {
                    tally.unknown.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seed: u64 = std::env::args().nth(1).map_or(Ok(1), |s| s.parse())?;
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(UNIX_EPOCH + Duration::from_secs(1_767_225_600))
        .simulation_duration(Duration::from_secs(300))
        .tick_duration(Duration::from_millis(1))
        .build();
    let cluster = SimCluster::add_to(&mut sim, Knobs::default(), None);
    let knobs = cluster.knobs().clone();

    let svc_clock = Arc::new(SimClock::new(knobs.clock_bound));
    let (c, clock) = (cluster.clone(), svc_clock.clone());
    sim.host("svc", move || service(c.clone(), clock.clone()));
    let tally = Arc::new(Tally::default());
    sim.client("user", user(tally.clone()));

    // The driver: faults at fixed simulated times, then run until the user is done.
    let mut step = 0u64;
    loop {
        match step {
            500 => sim.partition("svc", "n1"),
            1_500 => sim.repair("svc", "n1"),
            2_000 => sim.crash("n2"),
            2_600 => sim.bounce("n2"),
            3_000 => {
                let now = sim.since_epoch().as_nanos() as u64;
                svc_clock.set_error(now, 800_000, 100, false);
            }
            _ => {}
        }
        step += 1;
        if sim.step()? {
            break;
        }
    }

    // The check: read the counter from a fresh host once everything healed.
    let result = Arc::new(AtomicU64::new(u64::MAX));
    let (c, out) = (cluster.clone(), result.clone());
    let clock = Arc::new(SimClock::new(knobs.clock_bound));
    sim.client("check", async move {
        let db = c.connect(clock, 7, Duration::from_secs(30)).await?;
        let n: u64 = db
            .transact(async |tx| Ok(tx.get("counter").await?))
            .await?
            .map_or(0, |v| String::from_utf8_lossy(&v).parse().unwrap_or(0));
        out.store(n, Ordering::Relaxed);
        Ok(())
    });
    sim.run()?;
    let counter = result.load(Ordering::Relaxed);
    let ok = tally.ok.load(Ordering::Relaxed);
    let unknown = tally.unknown.load(Ordering::Relaxed);
    println!(
        "seed {seed}: counter {counter}, {ok} acknowledged increments, {unknown} unknown, \
         {:.1} simulated s",
        sim.elapsed().as_secs_f64()
    );
    if counter < ok || counter > ok + unknown {
        return Err(format!("the counter {counter} is outside [{ok}, {}]", ok + unknown).into());
    }
    println!("the service kept its guarantee");
    Ok(())
}
