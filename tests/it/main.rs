//! Integration tests, one binary so the big dependencies link once. Fixtures: tests/fixtures/README.md.

mod common;
mod eval;
mod quickstart;
mod wiki;
