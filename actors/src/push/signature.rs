//! Standard Webhooks signatures: `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, where
//! the key is the base64-decoded part of the agent's `whsec_…` secret. Any Standard Webhooks
//! library verifies them as they are.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The prefix every signing secret carries.
pub const SECRET_PREFIX: &str = "whsec_";

/// Reads a secret with or without base64 padding, as the reference libraries do.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Says nothing of the secret itself, so the error can be logged.
    #[error("the push signing secret must be \"whsec_\" followed by non-empty base64")]
    BadSecret,
}

/// The `webhook-signature` header value for one delivery.
pub fn sign(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> Result<String, Error> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).ok_or(Error::BadSecret)?;
    let key = LENIENT.decode(encoded).map_err(|_| Error::BadSecret)?;
    if key.is_empty() {
        return Err(Error::BadSecret);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| Error::BadSecret)?;
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector of the Standard Webhooks reference libraries' tests (also checked against
    /// Python's `hmac` and the `standardwebhooks` package).
    #[test]
    fn matches_the_reference_vector() {
        let sig = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(
            sig.as_deref(),
            Ok("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
    }

    #[test]
    fn padding_is_optional_and_every_part_counts() {
        // 32 bytes: padded base64 ends with one '='.
        let padded = format!("whsec_{}", STANDARD.encode([7u8; 32]));
        let unpadded = padded.trim_end_matches('=').to_owned();
        let a = sign(&padded, "id", 1, b"{}").expect("signs");
        assert_eq!(sign(&unpadded, "id", 1, b"{}").expect("signs"), a);
        assert_ne!(sign(&padded, "id2", 1, b"{}").expect("signs"), a);
        assert_ne!(sign(&padded, "id", 2, b"{}").expect("signs"), a);
        assert_ne!(sign(&padded, "id", 1, b"{ }").expect("signs"), a);
    }

    #[test]
    fn malformed_secrets_are_refused() {
        for bad in [
            "",
            "whsec_",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_not base64!",
        ] {
            assert_eq!(sign(bad, "id", 1, b"{}"), Err(Error::BadSecret), "{bad:?}");
        }
    }
}
