//! Any bytes, as a server frame in either encoding (what clients and bots
//! decode): a message or a `DecodeError`, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_protocol::Encoding;

fuzz_target!(|frame: &[u8]| {
    for encoding in [Encoding::Bincode, Encoding::Json] {
        if let Ok(message) = encoding.decode_server(frame) {
            let _ = encoding.encode(&message);
        }
    }
});
