//! Integration tests against real peers: a `nats-server -js` and process-compose per test (see
//! support/), plus a fake process-compose only for faults the real one will not produce on demand.

mod alert;
mod cli;
mod consumer;
mod dashboard;
mod event_kinds;
mod faults;
mod fleet;
mod lifecycle;
mod nats_auth;
mod outside;
mod pipeline;
mod readiness;
mod remediate;
mod rules;
mod sources;
mod stream;
mod support;
