//! `node_network::NodeNetwork::initialize` in network namespaces of the tests' own.
//!
//! Each test makes a namespace with `ip netns add` (iproute2), enters it from a dedicated thread
//! (`setns` affects only that thread, so nothing touches the host's network) and reads the result
//! back with `ip -json`. They need root: elsewhere they print why and pass, except under CI
//! (`CI` set), where a test that cannot run fails.
#![cfg(all(target_os = "linux", feature = "node-network"))]

#[path = "support/mod.rs"]
mod support;

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

use caps::{CapSet, Capability};
use nix::sched::CloneFlags;
use serde_json::Value;

use support::{
    Change, DEFAULT_IPV4_ADDRESS, DEFAULT_IPV6_ADDRESS, Initialized, NodeNetwork, NodeNetworkError,
    Warning, skip_or_fail_in_ci,
};

const V4: IpAddr = IpAddr::V4(DEFAULT_IPV4_ADDRESS);
const V6: IpAddr = IpAddr::V6(DEFAULT_IPV6_ADDRESS);

/// A network namespace deleted on drop, also when the test fails.
struct Netns {
    name: String,
}

impl Netns {
    /// A new namespace, or `None` (with the reason printed) where this test cannot make one;
    /// under CI, a failure.
    fn create_or_skip(tag: &str) -> Option<Self> {
        if !caps::has_cap(None, CapSet::Effective, Capability::CAP_SYS_ADMIN).unwrap_or(false) {
            return skip_or_fail_in_ci(
                "making a network namespace needs root (CAP_SYS_ADMIN); CI runs these tests as root",
            );
        }
        let name = format!("pia-{tag}-{}", std::process::id());
        // Concurrent first uses of `ip netns add` can race on mounting /run/netns: try twice.
        let mut failure = String::new();
        for _ in 0..2 {
            match Command::new("ip").args(["netns", "add", &name]).output() {
                Ok(out) if out.status.success() => return Some(Self { name }),
                Ok(out) => failure = String::from_utf8_lossy(&out.stderr).into_owned(),
                Err(error) => failure = format!("cannot run `ip` (install iproute2): {error}"),
            }
        }
        skip_or_fail_in_ci(format!("ip netns add {name}: {failure}"))
    }

    /// Runs `f` on a thread inside the namespace.
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let file = File::open(format!("/run/netns/{}", self.name))
                        .expect("the namespace exists");
                    nix::sched::setns(file, CloneFlags::CLONE_NEWNET).expect("setns");
                    f()
                })
                .join()
                .expect("the namespace thread panicked")
        })
    }

    fn initialize(&self, plan: &NodeNetwork) -> Result<Initialized, NodeNetworkError> {
        self.run(|| block_on(plan.initialize()))
    }

    /// `ip -n <ns> <args>`, which must succeed.
    fn ip(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .expect("run ip");
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn ip_json(&self, args: &[&str]) -> Vec<Value> {
        let text = self.ip(&[&["-json"], args].concat());
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("ip -json {args:?}: {e}: {text}"))
    }

    /// The addresses on a link, as `address/prefix`.
    fn addresses(&self, link: &str) -> Vec<String> {
        self.ip_json(&["addr", "show", "dev", link])
            .iter()
            .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
            .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]))
            .collect()
    }

    /// The main table's routes through a link, as `destination`.
    fn routes(&self, family: &str, link: &str) -> Vec<String> {
        self.ip_json(&[family, "route", "show", "table", "main", "dev", link])
            .iter()
            .filter_map(|r| r["dst"].as_str().map(str::to_owned))
            .collect()
    }

    fn is_up(&self, link: &str) -> bool {
        self.ip_json(&["link", "show", "dev", link])[0]["flags"]
            .as_array()
            .is_some_and(|flags| flags.iter().any(|f| f == "UP"))
    }

    /// Runs a shell command inside the namespace (`ip netns exec` also remounts /proc/sys/net).
    fn sh(&self, script: &str) {
        let status = Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", script])
            .status()
            .expect("run ip netns exec");
        assert!(status.success(), "{script}");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

/// Both addresses with their routes are on `link`, which is up.
fn assert_in_place(ns: &Netns, link: &str) {
    assert!(ns.is_up(link), "{link} is down");
    let addresses = ns.addresses(link);
    for address in ["169.254.170.23/32", "fd00:ec2::23/128"] {
        assert!(
            addresses.iter().any(|a| a == address),
            "{address} missing from {addresses:?}"
        );
    }
    assert!(ns.routes("-4", link).contains(&"169.254.170.23".to_owned()));
    assert!(ns.routes("-6", link).contains(&"fd00:ec2::23".to_owned()));
}

#[test]
fn addresses_go_on_an_existing_link_and_a_second_run_changes_nothing() {
    let Some(ns) = Netns::create_or_skip("lo") else {
        return;
    };
    let plan = NodeNetwork::new().existing_link("lo");

    let first = ns.initialize(&plan).expect("initialize");
    assert_eq!(first.link_name, "lo");
    assert!(
        first.changes.contains(&Change::LinkUp("lo".into())),
        "{first:?}"
    );
    for address in [V4, V6] {
        assert!(
            first.changes.contains(&Change::AddressAdded(address)),
            "{first:?}"
        );
    }
    assert!(first.changes.contains(&Change::RouteAdded(V4)), "{first:?}");
    assert!(first.warnings.is_empty(), "{first:?}");
    assert_in_place(&ns, "lo");

    let before = (
        ns.addresses("lo"),
        ns.routes("-4", "lo"),
        ns.routes("-6", "lo"),
    );
    let second = ns.initialize(&plan).expect("initialize again");
    assert_eq!(second.changes, [], "a second run changed something");
    assert_eq!(second.link_index, first.link_index);
    assert_eq!(
        (
            ns.addresses("lo"),
            ns.routes("-4", "lo"),
            ns.routes("-6", "lo")
        ),
        before
    );
}

#[test]
fn a_dummy_link_is_created_or_the_missing_kernel_feature_is_named() {
    let Some(ns) = Netns::create_or_skip("dummy") else {
        return;
    };
    let plan = NodeNetwork::new().link_name("pod-id-test0");
    match ns.initialize(&plan) {
        Err(error @ NodeNetworkError::DummyUnsupported { .. }) => {
            let text = error.to_string();
            assert!(
                text.contains("EOPNOTSUPP") && text.contains("--existing-link"),
                "{text}"
            );
            println!(
                "skipped the dummy-link part: this kernel has no dummy link type; the error \
                 names it: {text}"
            );
        }
        Err(error) => panic!("initialize: {error}"),
        Ok(first) => {
            assert_eq!(first.changes[0], Change::LinkCreated("pod-id-test0".into()));
            assert_in_place(&ns, "pod-id-test0");
            let second = ns.initialize(&plan).expect("initialize again");
            assert_eq!(second.changes, []);
        }
    }
}

#[test]
fn a_veth_link_works_and_routes_stay_on_it() {
    let Some(ns) = Netns::create_or_skip("veth") else {
        return;
    };
    ns.ip(&[
        "link", "add", "pia0", "type", "veth", "peer", "name", "pia1",
    ]);
    let plan = NodeNetwork::new().existing_link("pia0");
    let done = ns.initialize(&plan).expect("initialize");
    assert_eq!(
        done.changes[..3],
        [
            Change::LinkUp("pia0".into()),
            Change::AddressAdded(V4),
            Change::RouteAdded(V4)
        ]
    );
    assert_in_place(&ns, "pia0");
    assert!(ns.addresses("pia1").is_empty(), "the peer was touched");
    // Bindable at once: no duplicate address detection holding the IPv6 address tentative.
    let tentative: Vec<_> = ns.ip_json(&["-6", "addr", "show", "dev", "pia0", "tentative"]);
    assert!(
        tentative.iter().all(|l| l["addr_info"]
            .as_array()
            .is_none_or(|a| a.iter().all(|a| a["local"] != "fd00:ec2::23"))),
        "fd00:ec2::23 is tentative: {tentative:?}"
    );
    assert_eq!(ns.initialize(&plan).expect("again").changes, []);
}

#[test]
fn a_route_through_another_link_is_a_conflict_not_overwritten() {
    let Some(ns) = Netns::create_or_skip("conflict") else {
        return;
    };
    ns.ip(&[
        "link", "add", "pia0", "type", "veth", "peer", "name", "pia1",
    ]);
    ns.ip(&["link", "set", "pia1", "up"]);
    ns.ip(&["route", "add", "169.254.170.23/32", "dev", "pia1"]);
    let error = ns
        .initialize(&NodeNetwork::new().existing_link("pia0"))
        .expect_err("conflict");
    assert!(
        matches!(error, NodeNetworkError::RouteConflict { destination, .. } if destination == V4),
        "{error:?}"
    );
    assert_eq!(ns.routes("-4", "pia1"), ["169.254.170.23"]);
}

#[test]
fn ipv6_turned_off_is_a_warning_and_ipv4_still_works() {
    let Some(ns) = Netns::create_or_skip("noipv6") else {
        return;
    };
    ns.sh("echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6 && \
         echo 1 > /proc/sys/net/ipv6/conf/lo/disable_ipv6");
    let done = ns
        .initialize(&NodeNetwork::new().existing_link("lo"))
        .expect("IPv6 off is not a failure");
    assert!(
        matches!(&done.warnings[..], [Warning::Ipv6Unavailable { address, .. }] if *address == DEFAULT_IPV6_ADDRESS),
        "{done:?}"
    );
    assert!(done.changes.contains(&Change::AddressAdded(V4)));
    assert!(!done.changes.contains(&Change::AddressAdded(V6)));
    let addresses = ns.addresses("lo");
    assert!(
        addresses.contains(&"169.254.170.23/32".to_owned()),
        "{addresses:?}"
    );
    assert!(
        !addresses.contains(&"fd00:ec2::23/128".to_owned()),
        "{addresses:?}"
    );
}

#[test]
fn ipv6_can_be_left_out_and_addresses_configured() {
    let Some(ns) = Netns::create_or_skip("custom") else {
        return;
    };
    let plan = NodeNetwork::new()
        .existing_link("lo")
        .ipv4_address(Ipv4Addr::new(169, 254, 170, 99))
        .ipv6_address(None);
    let done = ns.initialize(&plan).expect("initialize");
    assert!(done.warnings.is_empty());
    // lo's own 127.0.0.1 and ::1 appear once it is up; ours are the rest.
    assert_eq!(
        ns.addresses("lo"),
        ["127.0.0.1/8", "169.254.170.99/32", "::1/128"]
    );
}

#[test]
fn a_missing_existing_link_is_named() {
    let Some(ns) = Netns::create_or_skip("missing") else {
        return;
    };
    let error = ns
        .initialize(&NodeNetwork::new().existing_link("nope0"))
        .expect_err("no such link");
    assert!(
        matches!(error, NodeNetworkError::LinkNotFound { .. }),
        "{error:?}"
    );
    assert_eq!(error.to_string(), "link nope0 does not exist");
}

#[test]
fn without_cap_net_admin_the_error_names_it() {
    let Some(ns) = Netns::create_or_skip("nocap") else {
        return;
    };
    // Capabilities are per thread: drop CAP_NET_ADMIN on the namespace thread only.
    let error = ns
        .run(|| {
            caps::drop(None, CapSet::Effective, Capability::CAP_NET_ADMIN).expect("capset");
            block_on(NodeNetwork::new().existing_link("lo").initialize())
        })
        .expect_err("no CAP_NET_ADMIN");
    assert!(
        matches!(error, NodeNetworkError::PermissionDenied { .. }),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(
        text.contains("CAP_NET_ADMIN") && text.contains("link lo"),
        "{text}"
    );
    assert!(ns.addresses("lo").is_empty(), "nothing changed");
}
