//! Helpers of this crate's tests: seeded random inputs and a relative-tolerance comparison.

use rand::{Rng, SeedableRng};

/// `len` values uniform in [−1, 1) from `seed`.
pub(crate) fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| rng.gen_range(-1.0..1.0)).collect()
}

/// |got − want| ≤ tol · (1 + |want|) everywhere; `what` names the output in the failure.
pub(crate) fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * (1.0 + w.abs()), "{what}[{i}]: got {g}, want {w}");
    }
}

/// The panic message with which `op` refuses its short buffer (a failure if it accepts it).
pub(crate) fn refusal(op: impl FnOnce(), what: &str) -> String {
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(op))
        .expect_err(&format!("{what}: a too-short buffer was accepted"));
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// That `op` refuses its short buffer before touching it: a panic whose message says so.
pub(crate) fn assert_refused(op: impl FnOnce(), what: &str) {
    let message = refusal(op, what);
    assert!(message.contains("too short") || message.contains("out of range"), "{what}: refused, but with {message:?}");
}
