//! Startup and shutdown of one shard (being written).

use std::future::Future;
use std::net::SocketAddr;

use crate::config::Config;

/// Why the shard could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// A bound, not yet serving shard.
pub struct Server;

impl Server {
    /// Bind the ports and load the world.
    ///
    /// # Errors
    /// `ServerError` if a port cannot be bound or the store cannot be opened.
    pub async fn bind(_config: Config) -> Result<Self, ServerError> {
        Ok(Self)
    }

    /// Serve until `shutdown` resolves.
    ///
    /// # Errors
    /// `ServerError` if serving fails.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        shutdown.await;
        Ok(())
    }
}

/// Bind and serve until `shutdown` resolves.
///
/// # Errors
/// `ServerError` if the shard cannot start.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    Server::bind(config).await?.serve(shutdown).await
}
