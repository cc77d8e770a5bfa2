//! Node network setup: the link-local addresses pods reach the agent on (feature `node-network`,
//! Linux only).
//!
//! Pods call the agent at `169.254.170.23` and `[fd00:ec2::23]` (contracts §1). On the node those
//! addresses live on a link of their own, made once at boot by the agent's privileged init
//! container (`pod-identity-agent initialize`), so the unprivileged agent can then bind them:
//!
//! 1. the link: a `dummy` link named `pod-id-link0` is created if it does not exist, or, with
//!    [`NodeNetwork::existing_link`], a link that already exists (`lo`, say) is used instead;
//! 2. the link is brought up;
//! 3. `169.254.170.23/32` and `fd00:ec2::23/128` are added to it (the IPv6 one without duplicate
//!    address detection, so the agent can bind it at once);
//! 4. a route to each address through the link goes in the main table (scope link), as the
//!    reference agent's `initialize` does.
//!
//! Everything goes over rtnetlink; no `ip` command runs. Each step first reads what is there and
//! changes only what is missing, so running it again changes nothing ([`Initialized::changes`]
//! is then empty). IPv6 is optional: where the kernel or the link has IPv6 turned off, the IPv6
//! address is skipped with a [`Warning`] and the IPv4 setup still succeeds.
//!
//! Errors say what is missing: [`NodeNetworkError::PermissionDenied`] names `CAP_NET_ADMIN`,
//! [`NodeNetworkError::DummyUnsupported`] the kernel's `dummy` link type (EOPNOTSUPP: load the
//! module or use an existing link).
//!
//! ```no_run
//! use pod_identity_agent_lib::node_network::NodeNetwork;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let done = NodeNetwork::new().initialize().await?;
//! for change in &done.changes {
//!     println!("{change}");
//! }
//! for warning in &done.warnings {
//!     eprintln!("warning: {warning}");
//! }
//! # Ok(())
//! # }
//! ```

#[cfg(not(target_os = "linux"))]
compile_error!("the `node-network` feature needs Linux: it configures links over rtnetlink");

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressHeaderFlags};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteScope,
};
use rtnetlink::{Handle, LinkDummy, LinkUnspec, RouteMessageBuilder};

/// The link the reference agent creates: `pod-id-link0`.
pub const DEFAULT_LINK_NAME: &str = "pod-id-link0";

/// The agent's IPv4 address: `169.254.170.23`.
pub const DEFAULT_IPV4_ADDRESS: Ipv4Addr = Ipv4Addr::new(169, 254, 170, 23);

/// The agent's IPv6 address: `fd00:ec2::23`.
pub const DEFAULT_IPV6_ADDRESS: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23);

// errno values the kernel answers with (asm-generic, the same on every Linux architecture).
const EPERM: i32 = 1;
const ENODEV: i32 = 19;
const EACCES: i32 = 13;
const EEXIST: i32 = 17;
const EOPNOTSUPP: i32 = 95;
const EAFNOSUPPORT: i32 = 97;
const EADDRNOTAVAIL: i32 = 99;

/// What to set up: the link and the addresses. [`NodeNetwork::new`] has the reference's values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeNetwork {
    link_name: String,
    create_link: bool,
    ipv4: Ipv4Addr,
    ipv6: Option<Ipv6Addr>,
}

impl Default for NodeNetwork {
    fn default() -> Self {
        Self::new()
    }
}

impl NodeNetwork {
    /// A dummy link `pod-id-link0` with `169.254.170.23/32` and `fd00:ec2::23/128`.
    pub fn new() -> Self {
        Self {
            link_name: DEFAULT_LINK_NAME.to_owned(),
            create_link: true,
            ipv4: DEFAULT_IPV4_ADDRESS,
            ipv6: Some(DEFAULT_IPV6_ADDRESS),
        }
    }

    /// The name of the dummy link to create (default `pod-id-link0`).
    pub fn link_name(mut self, name: impl Into<String>) -> Self {
        self.link_name = name.into();
        self.create_link = true;
        self
    }

    /// Puts the addresses on this link, which must exist, instead of creating a dummy link.
    pub fn existing_link(mut self, name: impl Into<String>) -> Self {
        self.link_name = name.into();
        self.create_link = false;
        self
    }

    /// The IPv4 address (default `169.254.170.23`), added as a /32.
    pub fn ipv4_address(mut self, address: Ipv4Addr) -> Self {
        self.ipv4 = address;
        self
    }

    /// The IPv6 address (default `fd00:ec2::23`), added as a /128; `None` sets up IPv4 only.
    pub fn ipv6_address(mut self, address: Option<Ipv6Addr>) -> Self {
        self.ipv6 = address;
        self
    }

    /// The link's name.
    pub fn link(&self) -> &str {
        &self.link_name
    }

    /// Sets up the link, addresses and routes in the calling thread's network namespace.
    ///
    /// Needs `CAP_NET_ADMIN` unless everything is already in place. Must run inside a Tokio
    /// runtime (it spawns the netlink connection, and stops it before returning).
    pub async fn initialize(&self) -> Result<Initialized, NodeNetworkError> {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(NodeNetworkError::Socket)?;
        let connection = AbortOnDrop(tokio::spawn(connection));
        let result = Setup {
            handle,
            plan: self,
            done: Initialized {
                link_name: self.link_name.clone(),
                link_index: 0,
                changes: Vec::new(),
                warnings: Vec::new(),
            },
        }
        .run()
        .await;
        drop(connection);
        result
    }
}

/// What [`NodeNetwork::initialize`] found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Initialized {
    /// The link carrying the addresses.
    pub link_name: String,
    /// Its interface index.
    pub link_index: u32,
    /// What was changed, in order; empty when everything was already in place.
    pub changes: Vec<Change>,
    /// What was skipped (IPv6 unavailable).
    pub warnings: Vec<Warning>,
}

/// One change made to the node's network.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// The dummy link was created.
    LinkCreated(String),
    /// The link was brought up.
    LinkUp(String),
    /// The address (with its /32 or /128 prefix) was added to the link.
    AddressAdded(IpAddr),
    /// A main-table route to the address through the link was added.
    RouteAdded(IpAddr),
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LinkCreated(link) => write!(f, "created dummy link {link}"),
            Self::LinkUp(link) => write!(f, "brought link {link} up"),
            Self::AddressAdded(address) => {
                write!(f, "added address {address}/{}", prefix_len(*address))
            }
            Self::RouteAdded(address) => {
                write!(f, "added route to {address}/{}", prefix_len(*address))
            }
        }
    }
}

/// Something optional that could not be set up.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Warning {
    /// IPv6 is off in the kernel or on the link, so the IPv6 address was not added; the agent
    /// serves IPv4 only.
    Ipv6Unavailable {
        /// The IPv6 address that was skipped.
        address: Ipv6Addr,
        /// What the kernel answered.
        reason: String,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ipv6Unavailable { address, reason } => write!(
                f,
                "IPv6 is unavailable ({reason}); {address} was not added, pods reach the agent \
                 over IPv4 only"
            ),
        }
    }
}

/// Why the node network could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeNetworkError {
    /// The netlink socket could not be opened.
    #[error("cannot open a netlink socket")]
    Socket(#[source] io::Error),
    /// The kernel refused a change for lack of privilege.
    #[error(
        "{operation}: permission denied; node network setup needs CAP_NET_ADMIN (run it as root \
         or in a privileged init container)"
    )]
    PermissionDenied {
        /// What was being done.
        operation: String,
        /// The kernel's answer.
        #[source]
        source: NetlinkError,
    },
    /// The kernel has no `dummy` link type.
    #[error(
        "cannot create link {link}: the kernel has no `dummy` link type (EOPNOTSUPP); load it \
         with `modprobe dummy` or put the addresses on an existing link (--existing-link)"
    )]
    DummyUnsupported {
        /// The link that was to be created.
        link: String,
        /// The kernel's answer.
        #[source]
        source: NetlinkError,
    },
    /// The existing link to use does not exist.
    #[error("link {link} does not exist")]
    LinkNotFound {
        /// The link's name.
        link: String,
    },
    /// A main-table route to the address already goes through another link.
    #[error(
        "a route to {destination} already goes through another link (index {other_link_index}); \
         remove it or use that link (--existing-link)"
    )]
    RouteConflict {
        /// The address.
        destination: IpAddr,
        /// The index of the link the existing route goes through.
        other_link_index: u32,
    },
    /// Any other netlink failure.
    #[error("{operation} failed")]
    Netlink {
        /// What was being done.
        operation: String,
        /// The kernel's answer.
        #[source]
        source: NetlinkError,
    },
}

/// A failed netlink request: the kernel's errno, or a protocol failure.
#[derive(Debug)]
pub struct NetlinkError(rtnetlink::Error);

impl NetlinkError {
    /// The errno the kernel answered with, if it answered with one.
    pub fn errno(&self) -> Option<i32> {
        match &self.0 {
            rtnetlink::Error::NetlinkError(message) => message.code.map(|code| code.get().abs()),
            _ => None,
        }
    }
}

impl fmt::Display for NetlinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            // "Operation not supported (os error 95)"
            rtnetlink::Error::NetlinkError(message) => fmt::Display::fmt(&message.to_io(), f),
            other => fmt::Display::fmt(other, f),
        }
    }
}

impl std::error::Error for NetlinkError {}

impl NodeNetworkError {
    /// Classifies a failed request: permission first, as every change needs it.
    fn netlink(operation: String, error: rtnetlink::Error) -> Self {
        let source = NetlinkError(error);
        match source.errno() {
            Some(EPERM) => Self::PermissionDenied { operation, source },
            _ => Self::Netlink { operation, source },
        }
    }
}

/// Stops the netlink connection task however `initialize` ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Setup<'a> {
    handle: Handle,
    plan: &'a NodeNetwork,
    done: Initialized,
}

impl Setup<'_> {
    async fn run(mut self) -> Result<Initialized, NodeNetworkError> {
        let link = self.link().await?;
        self.done.link_index = link.header.index;
        if !link.header.flags.contains(LinkFlags::Up) {
            self.up().await?;
        }

        let ipv4 = IpAddr::V4(self.plan.ipv4);
        self.address(ipv4).await?;
        self.route(ipv4).await?;

        if let Some(ipv6) = self.plan.ipv6 {
            match self.address(IpAddr::V6(ipv6)).await {
                Ok(()) => self.route(IpAddr::V6(ipv6)).await?,
                Err(NodeNetworkError::Netlink { source, .. }) if ipv6_is_off(&source) => {
                    let warning = Warning::Ipv6Unavailable {
                        address: ipv6,
                        reason: source.to_string(),
                    };
                    tracing::warn!(link = %self.plan.link_name, "{warning}");
                    self.done.warnings.push(warning);
                }
                Err(error) => return Err(error),
            }
        }
        Ok(self.done)
    }

    fn changed(&mut self, change: Change) {
        tracing::info!(link = %self.plan.link_name, "{change}");
        self.done.changes.push(change);
    }

    /// The link, created first if it is ours to create.
    async fn link(&mut self) -> Result<LinkMessage, NodeNetworkError> {
        let name = self.plan.link_name.clone();
        if let Some(link) = self.find_link(&name).await? {
            if self.plan.create_link && !is_dummy(&link) {
                tracing::info!(link = %name, "the link exists and is not a dummy link; using it");
            }
            return Ok(link);
        }
        if !self.plan.create_link {
            return Err(NodeNetworkError::LinkNotFound { link: name });
        }
        let created = self
            .handle
            .link()
            .add(LinkDummy::new(&name).build())
            .execute()
            .await;
        match created {
            Ok(()) => self.changed(Change::LinkCreated(name.clone())),
            // Created meanwhile by someone else: fine, it is there.
            Err(error) if errno(&error) == Some(EEXIST) => {}
            Err(error) if errno(&error) == Some(EOPNOTSUPP) => {
                return Err(NodeNetworkError::DummyUnsupported {
                    link: name,
                    source: NetlinkError(error),
                });
            }
            Err(error) => {
                return Err(NodeNetworkError::netlink(
                    format!("creating dummy link {name}"),
                    error,
                ));
            }
        }
        self.find_link(&name)
            .await?
            .ok_or(NodeNetworkError::LinkNotFound { link: name })
    }

    async fn find_link(&self, name: &str) -> Result<Option<LinkMessage>, NodeNetworkError> {
        let mut links = self.handle.link().get().match_name(name).execute();
        match links.try_next().await {
            Ok(link) => Ok(link),
            Err(error) if errno(&error) == Some(ENODEV) => Ok(None),
            Err(error) => Err(NodeNetworkError::netlink(
                format!("looking up link {name}"),
                error,
            )),
        }
    }

    async fn up(&mut self) -> Result<(), NodeNetworkError> {
        let name = self.plan.link_name.clone();
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(self.done.link_index)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(|error| {
                NodeNetworkError::netlink(format!("bringing link {name} up"), error)
            })?;
        self.changed(Change::LinkUp(name));
        Ok(())
    }

    async fn address(&mut self, address: IpAddr) -> Result<(), NodeNetworkError> {
        let prefix = prefix_len(address);
        let operation = || format!("adding {address}/{prefix} to link {}", self.plan.link_name);
        let present = self
            .handle
            .address()
            .get()
            .set_link_index_filter(self.done.link_index)
            .set_address_filter(address)
            .set_prefix_length_filter(prefix)
            .execute()
            .try_next()
            .await
            .map_err(|error| NodeNetworkError::netlink(operation(), error))?
            .is_some_and(|message| {
                message.attributes.iter().any(
                    |attribute| matches!(attribute, AddressAttribute::Address(a) if *a == address),
                )
            });
        if present {
            return Ok(());
        }
        let mut request = self
            .handle
            .address()
            .add(self.done.link_index, address, prefix);
        if address.is_ipv6() {
            // Node-local, never on the wire: skip duplicate address detection, which would keep
            // the address tentative (unbindable) for a while on links that do it.
            request.message_mut().header.flags |= AddressHeaderFlags::Nodad;
        }
        match request.execute().await {
            Ok(()) => {}
            Err(error) if errno(&error) == Some(EEXIST) => return Ok(()),
            Err(error) => return Err(NodeNetworkError::netlink(operation(), error)),
        }
        self.changed(Change::AddressAdded(address));
        Ok(())
    }

    async fn route(&mut self, destination: IpAddr) -> Result<(), NodeNetworkError> {
        let prefix = prefix_len(destination);
        let operation = || {
            format!(
                "adding a route to {destination}/{prefix} through link {}",
                self.plan.link_name
            )
        };
        let query = match destination {
            IpAddr::V4(_) => RouteMessageBuilder::<Ipv4Addr>::new().build(),
            IpAddr::V6(_) => RouteMessageBuilder::<Ipv6Addr>::new().build(),
        };
        let mut routes = self.handle.route().get(query).execute();
        while let Some(route) = routes
            .try_next()
            .await
            .map_err(|error| NodeNetworkError::netlink(operation(), error))?
        {
            if !is_main_route_to(&route, destination) {
                continue;
            }
            match output_link(&route) {
                Some(index) if index == self.done.link_index => return Ok(()),
                Some(other_link_index) => {
                    return Err(NodeNetworkError::RouteConflict {
                        destination,
                        other_link_index,
                    });
                }
                None => {}
            }
        }
        let route = match destination {
            IpAddr::V4(address) => RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(address, prefix)
                .output_interface(self.done.link_index)
                .scope(RouteScope::Link)
                .build(),
            IpAddr::V6(address) => RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(address, prefix)
                .output_interface(self.done.link_index)
                .build(),
        };
        match self.handle.route().add(route).execute().await {
            Ok(()) => {}
            Err(error) if errno(&error) == Some(EEXIST) => return Ok(()),
            Err(error) => return Err(NodeNetworkError::netlink(operation(), error)),
        }
        self.changed(Change::RouteAdded(destination));
        Ok(())
    }
}

fn errno(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(message) => message.code.map(|code| code.get().abs()),
        _ => None,
    }
}

/// What the kernel answers to an IPv6 address when IPv6 is off: `disable_ipv6` on the link or
/// for all (EACCES), no IPv6 in the kernel (EAFNOSUPPORT, EOPNOTSUPP), or no IPv6 device on
/// the link (EADDRNOTAVAIL, ENODEV).
fn ipv6_is_off(error: &NetlinkError) -> bool {
    matches!(
        error.errno(),
        Some(EACCES | EAFNOSUPPORT | EOPNOTSUPP | EADDRNOTAVAIL | ENODEV)
    )
}

fn prefix_len(address: IpAddr) -> u8 {
    match address {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn is_dummy(link: &LinkMessage) -> bool {
    use rtnetlink::packet_route::link::{InfoKind, LinkInfo};
    link.attributes.iter().any(|attribute| {
        matches!(attribute, LinkAttribute::LinkInfo(infos)
            if infos.iter().any(|info| matches!(info, LinkInfo::Kind(InfoKind::Dummy))))
    })
}

fn is_main_route_to(route: &RouteMessage, destination: IpAddr) -> bool {
    let table = route
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            RouteAttribute::Table(table) => Some(*table),
            _ => None,
        })
        .unwrap_or(u32::from(route.header.table));
    table == u32::from(RouteHeader::RT_TABLE_MAIN)
        && route.header.destination_prefix_length == prefix_len(destination)
        && route.attributes.iter().any(|attribute| {
            matches!(attribute, RouteAttribute::Destination(address) if route_address(address) == Some(destination))
        })
}

fn route_address(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(address) => Some(IpAddr::V4(*address)),
        RouteAddress::Inet6(address) => Some(IpAddr::V6(*address)),
        _ => None,
    }
}

fn output_link(route: &RouteMessage) -> Option<u32> {
    route
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            RouteAttribute::Oif(index) => Some(*index),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroI32;

    use rtnetlink::packet_core::ErrorMessage;

    use super::*;

    fn kernel_error(errno: i32) -> rtnetlink::Error {
        let mut message = ErrorMessage::default();
        message.code = NonZeroI32::new(-errno);
        rtnetlink::Error::NetlinkError(message)
    }

    #[test]
    fn defaults_are_the_reference_agents() {
        let plan = NodeNetwork::new();
        assert_eq!(plan.link(), "pod-id-link0");
        assert!(plan.create_link);
        assert_eq!(plan.ipv4.to_string(), "169.254.170.23");
        assert_eq!(
            plan.ipv6.map(|a| a.to_string()).as_deref(),
            Some("fd00:ec2::23")
        );
    }

    #[test]
    fn existing_link_replaces_the_dummy_link() {
        let plan = NodeNetwork::new().existing_link("lo");
        assert_eq!((plan.link(), plan.create_link), ("lo", false));
        let plan = plan.link_name("agent0");
        assert_eq!((plan.link(), plan.create_link), ("agent0", true));
    }

    #[test]
    fn eperm_is_a_missing_capability() {
        let error = NodeNetworkError::netlink(
            "adding 169.254.170.23/32 to link lo".into(),
            kernel_error(EPERM),
        );
        assert!(matches!(error, NodeNetworkError::PermissionDenied { .. }));
        let text = error.to_string();
        assert!(text.contains("CAP_NET_ADMIN"), "{text}");
        assert!(
            text.starts_with("adding 169.254.170.23/32 to link lo"),
            "{text}"
        );
        let source = std::error::Error::source(&error).map(ToString::to_string);
        assert_eq!(
            source.as_deref(),
            Some("Operation not permitted (os error 1)")
        );
    }

    #[test]
    fn other_errnos_are_reported_with_the_operation() {
        let error = NodeNetworkError::netlink("bringing link x up".into(), kernel_error(19));
        assert!(matches!(error, NodeNetworkError::Netlink { .. }));
        assert_eq!(error.to_string(), "bringing link x up failed");
    }

    #[test]
    fn the_dummy_error_names_the_kernel_feature_and_the_way_out() {
        let error = NodeNetworkError::DummyUnsupported {
            link: "pod-id-link0".into(),
            source: NetlinkError(kernel_error(EOPNOTSUPP)),
        };
        let text = error.to_string();
        for needle in [
            "pod-id-link0",
            "dummy",
            "EOPNOTSUPP",
            "modprobe dummy",
            "--existing-link",
        ] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
    }

    #[test]
    fn ipv6_off_answers_are_recognised() {
        for errno in [EACCES, EAFNOSUPPORT, EOPNOTSUPP, EADDRNOTAVAIL] {
            assert!(ipv6_is_off(&NetlinkError(kernel_error(errno))), "{errno}");
        }
        for errno in [EPERM, EEXIST] {
            assert!(!ipv6_is_off(&NetlinkError(kernel_error(errno))), "{errno}");
        }
        assert!(!ipv6_is_off(&NetlinkError(rtnetlink::Error::RequestFailed)));
    }

    #[test]
    fn changes_and_warnings_read_well() {
        assert_eq!(
            Change::AddressAdded(IpAddr::V6(DEFAULT_IPV6_ADDRESS)).to_string(),
            "added address fd00:ec2::23/128"
        );
        assert_eq!(
            Change::RouteAdded(IpAddr::V4(DEFAULT_IPV4_ADDRESS)).to_string(),
            "added route to 169.254.170.23/32"
        );
        let warning = Warning::Ipv6Unavailable {
            address: DEFAULT_IPV6_ADDRESS,
            reason: "Permission denied (os error 13)".into(),
        };
        assert!(warning.to_string().contains("IPv4 only"));
    }
}
