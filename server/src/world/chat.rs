//! Chat lines as the tick hands them out: world chat to every local player of
//! the world, `nearby` chat to the local players within the chat radius of
//! the speaker, and either through the shard-sync task to the other shards.

use meridian_protocol::{ChatChannel, LonLat, ServerMessage};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Chat messages one connection may send per second (bursts of twice that);
/// more get `rate_limited` errors, which count towards a protocol-abuse kick.
pub const CHAT_PER_SECOND: u32 = 1;

/// One line of chat, as it travels between shards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatLine {
    /// The world it was said in.
    pub world_id: Uuid,
    /// The shard of the speaker (a shard ignores its own lines from Redis).
    pub shard: String,
    /// Where.
    pub channel: ChatChannel,
    /// The speaker's account.
    pub from: Uuid,
    /// The speaker's display name.
    pub name: String,
    /// What was said, already cleaned.
    pub text: String,
    /// When the speaker's shard took it, Unix milliseconds.
    pub sent_ms: u64,
    /// Where the speaker stood, for `nearby` chat (heard within the chat
    /// radius of it); `None` for world chat.
    pub position: Option<LonLat>,
}

impl ChatLine {
    /// The name an operator's broadcast is shown under; its `from` is the
    /// nil account, which no player has, so clients can tell it apart.
    pub const OPERATOR: &'static str = "operator";

    /// An operator's broadcast to the players of `world_id`.
    #[must_use]
    pub fn operator(world_id: Uuid, text: String) -> Self {
        Self {
            world_id,
            shard: String::new(),
            channel: ChatChannel::World,
            from: Uuid::nil(),
            name: Self::OPERATOR.to_owned(),
            text,
            sent_ms: crate::store::now_ms() as u64,
            position: None,
        }
    }

    /// The message players receive.
    #[must_use]
    pub fn message(&self) -> ServerMessage {
        ServerMessage::ChatMessage {
            channel: self.channel,
            from: self.from,
            name: self.name.clone(),
            text: self.text.clone(),
            sent_ms: self.sent_ms,
        }
    }
}

/// `text` without control characters (newlines, escapes, bidi controls are
/// not text anyone should be able to inject into other players' screens).
#[must_use]
pub fn clean(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control() && !is_bidi_control(*c))
        .collect()
}

fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_removed_and_the_rest_kept() {
        assert_eq!(clean("hi\u{7}\n\tthere\u{1b}[31m"), "hithere[31m");
        assert_eq!(clean("a\u{202E}b"), "ab");
        assert_eq!(
            clean("ünïcode 🙂 '; DROP TABLE users; --"),
            "ünïcode 🙂 '; DROP TABLE users; --"
        );
    }
}
