//! Integration tests, one binary so the big dependencies link once. Fixtures: tests/fixtures/README.md.

mod common;
mod instruct;
mod mock_http;
mod quickstart;
mod wiki;
