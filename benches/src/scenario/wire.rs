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
    SerdeEksAuthResponse, container_credentials, eks_auth_response,
    serde_parse_container_credentials, serde_parse_eks_auth, serde_write_container_credentials,
    serde_write_eks_auth,
};

/// Per call, the best of 10 samples of `n` calls of each side, the sides' samples alternating
/// (each first in half of the rounds) so that a change in the machine's load reaches both alike.
fn compare(
    n: u32,
    mut ours: impl FnMut() -> Result<(), BoxError>,
    mut theirs: impl FnMut() -> Result<(), BoxError>,
) -> Result<(Duration, Duration), BoxError> {
    let sample = |f: &mut dyn FnMut() -> Result<(), BoxError>| {
        let started = stopwatch();
        for _ in 0..n {
            f()?;
        }
        Ok::<_, BoxError>(started.elapsed() / n)
    };
    let (mut best_ours, mut best_theirs) = (Duration::MAX, Duration::MAX);
    for round in 0..10 {
        // Each side goes first in half of the rounds.
        if round % 2 == 0 {
            best_ours = best_ours.min(sample(&mut ours)?);
            best_theirs = best_theirs.min(sample(&mut theirs)?);
        } else {
            best_theirs = best_theirs.min(sample(&mut theirs)?);
            best_ours = best_ours.min(sample(&mut ours)?);
        }
    }
    Ok((best_ours, best_theirs))
}

/// The scenario as table rows; `n` calls per sample.
pub fn run(n: u32) -> Result<Vec<Row>, BoxError> {
    let credentials = container_credentials();
    let credentials_json = credentials.to_json().into_bytes();
    let response = eks_auth_response();
    let response_json = response_body(&response);
    let serde_response = SerdeEksAuthResponse::from(&response);
    let (mut ours_out, mut theirs_out) = (Vec::with_capacity(2048), Vec::with_capacity(2048));

    let (ours_write_cc, serde_write_cc) = compare(
        n,
        || {
            ours_out.clear();
            black_box(&credentials).write_json(&mut ours_out);
            black_box(&ours_out);
            Ok(())
        },
        || {
            theirs_out.clear();
            serde_write_container_credentials(black_box(&credentials), &mut theirs_out)?;
            black_box(&theirs_out);
            Ok(())
        },
    )?;
    let (ours_parse_cc, serde_parse_cc) = compare(
        n,
        || {
            black_box(ContainerCredentials::from_json(black_box(
                &credentials_json,
            ))?);
            Ok(())
        },
        || {
            black_box(serde_parse_container_credentials(black_box(
                &credentials_json,
            ))?);
            Ok(())
        },
    )?;
    let (ours_write_eks, serde_write_eks) = compare(
        n,
        || {
            black_box(response_body(black_box(&response)));
            Ok(())
        },
        || {
            black_box(serde_write_eks_auth(black_box(&serde_response))?);
            Ok(())
        },
    )?;
    let (ours_parse_eks, serde_parse_eks) = compare(
        n,
        || {
            black_box(AssumeRoleForPodIdentityResponse::from_json(black_box(
                &response_json,
            ))?);
            Ok(())
        },
        || {
            black_box(serde_parse_eks_auth(black_box(&response_json))?);
            Ok(())
        },
    )?;

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
