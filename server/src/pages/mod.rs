//! The browser pages compiled into the binary: the play page on the game
//! port (`/`) and the operators' dashboard on the ops port (`/dashboard`).
//! Each is one self-contained HTML file (no CDN, no other assets), so a
//! shard serves them without files beside it and a browser loads nothing
//! from anywhere else.

use axum::http::header;
use axum::response::IntoResponse;

/// What the pages may do: their own inline script and style, and requests
/// (HTTP and WebSocket) to the port that served them; nothing else.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

fn page(html: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        html,
    )
}

/// `GET /` on the game port: log in, walk, see neighbours, chat.
pub async fn play() -> impl IntoResponse {
    page(include_str!("play.html"))
}

/// `GET /dashboard` on the ops port: live charts, shards, and the map.
pub async fn dashboard() -> impl IntoResponse {
    page(include_str!("dashboard.html"))
}
