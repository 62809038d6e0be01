//! The diff engine over arbitrary sequences of observations. Invariants: it never panics; each
//! process's `seq` strictly increases; the same observations give the same ids.
#![no_main]

use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use pc_eventd::{DiffContext, ProcessSettings, Snapshot, diff, diff_one};
use pc_eventd_events::event::{LifecycleEvent, SubjectScheme};
use pc_eventd_events::process_compose::model::{ProcessInfo, ProcessState};

const NAMES: [&str; 4] = ["web", "api.v2", "job", "a b"];
const STATUSES: [&str; 14] = [
    "Pending",
    "Disabled",
    "Foreground",
    "Running",
    "Launching",
    "Launched",
    "Restarting",
    "Terminating",
    "Completed",
    "Skipped",
    "Error",
    "Scheduled",
    "Watching",
    "Hibernating",
];
const READY: [&str; 3] = ["Ready", "Not Ready", "-"];
const STARTS: [Option<&str>; 3] = [
    None,
    Some("2026-01-01T00:00:00Z"),
    Some("2026-01-01T00:05:00Z"),
];

/// One observation: the whole list (a poll) or one process (a stream frame).
#[derive(Debug)]
enum Observation {
    All(Vec<ProcessState>),
    One(ProcessState),
}

fn state(u: &mut Unstructured<'_>) -> arbitrary::Result<ProcessState> {
    let json = serde_json::json!({
        "name": u.choose(&NAMES)?,
        "namespace": if bool::arbitrary(u)? { serde_json::json!("default") } else { serde_json::json!(["a", "b"]) },
        "status": u.choose(&STATUSES)?,
        "is_ready": u.choose(&READY)?,
        "restarts": u.int_in_range(0..=4u32)?,
        "exit_code": u.int_in_range(-1..=3i32)?,
        "pid": u.int_in_range(0..=3i64)?,
        "process_start_time": u.choose(&STARTS)?,
        "success_exit_codes": if bool::arbitrary(u)? { vec![3] } else { vec![] },
        "mem": u.int_in_range(-1..=3i64)? << 20,
        "cpu": f64::from(u.int_in_range(0..=200u8)?),
        "last_activity_time": u.choose(&STARTS)?,
        "watch_trigger_time": u.choose(&STARTS)?,
    });
    Ok(serde_json::from_value(json).expect("a valid process state"))
}

fn observations(data: &[u8]) -> arbitrary::Result<Vec<Observation>> {
    let mut u = Unstructured::new(data);
    let mut out = Vec::new();
    while !u.is_empty() && out.len() < 64 {
        if bool::arbitrary(&mut u)? {
            let n = u.int_in_range(0..=NAMES.len())?;
            out.push(Observation::All(
                (0..n).map(|_| state(&mut u)).collect::<Result<_, _>>()?,
            ));
        } else {
            out.push(Observation::One(state(&mut u)?));
        }
    }
    Ok(out)
}

fn run(observations: &[Observation]) -> Vec<LifecycleEvent> {
    let scheme = SubjectScheme::default();
    let mut settings = ProcessSettings::fixed(Duration::from_secs(5));
    // Every rule in play: pressure on both resources, silence, and a policy that gives up.
    settings.conditions = serde_json::from_value(serde_json::json!({
        "pressure": [{"processes": ["*"], "memory": 1_048_576, "cpu": 100.0, "for": "2s"}],
        "silence": [{"after": "3s"}],
    }))
    .expect("valid rules");
    let policy: ProcessInfo =
        serde_json::from_value(serde_json::json!({"restartPolicy": {"restart": 2, "maxRestarts": 2}}))
            .expect("valid settings");
    settings.learn("web", policy);
    let mut snapshot = Snapshot::default();
    let mut events = Vec::new();
    for (i, observation) in observations.iter().enumerate() {
        let ctx = DiffContext {
            source: "fuzz",
            subjects: &scheme,
            observed_at: UNIX_EPOCH + Duration::from_secs(i as u64),
            synthetic: matches!(observation, Observation::All(_)),
            lag: Duration::ZERO,
            sampled: matches!(observation, Observation::All(_)),
            settings: &settings,
        };
        match observation {
            Observation::All(states) => {
                let (next, mut made) = diff(&snapshot, states, &ctx);
                snapshot = next;
                events.append(&mut made);
            }
            Observation::One(state) => {
                let (update, mut made) = diff_one(&snapshot, state, &ctx);
                snapshot.apply(update);
                events.append(&mut made);
            }
        }
    }
    events
}

fuzz_target!(|data: &[u8]| {
    let Ok(observations) = observations(data) else {
        return;
    };
    let events = run(&observations);
    let mut last_seq: HashMap<&str, u64> = HashMap::new();
    for event in &events {
        let last = last_seq.entry(event.process.as_str()).or_insert(0);
        assert!(
            event.seq > *last,
            "seq must strictly increase per process: {event:?}"
        );
        *last = event.seq;
        assert_eq!(event.subject.split('.').count(), 5, "{}", event.subject);
    }
    let again = run(&observations);
    let ids = |events: &[LifecycleEvent]| events.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&events), ids(&again), "equal inputs, equal ids");
});
