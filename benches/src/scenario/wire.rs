//! Scenario 6: wire formats, core against serde_json of equivalent derived structs (criterion
//! has the detailed numbers; this is the table's summary).

use std::hint::black_box;
use std::time::Duration;

use pod_identity_agent_lib::simulator::response_body;
use pod_identity_core::container_credentials::ContainerCredentials;
use pod_identity_core::eks_auth::AssumeRoleForPodIdentityResponse;

use crate::clock::stopwatch;
use crate::fixture::BoxError;
use crate::report::Row;
use crate::stats::human;
use crate::wire::{
    container_credentials, eks_auth_response, serde_parse_container_credentials,
    serde_parse_eks_auth, serde_write_container_credentials, serde_write_eks_auth,
};

/// Best of 5 samples of `n` calls, per call.
fn per_call(n: u32, mut f: impl FnMut() -> Result<(), BoxError>) -> Result<Duration, BoxError> {
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let started = stopwatch();
        for _ in 0..n {
            f()?;
        }
        best = best.min(started.elapsed() / n);
    }
    Ok(best)
}

/// The scenario as table rows; `n` calls per sample.
pub fn run(n: u32) -> Result<Vec<Row>, BoxError> {
    let credentials = container_credentials();
    let credentials_json = credentials.to_json().into_bytes();
    let response = eks_auth_response();
    let response_json = response_body(&response);
    let mut out = Vec::with_capacity(2048);

    let ours_write_cc = per_call(n, || {
        out.clear();
        black_box(&credentials).write_json(&mut out);
        black_box(&out);
        Ok(())
    })?;
    let serde_write_cc = per_call(n, || {
        out.clear();
        serde_write_container_credentials(black_box(&credentials), &mut out)?;
        black_box(&out);
        Ok(())
    })?;
    let ours_parse_cc = per_call(n, || {
        black_box(ContainerCredentials::from_json(black_box(
            &credentials_json,
        ))?);
        Ok(())
    })?;
    let serde_parse_cc = per_call(n, || {
        black_box(serde_parse_container_credentials(black_box(
            &credentials_json,
        ))?);
        Ok(())
    })?;
    let ours_write_eks = per_call(n, || {
        black_box(response_body(black_box(&response)));
        Ok(())
    })?;
    let serde_write_eks = per_call(n, || {
        black_box(serde_write_eks_auth(black_box(&response))?);
        Ok(())
    })?;
    let ours_parse_eks = per_call(n, || {
        black_box(AssumeRoleForPodIdentityResponse::from_json(black_box(
            &response_json,
        ))?);
        Ok(())
    })?;
    let serde_parse_eks = per_call(n, || {
        black_box(serde_parse_eks_auth(black_box(&response_json))?);
        Ok(())
    })?;

    let s = "6 wire format";
    let row = |metric: &str, ours: Duration, theirs: Duration| {
        Row::compared(
            s,
            metric,
            human(ours),
            human(theirs),
            theirs.as_secs_f64() / ours.as_secs_f64().max(1e-12),
            None,
        )
    };
    Ok(vec![
        row(
            "container credentials: serialize (core `write_json` vs serde_json derive)",
            ours_write_cc,
            serde_write_cc,
        ),
        row(
            "container credentials: parse (core `from_json`, lenient, vs serde_json derive)",
            ours_parse_cc,
            serde_parse_cc,
        ),
        row(
            "EKS Auth response: serialize (simulator `response_body` vs serde_json derive)",
            ours_write_eks,
            serde_write_eks,
        ),
        row(
            "EKS Auth response: parse (core `from_json` vs serde_json derive)",
            ours_parse_eks,
            serde_parse_eks,
        ),
    ])
}
