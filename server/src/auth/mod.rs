//! Accounts and sessions: password hashing, access tokens, and the `/api/*`
//! account endpoints of the game port.
//!
//! An access token is a short-lived HS256 JWT naming a session; the session row
//! in the store is what logout revokes, so `Auth::authenticate` checks both. A
//! refresh token, spent and replaced on every use, gets new access tokens for
//! the session's lifetime.

mod api;
mod bots;
pub mod input;
pub mod limiter;
pub mod password;
pub mod refresh;
pub mod secret;
pub mod token;

use std::sync::{Arc, Weak};
use std::time::Duration;

use uuid::Uuid;

pub use api::{router, ApiError};
pub use bots::BotError;

use crate::bus::{Bus, ControlEvent};
use crate::config::Config;
use crate::store::{now_ms, Profile, Role, Session, Store, User};
use limiter::{FailureLimiter, Limiter};
use password::Hasher;
use refresh::RefreshToken;
use token::Tokens;

/// How long a session lives after login. Access tokens are much shorter-lived;
/// the session bounds how long a client may keep getting new ones.
pub const SESSION_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// How often the rate limiter forgets addresses that have gone quiet.
const LIMITER_SWEEP: Duration = Duration::from_secs(60);

/// Who a valid access token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The account.
    pub user_id: Uuid,
    /// The session the token names (revocable).
    pub session_id: Uuid,
    /// The name shown to other players: the account's display name, or its
    /// username when it chose none.
    pub name: String,
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

/// A session's new access and refresh tokens, from login or refresh. No
/// `Debug`: it holds both.
#[derive(Clone)]
pub struct Grant {
    /// The signed access token.
    pub token: String,
    /// The refresh token that gets the next pair, once.
    pub refresh_token: String,
    /// The session it names.
    pub session_id: Uuid,
    /// The account.
    pub user_id: Uuid,
    /// The account's username.
    pub username: String,
    /// The name it chose to be shown by, if any.
    pub display_name: Option<String>,
    /// The account's team; `None` only for an account no team was ever
    /// assigned to.
    pub team: Option<String>,
    /// When the access token expires, Unix milliseconds.
    pub expires_at_ms: i64,
}

/// The account service.
pub struct Auth {
    /// Users and sessions.
    store: Arc<dyn Store>,
    /// Where revocations are announced to every shard.
    bus: Arc<dyn Bus>,
    /// Signs and verifies access tokens.
    tokens: Tokens,
    /// Argon2 off the async threads.
    hasher: Hasher,
    /// Attempts per client address on register, login, guest and refresh.
    limiter: Arc<Limiter>,
    /// Failed logins per account name, wherever they come from.
    accounts: Arc<FailureLimiter<String>>,
    /// The names of the teams a new account may choose, in display order.
    /// Read once at start: teams change only by migration, which a new
    /// release brings with a restart, so a sign-up spends no query on them
    /// and a client's wrong choice is refused before anything is hashed.
    teams: Vec<String>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Build the service: load `JWT_SECRET` or create a development secret in
    /// `DATA_DIR`. Must be called inside a tokio runtime: it starts a background
    /// task that keeps the rate limiter small, which ends when `Auth` is dropped.
    ///
    /// # Errors
    /// `AuthError::Secret` if the development secret cannot be read or
    /// written; `AuthError::Store` if the teams cannot be read.
    pub async fn new(
        config: &Config,
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
    ) -> Result<Self, AuthError> {
        let secret = secret::load(config)
            .await
            .map_err(|e| AuthError::Secret(e.to_string()))?;
        let teams = store.teams().await?.into_iter().map(|t| t.name).collect();
        let limiter = Arc::new(Limiter::per_minute(config.login_rate_per_min));
        tokio::spawn(sweep(Arc::downgrade(&limiter)));
        let accounts = Arc::new(FailureLimiter::per_minute(config.login_rate_per_min));
        tokio::spawn(sweep(Arc::downgrade(&accounts)));
        Ok(Self {
            store,
            bus,
            tokens: Tokens::new(&secret, config.token_ttl),
            hasher: Hasher::per_core(),
            limiter,
            accounts,
            teams,
        })
    }

    /// The account `user` as the store created it: with the team the store
    /// assigned when `user.team` chose none.
    ///
    /// # Errors
    /// `StoreError::Unavailable` if the account cannot be read back.
    async fn created(&self, user: User) -> Result<User, crate::store::StoreError> {
        if user.team.is_some() {
            return Ok(user);
        }
        Ok(self.store.user_by_id(user.id).await?.unwrap_or(user))
    }

    /// Verify an access token and that its session is live.
    ///
    /// # Errors
    /// `AuthError::InvalidToken` for any bad token; `AuthError::Store` if the
    /// session cannot be checked.
    pub async fn authenticate(&self, token: &str) -> Result<Identity, AuthError> {
        let claims = self.tokens.verify(token).map_err(|e| {
            tracing::debug!(reason = %e, "access token refused");
            AuthError::InvalidToken
        })?;
        let session = self
            .store
            .session(claims.sid)
            .await?
            .ok_or(AuthError::InvalidToken)?;
        if session.revoked || session.expires_at_ms <= now_ms() || session.user_id != claims.sub {
            return Err(AuthError::InvalidToken);
        }
        Ok(Identity {
            user_id: claims.sub,
            session_id: claims.sid,
            name: claims.name,
            roles: claims.roles,
        })
    }

    /// Open a session for `user` and issue its first access and refresh tokens.
    ///
    /// # Errors
    /// `AuthError::Store` if the session cannot be recorded; `AuthError::Secret`
    /// if the token cannot be signed.
    pub async fn open_session(&self, user: &User) -> Result<Grant, AuthError> {
        let now = now_ms();
        let session = Session {
            id: Uuid::now_v7(),
            user_id: user.id,
            created_at_ms: now,
            expires_at_ms: now.saturating_add(SESSION_TTL.as_millis() as i64),
            revoked: false,
        };
        let refresh = RefreshToken::generate(session.id);
        self.store.create_session(&session, &refresh.hash).await?;
        let account = Profile::from(user.clone());
        self.grant(session.id, &account, refresh.token)
    }

    /// Sign an access token for a session of `account` and bundle it with
    /// its refresh token.
    fn grant(
        &self,
        session_id: Uuid,
        account: &Profile,
        refresh_token: String,
    ) -> Result<Grant, AuthError> {
        let claims =
            self.tokens
                .claims(account.id, session_id, account.shown_name(), &account.roles);
        let token = self
            .tokens
            .sign(&claims)
            .map_err(|e| AuthError::Secret(e.to_string()))?;
        Ok(Grant {
            token,
            refresh_token,
            session_id,
            user_id: account.id,
            username: account.username.clone(),
            display_name: account.display_name.clone(),
            team: account.team.clone(),
            expires_at_ms: claims.expires_at_ms(),
        })
    }

    /// Revoke the session a token names and tell every shard to drop its
    /// sockets. Returns the identity that was logged out.
    ///
    /// # Errors
    /// `AuthError::InvalidToken` if the token is bad or its session is already
    /// dead; `AuthError::Store` if the store cannot be reached.
    pub async fn logout(&self, token: &str) -> Result<Identity, AuthError> {
        let identity = self.authenticate(token).await?;
        if !self.store.revoke_session(identity.session_id).await? {
            // Revoked by a concurrent logout between the two calls.
            return Err(AuthError::InvalidToken);
        }
        self.bus.send_control(ControlEvent::SessionRevoked {
            session_id: identity.session_id,
        });
        Ok(identity)
    }
}

/// Periodically forget quiet keys, until the limiter is dropped.
async fn sweep(limiter: Weak<impl limiter::Sweep + Send + Sync + 'static>) {
    let mut every = tokio::time::interval(LIMITER_SWEEP);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        every.tick().await;
        match limiter.upgrade() {
            Some(limiter) => limiter.retain_recent(),
            None => return,
        }
    }
}
