//! What the agent binary's tests share: the EKS Auth simulator they run the agent against.

use pod_identity_agent_lib::simulator::{EksAuthSimulator, NodeCredentials, SimulatorServer};

/// `server` for cluster `demo` on loopback: credentials and probes on free ports, metrics on
/// `127.0.0.1`, region `us-west-2` (the metrics port and the rest are each test's).
pub(crate) const SERVER_ON_LOOPBACK: [&str; 13] = [
    "server",
    "--cluster-name",
    "demo",
    "--bind-hosts",
    "127.0.0.1",
    "--port",
    "0",
    "--probe-port",
    "0",
    "--metrics-address",
    "127.0.0.1",
    "--region",
    "us-west-2",
];

/// A simulator on loopback for cluster `demo`, signing checked against `node`, with one
/// association: `default/app` → `arn:aws:iam::111122223333:role/app`.
pub(crate) async fn simulator(node: NodeCredentials) -> (EksAuthSimulator, SimulatorServer) {
    let simulator = EksAuthSimulator::builder()
        .cluster_name("demo".parse().unwrap())
        .node_credentials(node)
        .associate(
            "default".parse().unwrap(),
            "app".parse().unwrap(),
            "arn:aws:iam::111122223333:role/app".parse().unwrap(),
        )
        .build()
        .unwrap();
    let server = simulator
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    (simulator, server)
}
