//! Integration tests, one binary so the big dependencies link once. Fixtures: tests/fixtures/README.md.

mod audit;
mod common;
mod dist;
mod errors;
mod eval;
mod hub;
mod instruct;
mod metrics;
mod mock_http;
mod model;
mod quickstart;
mod recipes;
mod report;
mod shards;
mod train;
mod vocab;
mod wiki;
