//! Scenario 5: the agent's memory per cached entry.
//!
//! The agent's `CredentialCache` (what holds entries) is filled with 1,000 and then 10,000
//! distinct pods' credentials, through `get` as requests would, from an in-process upstream
//! with real-size answers (600-character session token, association) and real-size pod tokens
//! (about 1.2 KiB). RSS is read from `/proc/self/status` (`VmRSS`). Run first in a fresh
//! process; the allocator's reuse of freed memory makes small differences noisy.

use aws_smithy_async::time::SharedTimeSource;
use std::time::Duration;

use pod_identity_agent_lib::{cache::CredentialCache, source::CredentialRequest};
use pod_identity_core::token::ServiceAccountToken;

use crate::fixture::{BoxError, cluster, pod_token};
use crate::procfs::rss_bytes;
use crate::report::{Row, verdict};
use crate::upstream::CountingSource;

/// Entry counts measured.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// The first fill.
    pub small: usize,
    /// The second fill (in all).
    pub large: usize,
}

impl Settings {
    /// The full run.
    pub const FULL: Self = Self {
        small: 1_000,
        large: 10_000,
    };
    /// A smoke run.
    pub const QUICK: Self = Self {
        small: 10,
        large: 100,
    };
}

/// RSS at 0, `small` and `large` entries, and the pod token's size.
#[derive(Debug)]
pub struct Memory {
    /// Bytes resident with the cache empty, then at `small`, then at `large` entries.
    pub rss: [u64; 3],
    /// A pod token's length.
    pub token_len: usize,
    /// The credentials' payload: key id, secret, session token, account, association strings.
    pub payload_len: usize,
}

/// Fills a cache and reads RSS along the way.
pub fn measure(settings: Settings) -> Result<Memory, BoxError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let source = CountingSource::new(SharedTimeSource::default(), Duration::ZERO)
            .without_per_pod_counts();
        let cache = CredentialCache::builder(source)
            .max_entries(settings.large + 1)
            .build();
        let token_len = pod_token(0).expose_secret().len();
        let rss0 = rss_bytes().ok_or("no /proc/self/status")?;
        let mut rss = [rss0, 0, 0];
        let mut filled = 0;
        for (slot, target) in [(1, settings.small), (2, settings.large)] {
            while filled < target {
                let token = pod_token(filled);
                let request = CredentialRequest::new(
                    cluster(),
                    ServiceAccountToken::decode(token.expose_secret())?,
                );
                cache.get(&request).await?;
                filled += 1;
            }
            rss[slot] = rss_bytes().ok_or("no /proc/self/status")?;
        }
        if cache.len() != settings.large {
            return Err(format!("{} entries cached, not {}", cache.len(), settings.large).into());
        }
        let payload_len = payload_len();
        Ok(Memory {
            rss,
            token_len,
            payload_len,
        })
    })
}

/// The bytes of one answer of [`CountingSource`] (they are what the cache must hold).
fn payload_len() -> usize {
    // "ASIACOUNTING" + 8 digits, 40-digit secret, 16 + 584 session token, account id,
    // association ARN and id.
    20 + 40 + 600 + 12 + 83 + 19
}

/// The scenario as table rows.
pub fn run(settings: Settings) -> Result<Vec<Row>, BoxError> {
    let m = measure(settings)?;
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0));
    let per_entry =
        m.rss[2].saturating_sub(m.rss[1]) as f64 / (settings.large - settings.small) as f64;
    let beyond = per_entry - m.token_len as f64;
    let beyond_all = beyond - m.payload_len as f64;
    let s = "5 memory";
    Ok(vec![
        Row::plain(
            s,
            &format!(
                "agent RSS at 0 / {} / {} cached entries",
                settings.small, settings.large
            ),
            format!("{} / {} / {}", mib(m.rss[0]), mib(m.rss[1]), mib(m.rss[2])),
            String::new(),
            String::new(),
        ),
        Row::plain(
            s,
            &format!(
                "bytes per entry ({}→{} slope); beyond the {}-byte pod token",
                settings.small, settings.large, m.token_len
            ),
            format!("{per_entry:.0} B; {beyond:.0} B"),
            String::new(),
            format!("≤ 2048 B beyond the token {}", verdict(beyond <= 2048.0)),
        ),
        Row::plain(
            s,
            &format!(
                "bytes per entry beyond the pod token and the {}-byte credentials payload (the bookkeeping)",
                m.payload_len
            ),
            format!("{beyond_all:.0} B"),
            String::new(),
            String::new(),
        ),
    ])
}
