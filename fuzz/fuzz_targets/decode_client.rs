//! Any bytes, as a client frame in either encoding: the decoder answers with
//! a message or a `DecodeError`, never a panic, and a message it accepts
//! encodes to a frame that decodes back to the same bytes. (Bytes, not
//! values: a bincode `Move` may carry a NaN, which the tick answers with a
//! `Correction`, and NaN is not equal to itself.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_protocol::{ClientMessage, Encoding};

fuzz_target!(|frame: &[u8]| {
    for encoding in [Encoding::Bincode, Encoding::Json] {
        if let Ok(message) = encoding.decode_client(frame) {
            let bytes = encoding.encode(&message);
            let again: ClientMessage = encoding
                .decode_client(&bytes)
                .expect("a decoded message encodes to a decodable frame");
            assert_eq!(encoding.encode(&again), bytes);
        }
    }
});
