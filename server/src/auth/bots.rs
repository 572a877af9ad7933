//! Bot accounts for load tests: password-less accounts named `<prefix>-<i>`,
//! created on first use and reused after, each given a fresh session, so that
//! thousands of bots can join without thousands of Argon2 logins.

use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::input::{validate_username, InputError};
use super::{Auth, AuthError, Grant};
use crate::store::{now_ms, Role, StoreError, User};

/// Why bot accounts could not be handed out.
#[derive(Debug, thiserror::Error)]
pub enum BotError {
    /// The prefix makes invalid usernames.
    #[error("invalid prefix: {0}")]
    Prefix(InputError),
    /// A bot's name belongs to an account with a password, which bots must
    /// never take over.
    #[error("{0} is a password account, not a bot")]
    Taken(String),
    /// The store or the token signer failed.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

impl From<StoreError> for BotError {
    fn from(e: StoreError) -> Self {
        Self::Auth(AuthError::Store(e))
    }
}

impl Auth {
    /// Create or reuse the accounts `<prefix>-<first>` … `<prefix>-<first + count - 1>`
    /// and open a session for each, in that order.
    ///
    /// Bot accounts are like guest accounts: no password hash, and a random
    /// device hash whose secret nobody knows, so they cannot log in any other way.
    ///
    /// # Errors
    /// `BotError::Prefix` if the names would be invalid, `BotError::Taken` if
    /// one of them is a password account, `BotError::Auth` if the store fails.
    pub async fn bot_sessions(
        &self,
        prefix: &str,
        first: usize,
        count: usize,
    ) -> Result<Vec<Grant>, BotError> {
        // The shortest and the longest name decide whether all are valid.
        validate_username(&format!("{prefix}-{first}")).map_err(BotError::Prefix)?;
        validate_username(&format!("{prefix}-{}", first + count.saturating_sub(1)))
            .map_err(BotError::Prefix)?;
        let mut grants = Vec::with_capacity(count);
        for i in first..first + count {
            let user = self.bot_account(&format!("{prefix}-{i}")).await?;
            grants.push(self.open_session(&user).await?);
        }
        Ok(grants)
    }

    /// The bot account of this name, created if it does not exist yet.
    async fn bot_account(&self, username: &str) -> Result<User, BotError> {
        let existing = match self.store.user_by_name(username).await? {
            Some(user) => Some(user),
            None => {
                let mut secret = [0u8; 32];
                rand::rng().fill_bytes(&mut secret);
                // Bots join teams as players do: the store assigns the one
                // with the fewest members.
                let user = User {
                    id: Uuid::now_v7(),
                    username: username.to_owned(),
                    display_name: None,
                    password_hash: None,
                    device_hash: Some(hex::encode(Sha256::digest(secret))),
                    roles: vec![Role::Player],
                    team: None,
                    created_at_ms: now_ms(),
                };
                match self.store.create_user(&user).await {
                    Ok(()) => return Ok(self.created(user).await?),
                    // A concurrent call created it first: use that one.
                    Err(StoreError::Conflict(_)) => self.store.user_by_name(username).await?,
                    Err(e) => return Err(e.into()),
                }
            }
        };
        match existing {
            Some(user) if user.password_hash.is_none() => Ok(user),
            _ => Err(BotError::Taken(username.to_owned())),
        }
    }
}
