//! Signing keys made in the test: RSA and EC key pairs, their public JWKs, and JWTs signed with
//! them, as a cluster's service-account issuer would.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use pod_identity_core::token::ServiceAccountToken;
use serde_json::{Value, json};

enum KeyKind {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair, &'static str),
}

/// A signing key with its `kid` and `alg`.
pub struct Signer {
    pub kid: String,
    pub alg: &'static str,
    key: KeyKind,
}

impl Signer {
    pub fn rsa(kid: &str) -> Self {
        Self {
            kid: kid.to_owned(),
            alg: "RS256",
            key: KeyKind::Rsa(RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap()),
        }
    }

    pub fn ec(alg: &'static str, kid: &str) -> Self {
        let (algorithm, crv): (&'static signature::EcdsaSigningAlgorithm, _) = match alg {
            "ES256" => (&signature::ECDSA_P256_SHA256_FIXED_SIGNING, "P-256"),
            "ES384" => (&signature::ECDSA_P384_SHA384_FIXED_SIGNING, "P-384"),
            "ES512" => (&signature::ECDSA_P521_SHA512_FIXED_SIGNING, "P-521"),
            other => panic!("{other}"),
        };
        Self {
            kid: kid.to_owned(),
            alg,
            key: KeyKind::Ec(EcdsaKeyPair::generate(algorithm).unwrap(), crv),
        }
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Value {
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        match &self.key {
            KeyKind::Rsa(key) => {
                let (n, e) = rsa_public_components(key.public_key().as_ref());
                json!({"kty": "RSA", "kid": self.kid, "alg": "RS256", "use": "sig",
                       "n": b64(n), "e": b64(e)})
            }
            KeyKind::Ec(key, crv) => {
                let point = key.public_key().as_ref();
                let size = (point.len() - 1) / 2;
                json!({"kty": "EC", "kid": self.kid, "crv": crv, "use": "sig",
                       "x": b64(&point[1..=size]), "y": b64(&point[1 + size..])})
            }
        }
    }

    /// The public key as the Kubernetes API server publishes it: always naming its `alg`.
    pub fn named_jwk(&self) -> Value {
        let mut jwk = self.jwk();
        jwk["alg"] = json!(self.alg);
        jwk
    }

    pub fn sign_bytes(&self, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.key {
            KeyKind::Rsa(key) => {
                let mut signature = vec![0; key.public_modulus_len()];
                key.sign(&signature::RSA_PKCS1_SHA256, &rng, message, &mut signature)
                    .unwrap();
                signature
            }
            KeyKind::Ec(key, _) => key.sign(&rng, message).unwrap().as_ref().to_vec(),
        }
    }

    /// A JWT with this key's `alg` and `kid` over `claims`.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with_header(&json!({"alg": self.alg, "kid": self.kid}), claims)
    }

    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.sign_bytes(signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    /// [`sign`](Self::sign), decoded into the token type the verifiers take.
    pub fn token(&self, claims: &Value) -> ServiceAccountToken {
        ServiceAccountToken::decode(&self.sign(claims)).unwrap()
    }

    /// [`sign_with_header`](Self::sign_with_header), decoded.
    pub fn token_with_header(&self, header: &Value, claims: &Value) -> ServiceAccountToken {
        ServiceAccountToken::decode(&self.sign_with_header(header, claims)).unwrap()
    }
}

/// `n` and `e` of a DER `RSAPublicKey` (PKCS #1: a SEQUENCE of two INTEGERs).
fn rsa_public_components(der: &[u8]) -> (&[u8], &[u8]) {
    /// One DER element: (tag, contents, rest).
    fn element(der: &[u8]) -> (u8, &[u8], &[u8]) {
        let (tag, first) = (der[0], der[1]);
        let (len, header) = if first < 0x80 {
            (usize::from(first), 2)
        } else {
            let count = usize::from(first & 0x7f);
            let len = der[2..2 + count]
                .iter()
                .fold(0usize, |len, b| (len << 8) | usize::from(*b));
            (len, 2 + count)
        };
        (tag, &der[header..header + len], &der[header + len..])
    }
    let (0x30, sequence, _) = element(der) else {
        panic!("not a SEQUENCE")
    };
    let (0x02, n, rest) = element(sequence) else {
        panic!("no modulus")
    };
    let (0x02, e, _) = element(rest) else {
        panic!("no exponent")
    };
    (n.strip_prefix(&[0]).unwrap_or(n), e)
}
