//! Shared fuzzing setup: the case count and byte-level mutations of valid inputs
//! (the same as `wire/tests/it/support.rs`; test crates do not share code yet).

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Cases per property when `HUSH_FUZZ_CASES` is not set: small, so the normal suite stays fast.
const DEFAULT_CASES: u32 = 64;

/// The proptest configuration of every fuzz property: `HUSH_FUZZ_CASES` cases (default
/// [`DEFAULT_CASES`]), no failure files: a failure found becomes a named regression test.
pub fn fuzz_config() -> Config {
    let cases = std::env::var("HUSH_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_CASES);
    Config { failure_persistence: None, ..Config::with_cases(cases) }
}

/// Checks `test` on [`fuzz_config`]`()` cases drawn from `strategy`; panics with the
/// (shrunk) failing input.
pub fn run<S: Strategy>(strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>) {
    TestRunner::new(fuzz_config()).run(&strategy, test).unwrap();
}

/// One edit of a byte string.
#[derive(Debug, Clone)]
pub enum Mutation {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    Truncate(Index),
    Extend(Vec<u8>),
    Insert(Index, Vec<u8>),
    Remove(Index, usize),
    Duplicate(Index, usize),
}

impl Mutation {
    fn apply(&self, bytes: &mut Vec<u8>) {
        let len = bytes.len();
        let at = |i: &Index| if len == 0 { 0 } else { i.index(len) };
        match self {
            Mutation::FlipBit(i, bit) if len > 0 => bytes[at(i)] ^= 1 << (bit % 8),
            Mutation::SetByte(i, b) if len > 0 => bytes[at(i)] = *b,
            Mutation::Truncate(i) => bytes.truncate(at(i)),
            Mutation::Extend(tail) => bytes.extend_from_slice(tail),
            Mutation::Insert(i, chunk) => {
                let at = at(i);
                bytes.splice(at..at, chunk.iter().copied());
            }
            Mutation::Remove(i, n) => {
                let start = at(i);
                bytes.drain(start..(start + n).min(len));
            }
            Mutation::Duplicate(i, n) => {
                let start = at(i);
                let chunk = bytes[start..(start + n).min(len)].to_vec();
                bytes.splice(start..start, chunk);
            }
            Mutation::FlipBit(..) | Mutation::SetByte(..) => {}
        }
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let chunk = || proptest::collection::vec(any::<u8>(), 1..16);
    prop_oneof![
        3 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::SetByte(i, b)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => chunk().prop_map(Mutation::Extend),
        1 => (any::<Index>(), chunk()).prop_map(|(i, c)| Mutation::Insert(i, c)),
        1 => (any::<Index>(), 1..16usize).prop_map(|(i, n)| Mutation::Remove(i, n)),
        1 => (any::<Index>(), 1..16usize).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
    ]
}

/// `valid` with one to four random edits (bit flips, overwrites, truncation, extension,
/// insertion, removal, duplication of a stretch).
pub fn mutated(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(mutation(), 1..5).prop_map(move |edits| {
        let mut bytes = valid.clone();
        for edit in &edits {
            edit.apply(&mut bytes);
        }
        bytes
    })
}
