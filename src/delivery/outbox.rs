//! The outbox: every event goes to disk before it goes to NATS, so a NATS outage (or a daemon
//! killed in the middle of one) delays events instead of losing them.
//!
//! Layout, in `{state_dir}/outbox/{source}/`:
//! - `NNNNNNNNNNNNNNNN.log`: segments of JSON lines, one [`Entry`] per line (the messages of
//!   one observation and the process records they leave behind), appended in order;
//! - `acked`: the index of the last entry JetStream acknowledged (written with a rename, so it
//!   is always whole);
//! - `lost`: the open loss episode, while the outbox is full (see [`Loss`]);
//! - `lock`: held by the running daemon, so two daemons never share an outbox.
//!
//! Crash safety: an entry is written with one `write` before the daemon moves on, so a crash
//! of the daemon (even `kill -9`) loses nothing: the kernel has the bytes. What a power cut or a
//! kernel crash can cost depends on `fsync_interval`: the entries written since the last
//! `fdatasync` (at most that long ago; `0s` syncs every entry). A line cut short by the crash
//! is found and cut off at the next start. Entries at or below `acked` are never sent again;
//! those after it are, with their original ids, and JetStream drops the ones it already has.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use pc_eventd_events::publish::Message;
use serde::{Deserialize, Serialize};
use tracing::{error, warn};

use crate::diff::ProcessRecord;

/// A segment past this size is closed and a new one started, so acknowledged entries can be
/// deleted a file at a time.
const SEGMENT_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "outbox {0} is in use by another pc-eventd (each process-compose instance needs its own daemon)"
    )]
    Locked(PathBuf),
}

/// What one observation leaves to publish: its messages, and the records of the processes it
/// changed (`None`: the process is gone), saved to the state store once the messages are in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub index: u64,
    pub messages: Vec<Message>,
    pub records: Vec<(String, Option<ProcessRecord>)>,
}

/// Events dropped because the outbox was full, from the first drop until a loss marker could
/// be queued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Loss {
    pub lost: u64,
    pub first_lost_at: SystemTime,
    pub last_lost_at: SystemTime,
}

/// What [`Outbox::push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Stored,
    /// The outbox is full: the entry's events were dropped and added to the loss episode.
    Dropped,
}

/// Makes the loss marker of an episode.
pub type LossMarker = Box<dyn Fn(&Loss) -> Message + Send>;

/// The on-disk queue of entries not yet acknowledged by JetStream.
pub struct Outbox {
    dir: PathBuf,
    loss_marker: LossMarker,
    max_bytes: u64,
    fsync_interval: Duration,
    /// Held open for its lock.
    _lock: File,
    /// The segment being appended to, its number and size.
    segment: File,
    segment_number: u64,
    segment_bytes: u64,
    /// Closed segments with the index of their last entry, oldest first.
    closed: VecDeque<(PathBuf, u64)>,
    /// Unacknowledged entries with their size on disk, oldest first (shared with the relay
    /// while it publishes them).
    pending: VecDeque<(Arc<Entry>, u64)>,
    pending_bytes: u64,
    pending_messages: usize,
    next_index: u64,
    /// Written since the last fdatasync.
    unsynced: bool,
    last_sync: Instant,
    loss: Option<Loss>,
}

impl Outbox {
    /// Opens (creating) the outbox in `dir`, taking its lock and reading back what a previous
    /// run left unacknowledged.
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        fsync_interval: Duration,
        loss_marker: LossMarker,
    ) -> Result<Self, OutboxError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let lock = lock_dir(dir)?;
        let acked = read_acked(dir).map_err(io(&dir.join("acked")))?;
        let segments = list_segments(dir)?;
        let Unacked {
            pending,
            closed,
            last_index,
        } = read_unacked(&segments, acked)?;
        let segment_number = segments.last().map_or(0, |(n, _)| n + 1);
        let segment_path = segment_file(dir, segment_number);
        let segment = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&segment_path)
            .map_err(io(&segment_path))?;
        let loss = read_loss(dir);
        let mut outbox = Self {
            dir: dir.to_owned(),
            loss_marker,
            max_bytes,
            fsync_interval,
            _lock: lock,
            segment,
            segment_number,
            segment_bytes: 0,
            closed,
            pending_bytes: pending.iter().map(|(_, size)| size).sum(),
            pending_messages: pending.iter().map(|(e, _)| e.messages.len()).sum(),
            pending,
            next_index: last_index + 1,
            unsynced: false,
            last_sync: Instant::now(),
            loss,
        };
        outbox.delete_acked_segments(acked);
        Ok(outbox)
    }

    /// The records of every unacknowledged entry, oldest first: laid over the state store's,
    /// they are what the last run had observed.
    pub fn pending_records(&self) -> impl Iterator<Item = &(String, Option<ProcessRecord>)> {
        self.pending.iter().flat_map(|(e, _)| &e.records)
    }

    /// Appends an observation's messages, unless the outbox is full. Events that cannot be
    /// stored (full, or a write error) join the loss episode.
    pub fn push(
        &mut self,
        messages: Vec<Message>,
        records: Vec<(String, Option<ProcessRecord>)>,
    ) -> Result<Pushed, OutboxError> {
        if messages.is_empty() && records.is_empty() {
            return Ok(Pushed::Stored);
        }
        let lost = messages.len() as u64;
        let entry = Entry {
            index: self.next_index,
            messages,
            records,
        };
        let line = encode(&entry);
        let stored = self.close_loss_episode().and_then(|()| {
            if self.loss.is_some() || self.pending_bytes + line.len() as u64 > self.max_bytes {
                return Ok(false);
            }
            self.append(entry, line).map(|()| true)
        });
        if let Ok(true) = stored {
            return Ok(Pushed::Stored);
        }
        let now = SystemTime::now();
        let loss = self.loss.get_or_insert(Loss {
            lost: 0,
            first_lost_at: now,
            last_lost_at: now,
        });
        loss.lost += lost;
        loss.last_lost_at = now;
        let loss = loss.clone();
        stored?;
        self.write_loss(Some(&loss))?;
        Ok(Pushed::Dropped)
    }

    /// Up to `max_messages` messages' worth of the oldest entries after index `after` (those
    /// up to it are published already), at least one entry.
    pub fn peek_after(&self, after: Option<u64>, max_messages: usize) -> Vec<Arc<Entry>> {
        let mut taken = 0;
        self.pending
            .iter()
            .skip_while(|(e, _)| after.is_some_and(|after| e.index <= after))
            .take_while(|(e, _)| {
                let first = taken == 0;
                taken += e.messages.len();
                first || taken <= max_messages
            })
            .map(|(e, _)| Arc::clone(e))
            .collect()
    }

    /// Forgets every entry up to `index`: JetStream has their messages.
    pub fn ack(&mut self, index: u64) -> Result<(), OutboxError> {
        while self.pending.front().is_some_and(|(e, _)| e.index <= index) {
            let (entry, size) = self.pending.pop_front().expect("checked");
            self.pending_bytes -= size;
            self.pending_messages -= entry.messages.len();
        }
        self.delete_acked_segments(index);
        self.close_loss_episode()?;
        if self.pending.is_empty() {
            // Everything is acknowledged: empty the open segment instead of moving the cursor
            // (the usual case while NATS is up, one call instead of a file replaced). A cursor
            // left behind is harmless: it is below every index that comes later.
            if self.segment_bytes > 0 {
                let path = segment_file(&self.dir, self.segment_number);
                self.segment
                    .set_len(0)
                    .map_err(|source| OutboxError::Io { path, source })?;
                self.segment_bytes = 0;
            }
            return Ok(());
        }
        let path = self.dir.join("acked");
        write_atomically(&path, index.to_string().as_bytes(), self.must_sync())
            .map_err(|source| OutboxError::Io { path, source })
    }

    /// Flushes written entries to the disk if the fsync interval has passed.
    pub fn sync_due(&mut self) -> Result<(), OutboxError> {
        if self.unsynced && self.last_sync.elapsed() >= self.fsync_interval {
            self.sync()?;
        }
        Ok(())
    }

    /// Flushes written entries to the disk now.
    pub fn sync(&mut self) -> Result<(), OutboxError> {
        if self.unsynced {
            let path = segment_file(&self.dir, self.segment_number);
            self.segment
                .sync_data()
                .map_err(|source| OutboxError::Io { path, source })?;
            self.unsynced = false;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Messages waiting for JetStream.
    pub fn pending_messages(&self) -> usize {
        self.pending_messages
    }

    pub fn pending_bytes(&self) -> u64 {
        self.pending_bytes
    }

    /// The open loss episode, if events are being dropped.
    pub fn loss(&self) -> Option<&Loss> {
        self.loss.as_ref()
    }

    /// Queues the marker of the open loss episode, if there is one and room for it.
    fn close_loss_episode(&mut self) -> Result<(), OutboxError> {
        let Some(loss) = &self.loss else {
            return Ok(());
        };
        let entry = Entry {
            index: self.next_index,
            messages: vec![(self.loss_marker)(loss)],
            records: Vec::new(),
        };
        let line = encode(&entry);
        if self.pending_bytes + line.len() as u64 > self.max_bytes {
            return Ok(());
        }
        error!(
            lost = loss.lost,
            since = %pc_eventd_events::event::timestamp(loss.first_lost_at),
            "the outbox has room again: queued a loss marker for the events it had to drop"
        );
        self.append(entry, line)?;
        self.loss = None;
        self.write_loss(None)
    }

    fn append(&mut self, entry: Entry, line: Vec<u8>) -> Result<(), OutboxError> {
        if self.segment_bytes >= SEGMENT_BYTES {
            self.roll()?;
        }
        let path = || segment_file(&self.dir, self.segment_number);
        self.segment
            .write_all(&line)
            .map_err(|source| OutboxError::Io {
                path: path(),
                source,
            })?;
        self.unsynced = true;
        if self.must_sync() {
            self.sync()?;
        }
        let size = line.len() as u64;
        self.segment_bytes += size;
        self.pending_bytes += size;
        self.pending_messages += entry.messages.len();
        self.next_index = entry.index + 1;
        self.pending.push_back((Arc::new(entry), size));
        Ok(())
    }

    /// Closes the open segment and starts the next.
    fn roll(&mut self) -> Result<(), OutboxError> {
        self.sync()?;
        let next = self.segment_number + 1;
        let path = segment_file(&self.dir, next);
        let segment = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| OutboxError::Io { path, source })?;
        let closed = segment_file(&self.dir, self.segment_number);
        self.closed.push_back((closed, self.next_index - 1));
        self.segment = segment;
        self.segment_number = next;
        self.segment_bytes = 0;
        Ok(())
    }

    /// Deletes closed segments whose entries are all acknowledged.
    fn delete_acked_segments(&mut self, acked: u64) {
        while let Some((path, last)) = self.closed.front() {
            if *last > acked {
                break;
            }
            if let Err(err) = fs::remove_file(path)
                && err.kind() != std::io::ErrorKind::NotFound
            {
                warn!(path = %path.display(), error = %err, "cannot delete an acknowledged outbox segment");
                break;
            }
            self.closed.pop_front();
        }
    }

    fn must_sync(&self) -> bool {
        self.fsync_interval.is_zero()
    }

    fn write_loss(&self, loss: Option<&Loss>) -> Result<(), OutboxError> {
        let path = self.dir.join("lost");
        let result = match loss {
            Some(loss) => write_atomically(
                &path,
                &serde_json::to_vec(loss).expect("a loss serializes"),
                self.must_sync(),
            ),
            None => fs::remove_file(&path).or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            }),
        };
        result.map_err(|source| OutboxError::Io { path, source })
    }
}

fn segment_file(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:016}.log"))
}

fn encode(entry: &Entry) -> Vec<u8> {
    let mut line = serde_json::to_vec(entry).expect("entries always serialize");
    line.push(b'\n');
    line
}

/// The entries of one segment with their sizes. A line that does not decode (cut short by a
/// crash, or damaged) ends the segment: it and what follows are cut off, and said so.
fn read_segment(path: &Path) -> std::io::Result<Vec<(Entry, u64)>> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut entries = Vec::new();
    let mut good: u64 = 0;
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = reader.read_until(b'\n', &mut line)?;
        if read == 0 {
            return Ok(entries);
        }
        let decoded = line
            .strip_suffix(b"\n")
            .and_then(|json| serde_json::from_slice::<Entry>(json).ok());
        let Some(entry) = decoded else {
            let total = fs::metadata(path)?.len();
            warn!(
                path = %path.display(),
                cut_bytes = total - good,
                "outbox segment ends in a damaged or unfinished entry (a crash while writing?): cut off"
            );
            OpenOptions::new().write(true).open(path)?.set_len(good)?;
            return Ok(entries);
        };
        good += read as u64;
        entries.push((entry, read as u64));
    }
}

/// A mapper from an I/O error on `path` to [`OutboxError::Io`].
fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OutboxError {
    let path = path.to_owned();
    move |source| OutboxError::Io { path, source }
}

/// Takes the directory's lock: one daemon per outbox.
fn lock_dir(dir: &Path) -> Result<File, OutboxError> {
    let lock_path = dir.join("lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io(&lock_path))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(fs::TryLockError::WouldBlock) => Err(OutboxError::Locked(dir.to_owned())),
        Err(fs::TryLockError::Error(source)) => Err(io(&lock_path)(source)),
    }
}

/// The segment files (`N.log`), by number.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, OutboxError> {
    let mut segments: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let number = path
                .file_name()?
                .to_str()?
                .strip_suffix(".log")?
                .parse()
                .ok()?;
            Some((number, path))
        })
        .collect();
    segments.sort();
    Ok(segments)
}

/// What the segments hold past the acknowledged index.
struct Unacked {
    /// The entries after `acked`, with their sizes, oldest first.
    pending: VecDeque<(Arc<Entry>, u64)>,
    /// Every segment read, with the index of its last entry.
    closed: VecDeque<(PathBuf, u64)>,
    /// The highest index written so far.
    last_index: u64,
}

/// Reads `segments` and keeps the entries after `acked`.
fn read_unacked(segments: &[(u64, PathBuf)], acked: u64) -> Result<Unacked, OutboxError> {
    let mut unacked = Unacked {
        pending: VecDeque::new(),
        closed: VecDeque::new(),
        last_index: acked,
    };
    for (_, path) in segments {
        let entries = read_segment(path).map_err(io(path))?;
        let segment_last = entries.last().map_or(unacked.last_index, |(e, _)| e.index);
        unacked.last_index = unacked.last_index.max(segment_last);
        unacked.pending.extend(
            entries
                .into_iter()
                .filter(|(e, _)| e.index > acked)
                .map(|(e, size)| (Arc::new(e), size)),
        );
        unacked.closed.push_back((path.clone(), segment_last));
    }
    Ok(unacked)
}

fn read_acked(dir: &Path) -> std::io::Result<u64> {
    match fs::read_to_string(dir.join("acked")) {
        Ok(text) => Ok(text.trim().parse().unwrap_or_else(|_| {
            warn!(dir = %dir.display(), "unreadable outbox cursor: sending the whole outbox again");
            0
        })),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(err) => Err(err),
    }
}

fn read_loss(dir: &Path) -> Option<Loss> {
    let bytes = fs::read(dir.join("lost")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Replaces `path` whole: a crash leaves the old content or the new, never a mix.
fn write_atomically(path: &Path, content: &[u8], sync: bool) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(content)?;
    if sync {
        file.sync_data()?;
    }
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: String) -> Box<serde_json::value::RawValue> {
        serde_json::value::RawValue::from_string(json).unwrap()
    }

    fn message(n: u64) -> Message {
        Message {
            subject: format!("core.process.default.p{n}.started"),
            id: format!("id-{n}"),
            kind: "started".into(),
            payload: raw(format!("{{\"n\":{n}}}")),
        }
    }

    fn marker(loss: &Loss) -> Message {
        Message {
            subject: "core.process._pc-eventd.test.events_lost".into(),
            id: format!("lost-{}", loss.lost),
            kind: "events_lost".into(),
            payload: raw(format!("{{\"lost\":{}}}", loss.lost)),
        }
    }

    fn ids(entries: &[Arc<Entry>]) -> Vec<String> {
        entries
            .iter()
            .flat_map(|e| e.messages.iter().map(|m| m.id.clone()))
            .collect()
    }

    fn open(dir: &Path, max_bytes: u64) -> Outbox {
        Outbox::open(dir, max_bytes, Duration::ZERO, Box::new(marker)).expect("open")
    }

    #[test]
    fn unacknowledged_entries_survive_a_restart_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = open(dir.path(), 1 << 20);
        for n in 1..=3 {
            outbox.push(vec![message(n)], vec![]).unwrap();
        }
        outbox.ack(1).unwrap();
        drop(outbox);

        let mut outbox = open(dir.path(), 1 << 20);
        assert_eq!(ids(&outbox.peek_after(None, 100)), ["id-2", "id-3"]);
        assert_eq!(outbox.pending_messages(), 2);
        outbox.push(vec![message(4)], vec![]).unwrap();
        let entries = outbox.peek_after(None, 100);
        assert_eq!(
            entries.iter().map(|e| e.index).collect::<Vec<_>>(),
            [2, 3, 4],
            "indexes continue"
        );
        outbox.ack(4).unwrap();
        drop(outbox);
        let outbox = open(dir.path(), 1 << 20);
        assert!(outbox.peek_after(None, 100).is_empty());
        assert_eq!(outbox.pending_bytes(), 0);
    }

    #[test]
    fn a_line_cut_short_by_a_crash_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = open(dir.path(), 1 << 20);
        outbox.push(vec![message(1)], vec![]).unwrap();
        outbox.push(vec![message(2)], vec![]).unwrap();
        drop(outbox);
        let segment = segment_file(dir.path(), 0);
        let mut file = OpenOptions::new().append(true).open(&segment).unwrap();
        file.write_all(b"{\"index\":3,\"messages\":[{\"sub")
            .unwrap();
        drop(file);

        let mut outbox = open(dir.path(), 1 << 20);
        assert_eq!(ids(&outbox.peek_after(None, 100)), ["id-1", "id-2"]);
        outbox.push(vec![message(3)], vec![]).unwrap();
        drop(outbox);
        let outbox = open(dir.path(), 1 << 20);
        assert_eq!(ids(&outbox.peek_after(None, 100)), ["id-1", "id-2", "id-3"]);
    }

    #[test]
    fn a_full_outbox_drops_counts_and_queues_one_marker_when_room_returns() {
        let dir = tempfile::tempdir().unwrap();
        let one = encode(&Entry {
            index: 1,
            messages: vec![message(1)],
            records: vec![],
        })
        .len() as u64;
        let max_bytes = one * 3 + 8;
        let mut outbox = open(dir.path(), max_bytes);
        for n in 1..=5 {
            let pushed = outbox.push(vec![message(n)], vec![]).unwrap();
            assert_eq!(pushed == Pushed::Stored, n <= 3, "entry {n}");
        }
        assert_eq!(outbox.loss().map(|l| l.lost), Some(2));
        // The episode survives a restart.
        drop(outbox);
        let mut outbox = open(dir.path(), max_bytes);
        assert_eq!(outbox.loss().map(|l| l.lost), Some(2));
        assert_eq!(
            outbox.push(vec![message(6)], vec![]).unwrap(),
            Pushed::Dropped,
            "still full"
        );

        // Acknowledging makes room: the marker goes in before anything else.
        outbox.ack(3).unwrap();
        outbox.push(vec![message(7)], vec![]).unwrap();
        assert_eq!(ids(&outbox.peek_after(None, 100)), ["lost-3", "id-7"]);
        assert!(outbox.loss().is_none());
        assert!(!dir.path().join("lost").exists());
    }

    #[test]
    fn the_marker_goes_in_when_it_fits_exactly_beside_what_waits() {
        let dir = tempfile::tempdir().unwrap();
        let line = |n: u64| {
            encode(&Entry {
                index: n,
                messages: vec![message(n)],
                records: vec![],
            })
            .len() as u64
        };
        let marker_line = encode(&Entry {
            index: 3,
            messages: vec![marker(&Loss {
                lost: 1,
                first_lost_at: SystemTime::UNIX_EPOCH,
                last_lost_at: SystemTime::UNIX_EPOCH,
            })],
            records: vec![],
        })
        .len() as u64;
        let mut outbox = open(dir.path(), line(1) + line(2) + marker_line);
        outbox.push(vec![message(1)], vec![]).unwrap();
        outbox.push(vec![message(2)], vec![]).unwrap();
        let big = Message {
            payload: raw(format!("\"{}\"", "x".repeat(1024))),
            ..message(9)
        };
        assert_eq!(outbox.push(vec![big], vec![]).unwrap(), Pushed::Dropped);
        // the loss file may be gone (cleaned by hand): closing the episode does not mind
        fs::remove_file(dir.path().join("lost")).unwrap();
        outbox.ack(0).unwrap();
        assert_eq!(
            ids(&outbox.peek_after(None, 100)),
            ["id-1", "id-2", "lost-1"]
        );
        assert!(outbox.loss().is_none());
    }

    #[test]
    fn acknowledged_segments_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = open(dir.path(), u64::MAX);
        let big = Message {
            payload: raw(format!("\"{}\"", "x".repeat(1024 * 1024))),
            ..message(0)
        };
        for _ in 0..13 {
            outbox.push(vec![big.clone()], vec![]).unwrap();
        }
        let segments = || {
            fs::read_dir(dir.path())
                .unwrap()
                .filter(|e| e.as_ref().unwrap().path().extension() == Some("log".as_ref()))
                .count()
        };
        // 4 MiB a segment: four entries of 1 MiB fill one past its size
        assert_eq!(segments(), 4);
        // acknowledging the first segment's last entry frees it, and no more
        outbox.ack(3).unwrap();
        assert_eq!(segments(), 4);
        outbox.ack(4).unwrap();
        assert_eq!(segments(), 3);
        // a segment already gone does not stop the next from being deleted
        fs::remove_file(segment_file(dir.path(), 1)).unwrap();
        outbox.ack(12).unwrap();
        assert_eq!(segments(), 1);
        outbox.ack(13).unwrap();
        assert_eq!(segments(), 1, "only the open segment is left");
        assert_eq!(
            fs::metadata(segment_file(dir.path(), outbox.segment_number))
                .unwrap()
                .len(),
            0
        );
    }

    #[test]
    fn a_reopened_outbox_writes_a_segment_of_its_own() {
        // Acknowledging what an earlier run left must not delete what this run wrote.
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = open(dir.path(), 1 << 20);
        outbox.push(vec![message(1)], vec![]).unwrap();
        drop(outbox);
        let mut outbox = open(dir.path(), 1 << 20);
        outbox.push(vec![message(2)], vec![]).unwrap();
        outbox.ack(1).unwrap();
        drop(outbox);
        let outbox = open(dir.path(), 1 << 20);
        assert_eq!(ids(&outbox.peek_after(None, 100)), ["id-2"]);
    }

    #[test]
    fn the_records_of_pending_entries_are_kept_until_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = open(dir.path(), 1 << 20);
        outbox
            .push(vec![message(1)], vec![("web".into(), None)])
            .unwrap();
        outbox
            .push(vec![message(2)], vec![("api".into(), None)])
            .unwrap();
        outbox.ack(1).unwrap();
        drop(outbox);
        let outbox = open(dir.path(), 1 << 20);
        let names: Vec<_> = outbox
            .pending_records()
            .map(|(name, _)| name.as_str())
            .collect();
        assert_eq!(names, ["api"]);
    }

    #[test]
    fn an_entry_that_exactly_fills_the_outbox_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let line = encode(&Entry {
            index: 1,
            messages: vec![message(1)],
            records: vec![],
        });
        let mut outbox = open(dir.path(), line.len() as u64);
        assert_eq!(
            outbox.push(vec![message(1)], vec![]).unwrap(),
            Pushed::Stored
        );
        assert_eq!(outbox.pending_bytes(), line.len() as u64);
        assert_eq!(
            outbox.push(vec![message(2)], vec![]).unwrap(),
            Pushed::Dropped
        );
    }

    #[test]
    fn a_cursor_that_cannot_be_read_fails_the_open() {
        // (a missing cursor is "nothing acknowledged"; an unreadable one is an error to report,
        // not a reason to send everything again)
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("acked")).unwrap();
        let opened = Outbox::open(dir.path(), 1 << 20, Duration::ZERO, Box::new(marker));
        assert!(matches!(opened, Err(OutboxError::Io { .. })));
    }

    #[test]
    fn two_daemons_cannot_share_an_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let _first = open(dir.path(), 1 << 20);
        let second = Outbox::open(dir.path(), 1 << 20, Duration::ZERO, Box::new(marker));
        assert!(matches!(second, Err(OutboxError::Locked(_))));
    }

    #[test]
    fn peek_takes_whole_entries_up_to_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = open(dir.path(), 1 << 20);
        outbox
            .push(vec![message(1), message(2), message(3)], vec![])
            .unwrap();
        outbox.push(vec![message(4)], vec![]).unwrap();
        assert_eq!(
            outbox.peek_after(None, 2).len(),
            1,
            "the first entry even past the limit"
        );
        assert_eq!(outbox.peek_after(None, 4).len(), 2);
        // after the first entry: only the second
        assert_eq!(ids(&outbox.peek_after(Some(1), 100)), ["id-4"]);
        assert!(outbox.peek_after(Some(2), 100).is_empty());
    }

    #[test]
    fn acknowledging_counts_down_what_waits() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = open(dir.path(), 1 << 20);
        outbox.push(vec![message(1), message(2)], vec![]).unwrap();
        outbox.push(vec![message(3)], vec![]).unwrap();
        let last = encode(&outbox.peek_after(Some(1), 100)[0]).len() as u64;
        assert_eq!(outbox.pending_messages(), 3);
        outbox.ack(1).unwrap();
        assert_eq!(outbox.pending_messages(), 1);
        assert_eq!(outbox.pending_bytes(), last);
        outbox.ack(2).unwrap();
        assert_eq!((outbox.pending_messages(), outbox.pending_bytes()), (0, 0));
    }
}
