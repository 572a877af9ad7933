//! Why a load test could not run. Failures of single bots are not errors:
//! they are counted in the report.

/// A load test that could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum LoadtestError {
    /// The options do not make a runnable test.
    #[error("invalid options: {0}")]
    Options(String),
    /// Bot tokens could not be obtained.
    #[error("cannot get bot tokens from {url}: {reason}")]
    Tokens {
        /// The endpoint asked.
        url: String,
        /// What went wrong.
        reason: String,
    },
}
