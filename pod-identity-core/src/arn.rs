//! Amazon Resource Names, partition-aware.
//!
//! Contract: an ARN is `arn:<partition>:<service>:<region>:<account-id>:<resource>`. The
//! partition is `aws` or `aws-<suffix>` (`aws-cn`, `aws-us-gov`, `aws-iso`, `aws-iso-b`,
//! `aws-iso-e`, `aws-iso-f`, `aws-eusc`, and any future one of that shape); the service is
//! non-empty; the region may be empty (IAM, STS); the account id is empty, 12 digits, or `aws`
//! (AWS-managed policies); the resource is non-empty and may itself contain `:` and `/`. An IAM
//! role ARN's resource is `role/<path>/<name>` with an optional path (`role/a/b/name`).
//! [`partition_for_region`] and [`dns_suffix`] follow the SDK endpoint rules (partitions.json).

use std::fmt;
use std::str::FromStr;

/// A parsed, validated ARN.
///
/// ```
/// use pod_identity_core::arn::Arn;
///
/// let role: Arn = "arn:aws-us-gov:iam::111122223333:role/team/app/reader".parse().unwrap();
/// assert_eq!(role.partition(), "aws-us-gov");
/// assert_eq!(role.account_id(), "111122223333");
/// assert_eq!(role.role_name(), Some("reader"));
/// assert_eq!(role.role_path(), Some("/team/app/"));
/// assert_eq!(role.to_string(), "arn:aws-us-gov:iam::111122223333:role/team/app/reader");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Arn {
    text: String,
    // Byte offsets of the four `:` separators after `arn:`.
    colons: [usize; 4],
}

/// Why a string is not an ARN. The text shows at most the first 100 characters of the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid ARN {value:?}: {reason}")]
pub struct ArnError {
    value: String,
    reason: &'static str,
}

impl ArnError {
    fn new(value: &str, reason: &'static str) -> Self {
        Self {
            value: value.chars().take(100).collect(),
            reason,
        }
    }

    /// What is wrong.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

/// The longest ARN accepted.
pub const MAX_ARN_LEN: usize = 2048;

impl Arn {
    /// Builds an ARN from its parts, validating each.
    pub fn new(
        partition: &str,
        service: &str,
        region: &str,
        account_id: &str,
        resource: &str,
    ) -> Result<Arn, ArnError> {
        format!("arn:{partition}:{service}:{region}:{account_id}:{resource}").parse()
    }

    /// `aws`, `aws-cn`, `aws-us-gov`, ...
    pub fn partition(&self) -> &str {
        self.part(0)
    }

    /// `iam`, `eks`, `sts`, ...
    pub fn service(&self) -> &str {
        self.part(1)
    }

    /// The region, empty for global services.
    pub fn region(&self) -> &str {
        self.part(2)
    }

    /// The account id, possibly empty.
    pub fn account_id(&self) -> &str {
        self.part(3)
    }

    /// Everything after the fifth `:`.
    pub fn resource(&self) -> &str {
        self.text.get(self.colons[3] + 1..).unwrap_or_default()
    }

    /// The whole ARN.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// For an IAM role ARN, the role name (the last path segment).
    pub fn role_name(&self) -> Option<&str> {
        let rest = self.role_resource()?;
        rest.rsplit('/').next().filter(|n| !n.is_empty())
    }

    /// For an IAM role ARN, the role path: `/` or `/a/b/`.
    pub fn role_path(&self) -> Option<&str> {
        let rest = self.role_resource()?;
        self.role_name()?;
        let resource = self.resource();
        // `role/a/b/name` → `/a/b/`; `role/name` → `/`.
        let end = resource.len() - rest.rsplit('/').next().map_or(0, str::len);
        resource.get(4..end)
    }

    /// Whether this is an IAM role ARN.
    pub fn is_role(&self) -> bool {
        self.role_name().is_some()
    }

    /// For an EKS cluster ARN (`...:cluster/<name>`), the cluster name.
    pub fn eks_cluster_name(&self) -> Option<&str> {
        if self.service() != "eks" {
            return None;
        }
        self.resource()
            .strip_prefix("cluster/")
            .filter(|n| !n.is_empty() && !n.contains('/'))
    }

    fn role_resource(&self) -> Option<&str> {
        if self.service() != "iam" {
            return None;
        }
        self.resource().strip_prefix("role/")
    }

    fn part(&self, i: usize) -> &str {
        let start = if i == 0 { 4 } else { self.colons[i - 1] + 1 };
        self.text.get(start..self.colons[i]).unwrap_or_default()
    }
}

impl FromStr for Arn {
    type Err = ArnError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| ArnError::new(s, reason);
        if s.len() > MAX_ARN_LEN {
            return Err(err("longer than 2048 bytes"));
        }
        if !s.starts_with("arn:") {
            return Err(err("must start with `arn:`"));
        }
        let mut colons = [0usize; 4];
        let mut found = s.match_indices(':').map(|(i, _)| i).skip(1);
        for slot in &mut colons {
            *slot = found
                .next()
                .ok_or_else(|| err("must have six `:`-separated parts"))?;
        }
        let arn = Arn {
            text: s.to_owned(),
            colons,
        };
        if !is_partition(arn.partition()) {
            return Err(err("partition must be `aws` or `aws-<suffix>`"));
        }
        if arn.service().is_empty() || !arn.service().bytes().all(is_lower_alnum_dash) {
            return Err(err("service must be lower-case letters, digits and `-`"));
        }
        if !arn.region().bytes().all(is_lower_alnum_dash) {
            return Err(err("region must be lower-case letters, digits and `-`"));
        }
        let account = arn.account_id();
        let account_ok = account.is_empty()
            || account == "aws"
            || (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()));
        if !account_ok {
            return Err(err("account id must be 12 digits"));
        }
        if arn.resource().is_empty() {
            return Err(err("resource must not be empty"));
        }
        if arn.resource().chars().any(char::is_control) {
            return Err(err("resource must not contain control characters"));
        }
        if arn.service() == "iam" && arn.resource().starts_with("role/") && !arn.is_role() {
            return Err(err("role ARN must end in a role name"));
        }
        Ok(arn)
    }
}

impl TryFrom<String> for Arn {
    type Error = ArnError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<Arn> for String {
    fn from(arn: Arn) -> Self {
        arn.text
    }
}

impl fmt::Display for Arn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl serde::Serialize for Arn {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for Arn {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

fn is_lower_alnum_dash(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'
}

fn is_partition(p: &str) -> bool {
    match p.strip_prefix("aws") {
        Some("") => true,
        Some(rest) => rest.strip_prefix('-').is_some_and(|s| {
            !s.is_empty() && !s.ends_with('-') && s.bytes().all(is_lower_alnum_dash)
        }),
        None => false,
    }
}

/// Partitions, their dual-stack DNS suffix (used by `eks-auth`) and region prefixes; a region
/// belongs to a partition when it is `<prefix><word>-<digits>` (the SDK's `regionRegex`).
const PARTITIONS: &[(&str, &str, &[&str])] = &[
    ("aws-us-gov", "api.aws", &["us-gov-"]),
    ("aws-iso", "api.aws.ic.gov", &["us-iso-"]),
    ("aws-iso-b", "api.aws.scloud", &["us-isob-"]),
    ("aws-iso-e", "api.cloud-aws.adc-e.uk", &["eu-isoe-"]),
    ("aws-iso-f", "api.aws.hci.ic.gov", &["us-isof-"]),
    ("aws-eusc", "api.amazonwebservices.eu", &["eusc-de-"]),
    ("aws-cn", "api.amazonwebservices.com.cn", &["cn-"]),
    (
        "aws",
        "api.aws",
        &[
            "us-", "eu-", "ap-", "sa-", "ca-", "me-", "af-", "il-", "mx-",
        ],
    ),
];

/// The partition a region belongs to: `us-west-2` → `aws`, `cn-north-1` → `aws-cn`,
/// `us-gov-west-1` → `aws-us-gov`. Unknown shapes fall back to `aws`, as the SDKs do.
pub fn partition_for_region(region: &str) -> &'static str {
    let global = match region {
        "aws-global" => Some("aws"),
        "aws-cn-global" => Some("aws-cn"),
        "aws-us-gov-global" => Some("aws-us-gov"),
        "aws-iso-global" => Some("aws-iso"),
        "aws-iso-b-global" => Some("aws-iso-b"),
        _ => None,
    };
    if let Some(p) = global {
        return p;
    }
    for (partition, _, prefixes) in PARTITIONS {
        for prefix in *prefixes {
            if region.strip_prefix(prefix).is_some_and(is_word_dash_digits) {
                return partition;
            }
        }
    }
    "aws"
}

/// The dual-stack DNS suffix of a partition (`api.aws`, `api.amazonwebservices.com.cn`, ...);
/// `api.aws` for an unknown one.
pub fn dns_suffix(partition: &str) -> &'static str {
    PARTITIONS
        .iter()
        .find(|(p, _, _)| *p == partition)
        .map_or("api.aws", |(_, suffix, _)| suffix)
}

/// `\w+-\d+` exactly.
fn is_word_dash_digits(s: &str) -> bool {
    match s.split_once('-') {
        Some((word, digits)) => {
            !word.is_empty()
                && word.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_parts() {
        let arn: Arn = "arn:aws:eks:us-west-2:111122223333:cluster/demo"
            .parse()
            .unwrap();
        assert_eq!(
            (
                arn.partition(),
                arn.service(),
                arn.region(),
                arn.account_id(),
                arn.resource()
            ),
            ("aws", "eks", "us-west-2", "111122223333", "cluster/demo")
        );
        assert_eq!(arn.eks_cluster_name(), Some("demo"));
        assert_eq!(arn.role_name(), None);
        let sts: Arn = "arn:aws:sts::111122223333:assumed-role/app/eks-demo-pod-uuid"
            .parse()
            .unwrap();
        assert_eq!(sts.account_id(), "111122223333");
        let colon: Arn = "arn:aws:logs:us-east-1:111122223333:log-group:/a:b"
            .parse()
            .unwrap();
        assert_eq!(colon.resource(), "log-group:/a:b");
    }

    #[test]
    fn role_paths() {
        let plain: Arn = "arn:aws:iam::111122223333:role/reader".parse().unwrap();
        assert_eq!(
            (plain.role_name(), plain.role_path()),
            (Some("reader"), Some("/"))
        );
        let nested: Arn = "arn:aws-cn:iam::111122223333:role/a/b/reader"
            .parse()
            .unwrap();
        assert_eq!(
            (nested.role_name(), nested.role_path()),
            (Some("reader"), Some("/a/b/"))
        );
        assert!("arn:aws:iam::111122223333:role/".parse::<Arn>().is_err());
        assert!("arn:aws:iam::111122223333:role/a/".parse::<Arn>().is_err());
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            "arn",
            "arn:aws:iam::111122223333",
            "arn:aws:iam::111122223333:",
            "arn::iam::111122223333:role/x",
            "arn:azure:iam::111122223333:role/x",
            "arn:aws-:iam::111122223333:role/x",
            "arn:AWS:iam::111122223333:role/x",
            "arn:aws::us-east-1:111122223333:thing",
            "arn:aws:iam::11112222333:role/x",
            "arn:aws:iam::1111222233334:role/x",
            "arn:aws:iam::abcdabcdabcd:role/x",
            "arn:aws:IAM::111122223333:role/x",
            "ARN:aws:iam::111122223333:role/x",
            "arn:aws:iam::111122223333:role/x\n",
        ] {
            assert!(bad.parse::<Arn>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn partitions() {
        for (region, partition) in [
            ("us-west-2", "aws"),
            ("eu-central-1", "aws"),
            ("il-central-1", "aws"),
            ("cn-north-1", "aws-cn"),
            ("us-gov-west-1", "aws-us-gov"),
            ("us-iso-east-1", "aws-iso"),
            ("us-isob-east-1", "aws-iso-b"),
            ("eu-isoe-west-1", "aws-iso-e"),
            ("us-isof-south-1", "aws-iso-f"),
            ("eusc-de-east-1", "aws-eusc"),
            ("aws-cn-global", "aws-cn"),
            ("mars-1", "aws"),
        ] {
            assert_eq!(partition_for_region(region), partition, "{region}");
        }
        assert_eq!(dns_suffix("aws-cn"), "api.amazonwebservices.com.cn");
        assert_eq!(dns_suffix("unknown"), "api.aws");
    }

    #[test]
    fn error_text_is_bounded() {
        let long = format!("arn:{}", "x".repeat(5000));
        let err = long.parse::<Arn>().unwrap_err();
        assert!(err.to_string().len() < 300);
    }
}
