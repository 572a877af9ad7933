//! Limits enforced when decoding client frames. Servers and clients share them.

/// Largest frame a client may send, in bytes. The biggest legitimate message is a
/// `Hello` carrying a token and a resume token, well under 4 KiB.
pub const MAX_FRAME_BYTES: usize = 8 * 1024;

/// Longest access token accepted in `Hello`, in bytes.
pub const MAX_TOKEN_BYTES: usize = 4 * 1024;

/// Longest world name, in bytes.
pub const MAX_WORLD_NAME_BYTES: usize = 64;

/// Longest resume token, in bytes.
pub const MAX_RESUME_TOKEN_BYTES: usize = 128;

/// Highest update rate a client may ask for; the server also caps it at its tick rate.
pub const MAX_UPDATE_HZ: u8 = 60;

/// Longest chat message, in characters (after control characters are removed).
pub const MAX_CHAT_CHARS: usize = 280;
