//! The world and its tick loop (being written).
