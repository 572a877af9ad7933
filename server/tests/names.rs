//! Display names and chat holding SQL metacharacters, quotes, markup and
//! other scripts are stored and shown exactly as written, on the embedded
//! SQLite store and on PostgreSQL: a neighbour sees the name on the entity
//! and on the chat line, and the text as it was said. Names with control
//! characters, or empty or too long, are refused with a clear error.

mod util;

use meridian_protocol::{ChatChannel, ClientMessage, Encoding, ServerMessage};
use util::pg::TestDatabase;
use util::{offset, Client, TestServer, CENTER};
use uuid::Uuid;

const SPEAKER: &str = "Robert'); DROP TABLE users;--";
const LISTENER: &str = "O'Brien \"--\" <b>名前</b>";
const SAID: [&str; 2] = [
    "'; DELETE FROM player_positions WHERE '1'='1",
    "%_\\ \" ; -- /* <script>alert(1)</script>",
];

/// A new guest named `name`, placed at `at` in `arena`, connected.
async fn named_guest(server: &TestServer, name: &str, at: meridian_protocol::LonLat) -> Client {
    let (status, body) = server
        .post("/api/guest", serde_json::json!({ "display_name": name }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["display_name"], name, "{body}");
    let user_id: Uuid = body["user_id"].as_str().unwrap().parse().unwrap();
    server.place(user_id, "arena", at).await;
    let token = body["token"].as_str().unwrap();
    let mut client = Client::connect(server.game, Encoding::Json, Some(token), Some("arena"))
        .await
        .unwrap();
    client.welcome().await;
    client
}

/// The name `client` is shown `player` under when it comes into view.
async fn name_seen(client: &mut Client, player: Uuid) -> String {
    client
        .until(|m| match m {
            ServerMessage::Update(u) => u
                .entered
                .iter()
                .find(|e| e.player_id == player)
                .map(|e| e.name.clone()),
            _ => None,
        })
        .await
}

async fn names_and_chat_are_shown_verbatim(server: &TestServer) {
    // A registered speaker and a guest listener 20 m apart.
    let (status, body) = server
        .post(
            "/api/register",
            serde_json::json!({
                "username": "robert", "password": "correct horse battery",
                "display_name": format!("  {SPEAKER}  "),
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["display_name"], SPEAKER,
        "trimmed, otherwise as written"
    );
    let speaker_id: Uuid = body["user_id"].as_str().unwrap().parse().unwrap();
    server.place(speaker_id, "arena", CENTER).await;
    let mut speaker = Client::connect(
        server.game,
        Encoding::Bincode,
        Some(body["token"].as_str().unwrap()),
        Some("arena"),
    )
    .await
    .unwrap();
    speaker.welcome().await;
    let mut listener = named_guest(server, LISTENER, offset(CENTER, 20.0, 0.0)).await;

    // Each sees the other under the chosen name.
    assert_eq!(name_seen(&mut listener, speaker_id).await, SPEAKER);
    let listener_id = listener.player_id;
    assert_eq!(name_seen(&mut speaker, listener_id).await, LISTENER);

    // What is said arrives as it was said, under the name, on both channels.
    for (channel, text) in [ChatChannel::World, ChatChannel::Nearby]
        .into_iter()
        .zip(SAID)
    {
        speaker
            .send(&ClientMessage::Chat {
                channel,
                text: text.into(),
            })
            .await;
        let heard = listener
            .until(|m| match m {
                ServerMessage::ChatMessage {
                    channel: c,
                    from,
                    name,
                    text,
                    ..
                } if *from == speaker_id => Some((*c, name.clone(), text.clone())),
                _ => None,
            })
            .await;
        assert_eq!(heard, (channel, SPEAKER.to_owned(), text.to_owned()));
        // Chat is limited to one line a second.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    }

    // Stored as written, and every table still there.
    let store = server.store().await;
    let stored = store.user_by_id(speaker_id).await.unwrap().unwrap();
    assert_eq!(stored.display_name.as_deref(), Some(SPEAKER));
    assert_eq!(stored.username, "robert");
    let listener_row = store.user_by_id(listener_id).await.unwrap().unwrap();
    assert_eq!(listener_row.display_name.as_deref(), Some(LISTENER));
    assert!(store.user_by_name("robert").await.unwrap().is_some());

    // Logging in again shows the same name: it is the account's.
    let (status, body) = server
        .post(
            "/api/login",
            serde_json::json!({ "username": "robert", "password": "correct horse battery" }),
        )
        .await;
    assert_eq!(
        (status, body["display_name"].as_str()),
        (200, Some(SPEAKER))
    );
}

#[tokio::test]
async fn names_and_chat_with_sql_and_markup_are_shown_verbatim_on_sqlite() {
    let server = TestServer::start().await;
    names_and_chat_are_shown_verbatim(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn names_and_chat_with_sql_and_markup_are_shown_verbatim_on_postgres() {
    let db = TestDatabase::create().await;
    let server = TestServer::start_pg(&db.url, |_| {}).await;
    names_and_chat_are_shown_verbatim(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn bad_display_names_are_refused_by_name() {
    let server = TestServer::start().await;
    for (name, why) in [
        ("", "1 to 32 characters"),
        ("   ", "1 to 32 characters"),
        (&"x".repeat(33), "1 to 32 characters"),
        ("line\nbreak", "control characters"),
        ("right\u{202E}to-left", "control characters"),
        ("\u{200B}\u{200B}", "invisible characters"),
        ("rob\u{FEFF}ert", "invisible characters"),
    ] {
        for (path, body) in [
            ("/api/guest", serde_json::json!({ "display_name": name })),
            (
                "/api/register",
                serde_json::json!({
                    "username": "someone", "password": "correct horse battery",
                    "display_name": name,
                }),
            ),
        ] {
            let (status, body) = server.post(path, body).await;
            assert_eq!(status, 400, "{path} {name:?}: {body}");
            assert_eq!(body["error"], "invalid_display_name", "{body}");
            assert!(
                body["message"].as_str().unwrap().contains(why),
                "{path} {name:?}: {body}"
            );
        }
    }
    // Nothing was created: the name is free to register.
    let (status, body) = server
        .post(
            "/api/register",
            serde_json::json!({ "username": "someone", "password": "correct horse battery" }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["display_name"], serde_json::Value::Null);
    server.stop().await;
}
