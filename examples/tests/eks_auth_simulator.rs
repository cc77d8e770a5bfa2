//! The standalone EKS Auth simulator (`eks-auth-simulator`): the files it hands to another
//! process, their modes, no secret on its output, and a clean exit on SIGTERM.
#![cfg(unix)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const SIMULATOR: &str = env!("CARGO_BIN_EXE_eks-auth-simulator");

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
}

#[test]
fn writes_the_state_files_privately_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state");
    let child = Command::new(SIMULATOR)
        .args(["--state-dir", state.to_str().expect("UTF-8 path")])
        .args(["--cluster-name", "lab", "--service-account", "worker"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the simulator");

    let endpoint_file = state.join("endpoint");
    for _ in 0..200 {
        if endpoint_file.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(endpoint_file.exists(), "no endpoint file within 10 s");

    for name in ["token", "credentials", "node.env", "endpoint"] {
        let mode = std::fs::metadata(state.join(name))
            .expect("state file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name} has mode {mode:o}");
    }
    let credentials = read(&state, "credentials");
    let mut lines = credentials.lines();
    assert_eq!(lines.next(), Some("[default]"));
    let key_id = lines
        .next()
        .and_then(|l| l.strip_prefix("aws_access_key_id = "))
        .expect("access key id line")
        .to_owned();
    let secret = lines
        .next()
        .and_then(|l| l.strip_prefix("aws_secret_access_key = "))
        .expect("secret line")
        .to_owned();
    assert!(key_id.starts_with("AKIA"), "{key_id}");
    assert_eq!(secret.len(), 40);
    assert_eq!(
        read(&state, "node.env"),
        format!("AWS_ACCESS_KEY_ID={key_id}\nAWS_SECRET_ACCESS_KEY={secret}\n")
    );
    let token = read(&state, "token");
    assert_eq!(token.split('.').count(), 3, "the token is a JWT");

    // The endpoint is a loopback HTTP server.
    let endpoint = read(&state, "endpoint");
    let addr = endpoint
        .trim()
        .strip_prefix("http://")
        .expect("an http:// URL");
    let mut stream = TcpStream::connect(addr).expect("connect to the simulator");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 "), "{response}");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let output = child.wait_with_output().expect("wait for the simulator");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?}: {stderr}",
        output.status
    );
    assert!(stdout.contains(&key_id), "{stdout}");
    for secret in [secret.as_str(), token.trim()] {
        assert!(!stdout.contains(secret) && !stderr.contains(secret));
    }
}
