//! The account endpoints of the game port (`/api/register`, `/api/login`,
//! `/api/guest`, `/api/refresh`, `/api/logout`): JSON in and out, and the
//! mapping of every failure to a status and a stable error code.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::input::{
    validate_device_id, validate_display_name, validate_password, validate_team, validate_username,
    InputError,
};
use super::limiter::RateLimited;
use super::password::PasswordError;
use super::{Auth, AuthError, Grant};
use crate::net::forwarded::ClientIp;
use crate::store::{now_ms, Role, StoreError, User};

/// Request bodies larger than this are refused: account requests are tiny, and
/// a small cap keeps a flood of large bodies cheap to turn away.
const MAX_BODY_BYTES: usize = 4096;

/// How many generated guest names are tried before giving up (a clash among
/// 2^32 names is rare; three in a row means something else is wrong).
const GUEST_NAME_ATTEMPTS: usize = 3;

/// The `/api/register`, `/api/login`, `/api/guest`, `/api/refresh` and
/// `/api/logout` routes. Needs `ConnectInfo<SocketAddr>` (per-address rate
/// limits): serve with `into_make_service_with_connect_info::<SocketAddr>()`,
/// and add an `Arc<TrustedProxies>` extension to count clients behind them.
pub fn router(auth: Arc<Auth>) -> Router {
    // The endpoints that hand out tokens are rate-limited (refresh too, so
    // refresh secrets cannot be guessed quickly); the limit runs before the
    // body is read, so malformed attempts count too.
    let limited = Router::new()
        .route("/api/register", post(register))
        .route("/api/login", post(login))
        .route("/api/guest", post(guest))
        .route("/api/refresh", post(refresh))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&auth),
            rate_limit,
        ))
        .route_layer(middleware::from_fn(count));
    Router::new()
        .merge(limited)
        .route("/api/logout", post(logout))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(auth)
}

/// A failed account request. `code()` is the stable identifier clients match
/// on; `message()` is for humans. Store and internal errors are logged with
/// their cause and shown to clients without it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON, or not the expected shape.
    #[error("{0}")]
    InvalidJson(String),
    /// The body is not labelled `application/json`.
    #[error("expected a JSON body with Content-Type: application/json")]
    ContentType,
    /// The body exceeds the size limit.
    #[error("request body is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    /// A username, password, device id or team breaks a rule.
    #[error(transparent)]
    Input(#[from] InputError),
    /// Registration with a name that exists.
    #[error("this username is already taken")]
    UsernameTaken,
    /// Login with an unknown username or a wrong password (deliberately the same).
    #[error("invalid username or password")]
    InvalidCredentials,
    /// A missing, malformed, expired, forged or revoked access token.
    #[error("invalid or expired token")]
    InvalidToken,
    /// Too many attempts from this address.
    #[error(transparent)]
    RateLimited(#[from] RateLimited),
    /// Too many password checks are waiting (a login flood from many addresses).
    #[error("too many logins at once; retry in a second")]
    Busy,
    /// The store cannot be reached.
    #[error("store unavailable: {0}")]
    Unavailable(StoreError),
    /// A bug or broken data; details are logged only.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status.
    #[must_use]
    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::InvalidJson(_) | Self::Input(_) => StatusCode::BAD_REQUEST,
            Self::ContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UsernameTaken => StatusCode::CONFLICT,
            Self::InvalidCredentials | Self::InvalidToken => StatusCode::UNAUTHORIZED,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) | Self::Busy => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable error code sent as `"error"`.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidJson(_) => "invalid_json",
            Self::ContentType => "unsupported_media_type",
            Self::TooLarge => "body_too_large",
            Self::Input(InputError::Username(_)) => "invalid_username",
            Self::Input(InputError::DisplayName(_)) => "invalid_display_name",
            Self::Input(InputError::Password(_)) => "invalid_password",
            Self::Input(InputError::DeviceId(_)) => "invalid_device_id",
            Self::Input(InputError::Team(_)) => "invalid_team",
            Self::UsernameTaken => "username_taken",
            Self::InvalidCredentials => "invalid_credentials",
            Self::InvalidToken => "invalid_token",
            Self::RateLimited(_) => "rate_limited",
            Self::Busy => "busy",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    /// The human-readable text sent as `"message"`; never contains internals.
    #[must_use]
    pub fn message(&self) -> String {
        match self {
            Self::Unavailable(_) => {
                "the service is temporarily unavailable; try again later".into()
            }
            Self::Internal(_) => "internal error".into(),
            other => other.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::Unavailable(e) => tracing::warn!(error = %e, "account request failed"),
            Self::Internal(e) => tracing::error!(error = %e, "account request failed"),
            _ => {}
        }
        let body = ErrorBody {
            error: self.code(),
            message: self.message(),
        };
        let mut response = (self.status_code(), Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            Self::RateLimited(limited) => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(limited.retry_after_secs()),
                );
            }
            Self::Busy => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(1));
            }
            Self::InvalidToken => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => Self::ContentType,
            JsonRejection::BytesRejection(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Self::TooLarge
            }
            // axum's text names the problem and where ("missing field `password`
            // at line 1 column 20"); it only ever quotes the client's own input.
            other => Self::InvalidJson(other.body_text()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(_) => Self::UsernameTaken,
            StoreError::Corrupt(_) => Self::Internal(e.to_string()),
            StoreError::Unavailable(_) | StoreError::Migration(_) => Self::Unavailable(e),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::InvalidToken => Self::InvalidToken,
            AuthError::Store(e) => e.into(),
            AuthError::Secret(e) => Self::Internal(e),
        }
    }
}

impl From<PasswordError> for ApiError {
    fn from(e: PasswordError) -> Self {
        match e {
            PasswordError::Busy => Self::Busy,
            other => Self::Internal(other.to_string()),
        }
    }
}

/// `Json` whose rejections become `ApiError`s with a clear message.
#[derive(FromRequest)]
#[from_request(via(Json), rejection(ApiError))]
struct ApiJson<T>(T);

/// The error body: `{"error": "<code>", "message": "<text>"}`.
#[derive(Serialize)]
struct ErrorBody {
    error: &'static str,
    message: String,
}

/// Username and password, for login. No `Debug`: it holds a password.
#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

/// The body of `/api/register`. No `Debug`: it holds a password.
#[derive(Deserialize)]
struct Registration {
    username: String,
    password: String,
    /// The name other players see; absent shows the username.
    #[serde(default)]
    display_name: Option<String>,
    /// The team to join; absent or `null` joins the one with the fewest members.
    #[serde(default)]
    team: Option<String>,
}

/// The optional body of `/api/guest`.
#[derive(Deserialize, Default)]
struct GuestRequest {
    /// The device secret of an existing guest account, or of a new one.
    device_id: Option<String>,
    /// The name other players see, for a new account; absent shows its
    /// generated username.
    #[serde(default)]
    display_name: Option<String>,
    /// The team a new guest account joins; absent or `null` joins the one
    /// with the fewest members. An existing account keeps its team.
    #[serde(default)]
    team: Option<String>,
}

/// The body of `/api/refresh`. No `Debug`: it holds a secret.
#[derive(Deserialize)]
struct RefreshRequest {
    refresh_token: String,
}

#[derive(Serialize)]
struct LoginResponse {
    token: String,
    /// Spent by `/api/refresh` for the next pair.
    refresh_token: String,
    user_id: Uuid,
    session_id: Uuid,
    username: String,
    /// The name other players see (`null`: the username).
    display_name: Option<String>,
    /// The account's team (`null` only for an account that never got one).
    team: Option<String>,
    /// Access-token expiry, Unix milliseconds.
    expires_at: i64,
}

impl From<Grant> for LoginResponse {
    fn from(grant: Grant) -> Self {
        Self {
            token: grant.token,
            refresh_token: grant.refresh_token,
            user_id: grant.user_id,
            session_id: grant.session_id,
            username: grant.username,
            display_name: grant.display_name,
            team: grant.team,
            expires_at: grant.expires_at_ms,
        }
    }
}

#[derive(Serialize)]
struct GuestResponse {
    #[serde(flatten)]
    login: LoginResponse,
    /// The device secret to send next time to log into the same account.
    device_id: String,
}

/// Count the attempts at the token-issuing routes by outcome, for
/// `meridian_login_attempts_total{route, result}`: `ok`, `refused` (bad
/// credentials or input), `rate_limited`, `unavailable` (the store is down or
/// the password checks are full), or `error` (the server failed).
async fn count(request: Request, next: Next) -> Response {
    let route = match request.uri().path() {
        "/api/register" => "register",
        "/api/login" => "login",
        "/api/guest" => "guest",
        "/api/refresh" => "refresh",
        _ => "other",
    };
    let response = next.run(request).await;
    let status = response.status();
    let result = if status.is_success() {
        "ok"
    } else if status == StatusCode::TOO_MANY_REQUESTS {
        "rate_limited"
    } else if status == StatusCode::SERVICE_UNAVAILABLE {
        "unavailable"
    } else if status.is_client_error() {
        "refused"
    } else {
        "error"
    };
    metrics::counter!("meridian_login_attempts_total", "route" => route, "result" => result)
        .increment(1);
    response
}

/// Refuse the request if its client address is over the rate.
async fn rate_limit(
    State(auth): State<Arc<Auth>>,
    ClientIp(client): ClientIp,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    auth.limiter.check(&client)?;
    Ok(next.run(request).await)
}

/// `POST /api/register {"username","password","display_name"?,"team"?}` →
/// 201 with a token,
/// as login: the new account is logged in, which spares the client a second
/// password check.
async fn register(
    State(auth): State<Arc<Auth>>,
    ApiJson(body): ApiJson<Registration>,
) -> Result<(StatusCode, Json<LoginResponse>), ApiError> {
    validate_username(&body.username)?;
    validate_password(&body.password, &body.username)?;
    let display_name = body
        .display_name
        .as_deref()
        .map(validate_display_name)
        .transpose()?;
    if let Some(team) = &body.team {
        validate_team(team, &auth.teams)?;
    }
    let password_hash = auth.hasher.hash(body.password).await?;
    let user = User {
        id: Uuid::now_v7(),
        username: body.username,
        display_name,
        password_hash: Some(password_hash),
        device_hash: None,
        roles: vec![Role::Player],
        team: body.team,
        created_at_ms: now_ms(),
    };
    auth.store.create_user(&user).await?;
    let user = auth.created(user).await?;
    let grant = auth.open_session(&user).await?;
    tracing::info!(user_id = %user.id, session_id = %grant.session_id, "account registered");
    Ok((StatusCode::CREATED, Json(grant.into())))
}

/// `POST /api/login {"username","password"}` → 200 with a token.
async fn login(
    State(auth): State<Arc<Auth>>,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<Json<LoginResponse>, ApiError> {
    // An account whose failed logins used up its allowance is refused before
    // anything is checked, so guesses spread over many addresses are held
    // to one allowance per account too; logins that succeed use none of it.
    auth.accounts.check(&body.username)?;
    let user = auth.store.user_by_name(&body.username).await?;
    // Unknown users and guests (no password) are checked against a dummy hash,
    // so every failure takes as long as a wrong password and answers the same.
    let hash = user.as_ref().and_then(|u| u.password_hash.clone());
    let matches = auth.hasher.verify(body.password, hash).await?;
    let user = match user {
        Some(user) if matches => user,
        _ => {
            auth.accounts.failed(&body.username)?;
            return Err(ApiError::InvalidCredentials);
        }
    };
    let grant = auth.open_session(&user).await?;
    tracing::info!(user_id = %user.id, session_id = %grant.session_id, "logged in");
    Ok(Json(grant.into()))
}

/// `POST /api/guest` with an optional `{"device_id","display_name","team"}` → 200 with a
/// token and the device secret, creating the guest account on first use.
async fn guest(
    State(auth): State<Arc<Auth>>,
    body: Bytes,
) -> Result<Json<GuestResponse>, ApiError> {
    // The body is optional, so it is parsed only when there is one.
    let request = if body.trim_ascii().is_empty() {
        GuestRequest::default()
    } else {
        Json::<GuestRequest>::from_bytes(&body)?.0
    };
    // A team is checked even for an existing account (which keeps its own),
    // so that a client's mistake shows on its first request, not only on a
    // new device.
    if let Some(team) = &request.team {
        validate_team(team, &auth.teams)?;
    }
    let display_name = request
        .display_name
        .as_deref()
        .map(validate_display_name)
        .transpose()?;
    let device_id = match request.device_id {
        Some(device_id) => {
            validate_device_id(&device_id)?;
            device_id
        }
        None => {
            let mut secret = [0u8; 32];
            rand::rng().fill_bytes(&mut secret);
            hex::encode(secret)
        }
    };
    let device_hash = hex::encode(Sha256::digest(device_id.as_bytes()));
    let user = match auth.store.user_by_device(&device_hash).await? {
        Some(user) => user,
        None => create_guest(&auth, &device_hash, display_name, request.team).await?,
    };
    let grant = auth.open_session(&user).await?;
    tracing::info!(user_id = %user.id, session_id = %grant.session_id, "guest logged in");
    Ok(Json(GuestResponse {
        login: grant.into(),
        device_id,
    }))
}

/// Create a guest account for a device, with a generated `guest-<8 hex>` name
/// (shown as `display_name` if given), in `team` or (when `None`) the team
/// with the fewest members.
async fn create_guest(
    auth: &Auth,
    device_hash: &str,
    display_name: Option<String>,
    team: Option<String>,
) -> Result<User, ApiError> {
    for _ in 0..GUEST_NAME_ATTEMPTS {
        let mut suffix = [0u8; 4];
        rand::rng().fill_bytes(&mut suffix);
        let user = User {
            id: Uuid::now_v7(),
            username: format!("{}{}", super::input::GUEST_PREFIX, hex::encode(suffix)),
            display_name: display_name.clone(),
            password_hash: None,
            device_hash: Some(device_hash.to_owned()),
            roles: vec![Role::Player],
            team: team.clone(),
            created_at_ms: now_ms(),
        };
        match auth.store.create_user(&user).await {
            Ok(()) => {
                tracing::info!(user_id = %user.id, "guest account created");
                return Ok(auth.created(user).await?);
            }
            // Either a concurrent request created this device's account first
            // (use it), or the generated name was taken (try another).
            Err(StoreError::Conflict(_)) => {
                if let Some(existing) = auth.store.user_by_device(device_hash).await? {
                    return Ok(existing);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Internal(
        "no free guest username after several attempts".into(),
    ))
}

/// `POST /api/refresh {"refresh_token"}` → 200 with new tokens, as login.
async fn refresh(
    State(auth): State<Arc<Auth>>,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    let grant = auth.refresh(&body.refresh_token).await?;
    tracing::debug!(user_id = %grant.user_id, session_id = %grant.session_id, "tokens refreshed");
    Ok(Json(grant.into()))
}

/// `POST /api/logout` with `Authorization: Bearer <token>` → 204.
async fn logout(State(auth): State<Arc<Auth>>, headers: HeaderMap) -> Result<StatusCode, ApiError> {
    let token = bearer(&headers).ok_or(ApiError::InvalidToken)?;
    let identity = auth.logout(token).await?;
    tracing::info!(user_id = %identity.user_id, session_id = %identity.session_id, "logged out");
    Ok(StatusCode::NO_CONTENT)
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        for (value, expected) in [
            ("Bearer abc.def.ghi", Some("abc.def.ghi")),
            ("bearer  abc", Some("abc")),
            ("Basic abc", None),
            ("Bearer ", None),
            ("Bearer", None),
        ] {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            assert_eq!(bearer(&headers), expected, "{value}");
        }
    }

    #[test]
    fn store_failures_never_reach_the_client() {
        let err = ApiError::from(StoreError::Unavailable(
            "connection refused at 10.0.0.5".into(),
        ));
        assert_eq!(err.status_code(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(err.code(), "unavailable");
        assert!(!err.message().contains("10.0.0.5"));
        let err = ApiError::from(StoreError::Corrupt("row 7".into()));
        assert_eq!(err.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!err.message().contains("row 7"));
        assert_eq!(
            ApiError::from(StoreError::Conflict("users.username".into())).code(),
            "username_taken"
        );
    }

    #[test]
    fn an_unknown_team_is_a_400_with_its_own_code() {
        let err =
            ApiError::from(validate_team("green", &["red".into(), "blue".into()]).unwrap_err());
        assert_eq!(err.status_code(), StatusCode::BAD_REQUEST);
        assert_eq!(err.code(), "invalid_team");
        assert_eq!(err.message(), "team must be one of: red, blue");
    }

    #[test]
    fn rate_limited_responses_say_when_to_retry() {
        let response = ApiError::from(RateLimited {
            retry_after: std::time::Duration::from_millis(2500),
        })
        .into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
    }
}
