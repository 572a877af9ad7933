//! The control stream in Redis: a writer task that appends this shard's
//! control events, and a reader task that follows the stream from the last id
//! it has seen, across disconnects and Redis restarts.
//!
//! Entries are `epoch`, `shard` and `event` (the `ControlEvent` as JSON).
//! JSON, not bincode, because shards of two versions read one stream during a
//! rolling upgrade: JSON names its variants and fields, so an event a shard
//! does not know is refused and skipped, where a positional encoding would be
//! misread as another event. Control events are rare and small, so the size
//! does not matter, and `XRANGE meridian:control - +` is readable by an operator.
//!
//! The *epoch* is a random value kept in `meridian:control:epoch`, created by
//! the same script that appends, so it exists exactly when the stream has
//! been written to, and it is lost together with the stream. It tells a
//! reader whether the stream it finds after a reconnect is the one it was
//! reading:
//! * same epoch (Redis stayed up, or came back from its own persistence): go
//!   on from the last id. Entries appended since get ids from Redis's clock,
//!   above every id restored.
//! * another epoch, or none (Redis came back empty, or the keys were flushed):
//!   every entry in this stream was written after the one we read was lost, so
//!   read it from `0-0`. Comparing ids alone cannot tell this case, because
//!   the new stream's ids are not ordered with the old ones (another host's
//!   clock, or an id given explicitly).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::streams::StreamReadReply;
use redis::AsyncConnectionConfig;
use tokio::sync::{broadcast, mpsc};

use super::redis::{Backoff, Shared, CALL_TIMEOUT, CONNECT_TIMEOUT};
use super::ControlEvent;

/// The control stream.
pub const STREAM_KEY: &str = "meridian:control";

/// The stream's epoch (see the module documentation).
pub const EPOCH_KEY: &str = "meridian:control:epoch";

/// About how many entries the stream keeps (`MAXLEN ~`): days of control
/// events, and a bound on Redis memory whatever happens.
const MAXLEN: usize = 100_000;

/// How long one `XREAD` waits for entries. Between waits the reader checks the
/// stream's epoch, so a stream replaced while the connection stayed up is
/// noticed within this time.
const BLOCK: Duration = Duration::from_secs(5);

/// Most entries taken by one `XREAD`.
const READ_COUNT: usize = 256;

/// Most events appended by one pipelined round trip.
const WRITE_BATCH: usize = 64;

/// How long the writer may spend on its last attempt during shutdown.
const FINAL_WRITE: Duration = Duration::from_secs(2);

/// Append one event, creating the epoch together with the stream. A script,
/// so that no entry can exist without an epoch.
const APPEND: &str = r"
redis.call('SET', KEYS[2], ARGV[1], 'NX')
local epoch = redis.call('GET', KEYS[2])
return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*',
    'epoch', epoch, 'shard', ARGV[3], 'event', ARGV[4])
";

/// The epoch and the id of the last entry, read together.
const POSITION: &str = r"
local epoch = redis.call('GET', KEYS[2])
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local id = false
if last[1] then id = last[1][1] end
return {epoch, id}
";

/// Where a reader is in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The epoch of the stream being read; `None` while it has none.
    epoch: Option<String>,
    /// The id of the last entry read (or skipped, at startup).
    last_id: String,
}

impl Cursor {
    /// The stream's current end: only entries appended from now on are read.
    fn at_end(epoch: Option<String>, last: Option<String>) -> Self {
        Self {
            epoch,
            last_id: last.unwrap_or_else(|| "0-0".into()),
        }
    }

    /// Entries appended since `started_at_ms`, for a bus that started while
    /// Redis did not answer: ids are Redis's clock in ms, so this reads what
    /// was appended after the bus started, the shard's own queued events
    /// included, within the clocks' difference.
    fn since(epoch: Option<String>, started_at_ms: i64) -> Self {
        Self {
            epoch,
            last_id: format!("{}-0", started_at_ms.max(0)),
        }
    }

    /// Follow the stream as it now is: the same one goes on from the last id,
    /// a new one (another epoch, or none) is read from its start.
    fn resync(&mut self, epoch: Option<String>) {
        if epoch != self.epoch {
            tracing::info!("the control stream was replaced (Redis restarted empty?); reading the new one from its start");
            self.epoch = epoch;
            self.last_id = "0-0".into();
        }
    }
}

/// Read the stream's epoch and last id.
pub async fn position(
    connection: &mut impl redis::aio::ConnectionLike,
) -> redis::RedisResult<(Option<String>, Option<String>)> {
    redis::cmd("EVAL")
        .arg(POSITION)
        .arg(2)
        .arg(STREAM_KEY)
        .arg(EPOCH_KEY)
        .query_async(connection)
        .await
}

/// The stream's current end, `$` resolved to a concrete id, so a reader that
/// reconnects later misses nothing appended in between.
pub async fn current_end(connection: &mut ConnectionManager) -> redis::RedisResult<Cursor> {
    let (epoch, last) = tokio::time::timeout(CALL_TIMEOUT, position(connection))
        .await
        .map_err(|_| timed_out())??;
    Ok(Cursor::at_end(epoch, last))
}

fn timed_out() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))
}

/// Append queued events until stopped. A batch that fails is retried, in
/// order, with backoff, while new events wait in the bounded queue (where the
/// sender counts what does not fit); on stop, what is queued gets one last try.
pub async fn write(
    shared: Arc<Shared>,
    mut connection: ConnectionManager,
    mut outbox: mpsc::Receiver<ControlEvent>,
) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    let mut backoff = Backoff::default();
    let mut failing = false;
    loop {
        if batch.is_empty() {
            tokio::select! {
                received = outbox.recv_many(&mut batch, WRITE_BATCH) => {
                    if received == 0 {
                        return;
                    }
                }
                () = shared.stop.cancelled() => break,
            }
        }
        match tokio::time::timeout(CALL_TIMEOUT, append(&mut connection, &shared, &batch)).await {
            Ok(Ok(())) => {
                shared
                    .counters
                    .sent
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                batch.clear();
                backoff.reset();
                if std::mem::take(&mut failing) {
                    tracing::info!("control events reach Redis again");
                }
            }
            result => {
                if !failing {
                    failing = true;
                    let error = match result {
                        Ok(Err(error)) => error.to_string(),
                        _ => "timed out".into(),
                    };
                    tracing::warn!(%error, queued = batch.len() + outbox.len(),
                        "cannot append control events to Redis; retrying");
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                    () = shared.stop.cancelled() => break,
                }
            }
        }
    }
    // Stopping: one last try for what is queued, then count the rest as dropped.
    outbox.close();
    while let Ok(event) = outbox.try_recv() {
        batch.push(event);
    }
    if batch.is_empty() {
        return;
    }
    match tokio::time::timeout(FINAL_WRITE, append(&mut connection, &shared, &batch)).await {
        Ok(Ok(())) => {
            shared
                .counters
                .sent
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
        _ => {
            shared
                .counters
                .dropped
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            tracing::warn!(
                dropped = batch.len(),
                "control events not appended before shutdown"
            );
        }
    }
}

/// Append a batch in one round trip. Not atomic: after a failure part of it
/// may be in the stream, and the retry appends it again. Events are delivered
/// at least once, and applying one twice does no harm (a revoked session or a
/// kicked player is gone already; areas are reloaded again).
async fn append(
    connection: &mut ConnectionManager,
    shared: &Shared,
    batch: &[ControlEvent],
) -> redis::RedisResult<()> {
    let mut pipeline = redis::pipe();
    for event in batch {
        let json = serde_json::to_string(event).expect("control events serialise");
        pipeline
            .cmd("EVAL")
            .arg(APPEND)
            .arg(2)
            .arg(STREAM_KEY)
            .arg(EPOCH_KEY)
            .arg(&shared.token)
            .arg(MAXLEN)
            .arg(&shared.shard_id)
            .arg(json)
            .ignore();
    }
    pipeline.query_async(connection).await
}

/// Follow the stream and forward every event, this shard's own included,
/// until stopped. `cursor` is where to start (`None`: Redis did not answer at
/// startup; see `Cursor::since`). The connection is this task's own, because a blocking
/// `XREAD` holds up every other command on its connection.
pub async fn read(
    shared: Arc<Shared>,
    client: redis::Client,
    control: broadcast::Sender<ControlEvent>,
    mut cursor: Option<Cursor>,
) {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(BLOCK + CALL_TIMEOUT));
    let mut backoff = Backoff::default();
    let mut connected_before = false;
    let mut failing = false;
    loop {
        let attempt = async {
            let mut connection = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            let (epoch, last) = position(&mut connection).await?;
            redis::RedisResult::Ok((connection, epoch, last))
        };
        let result = tokio::select! {
            result = attempt => result,
            () = shared.stop.cancelled() => return,
        };
        let mut connection = match result {
            Ok((connection, epoch, _)) => {
                match &mut cursor {
                    Some(cursor) => cursor.resync(epoch),
                    None => cursor = Some(Cursor::since(epoch, shared.started_at_ms)),
                }
                if connected_before {
                    shared.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                if std::mem::take(&mut failing) {
                    tracing::info!("control stream reconnected");
                }
                connected_before = true;
                backoff.reset();
                connection
            }
            Err(error) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(%error, "cannot reach Redis for control events; retrying");
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff.next_delay()) => continue,
                    () = shared.stop.cancelled() => return,
                }
            }
        };
        let cursor = cursor.as_mut().expect("resolved on connecting");
        let error = loop {
            let read = tokio::select! {
                read = next_entries(&mut connection, &cursor.last_id) => read,
                () = shared.stop.cancelled() => return,
            };
            match read {
                Ok(Some(reply)) => forward(&shared, &control, cursor, reply),
                Ok(None) => match position(&mut connection).await {
                    Ok((epoch, _)) => cursor.resync(epoch),
                    Err(error) => break error,
                },
                Err(error) => break error,
            }
        };
        failing = true;
        tracing::warn!(%error, "control stream disconnected; reconnecting");
        // A pause before reconnecting, so a Redis that drops every connection
        // is not hammered.
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            () = shared.stop.cancelled() => return,
        }
    }
}

/// Wait up to `BLOCK` for entries after `last_id`; `None` if none came.
async fn next_entries(
    connection: &mut MultiplexedConnection,
    last_id: &str,
) -> redis::RedisResult<Option<StreamReadReply>> {
    redis::cmd("XREAD")
        .arg("COUNT")
        .arg(READ_COUNT)
        .arg("BLOCK")
        .arg(u64::try_from(BLOCK.as_millis()).unwrap_or(u64::MAX))
        .arg("STREAMS")
        .arg(STREAM_KEY)
        .arg(last_id)
        .query_async(connection)
        .await
}

/// Decode and broadcast the entries, moving the cursor past each.
fn forward(
    shared: &Shared,
    control: &broadcast::Sender<ControlEvent>,
    cursor: &mut Cursor,
    reply: StreamReadReply,
) {
    for entry in reply.keys.into_iter().flat_map(|key| key.ids) {
        cursor.last_id.clone_from(&entry.id);
        // An entry read from a stream that replaced ours while the connection
        // stayed up carries the new epoch: adopt it, so that the next check
        // does not take the stream for new again.
        if let Some(epoch) = entry.get::<String>("epoch") {
            cursor.epoch = Some(epoch);
        }
        let event = entry
            .get::<String>("event")
            .and_then(|json| serde_json::from_str::<ControlEvent>(&json).ok());
        let Some(event) = event else {
            // Written by a newer shard, or by hand: skipped, not fatal.
            tracing::warn!(id = %entry.id, "control event not understood; skipped");
            continue;
        };
        shared.counters.received.fetch_add(1, Ordering::Relaxed);
        // No subscriber means no shard state that could need the event.
        let _ = control.send(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_epoch_restarts_the_cursor_and_the_same_one_keeps_it() {
        let mut cursor = Cursor::at_end(Some("a".into()), Some("10-1".into()));
        cursor.resync(Some("a".into()));
        assert_eq!(cursor.last_id, "10-1");
        cursor.resync(None);
        assert_eq!(
            (cursor.epoch.as_deref(), cursor.last_id.as_str()),
            (None, "0-0")
        );
        cursor.last_id = "5-0".into();
        cursor.resync(Some("b".into()));
        assert_eq!(
            (cursor.epoch.as_deref(), cursor.last_id.as_str()),
            (Some("b"), "0-0")
        );
        assert_eq!(Cursor::at_end(None, None).last_id, "0-0");
    }
}
