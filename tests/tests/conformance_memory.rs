//! The conformance kit against the in-memory reference backend.

use lockkit_tests::memory::MemoryHarness;

lockkit_core::conformance_suite! {
    harness: MemoryHarness::new(),
}
