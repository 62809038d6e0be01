//! A derived change of one process, before it becomes an event: what the lifecycle rules and
//! the conditions both produce.

use pc_eventd_events::event::{EventType, GivenUp, Pressure, Reason, Silence};

/// One derived change, before it becomes an event.
#[derive(Debug)]
pub(super) struct Transition {
    pub(super) event_type: EventType,
    /// The run the change belongs to: (incarnation, restarts).
    pub(super) run: (String, u32),
    pub(super) exit_code: Option<i32>,
    pub(super) restarts: Option<u32>,
    pub(super) restarts_delta: Option<u32>,
    pub(super) reason: Option<Reason>,
    pub(super) given_up: Option<GivenUp>,
    pub(super) pressure: Option<Pressure>,
    pub(super) silence: Option<Silence>,
}

impl Transition {
    pub(super) fn new(event_type: EventType, run: (String, u32)) -> Self {
        Self {
            event_type,
            run,
            exit_code: None,
            restarts: None,
            restarts_delta: None,
            reason: None,
            given_up: None,
            pressure: None,
            silence: None,
        }
    }

    pub(super) fn exit(mut self, code: i32, reason: Reason) -> Self {
        self.exit_code = Some(code);
        self.reason = Some(reason);
        self
    }

    pub(super) fn restart(mut self, count: u32, delta: u32, reason: Reason) -> Self {
        self.restarts = Some(count);
        self.restarts_delta = Some(delta);
        self.reason = Some(reason);
        self
    }

    pub(super) fn reason(mut self, reason: Reason) -> Self {
        self.reason = Some(reason);
        self
    }

    pub(super) fn given_up(mut self, given_up: GivenUp) -> Self {
        self.given_up = Some(given_up);
        self
    }

    pub(super) fn pressure(mut self, pressure: Pressure) -> Self {
        self.pressure = Some(pressure);
        self
    }

    pub(super) fn silence(mut self, silence: Silence) -> Self {
        self.silence = Some(silence);
        self
    }
}
