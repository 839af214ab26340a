//! Proof Key for Code Exchange (RFC 7636): the verifier a public client
//! keeps and the S256 challenge it sends with the authorization request.

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

/// A verifier and its challenge, for one sign-in.
pub struct Pkce {
    /// The secret the token request proves possession of (43–128
    /// characters of the unreserved set, RFC 7636 §4.1).
    pub verifier: String,
    /// `BASE64URL(SHA256(verifier))`, without padding (§4.2).
    pub challenge: String,
}

impl Pkce {
    /// A fresh verifier from the system's random source.
    pub fn new() -> std::io::Result<Pkce> {
        Ok(Pkce::from_verifier(random_token(48)?))
    }

    /// The challenge of `verifier`.
    pub fn from_verifier(verifier: String) -> Pkce {
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        Pkce { verifier, challenge }
    }
}

/// `bytes` random bytes from the kernel's generator, as unpadded
/// base64url (unreserved characters only): `bytes` = 48 gives 64
/// characters.
pub fn random_token(bytes: usize) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut buffer = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buffer)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buffer))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7636, Appendix B.
    #[test]
    fn the_rfc_example_challenge() {
        let pkce = Pkce::from_verifier("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into());
        assert_eq!(pkce.challenge, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    }

    #[test]
    fn fresh_verifiers_are_long_unreserved_and_differ() {
        let (a, b) = (Pkce::new().expect("random"), Pkce::new().expect("random"));
        assert_eq!(a.verifier.len(), 64);
        assert!(a.verifier.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_ne!(a.verifier, b.verifier);
    }
}
