//! The HMAC secret that signs access tokens: the configured `JWT_SECRET`, or a
//! development secret generated once and kept in `DATA_DIR`.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::config::Config;

/// The file under `DATA_DIR` that holds the development secret.
pub const SECRET_FILE: &str = "jwt_secret";

/// The shortest secret accepted, in bytes (HS256 wants at least its output size).
pub const MIN_SECRET_LEN: usize = 32;

/// Why the secret could not be loaded or created. The messages name files,
/// never the secret itself.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The secret file or its directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The secret file holds fewer than `MIN_SECRET_LEN` bytes.
    #[error("{path}: holds fewer than {MIN_SECRET_LEN} bytes; delete it to generate a new one")]
    TooShort {
        /// The file.
        path: PathBuf,
    },
}

/// Key material for HMAC signing. Its `Debug` output is redacted so that it can
/// never reach a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wrap raw key bytes.
    #[must_use]
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// The key id written into token headers: the first 8 hex digits of the
    /// SHA-256 of the secret. It lets verifiers pick the right key while
    /// secrets rotate, and reveals nothing usable about the secret.
    #[must_use]
    pub fn kid(&self) -> String {
        let digest = Sha256::digest(&self.0);
        hex::encode(&digest[..4])
    }

    /// The raw key bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(kid {}, redacted)", self.kid())
    }
}

/// Load the signing secret: `config.jwt_secret` when set, otherwise the
/// development secret in `DATA_DIR/jwt_secret`, generated on first use.
///
/// # Errors
/// `SecretError` if the development secret cannot be read or written, or the
/// file holds a secret that is too short.
pub async fn load(config: &Config) -> Result<Secret, SecretError> {
    if let Some(secret) = &config.jwt_secret {
        return Ok(Secret::new(secret.as_bytes()));
    }
    let dir = config.data_dir.clone();
    let (secret, path) = tokio::task::spawn_blocking(move || load_or_create(&dir))
        .await
        .map_err(|e| SecretError::Io {
            path: config.data_dir.join(SECRET_FILE),
            source: io::Error::other(e),
        })??;
    tracing::warn!(
        path = %path.display(),
        "JWT_SECRET is not set: using a development secret kept in DATA_DIR; set JWT_SECRET in production"
    );
    Ok(secret)
}

/// Read `dir/jwt_secret`, or create it holding 32 random bytes in hex.
fn load_or_create(dir: &Path) -> Result<(Secret, PathBuf), SecretError> {
    let path = dir.join(SECRET_FILE);
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| SecretError::Io { path, source }
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => return Ok((parse(&text, &path)?, path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&path)(e)),
    }
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;

    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let text = hex::encode(bytes);

    // Write the whole secret to a private temporary file first, then link it into
    // place: `hard_link` fails if the name exists, so two shards starting at once
    // on one data directory agree on a single, never half-written secret.
    let tmp = dir.join(format!("{SECRET_FILE}.{}.tmp", hex::encode(&bytes[..4])));
    let written = write_private(&tmp, text.as_bytes()).map_err(io_err(&tmp));
    let linked = written.and_then(|()| match std::fs::hard_link(&tmp, &path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io_err(&path)(e)),
    });
    let _ = std::fs::remove_file(&tmp);
    if linked? {
        Ok((Secret::new(text), path))
    } else {
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        Ok((parse(&text, &path)?, path))
    }
}

/// Create `path` readable and writable by its owner only, and fill it.
fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

fn parse(text: &str, path: &Path) -> Result<Secret, SecretError> {
    let text = text.trim();
    if text.len() < MIN_SECRET_LEN {
        return Err(SecretError::TooShort {
            path: path.to_owned(),
        });
    }
    Ok(Secret::new(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_configured_secret_wins() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::for_tests(dir.path().join("data"));
        let secret = load(&config).await.unwrap();
        assert_eq!(
            secret.as_bytes(),
            config.jwt_secret.as_deref().unwrap().as_bytes()
        );
        assert!(!dir.path().join("data").exists(), "nothing written");
    }

    #[tokio::test]
    async fn a_development_secret_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::for_tests(dir.path().join("nested/data"));
        config.jwt_secret = None;
        let first = load(&config).await.unwrap();
        let second = load(&config).await.unwrap();
        assert_eq!(first, second);
        assert_eq!(first.as_bytes().len(), 64, "32 random bytes in hex");
        let path = config.data_dir.join(SECRET_FILE);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let leftovers = std::fs::read_dir(&config.data_dir).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary files left behind");
    }

    #[tokio::test]
    async fn a_short_secret_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SECRET_FILE), "short\n").unwrap();
        let mut config = Config::for_tests(dir.path().to_owned());
        config.jwt_secret = None;
        let err = load(&config).await.unwrap_err();
        assert!(matches!(err, SecretError::TooShort { .. }), "{err}");
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let secret = Secret::new("a-very-secret-value-that-is-long-enough");
        let shown = format!("{secret:?}");
        assert!(!shown.contains("very-secret"), "{shown}");
        assert_eq!(secret.kid().len(), 8);
    }
}
