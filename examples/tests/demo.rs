//! Runs the `demo` binary as a user would and checks what it prints.

#![allow(clippy::unwrap_used)] // A test crate: a panic is how a check fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output, Stdio};

const DEMO: &str = env!("CARGO_BIN_EXE_demo");

fn demo(args: &[&str]) -> Command {
    let mut command = Command::new(DEMO);
    command.args(args).env_remove("RUST_LOG");
    command
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn the_demo_runs_every_hop_refreshes_ahead_and_prints_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let secrets_file = dir.path().join("secrets");
    let output = demo(&["--secrets-file", secrets_file.to_str().unwrap()])
        .output()
        .unwrap();
    let text = text(&output);
    println!("{text}");
    assert!(output.status.success(), "demo failed:\n{text}");

    for expected in [
        "[1] EKS Auth simulator",
        "association             default/demo-app -> arn:aws:iam::111122223333:role/demo-app",
        "[2] agent",
        "serving credentials addr=127.0.0.1:",
        "[3] aws-sdk-sts GetCallerIdentity",
        "EKS Auth simulator issued credentials",
        "credential request",
        "STS target verified the signature",
        "caller identity         arn:aws:sts::111122223333:assumed-role/demo-app/eks-pod-identity-demo-demo-app-",
        "[4] refresh ahead of expiry, off the request path",
        "refreshed credentials ahead of expiry",
        "all from the cache",
        "no caller waited: provider counters fetches=2",
        "the agent handed out fresh credentials",
        "[5] token rotation during an EKS Auth outage",
        "rotated token served from the cache: 200 ASIA",
        "0 EKS Auth calls",
        "[6] done",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let keys: Vec<&str> = text
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| w.starts_with("ASIA") && w.len() == 20)
        .collect();
    assert!(
        keys.iter().any(|k| *k != keys[0]),
        "no renewed access key id in:\n{text}"
    );

    // Node secret key, the pod token, and each issued session's secret key and session token.
    let secrets = std::fs::read_to_string(&secrets_file).unwrap();
    let secrets: Vec<&str> = secrets.lines().collect();
    assert!(secrets.len() >= 6, "{} secrets", secrets.len());
    for secret in secrets {
        assert!(secret.len() >= 40);
        assert!(!text.contains(secret), "a secret was printed:\n{text}");
    }
    // No JWT at all (its header, `{"alg":"RS256"`, encodes to `eyJhbGci`).
    assert!(!text.contains("eyJhbGci"), "a JWT was printed:\n{text}");
}

#[test]
fn associations_come_from_a_file_and_long_lifetimes_skip_the_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("associations.json");
    std::fs::write(
        &file,
        r#"{"associations": [
            {"clusterName": "prod-east", "namespace": "payments", "serviceAccount": "api",
             "roleArn": "arn:aws:iam::444455556666:role/payments-api"},
            {"clusterName": "prod-east", "namespace": "default", "serviceAccount": "web",
             "roleArn": "arn:aws:iam::444455556666:role/web"}
        ]}"#,
    )
    .unwrap();
    let output = demo(&["--associations", file.to_str().unwrap(), "--lifetime", "6h"])
        .output()
        .unwrap();
    let text = text(&output);
    assert!(output.status.success(), "demo failed:\n{text}");
    for expected in [
        "cluster prod-east",
        "association             payments/api -> arn:aws:iam::444455556666:role/payments-api",
        "association             default/web -> arn:aws:iam::444455556666:role/web",
        "credential lifetime     6h",
        "caller identity         arn:aws:sts::444455556666:assumed-role/payments-api/eks-prod-east-api-7c9f5d8b6-x2k4q-",
        "[4] refresh ahead of expiry: skipped",
        "rotated token served from the cache: 200 ASIA",
        "[6] done",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn bad_flags_are_refused_with_a_reason() {
    let output = demo(&["--lifetime", "15s"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("the agent never hands out credentials with 15s or less left"));

    let output = demo(&["--associations", "/nonexistent/associations.json"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("demo failed"), "{}", text(&output));
}

#[test]
fn keep_running_prints_an_environment_that_reaches_the_agent() {
    let mut child = demo(&["--keep-running", "--lifetime", "6h"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut printed = String::new();
    let mut line = String::new();
    while !printed.contains("aws sts get-caller-identity") {
        line.clear();
        if stdout.read_line(&mut line).unwrap() == 0 {
            let _ = child.kill();
            panic!("the demo stopped before printing the environment:\n{printed}");
        }
        printed.push_str(&line);
    }
    let var = |name: &str| {
        let prefix = format!("export {name}=");
        printed
            .lines()
            .find_map(|l| l.trim().strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {name} in:\n{printed}"))
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    let uri = var("AWS_CONTAINER_CREDENTIALS_FULL_URI");
    let token_file = var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
    assert!(var("AWS_ENDPOINT_URL_STS").starts_with("http://127.0.0.1:"));
    assert_eq!(var("AWS_REGION"), "us-west-2");

    // What an SDK in the pod does: GET the full URI with the token file's contents.
    let token = std::fs::read_to_string(&token_file).unwrap();
    let rest = uri.strip_prefix("http://").unwrap();
    let (authority, path) = rest.split_at(rest.find('/').unwrap());
    let mut stream = TcpStream::connect(authority).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r#"{"AccessKeyId":"ASIA"#), "{response}");

    // Ctrl-C stops it cleanly.
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{printed}{rest}");
    assert!(rest.contains("stopping"), "{rest}");
}
