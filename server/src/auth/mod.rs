//! Accounts and sessions: password hashing, access tokens, and the `/api/*`
//! account endpoints of the game port.
//!
//! PLACEHOLDER: being written; the signatures below are the interface the
//! gateway and server use.

use std::sync::Arc;

use uuid::Uuid;

use crate::bus::Bus;
use crate::config::Config;
use crate::store::{Role, Store};

/// Who a valid access token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The account.
    pub user_id: Uuid,
    /// The session the token names (revocable).
    pub session_id: Uuid,
    /// The account's username, shown to other players.
    pub username: String,
    /// The account's roles.
    pub roles: Vec<Role>,
}

/// Why authentication failed. Clients see one generic message for all token
/// failures, so an attacker learns nothing from which check failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Missing, malformed, expired, forged or revoked token.
    #[error("invalid or expired token")]
    InvalidToken,
    /// The store could not be reached.
    #[error("store unavailable: {0}")]
    Store(#[from] crate::store::StoreError),
    /// The secret could not be loaded or created.
    #[error("secret: {0}")]
    Secret(String),
}

/// The account service.
pub struct Auth {
    _store: Arc<dyn Store>,
    _bus: Arc<dyn Bus>,
}

impl Auth {
    /// Build the service: load `JWT_SECRET` or create a development secret in `DATA_DIR`.
    ///
    /// # Errors
    /// `AuthError::Secret` if the development secret cannot be read or written.
    pub async fn new(
        _config: &Config,
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
    ) -> Result<Self, AuthError> {
        Ok(Self {
            _store: store,
            _bus: bus,
        })
    }

    /// Verify an access token and that its session is live.
    ///
    /// # Errors
    /// `AuthError::InvalidToken` for any bad token; `AuthError::Store` if the
    /// session cannot be checked.
    pub async fn authenticate(&self, _token: &str) -> Result<Identity, AuthError> {
        Err(AuthError::InvalidToken)
    }
}

/// The `/api/register`, `/api/login`, `/api/guest` and `/api/logout` routes.
/// Needs `ConnectInfo<SocketAddr>` (per-address rate limits).
pub fn router(auth: Arc<Auth>) -> axum::Router {
    axum::Router::new().with_state(auth)
}
