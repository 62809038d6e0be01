//! Fan-out of live state frames to `/process/states/ws` subscribers
//! (process-compose's `ProcessStateBroadcaster` and `stateWsObserver`).
//!
//! One mutex (the hub's) is held around "publish a frame" and around
//! "snapshot every process + register a subscriber", so a subscriber never
//! misses a frame and never gets one that its snapshot already covers. The
//! lock order is hub, then a process's state: the supervisors change a
//! status and publish it under the hub lock (see `Proc::publish`), and the
//! snapshot reads each process's state under it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::sync::CancellationToken;

use crate::state::{ProcessStateJson, encode_event};
use crate::warn;

/// Frames a subscriber may have queued; one more closes its connection.
pub const SUBSCRIBER_BUFFER: usize = 256;

/// `?name=a,b`: exact process names; `None` means every process.
pub type NameFilter = Option<HashSet<String>>;

/// process-compose's `parseStateNameFilter`: split on `,`, trim, drop
/// blanks; nothing left means "every process". Unknown names are kept (they
/// just never match).
pub fn parse_name_filter(raw: Option<&str>) -> NameFilter {
    let names: HashSet<String> = raw?
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect();
    (!names.is_empty()).then_some(names)
}

fn wants(filter: &NameFilter, name: &str) -> bool {
    filter.as_ref().is_none_or(|names| names.contains(name))
}

pub struct Hub {
    inner: Mutex<Inner>,
}

pub struct Inner {
    subscribers: Vec<Subscriber>,
    next_id: u64,
    /// Set at project shutdown: no new registrations.
    closed: bool,
}

struct Subscriber {
    id: u64,
    filter: NameFilter,
    frames: mpsc::Sender<Bytes>,
    /// Cancelled when the buffer overflows (slow consumer).
    kill: CancellationToken,
}

/// A registered subscriber's end: its frames, in order, and its kill switch.
/// Dropping it unsubscribes.
pub struct Subscription {
    pub frames: mpsc::Receiver<Bytes>,
    /// Cancelled when the subscriber fell 256 frames behind: close at once.
    pub kill: CancellationToken,
    id: u64,
    hub: Arc<Hub>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let id = self.id;
        self.hub.lock().subscribers.retain(|s| s.id != id);
    }
}

impl Hub {
    pub fn new() -> Arc<Hub> {
        Arc::new(Hub {
            inner: Mutex::new(Inner {
                subscribers: Vec::new(),
                next_id: 0,
                closed: false,
            }),
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Project shutdown: forget every subscriber. Their writers send what is
    /// already queued (the last Terminating/Completed frames), then drop the
    /// connection, as the real server's exit does.
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.subscribers.clear();
    }
}

impl Inner {
    pub fn has_subscribers(&self) -> bool {
        !self.subscribers.is_empty()
    }

    /// Queues a live frame (no `snapshot` key) for every subscriber that wants
    /// `state.name`. A subscriber whose buffer is full is cut off.
    pub fn publish(&mut self, state: &ProcessStateJson) {
        let mut frame: Option<Bytes> = None;
        self.subscribers.retain(|sub| {
            if !wants(&sub.filter, &state.name) {
                return true;
            }
            let frame = frame.get_or_insert_with(|| encode_event(false, state));
            match sub.frames.try_send(frame.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    warn!("state stream subscriber fell {SUBSCRIBER_BUFFER} frames behind; closing it (slow consumer)");
                    sub.kill.cancel();
                    false
                }
                Err(TrySendError::Closed(_)) => false,
            }
        });
    }

    /// process-compose's `SubscribeWithSnapshot`: queues one snapshot frame
    /// per process of `snapshot` that the filter wants, into the same buffer
    /// as the live frames, then registers the subscriber, all under the hub's
    /// lock (which the caller holds, and under which it computed `snapshot`).
    /// If the snapshot alone overflows the buffer (more than 256 processes and
    /// no `?name=`), the subscription comes back already killed.
    pub fn subscribe(
        &mut self,
        hub: &Arc<Hub>,
        filter: NameFilter,
        snapshot: impl IntoIterator<Item = ProcessStateJson>,
    ) -> Subscription {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
        let kill = CancellationToken::new();
        self.next_id += 1;
        let id = self.next_id;
        let mut overflowed = false;
        // The whole snapshot is computed even past an overflow: like
        // process-compose's `GetProcessesState`, it refreshes every process's
        // polled fields.
        for state in snapshot {
            if overflowed || !wants(&filter, &state.name) {
                continue;
            }
            overflowed = tx.try_send(encode_event(true, &state)).is_err();
        }
        if overflowed {
            warn!(
                "state stream snapshot does not fit in {SUBSCRIBER_BUFFER} frames; closing the connection (slow consumer)"
            );
            kill.cancel();
        } else if !self.closed {
            self.subscribers.push(Subscriber {
                id,
                filter,
                frames: tx,
                kill: kill.clone(),
            });
        }
        Subscription {
            frames: rx,
            kill,
            id,
            hub: hub.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::ProcessConfig;
    use crate::state::{State, Status};
    use crate::version::Version;

    fn state(name: &str, status: Status) -> ProcessStateJson {
        let mut st = State::new(false);
        st.status = status;
        st.live_json(name, &ProcessConfig::default(), Version::DEFAULT)
    }

    fn drain(sub: &mut Subscription) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        while let Ok(frame) = sub.frames.try_recv() {
            assert_eq!(frame.last(), Some(&b'\n'), "one object and a newline");
            out.push(serde_json::from_slice(&frame).unwrap());
        }
        out
    }

    #[test]
    fn the_name_filter_is_exact_and_comma_separated() {
        assert_eq!(parse_name_filter(None), None);
        assert_eq!(parse_name_filter(Some("")), None);
        assert_eq!(parse_name_filter(Some(" , ,")), None);
        let filter = parse_name_filter(Some("web, db ,,nope"));
        assert_eq!(
            filter,
            Some(
                ["web", "db", "nope"]
                    .map(str::to_owned)
                    .into_iter()
                    .collect()
            )
        );
        assert!(wants(&filter, "web") && wants(&filter, "db"));
        assert!(!wants(&filter, "we") && !wants(&filter, "web-0") && !wants(&filter, "Web"));
        assert!(wants(&None, "anything"));
    }

    #[test]
    fn snapshot_then_live_frames_filtered_by_name() {
        let hub = Hub::new();
        let mut sub = hub.lock().subscribe(
            &hub,
            parse_name_filter(Some("a,ghost")),
            [state("a", Status::Running), state("b", Status::Running)],
        );
        hub.lock().publish(&state("b", Status::Terminating));
        hub.lock().publish(&state("a", Status::Terminating));
        hub.lock().publish(&state("a", Status::Completed));
        let frames = drain(&mut sub);
        let got: Vec<(bool, &str, &str)> = frames
            .iter()
            .map(|f| {
                (
                    f.get("snapshot").is_some(),
                    f["state"]["name"].as_str().unwrap(),
                    f["state"]["status"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (true, "a", "Running"),
                (false, "a", "Terminating"),
                (false, "a", "Completed")
            ]
        );
        assert_eq!(frames[0]["snapshot"], true);
        assert!(!sub.kill.is_cancelled());
        drop(sub);
        assert!(!hub.lock().has_subscribers(), "dropping unsubscribes");
    }

    #[test]
    fn a_full_buffer_kills_the_subscriber() {
        let hub = Hub::new();
        let mut sub = hub
            .lock()
            .subscribe(&hub, None, [state("a", Status::Running)]);
        for _ in 1..SUBSCRIBER_BUFFER {
            hub.lock().publish(&state("a", Status::Running));
        }
        assert!(!sub.kill.is_cancelled(), "256 frames fit");
        hub.lock().publish(&state("a", Status::Completed));
        assert!(sub.kill.is_cancelled(), "the 257th overflows");
        assert!(!hub.lock().has_subscribers());
        assert_eq!(drain(&mut sub).len(), SUBSCRIBER_BUFFER);
    }

    #[test]
    fn a_snapshot_larger_than_the_buffer_overflows_on_connect() {
        let hub = Hub::new();
        let many = |n: usize| (0..n).map(|i| state(&format!("p{i:03}"), Status::Running));
        let sub = hub.lock().subscribe(&hub, None, many(SUBSCRIBER_BUFFER));
        assert!(!sub.kill.is_cancelled(), "exactly 256 processes fit");
        let sub = hub
            .lock()
            .subscribe(&hub, None, many(SUBSCRIBER_BUFFER + 1));
        assert!(sub.kill.is_cancelled());
        let half: Vec<String> = (0..150).map(|i| format!("p{i:03}")).collect();
        let sub = hub
            .lock()
            .subscribe(&hub, parse_name_filter(Some(&half.join(","))), many(300));
        assert!(!sub.kill.is_cancelled(), "a ?name= split fits");
        assert_eq!(sub.frames.len(), 150);
    }

    #[test]
    fn close_ends_the_streams_after_what_is_queued() {
        let hub = Hub::new();
        let mut sub = hub
            .lock()
            .subscribe(&hub, None, [state("a", Status::Running)]);
        hub.lock().publish(&state("a", Status::Completed));
        hub.close();
        assert_eq!(drain(&mut sub).len(), 2);
        assert!(sub.frames.is_closed());
        assert!(!sub.kill.is_cancelled());
        let late = hub
            .lock()
            .subscribe(&hub, None, [state("a", Status::Completed)]);
        assert_eq!(late.frames.len(), 1, "a late subscriber gets its snapshot");
        assert!(late.frames.is_closed(), "and nothing else");
    }
}
