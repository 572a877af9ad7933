//! Software prefetch: asking the CPU to start loading memory that will be read
//! a little later, so that the read does not stall on it.
//!
//! The fan-out serves thousands of connections a round, and between two visits
//! to a connection the kernel's socket work has evicted everything the
//! connection's view touches. Its known set and the snapshot entries it names
//! are then cache misses, read one after the other; started one or two
//! connections ahead, they arrive while the socket work of the connections in
//! between runs.

/// Bytes in a cache line.
const LINE: usize = 64;

/// Start loading the cache line holding `value` into every level of the
/// cache. Does nothing on targets without a prefetch instruction.
#[inline]
pub fn line<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht0` needs only SSE, which every x86-64 CPU has, and it
    // never faults: it reads nothing into the program, and the address comes
    // from a live reference anyway.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(value).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// Start loading the cache lines of `values`, at most `max_lines` of them.
#[inline]
pub fn slice<T>(values: &[T], max_lines: usize) {
    let step = (LINE / std::mem::size_of::<T>().max(1)).max(1);
    for value in values.iter().step_by(step).take(max_lines) {
        line(value);
    }
}
