//! Rotating refresh tokens: `{session_id}.{secret}`, where the secret is 32
//! random bytes in unpadded base64url. The store keeps only the SHA-256 of the
//! secret; each refresh replaces it, and presenting a replaced one revokes the
//! session, because then two parties hold copies of one token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{Auth, AuthError, Grant};
use crate::bus::ControlEvent;
use crate::store::Rotation;

/// Random bytes in a refresh secret.
const SECRET_BYTES: usize = 32;

/// A refresh token as issued to a client, with the hash the store keeps. No
/// `Debug`: it holds the secret.
pub struct RefreshToken {
    /// What the client is given.
    pub token: String,
    /// SHA-256 of the secret, lower-case hex.
    pub hash: String,
}

impl RefreshToken {
    /// A new random token for `session_id`.
    #[must_use]
    pub fn generate(session_id: Uuid) -> Self {
        let mut secret = [0u8; SECRET_BYTES];
        rand::rng().fill_bytes(&mut secret);
        Self {
            token: format!(
                "{}.{}",
                session_id.hyphenated(),
                URL_SAFE_NO_PAD.encode(secret)
            ),
            hash: hash(&secret),
        }
    }
}

/// The session and secret hash a presented token names, or `None` if it is
/// not a well-formed refresh token.
#[must_use]
pub fn parse(token: &str) -> Option<(Uuid, String)> {
    let (session_id, secret) = token.split_once('.')?;
    let session_id = Uuid::try_parse(session_id).ok()?;
    let mut decoded = [0u8; SECRET_BYTES];
    // Exactly 32 bytes: `decode_slice` fails on anything longer, and shorter
    // is caught by the length.
    let len = URL_SAFE_NO_PAD.decode_slice(secret, &mut decoded).ok()?;
    (len == SECRET_BYTES).then(|| (session_id, hash(&decoded)))
}

fn hash(secret: &[u8]) -> String {
    hex::encode(Sha256::digest(secret))
}

impl Auth {
    /// Spend a refresh token: a new access token and a new refresh token for
    /// its session, after which the presented one no longer works. Presenting
    /// a token that was already spent revokes the session and drops its
    /// sockets.
    ///
    /// # Errors
    /// `AuthError::InvalidToken` if the token is malformed, spent, or names a
    /// dead session, or its account is gone; `AuthError::Store` if the store
    /// cannot be reached; `AuthError::Secret` if signing fails.
    pub async fn refresh(&self, presented: &str) -> Result<Grant, AuthError> {
        let (session_id, old_hash) = parse(presented).ok_or(AuthError::InvalidToken)?;
        let next = RefreshToken::generate(session_id);
        match self
            .store
            .rotate_refresh(session_id, &old_hash, &next.hash)
            .await?
        {
            Rotation::Rotated { user_id } => {
                // The name, roles and team are read again, so a refreshed
                // token carries the account as it is now.
                let profile = self
                    .store
                    .profile(user_id)
                    .await?
                    .ok_or(AuthError::InvalidToken)?;
                self.grant(session_id, &profile, next.token)
            }
            Rotation::Reused => {
                tracing::warn!(%session_id, "a spent refresh token was presented again; revoking its session");
                if self.store.revoke_session(session_id).await? {
                    self.bus
                        .send_control(ControlEvent::SessionRevoked { session_id });
                }
                Err(AuthError::InvalidToken)
            }
            Rotation::Refused => Err(AuthError::InvalidToken),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_parses_to_its_session_and_hash() {
        let session_id = Uuid::now_v7();
        let token = RefreshToken::generate(session_id);
        assert_eq!(token.token.len(), 36 + 1 + 43);
        assert_eq!(token.hash.len(), 64);
        assert_eq!(parse(&token.token), Some((session_id, token.hash.clone())));
        let other = RefreshToken::generate(session_id);
        assert_ne!(other.hash, token.hash, "secrets are random");
    }

    #[test]
    fn malformed_tokens_do_not_parse() {
        let session_id = Uuid::now_v7();
        let good = RefreshToken::generate(session_id).token;
        let (sid, secret) = good.split_once('.').unwrap();
        for bad in [
            String::new(),
            secret.to_owned(),
            format!("{sid}."),
            format!("{sid}.{}", &secret[..42]),
            format!("{sid}.{secret}A"),
            format!("{sid}.{secret}=="),
            format!("not-a-uuid.{secret}"),
            format!(
                "{sid}.{}",
                secret.replace(|c: char| c.is_ascii_alphabetic(), "+")
            ),
            format!("{sid}.{secret}.{secret}"),
        ] {
            assert_eq!(parse(&bad), None, "{bad}");
        }
    }
}
