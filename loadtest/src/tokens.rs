//! How bots get access tokens: minted in batches by the shard's admin API,
//! through the real register and login endpoints, or not at all (for the
//! transport baseline, which accepts any token).

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Deserialize;

use crate::stats::histogram;
use crate::walk::Obstacle;
use crate::{LoadtestError, Options};

/// Bots minted per admin call: big enough to be quick, small enough that one
/// call does not hold the shard's store for long.
const MINT_BATCH: usize = 1_000;

/// Register+login calls in flight at once with `--login`.
const LOGIN_CONCURRENCY: usize = 8;

/// The password of bot accounts made with `--login`.
const BOT_PASSWORD: &str = "meridian-loadtest-bot";

/// The dummy token sent with `--token-free`.
pub const TOKEN_FREE: &str = "token-free";

/// Tokens for every bot, and what the bots must walk around.
#[derive(Debug)]
pub struct Credentials {
    /// One token per bot, in bot order (`None`: send a dummy `Hello`).
    pub tokens: Vec<Option<String>>,
    /// Each minted bot's team, in bot order (empty unless minted).
    pub teams: Vec<Option<String>>,
    /// Boxes the bots keep out of.
    pub obstacles: Vec<Obstacle>,
    /// Latency of the token calls, µs.
    pub latency: Histogram<u64>,
    /// `mint`, `login` or `token-free`.
    pub mode: &'static str,
}

#[derive(Debug, Deserialize)]
struct MintAnswer {
    tokens: Vec<MintedToken>,
    obstacles: Vec<Obstacle>,
}

#[derive(Debug, Deserialize)]
struct MintedToken {
    token: String,
    #[serde(default)]
    team: Option<String>,
}

#[derive(Debug, Deserialize)]
struct LoginAnswer {
    token: String,
}

/// Get tokens as the options say.
///
/// # Errors
/// `LoadtestError::Tokens` if the admin API refuses or cannot be reached.
/// Individual `--login` failures are not errors: those bots get no token and
/// count as failed connections.
pub async fn acquire(options: &Options) -> Result<Credentials, LoadtestError> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| tokens_error("http client", e))?;
    let mut latency = histogram();
    if options.token_free {
        return Ok(Credentials {
            tokens: vec![None; options.bots],
            teams: Vec::new(),
            obstacles: Vec::new(),
            latency,
            mode: "token-free",
        });
    }
    let ops = options.ops_url.as_deref().zip(options.ops_token.as_deref());
    if options.login {
        // The obstacles still come from the admin API when it is available.
        let obstacles = match ops {
            Some(ops) => mint(&http, ops, options, 0, 0, false).await?.obstacles,
            None => Vec::new(),
        };
        let tokens = login_all(&http, options, &mut latency).await;
        return Ok(Credentials {
            tokens,
            teams: Vec::new(),
            obstacles,
            latency,
            mode: "login",
        });
    }
    let ops = ops
        .ok_or_else(|| LoadtestError::Options("minting needs --ops-url and --ops-token".into()))?;
    let mut tokens = Vec::with_capacity(options.bots);
    let mut teams = Vec::with_capacity(options.bots);
    let mut obstacles = Vec::new();
    while tokens.len() < options.bots {
        let count = MINT_BATCH.min(options.bots - tokens.len());
        let started = Instant::now();
        let answer = mint(&http, ops, options, tokens.len(), count, true).await?;
        latency.saturating_record(started.elapsed().as_micros() as u64);
        obstacles = answer.obstacles;
        for minted in answer.tokens {
            tokens.push(Some(minted.token));
            teams.push(minted.team);
        }
    }
    Ok(Credentials {
        tokens,
        teams,
        obstacles,
        latency,
        mode: "mint",
    })
}

/// Tokens for `--flooders`: accounts of their own (`<prefix>-flood-<i>`),
/// placed in the test area.
///
/// # Errors
/// `LoadtestError::Tokens` if the admin API refuses or cannot be reached.
pub async fn flooders(options: &Options) -> Result<Vec<String>, LoadtestError> {
    let http = reqwest::Client::new();
    let ops = options
        .ops_url
        .as_deref()
        .zip(options.ops_token.as_deref())
        .ok_or_else(|| {
            LoadtestError::Options("--flooders needs --ops-url and --ops-token".into())
        })?;
    let named = Options {
        prefix: format!("{}-flood", options.prefix),
        ..options.clone()
    };
    let answer = mint(&http, ops, &named, 0, options.flooders, true).await?;
    Ok(answer.tokens.into_iter().map(|t| t.token).collect())
}

/// One call of the admin API: bots `first..first + count`, placed in the test
/// area when `place`.
async fn mint(
    http: &reqwest::Client,
    (url, token): (&str, &str),
    options: &Options,
    first: usize,
    count: usize,
    place: bool,
) -> Result<MintAnswer, LoadtestError> {
    let url = format!("{}/admin/bots", url.trim_end_matches('/'));
    let body = serde_json::json!({
        "count": count,
        "prefix": options.prefix,
        "first": first,
        "world": options.world,
        "within": place.then(|| options.area().to_array()),
    });
    let response = http
        .post(&url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .map_err(|e| tokens_error(&url, e))?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        return Err(tokens_error(&url, format!("{status}: {text}")));
    }
    response
        .json::<MintAnswer>()
        .await
        .map_err(|e| tokens_error(&url, e))
}

fn tokens_error(url: &str, e: impl std::fmt::Display) -> LoadtestError {
    LoadtestError::Tokens {
        url: url.to_owned(),
        reason: e.to_string(),
    }
}

/// Register (if new) and log in every bot through the account API of its
/// shard, a few at a time.
async fn login_all(
    http: &reqwest::Client,
    options: &Options,
    latency: &mut Histogram<u64>,
) -> Vec<Option<String>> {
    use futures_util::StreamExt;
    let calls = (0..options.bots).map(|i| {
        let base = http_base(&options.urls[i % options.urls.len()]);
        let username = format!("{}-{i}", options.prefix);
        let http = http.clone();
        async move {
            let started = Instant::now();
            let credentials = serde_json::json!({ "username": username, "password": BOT_PASSWORD });
            // 409 means the account exists from an earlier run: log in anyway.
            let registered = http
                .post(format!("{base}/api/register"))
                .json(&credentials)
                .send()
                .await;
            if let Err(e) = registered {
                tracing::warn!(error = %e, "register failed");
                return (None, started.elapsed());
            }
            let token = async {
                let response = http
                    .post(format!("{base}/api/login"))
                    .json(&credentials)
                    .send()
                    .await
                    .ok()?;
                if !response.status().is_success() {
                    tracing::warn!(status = %response.status(), "login refused");
                    return None;
                }
                response.json::<LoginAnswer>().await.ok().map(|a| a.token)
            }
            .await;
            (token, started.elapsed())
        }
    });
    let results: Vec<_> = futures_util::stream::iter(calls)
        .buffered(LOGIN_CONCURRENCY)
        .collect()
        .await;
    results
        .into_iter()
        .map(|(token, took)| {
            latency.saturating_record(took.as_micros() as u64);
            token
        })
        .collect()
}

/// `ws://host:port/ws` → `http://host:port`.
fn http_base(ws_url: &str) -> String {
    let url = ws_url
        .replacen("wss://", "https://", 1)
        .replacen("ws://", "http://", 1);
    match url
        .find("://")
        .and_then(|i| url[i + 3..].find('/').map(|j| i + 3 + j))
    {
        Some(path) => url[..path].to_owned(),
        None => url,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn account_api_base_from_the_websocket_url() {
        assert_eq!(
            super::http_base("ws://127.0.0.1:7000/ws"),
            "http://127.0.0.1:7000"
        );
        assert_eq!(
            super::http_base("wss://game.example.com/ws?world=x"),
            "https://game.example.com"
        );
    }
}
