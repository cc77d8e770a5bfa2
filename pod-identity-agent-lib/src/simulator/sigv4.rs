//! SigV4 verification on the server side.
//!
//! The signature is recomputed with `aws-sigv4`, the signer the SDKs use, from what arrived: the
//! method, the URI exactly as sent, the headers named in `SignedHeaders`, the `x-amz-date`, the
//! session token of the credentials the access key belongs to, and the body. Both protocols of the
//! simulator (EKS Auth, STS) share this check and render its [`Rejection`] in their own dialect.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use http::HeaderMap;
use pod_identity_core::secret::SecretString;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// AWS's message for a signature that does not match.
pub(crate) const SIGNATURE_MISMATCH: &str = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";
/// AWS's message for an unknown access key or a session token that does not belong to it.
pub(crate) const INVALID_SECURITY_TOKEN: &str =
    "The security token included in the request is invalid.";
/// AWS's message for expired credentials.
pub(crate) const EXPIRED_SECURITY_TOKEN: &str =
    "The security token included in the request is expired";

/// How far `x-amz-date` may be from the server's clock, as AWS allows.
pub(crate) const MAX_SKEW: Duration = Duration::from_secs(5 * 60);

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const X_AMZ_DATE: &str = "x-amz-date";
const X_AMZ_SECURITY_TOKEN: &str = "x-amz-security-token";
const X_AMZ_CONTENT_SHA256: &str = "x-amz-content-sha256";

/// Why a request's signature was not accepted, independent of the protocol that reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// No `Authorization` header at all.
    Missing,
    /// An `Authorization` header that is not a complete SigV4 header, or no `x-amz-date`.
    Incomplete(String),
    /// The credential scope names another region, service or day.
    Scope(String),
    /// The access key id is not known, or the session token does not belong to it.
    UnknownCredentials,
    /// The credentials are known but have expired.
    ExpiredCredentials,
    /// The recomputed signature differs.
    Mismatch,
    /// `x-amz-date` is more than five minutes away from the server's clock.
    Stale(String),
}

/// The secret side of the credentials an access key id names.
pub(crate) struct SigningSecret {
    pub(crate) secret_access_key: SecretString,
    pub(crate) session_token: Option<SecretString>,
}

/// The parts of the `Authorization` header that verification reads.
#[derive(Debug)]
struct Authorization<'a> {
    access_key_id: &'a str,
    scope_date: &'a str,
    scope_region: &'a str,
    scope_service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

/// Verifies a SigV4 `Authorization` header for one region and service.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Verifier<'a> {
    pub(crate) region: &'a str,
    pub(crate) service: &'a str,
    pub(crate) now: SystemTime,
}

impl Verifier<'_> {
    /// Checks the signature of a request; `lookup` finds the credentials behind an access key id
    /// (and refuses unknown or expired ones). Returns what `lookup` returned.
    pub(crate) fn verify<K>(
        &self,
        method: &str,
        uri: &http::Uri,
        headers: &HeaderMap,
        body: &[u8],
        lookup: impl FnOnce(&str) -> Result<(K, SigningSecret), Rejection>,
    ) -> Result<K, Rejection> {
        let raw = match headers.get(http::header::AUTHORIZATION) {
            None => return Err(Rejection::Missing),
            Some(value) => value.to_str().map_err(|_| {
                Rejection::Incomplete("Authorization header is not valid ASCII.".into())
            })?,
        };
        let auth = parse_authorization(raw)?;
        let date = single_header(headers, X_AMZ_DATE)?.ok_or_else(|| {
            Rejection::Incomplete(
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
                    .into(),
            )
        })?;
        let signed_at = parse_amz_date(date).ok_or_else(|| {
            Rejection::Incomplete(format!(
                "Date must be in ISO-8601 'basic format'. Got '{date}'."
            ))
        })?;
        self.check_skew(date, signed_at)?;
        self.check_scope(&auth, date)?;
        if !auth.signed_headers.contains(&"host") || !headers.contains_key(http::header::HOST) {
            return Err(Rejection::Incomplete(
                "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.".into(),
            ));
        }

        let (found, secret) = lookup(auth.access_key_id)?;
        check_session_token(headers, secret.session_token.as_ref())?;
        if let Some(claimed) = single_header(headers, X_AMZ_CONTENT_SHA256)? {
            let actual = hex(&Sha256::digest(body));
            if !bool::from(claimed.as_bytes().ct_eq(actual.as_bytes())) {
                return Err(Rejection::Mismatch);
            }
        }

        let expected = self.signature(method, uri, headers, body, signed_at, &auth, secret)?;
        if bool::from(expected.as_bytes().ct_eq(auth.signature.as_bytes())) {
            Ok(found)
        } else {
            Err(Rejection::Mismatch)
        }
    }

    fn check_skew(&self, date: &str, signed_at: SystemTime) -> Result<(), Rejection> {
        let now = amz_date(self.now);
        if signed_at + MAX_SKEW < self.now {
            let earliest = amz_date(self.now - MAX_SKEW);
            return Err(Rejection::Stale(format!(
                "Signature expired: {date} is now earlier than {earliest} ({now} - 5 min.)"
            )));
        }
        if signed_at > self.now + MAX_SKEW {
            let latest = amz_date(self.now + MAX_SKEW);
            return Err(Rejection::Stale(format!(
                "Signature not yet current: {date} is still later than {latest} ({now} + 5 min.)"
            )));
        }
        Ok(())
    }

    fn check_scope(&self, auth: &Authorization<'_>, date: &str) -> Result<(), Rejection> {
        if auth.scope_region != self.region {
            return Err(Rejection::Scope(format!(
                "Credential should be scoped to a valid region. (expected '{}', got '{}')",
                self.region, auth.scope_region
            )));
        }
        if auth.scope_service != self.service {
            return Err(Rejection::Scope(format!(
                "Credential should be scoped to correct service: '{}'.",
                self.service
            )));
        }
        if !date.starts_with(auth.scope_date) || auth.scope_date.len() != 8 {
            return Err(Rejection::Scope(format!(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}'",
                auth.scope_date,
                date.get(..8).unwrap_or(date)
            )));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn signature(
        &self,
        method: &str,
        uri: &http::Uri,
        headers: &HeaderMap,
        body: &[u8],
        signed_at: SystemTime,
        auth: &Authorization<'_>,
        secret: SigningSecret,
    ) -> Result<String, Rejection> {
        // The signer adds `x-amz-date` (from `signed_at`) and `x-amz-security-token` (from the
        // credentials) itself; every other signed header is passed on exactly as received.
        let mut signable_headers = Vec::with_capacity(auth.signed_headers.len());
        for name in &auth.signed_headers {
            if *name == X_AMZ_DATE || *name == X_AMZ_SECURITY_TOKEN {
                continue;
            }
            for value in headers.get_all(*name) {
                let value = value.to_str().map_err(|_| Rejection::Mismatch)?;
                signable_headers.push((*name, value));
            }
        }
        let path_and_query = uri.path_and_query().map_or("/", |pq| pq.as_str());
        let request = SignableRequest::new(
            method,
            path_and_query,
            signable_headers.into_iter(),
            SignableBody::Bytes(body),
        )
        .map_err(|_| Rejection::Mismatch)?;

        let identity = Credentials::new(
            auth.access_key_id,
            secret.secret_access_key.expose_secret(),
            secret.session_token.map(|t| t.expose_secret().to_owned()),
            None,
            "pod-identity-simulator",
        )
        .into();
        let mut settings = SigningSettings::default();
        // Sign exactly what the client listed, `user-agent` included if it did.
        settings.excluded_headers = None;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(self.region)
            .name(self.service)
            .time(signed_at)
            .settings(settings)
            .build()
            .map_err(|_| Rejection::Mismatch)?
            .into();
        let output =
            aws_sigv4::http_request::sign(request, &params).map_err(|_| Rejection::Mismatch)?;
        Ok(output.signature().to_owned())
    }
}

/// Parses `AWS4-HMAC-SHA256 Credential=AKID/20240101/us-west-2/eks-auth/aws4_request,
/// SignedHeaders=host;x-amz-date, Signature=…`.
fn parse_authorization(raw: &str) -> Result<Authorization<'_>, Rejection> {
    let Some(rest) = raw.strip_prefix(ALGORITHM) else {
        let algorithm = raw.split_whitespace().next().unwrap_or_default();
        return Err(Rejection::Incomplete(format!(
            "Unsupported AWS 'algorithm': '{algorithm}'"
        )));
    };
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        match part.trim().split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed_headers = Some(v),
            Some(("Signature", v)) => signature = Some(v),
            _ => {}
        }
    }
    let mut missing = String::new();
    for (name, value) in [
        ("Credential", credential),
        ("Signature", signature),
        ("SignedHeaders", signed_headers),
    ] {
        if value.is_none_or(str::is_empty) {
            missing.push_str(&format!(
                "Authorization header requires '{name}' parameter. "
            ));
        }
    }
    let (Some(credential), Some(signed_headers), Some(signature)) =
        (credential, signed_headers, signature)
    else {
        return Err(Rejection::Incomplete(missing.trim_end().to_owned()));
    };
    if !missing.is_empty() {
        return Err(Rejection::Incomplete(missing.trim_end().to_owned()));
    }
    let scope: Vec<&str> = credential.split('/').collect();
    let [
        access_key_id,
        scope_date,
        scope_region,
        scope_service,
        "aws4_request",
    ] = scope[..]
    else {
        return Err(Rejection::Incomplete(format!(
            "Credential should have five slash-separated parts ending in 'aws4_request'. Got '{}'.",
            scope.len()
        )));
    };
    if access_key_id.is_empty() {
        return Err(Rejection::Incomplete(
            "Credential must name an access key id.".into(),
        ));
    }
    Ok(Authorization {
        access_key_id,
        scope_date,
        scope_region,
        scope_service,
        signed_headers: signed_headers.split(';').collect(),
        signature,
    })
}

fn single_header<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, Rejection> {
    let mut values = headers.get_all(name).into_iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Rejection::Incomplete(format!(
            "Header '{name}' must appear once."
        )));
    }
    first
        .to_str()
        .map(Some)
        .map_err(|_| Rejection::Incomplete(format!("Header '{name}' is not valid ASCII.")))
}

fn check_session_token(
    headers: &HeaderMap,
    expected: Option<&SecretString>,
) -> Result<(), Rejection> {
    let sent = single_header(headers, X_AMZ_SECURITY_TOKEN)?;
    match (sent, expected) {
        (None, None) => Ok(()),
        (Some(sent), Some(expected))
            if bool::from(sent.as_bytes().ct_eq(expected.expose_secret().as_bytes())) =>
        {
            Ok(())
        }
        _ => Err(Rejection::UnknownCredentials),
    }
}

/// Parses the SigV4 basic ISO 8601 form `20240101T120000Z`.
pub(crate) fn parse_amz_date(date: &str) -> Option<SystemTime> {
    let b = date.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let digits = |range: std::ops::Range<usize>| -> Option<u64> {
        let s = date.get(range)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let rfc3339 = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        digits(0..4)?,
        digits(4..6)?,
        digits(6..8)?,
        digits(9..11)?,
        digits(11..13)?,
        digits(13..15)?
    );
    pod_identity_core::time::parse_rfc3339(&rfc3339).ok()
}

/// Formats a time in the SigV4 basic ISO 8601 form, whole seconds.
pub(crate) fn amz_date(t: SystemTime) -> String {
    let rfc3339 = pod_identity_core::time::format_rfc3339(t);
    rfc3339
        .chars()
        .take_while(|c| *c != '.' && *c != 'Z')
        .filter(|c| *c != '-' && *c != ':')
        .chain(std::iter::once('Z'))
        .collect()
}

/// Lower-case hex of a byte string.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sigv4::http_request::{SigningParams, sign};

    const REGION: &str = "us-west-2";
    const SERVICE: &str = "eks-auth";
    const AKID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// Signs a request the way the SDK does and returns it as the server would see it.
    fn signed(
        time: SystemTime,
        secret: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> http::Request<Vec<u8>> {
        let mut request = http::Request::builder()
            .method("POST")
            .uri("/clusters/demo/assume-role-for-pod-identity")
            .header("host", "127.0.0.1:4000")
            .header("content-type", "application/json")
            .body(body.to_vec())
            .unwrap();
        let identity =
            Credentials::new(AKID, secret, token.map(str::to_owned), None, "test").into();
        let params: SigningParams<'_> = v4::SigningParams::builder()
            .identity(&identity)
            .region(REGION)
            .name(SERVICE)
            .time(time)
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let signable = SignableRequest::new(
            "POST",
            "/clusters/demo/assume-role-for-pod-identity",
            request
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str(), v.to_str().unwrap())),
            SignableBody::Bytes(body),
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        instructions.apply_to_request_http1x(&mut request);
        request
    }

    fn verify(
        request: &http::Request<Vec<u8>>,
        now: SystemTime,
        token: Option<&str>,
    ) -> Result<(), Rejection> {
        let verifier = Verifier {
            region: REGION,
            service: SERVICE,
            now,
        };
        verifier.verify(
            request.method().as_str(),
            request.uri(),
            request.headers(),
            request.body(),
            |akid| {
                if akid != AKID {
                    return Err(Rejection::UnknownCredentials);
                }
                Ok((
                    (),
                    SigningSecret {
                        secret_access_key: SECRET.into(),
                        session_token: token.map(SecretString::from),
                    },
                ))
            },
        )
    }

    #[test]
    fn accepts_what_the_signer_produced() {
        let request = signed(at(1_700_000_000), SECRET, None, b"{\"token\":\"a.b.c\"}");
        assert_eq!(verify(&request, at(1_700_000_060), None), Ok(()));
    }

    #[test]
    fn accepts_a_session_token_and_rejects_a_different_one() {
        let request = signed(at(1_700_000_000), SECRET, Some("tok"), b"{}");
        assert_eq!(verify(&request, at(1_700_000_000), Some("tok")), Ok(()));
        assert_eq!(
            verify(&request, at(1_700_000_000), Some("other")),
            Err(Rejection::UnknownCredentials)
        );
        assert_eq!(
            verify(&request, at(1_700_000_000), None),
            Err(Rejection::UnknownCredentials)
        );
    }

    #[test]
    fn rejects_a_wrong_secret_a_changed_body_and_a_changed_header() {
        let request = signed(at(1_700_000_000), "not-the-secret", None, b"{}");
        assert_eq!(
            verify(&request, at(1_700_000_000), None),
            Err(Rejection::Mismatch)
        );

        let mut request = signed(at(1_700_000_000), SECRET, None, b"{}");
        *request.body_mut() = b"{ }".to_vec();
        assert_eq!(
            verify(&request, at(1_700_000_000), None),
            Err(Rejection::Mismatch)
        );

        let mut request = signed(at(1_700_000_000), SECRET, None, b"{}");
        request
            .headers_mut()
            .insert("content-type", "text/plain".parse().unwrap());
        assert_eq!(
            verify(&request, at(1_700_000_000), None),
            Err(Rejection::Mismatch)
        );
    }

    #[test]
    fn rejects_missing_incomplete_and_stale_signatures() {
        let mut request = signed(at(1_700_000_000), SECRET, None, b"{}");
        let auth = request.headers_mut().remove("authorization").unwrap();
        assert_eq!(
            verify(&request, at(1_700_000_000), None),
            Err(Rejection::Missing)
        );

        let truncated = auth.to_str().unwrap().split(", Signature=").next().unwrap();
        request
            .headers_mut()
            .insert("authorization", truncated.parse().unwrap());
        assert!(matches!(
            verify(&request, at(1_700_000_000), None),
            Err(Rejection::Incomplete(m)) if m.contains("'Signature'")
        ));

        let request = signed(at(1_700_000_000), SECRET, None, b"{}");
        assert!(matches!(
            verify(&request, at(1_700_000_000 + 301), None),
            Err(Rejection::Stale(m)) if m.starts_with("Signature expired: 20231114T221320Z")
        ));
        assert!(matches!(
            verify(&request, at(1_700_000_000 - 301), None),
            Err(Rejection::Stale(m)) if m.starts_with("Signature not yet current")
        ));
        assert_eq!(verify(&request, at(1_700_000_000 + 300), None), Ok(()));
    }

    #[test]
    fn rejects_another_region_and_an_unknown_key() {
        let request = signed(at(1_700_000_000), SECRET, None, b"{}");
        let verifier = Verifier {
            region: "eu-west-1",
            service: SERVICE,
            now: at(1_700_000_000),
        };
        let result = verifier.verify(
            "POST",
            request.uri(),
            request.headers(),
            request.body(),
            |_| -> Result<((), SigningSecret), Rejection> {
                unreachable!("scope is checked first")
            },
        );
        assert!(matches!(result, Err(Rejection::Scope(_))));

        let mut request = signed(at(1_700_000_000), SECRET, None, b"{}");
        let auth = request.headers()["authorization"]
            .to_str()
            .unwrap()
            .replace(AKID, "AKIDOTHER");
        request
            .headers_mut()
            .insert("authorization", auth.parse().unwrap());
        assert_eq!(
            verify(&request, at(1_700_000_000), None),
            Err(Rejection::UnknownCredentials)
        );
    }

    #[test]
    fn amz_dates_round_trip() {
        assert_eq!(amz_date(at(1_700_000_000)), "20231114T221320Z");
        assert_eq!(parse_amz_date("20231114T221320Z"), Some(at(1_700_000_000)));
        assert_eq!(parse_amz_date("2023-11-14T22:13:20Z"), None);
        assert_eq!(parse_amz_date("20231114T22132+Z"), None);
        assert_eq!(parse_amz_date(""), None);
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(raw in ".{0,300}", date in ".{0,20}") {
            let _ = parse_authorization(&raw);
            let _ = parse_amz_date(&date);
        }

        #[test]
        fn verifying_well_shaped_headers_with_odd_parts_never_panics(
            signed in "(host;)?[a-z0-9;:_-]{0,40}",
            signature in "[0-9a-f]{0,64}",
            extra_name in "[a-z-]{1,12}",
            extra_value in "[ -~]{0,40}",
            query in "[ -~&&[^ #]]{0,40}",
        ) {
            let mut headers = HeaderMap::new();
            let authorization = format!(
                "AWS4-HMAC-SHA256 Credential={AKID}/20231114/{REGION}/{SERVICE}/aws4_request, SignedHeaders={signed}, Signature={signature}"
            );
            headers.insert("authorization", authorization.parse().unwrap());
            headers.insert("x-amz-date", "20231114T221320Z".parse().unwrap());
            headers.insert("host", "127.0.0.1:4000".parse().unwrap());
            if let (Ok(name), Ok(value)) = (extra_name.parse::<http::HeaderName>(), extra_value.parse()) {
                headers.append(name, value);
            }
            let Ok(uri) = format!("/p?{query}").parse::<http::Uri>() else { return Ok(()) };
            let verifier = Verifier { region: REGION, service: SERVICE, now: at(1_700_000_000) };
            let result = verifier.verify("POST", &uri, &headers, b"{}", |_| {
                Ok(((), SigningSecret { secret_access_key: SECRET.into(), session_token: None }))
            });
            proptest::prop_assert!(result.is_err());
        }

        #[test]
        fn verifying_arbitrary_headers_never_panics(
            authorization in "AWS4-HMAC-SHA256 [ -~]{0,200}",
            date in "[0-9TZ]{0,20}",
            host in "[ -~]{0,40}",
            path in "/[ -~&&[^ #?]]{0,40}",
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
        ) {
            let mut headers = HeaderMap::new();
            for (name, value) in [("authorization", authorization), ("x-amz-date", date), ("host", host)] {
                if let Ok(value) = value.parse() {
                    headers.insert(name, value);
                }
            }
            let Ok(uri) = path.parse::<http::Uri>() else { return Ok(()) };
            let verifier = Verifier { region: REGION, service: SERVICE, now: at(1_700_000_000) };
            let _ = verifier.verify("POST", &uri, &headers, &body, |_| {
                Ok(((), SigningSecret { secret_access_key: SECRET.into(), session_token: None }))
            });
        }
    }
}
