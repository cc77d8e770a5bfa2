//! Scenario 6: the container-credentials JSON and the EKS Auth response, core's serializer and
//! lenient parsers and the simulator's response writer, against serde_json of equivalent
//! derived structs.

use std::hint::black_box;

use criterion::Criterion;
use pod_identity_agent_lib::simulator::response_body;
use pod_identity_benches::wire::{
    SerdeEksAuthResponse, container_credentials, eks_auth_response,
    serde_parse_container_credentials, serde_parse_eks_auth, serde_write_container_credentials,
    serde_write_eks_auth,
};
use pod_identity_core::container_credentials::ContainerCredentials;
use pod_identity_core::eks_auth::AssumeRoleForPodIdentityResponse;

fn main() {
    let credentials = container_credentials();
    let credentials_json = credentials.to_json().into_bytes();
    let response = eks_auth_response();
    let response_json = response_body(&response);
    let serde_response = SerdeEksAuthResponse::from(&response);

    let mut criterion = Criterion::default().configure_from_args();
    let mut group = criterion.benchmark_group("container_credentials");
    let mut out = Vec::with_capacity(2048);
    group.bench_function("serialize/core", |b| {
        b.iter(|| {
            out.clear();
            black_box(&credentials).write_json(&mut out);
            black_box(out.len())
        });
    });
    group.bench_function("serialize/serde_json", |b| {
        b.iter(|| {
            out.clear();
            serde_write_container_credentials(black_box(&credentials), &mut out)
                .expect("serializes");
            black_box(out.len())
        });
    });
    group.bench_function("parse/core", |b| {
        b.iter(|| ContainerCredentials::from_json(black_box(&credentials_json)).expect("parses"));
    });
    group.bench_function("parse/serde_json", |b| {
        b.iter(|| serde_parse_container_credentials(black_box(&credentials_json)).expect("parses"));
    });
    group.finish();

    let mut group = criterion.benchmark_group("eks_auth_response");
    group.bench_function("serialize/simulator", |b| {
        b.iter(|| response_body(black_box(&response)));
    });
    group.bench_function("serialize/serde_json", |b| {
        b.iter(|| serde_write_eks_auth(black_box(&serde_response)).expect("serializes"));
    });
    group.bench_function("parse/core", |b| {
        b.iter(|| {
            AssumeRoleForPodIdentityResponse::from_json(black_box(&response_json)).expect("parses")
        });
    });
    group.bench_function("parse/serde_json", |b| {
        b.iter(|| serde_parse_eks_auth(black_box(&response_json)).expect("parses"));
    });
    group.finish();
    criterion.final_summary();
}
