//! Access tokens: HS256 JWTs naming a session, signed with the current secret
//! and verified against every known secret by its key id (`kid`).

use std::collections::HashMap;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::secret::Secret;
use crate::store::Role;

/// The only algorithm issued or accepted. Fixing it rules out `alg: none` and
/// algorithm-confusion attacks.
const ALGORITHM: Algorithm = Algorithm::HS256;

/// Clock skew tolerated on `exp`, in seconds. Small, because tokens are short-lived.
const LEEWAY_S: u64 = 5;

/// Longer inputs are refused before any parsing; real tokens are a few hundred bytes.
const MAX_TOKEN_LEN: usize = 4096;

/// What an access token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The account id.
    pub sub: Uuid,
    /// The session id; the session must still be live for the token to count.
    pub sid: Uuid,
    /// The name shown to other players (the display name, else the username).
    pub name: String,
    /// The account's roles when the token was issued.
    pub roles: Vec<Role>,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Expires at, Unix seconds.
    pub exp: u64,
}

impl Claims {
    /// When the token expires, in Unix milliseconds (the unit of the HTTP API).
    #[must_use]
    pub fn expires_at_ms(&self) -> i64 {
        i64::try_from(self.exp.saturating_mul(1000)).unwrap_or(i64::MAX)
    }
}

/// Why a token was refused or could not be made. Clients only ever learn
/// "invalid token"; the detail is for debug logs.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token is malformed, forged, expired, or signed by an unknown key.
    #[error("token rejected: {0}")]
    Invalid(&'static str),
    /// Signing failed (only possible with a broken key).
    #[error("cannot sign token: {0}")]
    Sign(jsonwebtoken::errors::Error),
}

/// Signs and verifies access tokens.
pub struct Tokens {
    /// Key id of the signing secret, written into every new token's header.
    kid: String,
    /// The signing key.
    encoding: EncodingKey,
    /// Every key a token may be verified with, by key id: the current one plus
    /// any retired ones still accepted while their tokens expire.
    decoding: HashMap<String, DecodingKey>,
    /// Fixed algorithm, required claims, small leeway.
    validation: Validation,
    /// Lifetime of new tokens.
    ttl: Duration,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("kid", &self.kid)
            .field("accepted", &self.decoding.keys().collect::<Vec<_>>())
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Tokens {
    /// Sign with `secret`; new tokens live for `ttl`.
    #[must_use]
    pub fn new(secret: &Secret, ttl: Duration) -> Self {
        let mut validation = Validation::new(ALGORITHM);
        validation.leeway = LEEWAY_S;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let kid = secret.kid();
        let decoding = HashMap::from([(kid.clone(), DecodingKey::from_secret(secret.as_bytes()))]);
        Self {
            kid,
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding,
            validation,
            ttl,
        }
    }

    /// Also accept tokens signed with a retired secret, so that rotating the
    /// secret does not log everyone out at once.
    pub fn accept(&mut self, retired: &Secret) {
        self.decoding
            .insert(retired.kid(), DecodingKey::from_secret(retired.as_bytes()));
    }

    /// The key id new tokens carry.
    #[must_use]
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Claims for a new token issued now.
    #[must_use]
    pub fn claims(&self, sub: Uuid, sid: Uuid, name: &str, roles: &[Role]) -> Claims {
        let iat = jsonwebtoken::get_current_timestamp();
        Claims {
            sub,
            sid,
            name: name.to_owned(),
            roles: roles.to_vec(),
            iat,
            exp: iat.saturating_add(self.ttl.as_secs()),
        }
    }

    /// Sign `claims` with the current secret.
    ///
    /// # Errors
    /// `TokenError::Sign` if the key is unusable.
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        let mut header = Header::new(ALGORITHM);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(TokenError::Sign)
    }

    /// Check a token's header, signature and expiry, and return its claims. It
    /// says nothing about whether the session is still live.
    ///
    /// # Errors
    /// `TokenError::Invalid` for any bad token.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Invalid("too long"));
        }
        // The header is read before the signature is checked only to pick the
        // key; `decode` then checks the algorithm against the fixed one.
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid("bad header"))?;
        let kid = header.kid.ok_or(TokenError::Invalid("no kid"))?;
        let key = self
            .decoding
            .get(&kid)
            .ok_or(TokenError::Invalid("unknown kid"))?;
        jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                TokenError::Invalid(match e.kind() {
                    ErrorKind::ExpiredSignature => "expired",
                    ErrorKind::InvalidSignature => "bad signature",
                    ErrorKind::InvalidAlgorithm => "wrong algorithm",
                    _ => "malformed",
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    use super::*;

    const SECRET: &str = "unit-test-secret-unit-test-secret-0123456789";

    fn tokens() -> Tokens {
        Tokens::new(&Secret::new(SECRET), Duration::from_secs(900))
    }

    fn sample(tokens: &Tokens) -> Claims {
        tokens.claims(
            Uuid::now_v7(),
            Uuid::now_v7(),
            "alice",
            &[Role::Player, Role::Admin],
        )
    }

    fn b64(json: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(json.to_string())
    }

    #[track_caller]
    fn assert_refused(tokens: &Tokens, token: &str, why: &str) {
        match tokens.verify(token) {
            Err(TokenError::Invalid(reason)) => assert_eq!(reason, why, "{token}"),
            other => panic!("expected refusal ({why}), got {other:?}"),
        }
    }

    #[test]
    fn a_signed_token_verifies_with_its_claims() {
        let tokens = tokens();
        let claims = sample(&tokens);
        assert_eq!(claims.exp - claims.iat, 900);
        let token = tokens.sign(&claims).unwrap();
        assert_eq!(tokens.verify(&token).unwrap(), claims);
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::HS256);
        assert_eq!(header.kid.as_deref(), Some(tokens.kid()));
        assert_eq!(tokens.kid(), Secret::new(SECRET).kid());
    }

    #[test]
    fn an_expired_token_is_refused() {
        let tokens = tokens();
        let mut claims = sample(&tokens);
        claims.iat -= 1000;
        claims.exp = claims.iat + 900 - 100;
        let token = tokens.sign(&claims).unwrap();
        assert_refused(&tokens, &token, "expired");
    }

    #[test]
    fn a_tampered_payload_is_refused() {
        let tokens = tokens();
        let claims = sample(&tokens);
        let token = tokens.sign(&claims).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let mut forged = serde_json::to_value(&claims).unwrap();
        forged["name"] = "mallory".into();
        let token = format!("{}.{}.{}", parts[0], b64(&forged), parts[2]);
        assert_refused(&tokens, &token, "bad signature");
    }

    #[test]
    fn a_token_signed_with_another_secret_is_refused() {
        let tokens = tokens();
        let other = Tokens::new(
            &Secret::new("another-secret-another-secret-another-secret"),
            Duration::from_secs(900),
        );
        let token = other.sign(&sample(&other)).unwrap();
        // Its kid is unknown here; with the kid forged to ours, the signature fails.
        assert_refused(&tokens, &token, "unknown kid");
        let mut header = Header::new(ALGORITHM);
        header.kid = Some(tokens.kid().to_owned());
        let forged = jsonwebtoken::encode(
            &header,
            &sample(&tokens),
            &EncodingKey::from_secret(b"another-secret-another-secret-another-secret"),
        )
        .unwrap();
        assert_refused(&tokens, &forged, "bad signature");
    }

    #[test]
    fn alg_none_is_refused() {
        let tokens = tokens();
        let header = serde_json::json!({"alg": "none", "typ": "JWT", "kid": tokens.kid()});
        let claims = serde_json::to_value(sample(&tokens)).unwrap();
        for token in [
            format!("{}.{}.", b64(&header), b64(&claims)),
            format!("{}.{}", b64(&header), b64(&claims)),
        ] {
            assert!(tokens.verify(&token).is_err(), "{token}");
        }
    }

    #[test]
    fn another_hmac_algorithm_with_the_same_secret_is_refused() {
        let tokens = tokens();
        let mut header = Header::new(Algorithm::HS512);
        header.kid = Some(tokens.kid().to_owned());
        let token = jsonwebtoken::encode(
            &header,
            &sample(&tokens),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert_refused(&tokens, &token, "wrong algorithm");
    }

    #[test]
    fn a_missing_or_unknown_kid_is_refused() {
        let tokens = tokens();
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        let claims = sample(&tokens);
        let no_kid = jsonwebtoken::encode(&Header::new(ALGORITHM), &claims, &key).unwrap();
        assert_refused(&tokens, &no_kid, "no kid");
        let mut header = Header::new(ALGORITHM);
        header.kid = Some("deadbeef".into());
        let unknown = jsonwebtoken::encode(&header, &claims, &key).unwrap();
        assert_refused(&tokens, &unknown, "unknown kid");
    }

    #[test]
    fn garbage_and_huge_inputs_are_refused() {
        let tokens = tokens();
        assert_refused(&tokens, "", "bad header");
        assert_refused(&tokens, "a.b.c", "bad header");
        assert_refused(&tokens, &"x".repeat(MAX_TOKEN_LEN + 1), "too long");
    }

    #[test]
    fn retired_secrets_stay_accepted_after_rotation() {
        let old = tokens();
        let token = old.sign(&sample(&old)).unwrap();
        let mut new = Tokens::new(
            &Secret::new("rotated-secret-rotated-secret-rotated-secret"),
            Duration::from_secs(900),
        );
        assert_refused(&new, &token, "unknown kid");
        new.accept(&Secret::new(SECRET));
        assert!(new.verify(&token).is_ok());
        let fresh = new.sign(&sample(&new)).unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&fresh).unwrap().kid.as_deref(),
            Some(new.kid())
        );
    }
}
