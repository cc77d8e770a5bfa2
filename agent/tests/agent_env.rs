//! The `pod-identity-agent` binary as a node runs it, with the environment the reference chart
//! and hybrid nodes give it, against the EKS Auth simulator on loopback:
//!
//! - `HTTPS_PROXY` and `AWS_CA_BUNDLE`: EKS Auth at `https://eks-auth.test:<port>` (a name only
//!   the proxy resolves) behind a TLS front whose certificate only the bundle's CA vouches for,
//!   reached through a CONNECT proxy; `NO_PROXY` naming the host bypasses the proxy;
//! - `AWS_MAX_ATTEMPTS`: more attempts than the default 3 outlast more upstream failures;
//! - `--rotate-credentials true`: the node's keys re-read from `AWS_SHARED_CREDENTIALS_FILE`;
//! - the logs: the reference's logrus JSON lines on stdout.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)] // A test crate: a panic is how a check fails.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use pod_identity_agent_lib::simulator::{NodeCredentials, Times};
use pod_identity_core::eks_auth::EksAuthErrorCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use support::{
    APP_ROLE, LOOPBACK, SERVER_ARGS, collect_lines, eventually, get, now, pod_token, simulator,
};

const AGENT: &str = env!("CARGO_BIN_EXE_pod-identity-agent");
const NODE_KEY: &str = "AKIDNODEENVTEST";
const NODE_SECRET: &str = "node-secret-env-test";
const TLS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/test-data/tls");

fn node() -> NodeCredentials {
    NodeCredentials::new(NODE_KEY, NODE_SECRET)
}

/// A TLS front on loopback (the test CA's `eks-auth.test` certificate) that passes the
/// decrypted bytes to `backend`.
async fn tls_front(backend: SocketAddr) -> SocketAddr {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let certs = CertificateDer::pem_file_iter(format!("{TLS_DIR}/server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(format!("{TLS_DIR}/server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    addr
}

/// A CONNECT proxy on loopback that tunnels every request to `target` and records the
/// authority each CONNECT asked for.
async fn connect_proxy(target: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let record = record.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let mut byte = [0u8; 1];
                    if client.read_exact(&mut byte).await.is_err() || head.len() > 8192 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let Some(authority) = head
                    .strip_prefix("CONNECT ")
                    .and_then(|rest| rest.split(' ').next())
                else {
                    let _ = client
                        .write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
                        .await;
                    return;
                };
                record.lock().unwrap().push(authority.to_owned());
                let Ok(mut upstream) = TcpStream::connect(target).await else {
                    return;
                };
                if client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .is_ok()
                {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
        }
    });
    (addr, seen)
}

/// The agent binary as a child process; stdout and stderr collected line by line.
struct Agent {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Agent {
    fn start(args: &[&str], env: &[(&str, &str)], dir: &Path) -> Self {
        let mut command = Command::new(AGENT);
        command
            .args(SERVER_ARGS)
            .args(["--metrics-port", "0"])
            .args(args)
            .env_clear()
            .env("HOME", dir)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", dir.join("config"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap();
        let (stdout, stderr) = (Arc::default(), Arc::default());
        collect_lines(child.stdout.take().unwrap(), &stdout);
        collect_lines(child.stderr.take().unwrap(), &stderr);
        Self {
            child,
            stdout,
            stderr,
        }
    }

    fn output(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            self.stdout.lock().unwrap(),
            self.stderr.lock().unwrap()
        )
    }

    /// The credential address, from the `serving credentials` line.
    async fn credential_addr(&mut self) -> SocketAddr {
        eventually("the agent to serve", || {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the agent exited with {status}:\n{}", self.output());
            }
            let stdout = self.stdout.lock().unwrap();
            let line = stdout
                .lines()
                .find(|l| l.contains("\"msg\":\"serving credentials\""))?;
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            Some(value["addr"].as_str().unwrap().parse().unwrap())
        })
        .await
    }

    /// Every stdout line, parsed as JSON.
    fn log_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lock()
            .unwrap()
            .lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: not JSON: {line}"))
            })
            .collect()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn get_credentials(addr: SocketAddr, token: &str) -> (u16, String) {
    get(addr, "/v1/credentials", Some(token)).await
}

#[tokio::test]
async fn eks_auth_through_https_proxy_with_the_ca_bundle_and_no_proxy_bypassing_it() {
    let (simulator, server) = simulator("demo", node(), APP_ROLE, LOOPBACK).await;
    let front = tls_front(server.local_addr()).await;
    let (proxy, seen) = connect_proxy(front).await;
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("https://eks-auth.test:{}", front.port());
    let proxy_url = format!("http://{proxy}");
    let ca = format!("{TLS_DIR}/ca.pem");
    let env = [
        ("AWS_ACCESS_KEY_ID", NODE_KEY),
        ("AWS_SECRET_ACCESS_KEY", NODE_SECRET),
        ("HTTPS_PROXY", proxy_url.as_str()),
        ("AWS_CA_BUNDLE", ca.as_str()),
    ];

    let mut agent = Agent::start(&["--endpoint", &endpoint], &env, dir.path());
    let addr = agent.credential_addr().await;
    let token = pod_token("app", "proxied", now());
    let (status, body) = get_credentials(addr, &token).await;
    assert_eq!(status, 200, "{body}\n{}", agent.output());
    assert!(body.contains("\"AccessKeyId\":\"ASIA"), "{body}");
    assert_eq!(simulator.token_request_count(&token), 1);
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [format!("eks-auth.test:{}", front.port())]
    );
    drop(agent);

    // Without the bundle the front's certificate is not trusted: the call fails (500 `[]`).
    let without_bundle = &env[..3];
    let mut agent = Agent::start(&["--endpoint", &endpoint], without_bundle, dir.path());
    let addr = agent.credential_addr().await;
    let token = pod_token("app", "untrusted", now());
    assert_eq!(get_credentials(addr, &token).await, (500, "[]\n".into()));
    assert_eq!(simulator.token_request_count(&token), 0);
    drop(agent);

    // NO_PROXY naming the host: no CONNECT, and eks-auth.test resolves nowhere.
    seen.lock().unwrap().clear();
    let mut bypass = env.to_vec();
    bypass.push(("NO_PROXY", "eks-auth.test"));
    let mut agent = Agent::start(&["--endpoint", &endpoint], &bypass, dir.path());
    let addr = agent.credential_addr().await;
    let token = pod_token("app", "bypassed", now());
    assert_eq!(get_credentials(addr, &token).await.0, 500);
    assert!(
        seen.lock().unwrap().is_empty(),
        "{:?}",
        seen.lock().unwrap()
    );
}

#[tokio::test]
async fn aws_max_attempts_is_honoured() {
    let (simulator, server) = simulator("demo", node(), APP_ROLE, LOOPBACK).await;
    let dir = tempfile::tempdir().unwrap();
    let endpoint = server.endpoint_url();
    let keys = [
        ("AWS_ACCESS_KEY_ID", NODE_KEY),
        ("AWS_SECRET_ACCESS_KEY", NODE_SECRET),
    ];

    // Default: 3 attempts, so three upstream failures reach the pod.
    let mut agent = Agent::start(&["--endpoint", &endpoint], &keys, dir.path());
    let addr = agent.credential_addr().await;
    simulator.fail(EksAuthErrorCode::InternalServer, Times::Next(3));
    assert_eq!(
        get_credentials(addr, &pod_token("app", "three", now()))
            .await
            .0,
        500
    );
    simulator.clear_failures();
    drop(agent);

    // AWS_MAX_ATTEMPTS=4: the fourth attempt succeeds.
    let mut env = keys.to_vec();
    env.push(("AWS_MAX_ATTEMPTS", "4"));
    let mut agent = Agent::start(&["--endpoint", &endpoint], &env, dir.path());
    let addr = agent.credential_addr().await;
    simulator.fail(EksAuthErrorCode::InternalServer, Times::Next(3));
    let (status, body) = get_credentials(addr, &pod_token("app", "four", now())).await;
    assert_eq!(status, 200, "{body}\n{}", agent.output());
}

#[tokio::test]
async fn rotate_credentials_true_reads_the_rotated_shared_credentials_file() {
    let (simulator, server) = simulator("demo", node(), APP_ROLE, LOOPBACK).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node-credentials");
    let write = |id: &str, secret: &str| {
        std::fs::write(
            &file,
            format!("[default]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\n"),
        )
        .unwrap();
    };
    write("AKIDSTALE", "stale-secret");
    let file_env = file.to_str().unwrap();
    // As the reference's hybrid DaemonSet passes it: two words.
    let mut agent = Agent::start(
        &[
            "--endpoint",
            &server.endpoint_url(),
            "--rotate-credentials",
            "true",
        ],
        &[("AWS_SHARED_CREDENTIALS_FILE", file_env)],
        dir.path(),
    );
    let addr = agent.credential_addr().await;
    let token = pod_token("app", "hybrid", now());
    assert_eq!(
        get_credentials(addr, &token).await.0,
        403,
        "the stale key is unknown"
    );

    write(NODE_KEY, NODE_SECRET);
    let (status, body) = get_credentials(addr, &token).await;
    assert_eq!(status, 200, "{body}\n{}", agent.output());
    assert_eq!(simulator.token_request_count(&token), 1);

    // The logs: logrus's shape on stdout, with the cluster; nothing on stderr.
    let lines = agent.log_lines();
    assert!(!lines.is_empty());
    for line in &lines {
        for key in ["level", "msg", "time", "cluster-name"] {
            assert!(line.get(key).is_some(), "no {key} in {line}");
        }
        assert_eq!(line["cluster-name"], "demo");
        let level = line["level"].as_str().unwrap();
        assert!(
            ["trace", "debug", "info", "warning", "error"].contains(&level),
            "{line}"
        );
        assert!(line["time"].as_str().unwrap().ends_with('Z'), "{line}");
    }
    assert!(
        lines.iter().any(|l| l["msg"]
            .as_str()
            .unwrap()
            .starts_with("Credentials rotation enabled")),
        "{}",
        agent.output()
    );
    let request = lines
        .iter()
        .find(|l| l["msg"] == "credential request" && l["status"] == 200)
        .unwrap_or_else(|| panic!("{}", agent.output()));
    assert!(
        request["client-addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert_eq!(agent.stderr.lock().unwrap().as_str(), "");
    assert!(!agent.output().contains(NODE_SECRET));
}
