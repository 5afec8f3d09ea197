//! Integration tests, one binary so the big dependencies link once. Fixtures: tests/fixtures/README.md.

mod common;
mod quickstart;
mod vocab;
mod wiki;
