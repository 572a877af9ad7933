//! The WebSocket gateway (being written).
