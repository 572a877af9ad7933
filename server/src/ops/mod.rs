//! The ops port (being written).
