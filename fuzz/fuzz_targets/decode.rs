//! process-compose's JSON, as `GET /processes` and the state stream send it: whatever the bytes,
//! decoding returns a value or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pc_eventd::StateFrame;
use pc_eventd_events::process_compose::model::{ProcessState, ProcessesResponse};

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<ProcessesResponse>(data);
    let _ = serde_json::from_slice::<StateFrame>(data);
    let _ = serde_json::from_slice::<ProcessState>(data);
});
