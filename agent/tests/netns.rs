//! The real addresses, end to end, in a network namespace of the test's own.
//!
//! As root (CI runs as root), the test makes a namespace with `ip netns add`, runs
//! `pod-identity-agent initialize` in it (with `--existing-link lo` where the kernel has no
//! `dummy` link type), starts the EKS Auth simulator on the namespace's loopback and the agent
//! bound to `169.254.170.23:80` and `[fd00:ec2::23]:80` (both commands with the arguments the
//! DaemonSet in `deploy/manifests/eks.yaml` gives them), then resolves credentials in the same
//! namespace with `PodIdentityCredentialsProvider` and with botocore, given exactly the
//! environment EKS injects into a pod. The namespace has no link to the outside, so nothing
//! leaves it; it is deleted at the end, also when the test fails.
//!
//! Elsewhere (not root, no `ip`) the test prints why it skipped. Under CI as root a namespace
//! that cannot be made is a failure, not a skip.
#![cfg(target_os = "linux")]

mod support;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use caps::{CapSet, Capability};
use nix::sched::CloneFlags;
use pod_identity_agent_lib::simulator::NodeCredentials;
use pod_identity_provider::{Env, PodIdentityCredentialsProvider};

use support::{APP_ROLE, LOOPBACK, now, pod_token, simulator, skip_or_fail_in_ci};

const AGENT: &str = env!("CARGO_BIN_EXE_pod-identity-agent");
const IPV4_URI: &str = "http://169.254.170.23/v1/credentials";
const IPV6_URI: &str = "http://[fd00:ec2::23]/v1/credentials";

/// A network namespace deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    /// A new namespace; `None` where it cannot be made (not root, no `ip`), except under CI,
    /// which runs as root: there a missing capability is a broken CI, not a reason to pass.
    fn create_or_skip() -> Option<Self> {
        if !caps::has_cap(None, CapSet::Effective, Capability::CAP_SYS_ADMIN).unwrap_or(false) {
            return skip_or_fail_in_ci(
                "making a network namespace needs root (CAP_SYS_ADMIN); CI runs these tests as root",
            );
        }
        let name = format!("pia-e2e-{}", std::process::id());
        let failure = match Command::new("ip").args(["netns", "add", &name]).output() {
            Ok(out) if out.status.success() => return Some(Self { name }),
            Ok(out) => String::from_utf8_lossy(&out.stderr).into_owned(),
            Err(error) => format!("cannot run `ip` (install iproute2): {error}"),
        };
        skip_or_fail_in_ci(format_args!("ip netns add {name}: {failure}"))
    }

    /// `ip netns exec <ns> <program>`: a command that runs inside the namespace, with an empty
    /// environment but `PATH`.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.name, program])
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin");
        command
    }

    fn ip(&self, args: &[&str]) {
        let out = Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .expect("run ip");
        assert!(out.status.success(), "ip {args:?}: {}", text(&out.stderr));
    }

    /// Enters the namespace on the calling thread (threads it spawns are inside too).
    fn enter(&self) {
        let file = File::open(format!("/run/netns/{}", self.name)).expect("the namespace exists");
        nix::sched::setns(file, CloneFlags::CLONE_NEWNET).expect("setns");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The agent process, stopped on drop; its log is printed when the test fails.
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn log(&self) -> String {
        let mut log = String::new();
        if let Ok(mut file) = File::open(&self.log) {
            let _ = file.read_to_string(&mut log);
        }
        log
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            println!("agent log:\n{}", self.log());
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("agent/ is inside the workspace")
}

/// The arguments of the DaemonSet container that runs `subcommand`, read from a plain manifest
/// in `deploy/manifests/` (generated from the Helm chart), so tests run what the DaemonSet runs.
fn daemonset_args(manifest: &str, subcommand: &str) -> Vec<String> {
    let path = workspace_root().join("deploy/manifests").join(manifest);
    let manifest =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut lines = manifest.lines().map(str::trim);
    let start = format!("- {subcommand}");
    assert!(
        lines.by_ref().any(|line| line == start),
        "no container runs `{subcommand}` in {}",
        path.display()
    );
    let mut args = vec![subcommand.to_owned()];
    args.extend(lines.map_while(|line| line.strip_prefix("- --").map(|flag| format!("--{flag}"))));
    args
}

/// `initialize` in the namespace, as the DaemonSet's init container runs it; with
/// `--existing-link lo` instead of the dummy link where the kernel lacks the type.
fn initialize(ns: &Netns) -> Vec<String> {
    let run = |args: &[String]| -> Output {
        ns.command(AGENT)
            .args(args)
            .output()
            .expect("run the agent")
    };
    let mut args = daemonset_args("eks.yaml", "initialize");
    assert!(
        args.contains(&"--link-name=pod-id-link0".to_owned()),
        "{args:?}"
    );
    let out = run(&args);
    if !out.status.success() {
        let log = text(&out.stdout);
        assert!(log.contains("EOPNOTSUPP"), "initialize failed: {log}");
        println!(
            "this kernel has no dummy link type (initialize said so: EOPNOTSUPP); \
             using initialize --existing-link lo"
        );
        for arg in &mut args {
            if arg.starts_with("--link-name=") {
                *arg = "--existing-link=lo".to_owned();
            }
        }
        let out = run(&args);
        assert!(
            out.status.success(),
            "initialize --existing-link lo: {}",
            text(&out.stdout)
        );
    }
    // Idempotent: a second run succeeds and changes nothing.
    let again = run(&args);
    // Logs are the reference's JSON lines on stdout.
    let log = text(&again.stdout);
    assert!(again.status.success(), "second initialize: {log}");
    assert!(
        log.contains(r#""changes":0"#),
        "second initialize changed something: {log}"
    );
    args
}

async fn wait_for_listeners() {
    for _ in 0..200 {
        let v4 = tokio::net::TcpStream::connect("169.254.170.23:80").await;
        let v6 = tokio::net::TcpStream::connect("[fd00:ec2::23]:80").await;
        if v4.is_ok() && v6.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the agent did not listen on 169.254.170.23:80 and [fd00:ec2::23]:80 within 10 s");
}

/// botocore's own container provider, in the namespace, with the env EKS injects.
fn botocore_access_key(ns: &Netns, uri: &str, token_file: &Path, home: &Path) -> Option<String> {
    let python = workspace_root().join(".venv/bin/python");
    if !python.exists() {
        return skip_or_fail_in_ci(
            "the botocore part: no .venv (`bash scripts/python-env.sh` creates it; CI does first)",
        );
    }
    let script = "import botocore.session\n\
                  c = botocore.session.get_session().get_credentials()\n\
                  print(c.method, c.get_frozen_credentials().access_key)\n";
    let out = ns
        .command(python.to_str().expect("UTF-8 path"))
        .args(["-c", script])
        .env("HOME", home)
        .env("AWS_CONFIG_FILE", home.join("config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.join("credentials"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri)
        .env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", token_file)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "botocore via {uri}: {}",
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    let (method, key) = stdout.trim().split_once(' ').expect("method and key");
    assert_eq!(
        method, "container-role",
        "botocore did not use its container provider"
    );
    Some(key.to_owned())
}

/// Every command line of the plain manifests is one the agent accepts (no root needed): clap
/// refuses an unknown flag or a bad value before it reaches the trailing `--help`.
#[test]
fn the_daemonset_command_lines_parse() {
    for (manifest, subcommands) in [
        ("eks.yaml", &["initialize", "server"][..]),
        ("self-managed.yaml", &["initialize", "self-managed"][..]),
    ] {
        for subcommand in subcommands {
            let args = daemonset_args(manifest, subcommand);
            assert!(args.len() > 3, "{manifest}: {args:?}");
            let out = Command::new(AGENT)
                .args(&args)
                .arg("--help")
                .output()
                .expect("run the agent");
            assert!(
                out.status.success(),
                "{manifest}: the agent refuses {args:?}: {}",
                text(&out.stderr)
            );
        }
    }
    let out = Command::new(AGENT)
        .args(["server", "--cluster-name=x", "--no-such-flag", "--help"])
        .output()
        .expect("run the agent");
    assert!(
        !out.status.success(),
        "an unknown flag before --help must fail"
    );
}

#[test]
fn pods_get_credentials_on_the_real_link_local_addresses() {
    let Some(ns) = Netns::create_or_skip() else {
        return;
    };
    // The simulator listens on the namespace's loopback.
    ns.ip(&["link", "set", "lo", "up"]);
    let args = initialize(&ns);
    println!("{args:?} set up the addresses");

    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = dir.path().join("eks-pod-identity-token");
    std::fs::write(&token_file, pod_token("app", "app-1", now())).expect("write the token");

    // Everything below runs on this thread, inside the namespace.
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                ns.enter();
                // Its worker threads start from this one, so they are inside too.
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("runtime")
                    .block_on(resolve_in_namespace(&ns, &token_file, dir.path()));
            })
            .join()
            .expect("the namespace thread");
    });
}

async fn resolve_in_namespace(ns: &Netns, token_file: &Path, dir: &Path) {
    let node = NodeCredentials::new("AKIDNODEEXAMPLE", "node-secret-example");
    // The cluster of deploy/values/eks.yaml.
    let (simulator, server) = simulator("my-cluster", node, APP_ROLE, LOOPBACK).await;

    // The DaemonSet's command, with EKS Auth played by the simulator.
    let args = daemonset_args("eks.yaml", "server");
    assert!(args.contains(&"--port=80".to_owned()), "{args:?}");
    let log = dir.join("agent.log");
    let child = ns
        .command(AGENT)
        .args(&args)
        .arg(format!("--endpoint={}", server.endpoint_url()))
        .env("AWS_REGION", simulator.region())
        .env("AWS_ACCESS_KEY_ID", "AKIDNODEEXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "node-secret-example")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", dir.join("config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("credentials"))
        .stdin(Stdio::null())
        .stdout(File::create(&log).expect("agent log"))
        .stderr(Stdio::null())
        .spawn()
        .expect("start the agent");
    let agent = Agent { child, log };
    wait_for_listeners().await;

    let issued = |key: &str| simulator.sessions().iter().any(|s| s.access_key_id == key);
    for uri in [IPV4_URI, IPV6_URI] {
        let provider = PodIdentityCredentialsProvider::builder()
            .env(Env::from_vars([
                ("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri),
                (
                    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                    token_file.to_str().expect("UTF-8 path"),
                ),
            ]))
            .build();
        let credentials = provider
            .credentials()
            .await
            .unwrap_or_else(|e| panic!("provider via {uri}: {e}\nagent log:\n{}", agent.log()));
        assert!(
            issued(credentials.access_key_id()),
            "the provider's credentials via {uri} were not issued by the simulator"
        );
        assert_eq!(
            credentials.account_id().map(|a| a.as_str()),
            Some("111122223333")
        );
    }

    for uri in [IPV4_URI, IPV6_URI] {
        // botocore is synchronous: run it off the runtime thread (still in the namespace).
        let key = tokio::task::block_in_place(|| botocore_access_key(ns, uri, token_file, dir));
        if let Some(key) = key {
            assert!(
                issued(&key),
                "botocore's credentials via {uri} were not issued here"
            );
        }
    }

    // One token, one upstream call: the agent's cache served every other request.
    assert_eq!(simulator.sessions().len(), 1, "agent log:\n{}", agent.log());
    drop(agent);
    server.shutdown().await.expect("stop the simulator");
}
