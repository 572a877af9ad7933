//! One client connection from upgrade to close: authenticate, join the world,
//! then run the reader and the writer until either ends.

use std::sync::{Arc, Mutex};

use axum::extract::ws::{CloseFrame, Message};
use futures_util::SinkExt;
use meridian_protocol::{close, ClientMessage, Encoding, ErrorCode, ServerMessage};
use tokio::sync::{mpsc, oneshot, Notify};

use super::socket::{Frames, Writer};
use super::{fanout, frames, reader, Gateway, AUTH_TIMEOUT};
use crate::auth::{AuthError, Identity};
use crate::bus::{cells, ControlEvent};
use crate::store::StoredPosition;
use crate::world::RemotePlayer;
use crate::world::{Command, ConnLink, JoinError, JoinRequest, Joined, Outgoing, WorldHandle};

/// Why a socket was refused before it joined: what to tell the client, and how to close.
struct Refusal {
    error: Option<(ErrorCode, String)>,
    code: u16,
    reason: &'static str,
}

impl Refusal {
    fn new(error: ErrorCode, message: impl Into<String>, code: u16, reason: &'static str) -> Self {
        Self {
            error: Some((error, message.into())),
            code,
            reason,
        }
    }

    fn unauthenticated() -> Self {
        Self::new(
            ErrorCode::Unauthenticated,
            "invalid or expired token",
            close::AUTH_FAILED,
            "authentication failed",
        )
    }

    fn internal() -> Self {
        Self::new(
            ErrorCode::Internal,
            "try again later",
            1011,
            "internal error",
        )
    }
}

/// A socket that joined a world.
struct Joining {
    world: WorldHandle,
    joined: Joined,
    link: ConnLink,
    outbox: mpsc::Receiver<Outgoing>,
}

/// Counts a connection in `meridian_connections` (upgraded WebSockets, joined
/// or not yet) for as long as it lives.
struct Open(metrics::Gauge);

impl Open {
    fn count() -> Self {
        let gauge = metrics::gauge!("meridian_connections");
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Serve one upgraded socket until it closes.
pub async fn serve(
    gateway: Arc<Gateway>,
    mut sink: Writer,
    mut stream: Frames,
    encoding: Encoding,
    identity: Option<Identity>,
    world: Option<String>,
) {
    let _open = Open::count();
    let conn_id = gateway.next_conn_id();
    let established = tokio::select! {
        result = establish(&gateway, &mut stream, encoding, identity, world, conn_id) => result,
        () = gateway.shutdown.cancelled() => Err(Refusal { error: None, code: close::GOING_AWAY, reason: "server shutting down" }),
    };
    let Joining {
        world,
        joined,
        link,
        mut outbox,
    } = match established {
        Ok(joining) => joining,
        Err(refusal) => {
            if let Some((code, message)) = refusal.error {
                let _ = sink
                    .send(frames::encode(
                        encoding,
                        &ServerMessage::Error { code, message },
                    ))
                    .await;
            }
            let _ = sink.send(close_frame(refusal.code, refusal.reason)).await;
            return;
        }
    };
    let room = Arc::new(Notify::new());
    // The Welcome (and a correction to resend) now, not with the next snapshot.
    while let Ok(Outgoing::Message(message)) = outbox.try_recv() {
        if sink.send(frames::encode(encoding, &message)).await.is_err() {
            break;
        }
    }
    let sink = Arc::new(Mutex::new(sink));
    let (done, fanned_out) = oneshot::channel();
    gateway.fanouts[&world.name].add(fanout::Outlet {
        sink: Arc::clone(&sink),
        outbox,
        signals: Arc::clone(&link.signals),
        me: joined.entity,
        encoding,
        room: Arc::clone(&room),
        done,
    });
    let end = reader::run(reader::Reader {
        stream,
        sink,
        link: link.clone(),
        commands: world.commands.clone(),
        me: joined.entity,
        encoding,
        settings: gateway.settings.clone(),
        room,
    })
    .await;
    // The fan-out lets go once the close frame is out (or the socket failed).
    let _ = fanned_out.await;
    // A dropped player stays for the resume grace period, one who closed
    // normally leaves now; unless the tick already removed it (kick) or
    // another connection took it over (conn_id differs).
    let _ = world
        .commands
        .send(Command::Disconnected {
            entity: joined.entity,
            conn_id,
            leave: end == reader::End::Left,
        })
        .await;
}

/// A close frame with a code and reason.
pub fn close_frame(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// Authenticate (by header or `Hello`) and join or resume.
async fn establish(
    gateway: &Gateway,
    stream: &mut Frames,
    encoding: Encoding,
    identity: Option<Identity>,
    world: Option<String>,
    conn_id: u64,
) -> Result<Joining, Refusal> {
    let (identity, world_name, resume) = match identity {
        Some(identity) => (Some(identity), world, None),
        None => {
            let (token, hello_world, resume) = read_hello(stream, encoding).await?;
            let identity = if token.is_empty() {
                None
            } else {
                Some(authenticate(gateway, &token).await?)
            };
            if identity.is_none() && resume.is_none() {
                return Err(Refusal::unauthenticated());
            }
            (identity, hello_world.or(world), resume)
        }
    };
    let (link, outbox) = ConnLink::new(conn_id);
    if let Some(token) = resume {
        // A resume token alone identifies the player: look in the named world,
        // or in every world of this shard (there are few) when none is named.
        let candidates: Vec<WorldHandle> = match &world_name {
            Some(name) => gateway.worlds.get(name).cloned().into_iter().collect(),
            None => gateway.worlds.values().cloned().collect(),
        };
        for world in candidates {
            let (reply, answer) = oneshot::channel();
            let command = Command::Resume {
                token: token.clone(),
                link: link.clone(),
                reply,
            };
            if let Ok(joined) = ask(&world, command, answer).await? {
                return Ok(Joining {
                    world,
                    joined,
                    link,
                    outbox,
                });
            }
        }
        // Past the grace period: a valid token in the same Hello logs in afresh.
        if identity.is_none() {
            return Err(Refusal::new(
                ErrorCode::ResumeFailed,
                JoinError::ResumeFailed.to_string(),
                close::AUTH_FAILED,
                "resume failed",
            ));
        }
    }
    let name = world_name.unwrap_or_else(|| gateway.default_world.clone());
    let world = gateway.worlds.get(&name).cloned().ok_or_else(|| {
        Refusal::new(
            ErrorCode::UnknownWorld,
            format!("no world named {name:?} on this shard"),
            close::AUTH_FAILED,
            "unknown world",
        )
    })?;
    let identity = identity.ok_or_else(Refusal::unauthenticated)?;
    let store_error = |err: crate::store::StoreError| {
        tracing::warn!(error = %err, "cannot load a joining player");
        Refusal::internal()
    };
    let epoch = gateway
        .store
        .next_epoch(identity.user_id)
        .await
        .map_err(store_error)?;
    // Any other shard holding an older login of this account drops it
    // (`Kicked { logged_in_elsewhere }`) and hands its position to its flusher.
    gateway.bus.send_control(ControlEvent::LoggedIn {
        user_id: identity.user_id,
        epoch,
        shard: gateway.settings.shard_id.clone(),
    });
    let stored = gateway
        .store
        .position(identity.user_id, world.id)
        .await
        .map_err(store_error)?;
    // A player playing on another shard until now stands where that shard
    // last published it, which may be newer than its last flush.
    let stored = match &gateway.handover {
        Some(cache) => newest(
            stored,
            cells::last_published(cache, world.id, identity.user_id).await,
            world.id,
        ),
        None => stored,
    };
    // The team is read at every join, not carried in the token, so a team
    // change counts from the next connection (cached with Redis).
    let team = gateway
        .store
        .profile(identity.user_id)
        .await
        .map_err(store_error)?
        .and_then(|profile| profile.team);
    let (reply, answer) = oneshot::channel();
    let command = Command::Join {
        request: JoinRequest {
            user_id: identity.user_id,
            session_id: identity.session_id,
            name: identity.name,
            epoch,
            stored,
            team,
            link: link.clone(),
        },
        reply,
    };
    let joined = ask(&world, command, answer).await?.map_err(|err| {
        Refusal::new(
            ErrorCode::ServerBusy,
            err.to_string(),
            1013,
            "try again later",
        )
    })?;
    Ok(Joining {
        world,
        joined,
        link,
        outbox,
    })
}

async fn ask(
    world: &WorldHandle,
    command: Command,
    answer: oneshot::Receiver<Result<Joined, JoinError>>,
) -> Result<Result<Joined, JoinError>, Refusal> {
    let gone = || Refusal {
        error: None,
        code: close::GOING_AWAY,
        reason: "server shutting down",
    };
    world.commands.send(command).await.map_err(|_| gone())?;
    answer.await.map_err(|_| gone())
}

async fn authenticate(gateway: &Gateway, token: &str) -> Result<Identity, Refusal> {
    gateway
        .auth
        .authenticate(token)
        .await
        .map_err(|err| match err {
            AuthError::InvalidToken => Refusal::unauthenticated(),
            err => {
                tracing::warn!(error = %err, "cannot verify a token");
                Refusal::internal()
            }
        })
}

/// Wait for the first frame, which must be a `Hello`: (token, world, resume).
async fn read_hello(
    stream: &mut Frames,
    encoding: Encoding,
) -> Result<(String, Option<String>, Option<String>), Refusal> {
    let timeout = Refusal::new(
        ErrorCode::Unauthenticated,
        "no Hello within 5 s",
        close::AUTH_TIMEOUT,
        "authentication timeout",
    );
    let deadline = tokio::time::Instant::now() + AUTH_TIMEOUT;
    loop {
        let frame = match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => return Err(timeout),
            Ok(None | Some(Err(_))) => {
                return Err(Refusal {
                    error: None,
                    code: close::NORMAL,
                    reason: "",
                })
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let bytes = match (frame, encoding.is_text()) {
            (Message::Text(text), true) => bytes::Bytes::from(text),
            (Message::Binary(data), false) => data,
            (Message::Ping(_) | Message::Pong(_), _) => continue,
            (Message::Close(_), _) => {
                return Err(Refusal {
                    error: None,
                    code: close::NORMAL,
                    reason: "",
                })
            }
            _ => {
                return Err(Refusal::new(
                    ErrorCode::WrongFrameType,
                    "this socket's subprotocol uses the other frame type",
                    close::AUTH_FAILED,
                    "authentication failed",
                ))
            }
        };
        return match encoding.decode_client(&bytes) {
            Ok(ClientMessage::Hello {
                token,
                world,
                resume,
            }) => Ok((token, world, resume.filter(|r| !r.is_empty()))),
            Ok(other) => Err(Refusal::new(
                ErrorCode::Unauthenticated,
                format!("send Hello first, not {}", other.kind()),
                close::AUTH_FAILED,
                "authentication required",
            )),
            Err(err) => Err(Refusal::new(
                err.code(),
                err.to_string(),
                close::AUTH_FAILED,
                "authentication required",
            )),
        };
    }
}

/// The newer, by `(epoch, seq)`, of a stored position and a published one.
fn newest(
    stored: Option<StoredPosition>,
    published: Option<RemotePlayer>,
    world_id: uuid::Uuid,
) -> Option<StoredPosition> {
    let Some(published) = published else {
        return stored;
    };
    let from_redis = StoredPosition {
        user_id: published.user_id,
        world_id,
        position: published.position,
        heading: published.heading,
        epoch: published.epoch,
        seq: published.seq,
        updated_at_ms: crate::store::now_ms(),
    };
    match stored {
        Some(s) if (s.epoch, s.seq) >= (published.epoch, published.seq) => Some(s),
        _ => Some(from_redis),
    }
}
