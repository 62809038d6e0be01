//! One process's history, for the page's process view: its events a page at a time (newest
//! first, paging back over the stream's retention), its restarts and crashes per hour, and its
//! last crash with the output it printed.

use std::time::{Duration, SystemTime};

use pc_eventd_events::consumer::{Consumer, ConsumerError, Delivery, Filter, Received, Start};
use pc_eventd_events::event::{EventType, ProcessOutput};
use serde::Serialize;

/// How many hours the chart shows, the newest last.
pub(crate) const CHART_HOURS: usize = 24;
/// The largest page a request may ask for.
pub(crate) const MAX_PAGE: usize = 500;

/// What the page asks for: one process of one source, events before a stream sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HistoryQuery {
    pub source: String,
    /// `namespace/name`.
    pub process: String,
    /// Only events before this stream sequence (the oldest the page has); all when `None`.
    pub before: Option<u64>,
    pub limit: usize,
}

/// The answer, as JSON.
#[derive(Debug, Serialize)]
pub(crate) struct HistoryPage {
    /// `{"seq", "summary", "event"}`, newest first.
    pub events: Vec<serde_json::Value>,
    /// Whether older events remain (ask again with `before` = the last one's `seq`).
    pub more: bool,
    /// Over the whole retained history, whatever the page.
    pub summary: Summary,
}

/// A process's restarts over time and its last crash.
#[derive(Debug, Default, PartialEq, Serialize)]
pub(crate) struct Summary {
    /// Restarts (events `restarted`, counting each policy restart they report) per hour, the
    /// last [`CHART_HOURS`] hours, the oldest first.
    pub restarts_per_hour: Vec<u32>,
    /// Crashes per hour, as `restarts_per_hour`.
    pub crashes_per_hour: Vec<u32>,
    pub last_crash: Option<LastCrash>,
}

#[derive(Debug, PartialEq, Serialize)]
pub(crate) struct LastCrash {
    pub timestamp: String,
    pub exit_code: Option<i32>,
    pub seq: u64,
    /// The last lines it printed, as the event carries them (redacted by the daemon).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<ProcessOutput>,
}

/// Reads every event the stream holds for the query's process and answers it.
pub(crate) async fn read(
    consumer: &Consumer,
    query: &HistoryQuery,
) -> Result<HistoryPage, ConsumerError> {
    let filter = Filter::default()
        .with_source(query.source.clone())
        .with_process(query.process.clone());
    let mut events = consumer.subscribe(&filter, Start::All).await?;
    let deliveries: Vec<Delivery> = events
        .history()
        .await?
        .into_iter()
        .filter_map(Received::into_event)
        .collect();
    Ok(page(&deliveries, query, SystemTime::now()))
}

/// The page `query` asks for from a process's `deliveries` (in stream order), at `now`.
fn page(deliveries: &[Delivery], query: &HistoryQuery, now: SystemTime) -> HistoryPage {
    let before = query.before.unwrap_or(u64::MAX);
    let older: Vec<&Delivery> = deliveries
        .iter()
        .filter(|delivery| delivery.stream_sequence < before)
        .collect();
    let limit = query.limit.clamp(1, MAX_PAGE);
    let shown = &older[older.len().saturating_sub(limit)..];
    HistoryPage {
        events: shown
            .iter()
            .rev()
            .map(|delivery| {
                let event = &delivery.event;
                let summary = event.summary();
                serde_json::json!({ "seq": delivery.stream_sequence, "summary": summary, "event": event })
            })
            .collect(),
        more: older.len() > shown.len(),
        summary: summarise(deliveries, now),
    }
}

/// Restarts and crashes per hour over the last [`CHART_HOURS`] hours before `now`, and the
/// last crash.
pub(crate) fn summarise(deliveries: &[Delivery], now: SystemTime) -> Summary {
    let mut summary = Summary {
        restarts_per_hour: vec![0; CHART_HOURS],
        crashes_per_hour: vec![0; CHART_HOURS],
        last_crash: None,
    };
    for delivery in deliveries {
        let event = &delivery.event;
        let hour = humantime::parse_rfc3339_weak(&event.timestamp)
            .ok()
            .and_then(|at| hours_before(at, now));
        match event.event_type {
            EventType::Restarted => {
                if let Some(hour) = hour {
                    summary.restarts_per_hour[hour] += event.restarts_delta.unwrap_or(1).max(1);
                }
            }
            EventType::Crashed => {
                if let Some(hour) = hour {
                    summary.crashes_per_hour[hour] += 1;
                }
                summary.last_crash = Some(LastCrash {
                    timestamp: event.timestamp.clone(),
                    exit_code: event.exit_code,
                    seq: delivery.stream_sequence,
                    output: event.output.clone(),
                });
            }
            _ => {}
        }
    }
    summary
}

/// The chart's bucket for a time `at`: `CHART_HOURS - 1` for the last hour before `now`, 0 for
/// the oldest; `None` outside the chart.
fn hours_before(at: SystemTime, now: SystemTime) -> Option<usize> {
    // A time slightly ahead (another host's clock) counts as now.
    let ago = now.duration_since(at).unwrap_or(Duration::ZERO);
    let hours = usize::try_from(ago.as_secs() / 3600).ok()?;
    (hours < CHART_HOURS).then(|| CHART_HOURS - 1 - hours)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pc_eventd_events::event::{example_event, timestamp};

    fn delivery(seq: u64, event_type: EventType, at: SystemTime) -> Delivery {
        let mut event = example_event();
        event.event_type = event_type;
        event.timestamp = timestamp(at);
        event.exit_code = (event_type == EventType::Crashed).then_some(seq as i32);
        event.restarts_delta = (event_type == EventType::Restarted).then_some(1);
        Delivery {
            payload: serde_json::to_vec(&event).unwrap().into(),
            event,
            stream_sequence: seq,
        }
    }

    fn query(before: Option<u64>, limit: usize) -> HistoryQuery {
        HistoryQuery {
            source: "web-01".into(),
            process: "default/web".into(),
            before,
            limit,
        }
    }

    fn seqs(page: &HistoryPage) -> Vec<u64> {
        page.events
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect()
    }

    #[test]
    fn pages_go_back_newest_first() {
        let now = SystemTime::now();
        let all: Vec<Delivery> = (1..=7)
            .map(|seq| delivery(seq * 10, EventType::Started, now))
            .collect();
        let first = page(&all, &query(None, 3), now);
        assert_eq!(seqs(&first), [70, 60, 50]);
        assert!(first.more);
        let second = page(&all, &query(Some(50), 3), now);
        assert_eq!(seqs(&second), [40, 30, 20]);
        assert!(second.more);
        let last = page(&all, &query(Some(20), 3), now);
        assert_eq!(seqs(&last), [10]);
        assert!(!last.more);
        // exactly a page left: nothing more
        assert!(!page(&all, &query(Some(40), 3), now).more);
        // a limit of 0 still shows one; a huge one is capped
        assert_eq!(seqs(&page(&all, &query(None, 0), now)), [70]);
        assert_eq!(page(&all, &query(None, 10_000), now).events.len(), 7);
    }

    #[test]
    fn restarts_and_crashes_are_counted_per_hour_up_to_a_day() {
        let now = SystemTime::now();
        let hours = |h: u64| now - Duration::from_secs(h * 3600 + 60);
        let all = vec![
            delivery(1, EventType::Crashed, now + Duration::from_secs(5)),
            delivery(2, EventType::Restarted, hours(0)),
            delivery(3, EventType::Restarted, hours(0)),
            delivery(4, EventType::Crashed, hours(2)),
            delivery(5, EventType::Restarted, hours(23)),
            delivery(6, EventType::Restarted, hours(24)),
            delivery(7, EventType::Started, hours(1)),
        ];
        let summary = summarise(&all, now);
        let mut restarts = vec![0; CHART_HOURS];
        restarts[23] = 2;
        restarts[0] = 1;
        let mut crashes = vec![0; CHART_HOURS];
        crashes[23] = 1;
        crashes[21] = 1;
        assert_eq!(summary.restarts_per_hour, restarts);
        assert_eq!(summary.crashes_per_hour, crashes);
        let last = summary.last_crash.unwrap();
        assert_eq!((last.seq, last.exit_code), (4, Some(4)));
        assert_eq!(last.output, None);
    }

    #[test]
    fn the_last_crash_carries_its_output() {
        let now = SystemTime::now();
        let output = ProcessOutput {
            lines: vec!["connecting".into(), "[REDACTED]".into()],
            truncated: true,
            redacted: 1,
            unavailable: None,
        };
        let mut with_output = delivery(2, EventType::Crashed, now);
        with_output.event.output = Some(output.clone());
        let summary = summarise(&[delivery(1, EventType::Crashed, now), with_output], now);
        let last = summary.last_crash.as_ref().unwrap();
        assert_eq!(last.output.as_ref(), Some(&output));
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(json["last_crash"]["output"]["lines"][1], "[REDACTED]");
        // A crash without output has no output key.
        let summary = summarise(&[delivery(1, EventType::Crashed, now)], now);
        let json = serde_json::to_value(&summary).unwrap();
        assert!(json["last_crash"].get("output").is_none(), "{json}");
    }

    #[test]
    fn a_restart_of_several_counts_them_all() {
        let now = SystemTime::now();
        let mut burst = delivery(1, EventType::Restarted, now);
        burst.event.restarts_delta = Some(3);
        let summary = summarise(&[burst], now);
        assert_eq!(summary.restarts_per_hour[CHART_HOURS - 1], 3);
        assert_eq!(summary.last_crash, None);
    }
}
