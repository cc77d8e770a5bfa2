//! Scenario 3: the agent serving cache hits over loopback HTTP/1.1 keep-alive, against a bare
//! hyper server on the same port returning the same bytes (the machine's ceiling).
//!
//! The servers run on their own 2-worker runtime (threads `bench-server`), the closed-loop load
//! generator on another (threads `bench-load`); both share the machine's 2 cores, the same way
//! for both servers. Each point: 0.5 s warm-up, then the measured run.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tokio::runtime::Runtime;

use crate::fixture::{BoxError, LocalAgent, free_port, pod_token};
use crate::loadgen::{Run, closed_loop, credentials_request, fetch};
use crate::procfs::cpu_time;
use crate::report::{Row, verdict};
use crate::stats::{human, per_second};
use crate::stub;

/// Settings of the scenario.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Concurrency levels (connections).
    pub concurrency: Vec<usize>,
    /// Length of each measured run.
    pub duration: Duration,
    /// Length of each warm-up.
    pub warmup: Duration,
}

impl Settings {
    /// The full run.
    pub fn full() -> Self {
        Self {
            concurrency: vec![16, 64, 256],
            duration: Duration::from_secs(5),
            warmup: Duration::from_millis(500),
        }
    }

    /// A smoke run.
    pub fn quick() -> Self {
        Self {
            concurrency: vec![16],
            duration: Duration::from_millis(200),
            warmup: Duration::from_millis(50),
        }
    }
}

/// One measured point.
#[derive(Debug)]
pub struct Point {
    /// The run.
    pub run: Run,
    /// CPU time of the server threads.
    pub server_cpu: Duration,
}

fn runtime(name: &str) -> std::io::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
}

fn measure(
    load: &Runtime,
    addr: SocketAddr,
    request: &[u8],
    connections: usize,
    settings: &Settings,
) -> Result<Point, BoxError> {
    load.block_on(closed_loop(
        addr,
        request.into(),
        connections,
        settings.warmup,
    ))?;
    let cpu = cpu_time("bench-server");
    let run = load.block_on(closed_loop(
        addr,
        request.into(),
        connections,
        settings.duration,
    ))?;
    let server_cpu = cpu_time("bench-server").saturating_sub(cpu);
    Ok(Point { run, server_cpu })
}

/// Runs every concurrency level against the bare server, then the agent, on one port.
pub fn run(settings: &Settings) -> Result<Vec<Row>, BoxError> {
    let server = runtime("bench-server")?;
    let load = runtime("bench-load")?;
    let port = free_port()?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let token = pod_token(0);
    let request = credentials_request(addr, token.expose_secret());

    let mut rows = Vec::new();
    for &connections in &settings.concurrency {
        // The agent, warm: its first answer is the body the bare server will return.
        let agent = server.block_on(LocalAgent::start(port, |b| b))?;
        let (status, body) = load.block_on(fetch(addr, &request))?;
        if status != 200 {
            return Err(format!("the agent answered {status}").into());
        }
        let ours = measure(&load, addr, &request, connections, settings)?;
        server.block_on(agent.stop());

        let bare = server.block_on(async { stub::fixed_bytes(addr, Bytes::from(body)).await })?;
        let ceiling = measure(&load, addr, &request, connections, settings)?;
        server.block_on(bare.stop());
        rows.extend(rows_for(connections, ours, ceiling));
    }
    Ok(rows)
}

fn rows_for(connections: usize, mut ours: Point, mut ceiling: Point) -> Vec<Row> {
    let s = "3 agent cache-hit serving";
    let (ours_rate, ceiling_rate) = (ours.run.rate(), ceiling.run.rate());
    let share = ours_rate / ceiling_rate;
    let (ours_p99, ceiling_p99) = (
        ours.run.latencies.quantile(0.99),
        ceiling.run.latencies.quantile(0.99),
    );
    let p99_ratio = ours_p99.as_secs_f64() / ceiling_p99.as_secs_f64().max(1e-12);
    let cpu_per_request =
        |p: &Point| human(p.server_cpu.div_f64(p.run.latencies.len().max(1) as f64));
    let utilisation = |p: &Point| p.server_cpu.as_secs_f64() / p.run.elapsed.as_secs_f64() * 100.0;
    vec![
        Row::plain(
            s,
            &format!("c={connections}: requests/s (errors)"),
            format!("{} ({})", per_second(ours_rate), ours.run.errors),
            format!("{} ({})", per_second(ceiling_rate), ceiling.run.errors),
            format!(
                "≥ 80% of ceiling: {:.0}% {}",
                share * 100.0,
                verdict(share >= 0.8)
            ),
        ),
        Row::plain(
            s,
            &format!("c={connections}: p50 / p99 / p99.9 latency"),
            format!(
                "{} / {} / {}",
                human(ours.run.latencies.quantile(0.5)),
                human(ours_p99),
                human(ours.run.latencies.quantile(0.999))
            ),
            format!(
                "{} / {} / {}",
                human(ceiling.run.latencies.quantile(0.5)),
                human(ceiling_p99),
                human(ceiling.run.latencies.quantile(0.999))
            ),
            format!(
                "p99 ≤ 2× ceiling: {p99_ratio:.2}× {}",
                verdict(p99_ratio <= 2.0)
            ),
        ),
        Row::plain(
            s,
            &format!("c={connections}: server CPU per request (server threads' CPU use)"),
            format!("{} ({:.0}%)", cpu_per_request(&ours), utilisation(&ours)),
            format!(
                "{} ({:.0}%)",
                cpu_per_request(&ceiling),
                utilisation(&ceiling)
            ),
            String::new(),
        ),
    ]
}
