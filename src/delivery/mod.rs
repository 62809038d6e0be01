//! Delivery: events on disk until JetStream has them ([`outbox`]), the relay that sends them
//! ([`relay`]), and the last state per process kept beside the stream ([`records`]).

pub(crate) mod outbox;
pub(crate) mod records;
pub(crate) mod relay;
