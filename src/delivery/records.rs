//! What was last published about every process, kept in a JetStream key-value bucket, so that a
//! restarted daemon (even after `kill -9`) resumes from it: it publishes only what really
//! changed while it was down, with the same deterministic ids and continuing sequence numbers,
//! instead of announcing everything again.
//!
//! Why a KV bucket and not a state file: it lives on the same NATS servers as the stream, with
//! the same replicas, so it survives the loss of the daemon's host and always matches what the
//! stream holds. What was observed but not yet acknowledged is the outbox's part (each entry
//! carries its records, laid over these at start). A record is written after JetStream
//! acknowledged the events it reflects: a daemon killed in between sends those events again from
//! its outbox with the same ids, and JetStream drops them as duplicates (within the stream's
//! duplicate window).

use std::collections::BTreeMap;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use tracing::warn;

use crate::diff::{ProcessRecord, Snapshot};

/// Why the state bucket could not be opened or read; each keeps the NATS error.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot open the state bucket {bucket}: {source}")]
    Open {
        bucket: String,
        source: async_nats::Error,
    },
    #[error("cannot read the state bucket {bucket}: {source}")]
    Read {
        bucket: String,
        source: async_nats::Error,
    },
}

/// The per-process records of one process-compose instance (`source`) in a KV bucket.
pub struct StateStore {
    store: kv::Store,
    bucket: String,
    /// Keys of this source start with it; several daemons may share a bucket.
    prefix: String,
    /// Records that failed to save; retried with the next save.
    unsaved: BTreeMap<String, Option<ProcessRecord>>,
}

impl StateStore {
    /// Opens (or creates) `bucket` with `replicas` replicas.
    pub async fn open(
        jetstream: &jetstream::Context,
        bucket: &str,
        replicas: usize,
        source: &str,
    ) -> Result<Self, StateError> {
        let open_error = |source: async_nats::Error| StateError::Open {
            bucket: bucket.to_owned(),
            source,
        };
        let store = match jetstream.get_key_value(bucket).await {
            Ok(store) => store,
            Err(_) => jetstream
                .create_key_value(kv::Config {
                    bucket: bucket.to_owned(),
                    description: "pc-eventd: last published state per process".into(),
                    history: 1,
                    num_replicas: replicas,
                    storage: jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| open_error(e.into()))?,
        };
        Ok(Self {
            store,
            bucket: bucket.to_owned(),
            prefix: format!("s_{}.", hex(source)),
            unsaved: BTreeMap::new(),
        })
    }

    /// Everything stored for this source.
    pub async fn load(&self) -> Result<Snapshot, StateError> {
        let read_error = |source: async_nats::Error| StateError::Read {
            bucket: self.bucket.clone(),
            source,
        };
        // (An empty bucket lists no keys: the stream of keys just ends.)
        let mut keys = self.store.keys().await.map_err(|e| read_error(e.into()))?;
        let mut records = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| read_error(e.into()))?;
            if !key.starts_with(&self.prefix) {
                continue;
            }
            let Some(value) = self
                .store
                .get(key.clone())
                .await
                .map_err(|e| read_error(e.into()))?
            else {
                continue;
            };
            match serde_json::from_slice::<ProcessRecord>(&value) {
                Ok(record) => records.push(record),
                // A record this build cannot read is treated as unknown: that process is
                // announced again, which JetStream deduplicates within its window.
                Err(err) => warn!(%key, error = %err, "ignoring an unreadable state record"),
            }
        }
        Ok(Snapshot::from_records(records))
    }

    /// Writes `records` (`None` deletes the process's record), several at a time: each key
    /// appears once, the newest record winning. Failures are logged and retried with the next
    /// save; the returned count says how many records could not be written.
    pub async fn save(&mut self, records: Vec<(String, Option<ProcessRecord>)>) -> usize {
        let mut all = std::mem::take(&mut self.unsaved);
        // A newer record replaces the one that failed.
        all.extend(records);
        let writes = all.into_iter().map(|(name, record)| {
            let key = format!("{}p_{}", self.prefix, hex(&name));
            let store = &self.store;
            async move {
                let result = match &record {
                    Some(record) => {
                        let value = serde_json::to_vec(&record).expect("records always serialize");
                        store
                            .put(&key, value.into())
                            .await
                            .map(drop)
                            .map_err(|e| e.to_string())
                    }
                    None => store.delete(&key).await.map_err(|e| e.to_string()),
                };
                (name, record, result)
            }
        });
        let results: Vec<_> = futures::stream::iter(writes)
            .buffer_unordered(SAVES_IN_FLIGHT)
            .collect()
            .await;
        for (name, record, result) in results {
            if let Err(err) = result {
                warn!(process = %name, error = %err, "cannot save the process state; will retry");
                self.unsaved.insert(name, record);
            }
        }
        self.unsaved.len()
    }
}

/// Record writes in flight at once: a project start saves a record per process.
const SAVES_IN_FLIGHT: usize = 64;

/// Hex of `text`: KV keys allow only `[-/_=.a-zA-Z0-9]`, and names may hold anything.
fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}
