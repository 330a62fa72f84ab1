//! The ledger's writer: one round at a time per instance, each applying every change asked
//! for meanwhile (results handled, records updated) and storing every start, each row written
//! once. Everything that writes the ledger goes through [`write`].

use futures_util::future::join;

use super::dispatch::{batches, dispatch_all, forget_queued, name_job, send_unawaited};
use super::ledger::{self, body_key, row_key, Change, Op, PendingRecord, Row, Start, INLINE_BODY};
use super::{Held, ProxyFetchOrigin, SETTLING};
use crate::rpc::log_error;
use crate::system::batch::{self, add_to_group, Answer};
use crate::system::concurrent;
use crate::system::protocol::FetchJob;
use crate::system::{random_hex, ProxyFetchError};

/// The record of request `id`, if it is pending here.
pub(super) async fn find<O: ProxyFetchOrigin>(
    origin: &O,
    id: &str,
) -> Result<Option<PendingRecord>, worker::Error> {
    find_with(origin, id, PendingRecord::clone).await
}

/// `f` of the record of request `id`, if it is pending here (what a caller needs of it,
/// without a copy of the whole record).
pub(super) async fn find_with<O: ProxyFetchOrigin, T>(
    origin: &O,
    id: &str,
    f: impl Fn(&PendingRecord) -> T,
) -> Result<Option<T>, worker::Error> {
    if Held::is_held(&SETTLING, origin, id) {
        return Ok(None);
    }
    ledger::read(origin.state(), &row_key(id), |row| row.get(id).map(&f)).await
}

/// Queues `op` for the origin's ledger writer (see [`super::ledger`]) and returns its answer.
pub(super) async fn write<O: ProxyFetchOrigin, R>(
    origin: &O,
    op: Op,
    answer: Answer<R>,
) -> Option<R> {
    let object = ledger::instance(origin.state());
    ledger::submit(&object, op, answer, |ops| round(origin, ops)).await
}

/// Changes (`Some`) or deletes (`None`) the record of request `id`.
pub(super) async fn change<O: ProxyFetchOrigin>(
    origin: &O,
    id: &str,
    record: Option<PendingRecord>,
) -> Result<(), String> {
    submit_change(origin, id, record, None).await.map(|_| ())
}

/// Replaces the record of request `id` with `record` only if it is still `read` (what the
/// caller read before it awaited anything): `Ok(false)` when another change overtook it, which
/// the caller must not undo.
pub(super) async fn change_from<O: ProxyFetchOrigin>(
    origin: &O,
    id: &str,
    read: &PendingRecord,
    record: PendingRecord,
) -> Result<bool, String> {
    submit_change(origin, id, Some(record), Some(read.clone())).await
}

async fn submit_change<O: ProxyFetchOrigin>(
    origin: &O,
    id: &str,
    record: Option<PendingRecord>,
    expect: Option<PendingRecord>,
) -> Result<bool, String> {
    let (reply, answer) = batch::reply();
    let change = Change {
        id: id.to_owned(),
        record,
        expect,
        reply,
    };
    write(origin, Op::Change(Box::new(change)), answer)
        .await
        .unwrap_or_else(|| Err("the ledger's writer stopped".into()))
}

/// How long a round that would only delete a row waits for a start to write that row
/// instead ([`Host`]): an origin that starts its next request as soon as a result came (from
/// the handler, say) writes one row per request, not two. The delivery waiting meanwhile keeps
/// the origin in memory (billed as duration) for at most this long, and is answered only once
/// the record is gone, as always.
pub(super) const LINGER_MS: u64 = 100;

/// One round of the ledger's writer: the changes, then the starts, each row written once.
async fn round<O: ProxyFetchOrigin>(origin: &O, ops: Vec<Op>) {
    let mut ops = ops;
    if empties_own_row(origin, &ops) {
        // Settled while the round lingers: not found, though still in storage. Only requests
        // of shared rows, whose ids are never given again (a caller's id may be started again
        // meanwhile: it must be found until its record is gone).
        let settling: Vec<Held> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Change(change) if row_key(&change.id).ends_with('~') => {
                    Held::take(&SETTLING, origin, &change.id)
                }
                _ => None,
            })
            .collect();
        ops.extend(ledger::linger(origin.state(), LINGER_MS).await);
        // From here the round writes at once: found again until it has.
        drop(settling);
    }
    let mut starts = Vec::new();
    let mut changes: Vec<(String, Vec<Change>)> = Vec::new();
    for op in ops {
        match op {
            Op::Start(start) => starts.push(*start),
            Op::Change(change) => add_to_group(&mut changes, row_key(&change.id), *change),
        }
    }
    let host = if starts.is_empty() {
        None
    } else {
        take_host(origin, &mut changes)
    };
    let changed = concurrent::all(
        changes
            .into_iter()
            .map(|(key, changes)| apply(origin, key, changes)),
        usize::MAX,
    );
    join(changed, start_all(origin, starts, host)).await;
}

/// Applies `changes` to row `key` and answers them.
async fn apply<O: ProxyFetchOrigin>(origin: &O, key: String, changes: Vec<Change>) {
    let edits = changes
        .iter()
        .map(|c| (c.id.as_str(), c.record.as_ref(), c.expect.as_ref()))
        .collect::<Vec<_>>();
    let done = edit_row(origin, &key, &edits).await;
    for (change, made) in changes.into_iter().zip(done.made) {
        change.reply.send(done.written.clone().map(|()| made));
    }
}

/// Whether `ops` only delete records, and empty a row this instance named with it (one new
/// requests may be written into).
fn empties_own_row<O: ProxyFetchOrigin>(origin: &O, ops: &[Op]) -> bool {
    let mut removed: Vec<(String, Vec<&str>)> = Vec::new();
    for op in ops {
        match op {
            Op::Change(change) if change.record.is_none() => {
                add_to_group(&mut removed, row_key(&change.id), change.id.as_str())
            }
            _ => return false,
        }
    }
    removed.iter().any(|(key, ids)| {
        ledger::cached(origin.state(), key, |row| {
            row.next().is_some()
                && ids.iter().filter(|id| row.get(id).is_some()).count() == row.len()
        })
        .unwrap_or(false)
    })
}

/// A row that this round's changes only delete records from, and that the round's starts are
/// written into: one write for both.
pub(super) struct Host {
    key: String,
    /// The row as the changes leave it.
    row: Row,
    changes: Vec<Change>,
    /// Bodies kept apart from the records the changes delete.
    bodies: Vec<String>,
}

impl Host {
    fn open(&self) -> ledger::OpenRow {
        ledger::OpenRow {
            name: self
                .key
                .strip_prefix(ledger::LEDGER)
                .unwrap_or(&self.key)
                .to_owned(),
            next: self.row.next().unwrap_or(0),
            len: self.row.len(),
            bytes: self.row.bytes(),
        }
    }
}

/// Takes out of `changes` a row they only delete from, named by this instance and cached,
/// as the host of the round's starts (the one with the fewest records left).
fn take_host<O: ProxyFetchOrigin>(
    origin: &O,
    changes: &mut Vec<(String, Vec<Change>)>,
) -> Option<Host> {
    let (i, row) = changes
        .iter()
        .enumerate()
        .filter(|(_, (_, group))| {
            group
                .iter()
                .all(|c| c.record.is_none() && c.expect.is_none())
        })
        .filter_map(|(i, (key, group))| {
            let row = ledger::cached(origin.state(), key, |row| {
                let mut row = row.clone();
                row.next()?;
                let mut bodies = Vec::new();
                for change in group {
                    if row.remove(&change.id).is_some_and(|gone| gone.body_apart) {
                        bodies.push(body_key(&change.id));
                    }
                }
                Some((row, bodies))
            })??;
            Some((i, row))
        })
        .min_by_key(|(_, (row, _))| row.len())?;
    let (key, changes_of_row) = changes.remove(i);
    let (row, bodies) = row;
    Some(Host {
        key,
        row,
        changes: changes_of_row,
        bodies,
    })
}

/// A change to the record of a request: `Some` replaces it, `None` deletes it; the third, when
/// set, is the record the change was made from (made only if that is still the one stored).
pub(super) type Edit<'a> = (
    &'a str,
    Option<&'a PendingRecord>,
    Option<&'a PendingRecord>,
);

/// What [`edit_row`] did: whether the row was written, and for each edit whether it was made.
pub(super) struct Edited {
    pub written: Result<(), String>,
    pub made: Vec<bool>,
}

/// Applies `edits` to row `key`: `Some` replaces a record still there, `None` deletes it.
pub(super) async fn edit_row<O: ProxyFetchOrigin>(
    origin: &O,
    key: &str,
    edits: &[Edit<'_>],
) -> Edited {
    // Bodies kept apart from the records removed here go after the row is written.
    let bodies = std::cell::RefCell::new(Vec::new());
    let made = std::cell::RefCell::new(vec![false; edits.len()]);
    let written = ledger::edit(origin.state(), key, |row| {
        let mut changed = false;
        let mut made = made.borrow_mut();
        for (i, (id, record, expect)) in edits.iter().enumerate() {
            if let Some(expect) = expect {
                if row.get(id) != Some(*expect) {
                    continue;
                }
            }
            let done = match record {
                None => row
                    .remove(id)
                    .inspect(|gone| {
                        if gone.body_apart {
                            bodies.borrow_mut().push(body_key(id));
                        }
                    })
                    .is_some(),
                Some(record) => row
                    .get_mut(id)
                    .map(|slot| *slot = (*record).clone())
                    .is_some(),
            };
            if let Some(slot) = made.get_mut(i) {
                *slot = done;
            }
            changed |= done;
        }
        changed
    })
    .await;
    if written.is_ok() {
        delete_bodies(origin, bodies.into_inner()).await;
    }
    Edited {
        written,
        made: made.into_inner(),
    }
}

/// Deletes the bodies kept apart from records that are gone. A body left behind is storage
/// kept for nothing, never a request: logged, not failed.
async fn delete_bodies<O: ProxyFetchOrigin>(origin: &O, bodies: Vec<String>) {
    if bodies.is_empty() {
        return;
    }
    if let Err(e) = origin
        .state()
        .storage()
        .delete_multiple(bodies.clone())
        .await
    {
        log_error(&format!(
            "proxy-fetch: request bodies {bodies:?} not removed: {e}"
        ));
    }
}

/// Stores new requests, their rows written side by side, and sends their jobs out, the
/// executor's in calls of up to [`MAX_JOBS_PER_CALL`]; then answers each start.
async fn start_all<O: ProxyFetchOrigin>(origin: &O, starts: Vec<Start>, host: Option<Host>) {
    if starts.is_empty() {
        return;
    }
    let rows = ledger::into_rows(starts, host.as_ref().map(Host::open), || random_hex(16));
    // A host no start fitted in is changed on its own.
    let host = match host {
        Some(host) if !rows.iter().any(|r| r.key == host.key) => {
            apply(origin, host.key, host.changes).await;
            None
        }
        host => host,
    };
    let mut stored: Vec<(String, Row)> = Vec::new();
    let mut jobs: Vec<FetchJob> = Vec::new();
    let mut replies = Vec::new();
    // Bodies kept apart from their records: the index of their row in `stored`, key, bytes.
    let mut apart: Vec<(usize, String, js_sys::Uint8Array)> = Vec::new();
    let mut due = f64::INFINITY;
    for ledger::NewRow { key, next, members } in rows {
        let mut row = match &host {
            Some(host) if host.key == key => host.row.clone(),
            _ => Row::new(),
        };
        if let Some(next) = next {
            row.set_next(next);
        }
        for (id, start) in members {
            let Start {
                mut record, reply, ..
            } = start;
            name_job(&mut record.job, &id);
            due = due.min(record.due_ms);
            // Neither flow sends a request twice that may not be resent (the orchestrator's
            // `recover` does not queue it again): its record need not keep the body, which goes
            // with the job uncopied.
            // The long path keeps every body: a body too large for a message is claimed from
            // the record, and a job never claimed is sent again whatever its method.
            let keep_body = record.job.may_resend() || record.job.options.is_long();
            let body = record.job.request.body.take();
            match body.as_ref().filter(|_| keep_body) {
                Some(b) if b.len() > INLINE_BODY => {
                    apart.push((
                        stored.len(),
                        body_key(&id),
                        js_sys::Uint8Array::from(&b[..]),
                    ));
                    record.body_apart = true;
                }
                Some(b) => record.job.request.body = Some(b.clone()),
                None => {}
            }
            let mut job = record.job.clone();
            job.request.body = body;
            row.insert(id.clone(), record);
            jobs.push(job);
            replies.push((id, stored.len(), reply));
        }
        stored.push((key, row));
    }
    // Send the jobs while the rows are written: a write holds back every message sent after
    // it until it is on disk (the output gate), and the executor need not wait for that. The
    // rows are in storage before any result can arrive: their writes are issued first, in
    // this same turn, before the Durable Object takes another event.
    let mut deleted = host;
    let written = async {
        let bodies = apart.iter().map(|(row, key, body)| async move {
            let put = origin.state().storage().put_raw(key, body.clone()).await;
            (*row, put.map_err(|e| e.to_string()))
        });
        let rows = stored
            .iter()
            .map(|(key, row)| ledger::insert(origin.state(), key, row.clone()));
        let (bodies, puts) = join(
            concurrent::all(bodies, usize::MAX),
            concurrent::all(rows, usize::MAX),
        )
        .await;
        // The host's changes are done when its row is written.
        if let Some(host) = deleted.take() {
            let put = stored
                .iter()
                .position(|(key, _)| *key == host.key)
                .and_then(|i| puts.get(i).cloned())
                .unwrap_or_else(|| Err("the row was not written".into()));
            if put.is_ok() {
                delete_bodies(origin, host.bodies).await;
            }
            for change in host.changes {
                change.reply.send(put.clone().map(|()| true));
            }
        }
        // The rows whose starts' bodies were not stored: those starts failed too.
        let unstored: Vec<(usize, String)> = bodies
            .into_iter()
            .filter_map(|(row, put)| put.err().map(|e| (row, e)))
            .collect();
        let armed = ledger::arm(origin.state(), O::OWN_ALARM, due).await;
        (puts, unstored, armed)
    };
    let env = origin.env();
    let (calls, call_of) = batches(jobs);
    // The executor's jobs go once their records are on disk, on their own (`send_unawaited`):
    // a start is answered then, and the origin's alarm is the backstop of a job the executor
    // does not take. The orchestrator's and the queue's calls go while the rows are written
    // (the output gate holds them until they are on disk) and are awaited: a start fails when
    // they fail, with nothing left behind.
    let mut unawaited = Vec::new();
    let calls: Vec<Option<Vec<FetchJob>>> = calls
        .into_iter()
        .map(|jobs| {
            if jobs.first().is_some_and(|job| job.options.to_executor()) {
                unawaited.extend(jobs);
                None
            } else {
                Some(jobs)
            }
        })
        .collect();
    let sent = calls.into_iter().map(|call| async move {
        match call {
            Some(jobs) => dispatch_all(env, jobs).await,
            None => Ok(()),
        }
    });
    let sent = concurrent::all(sent, usize::MAX);
    let ((puts, unstored, armed), sent) = join(written, sent).await;
    // How each start went (in the order of `replies`, as `call_of` is). A failed one is
    // forgotten: its record goes, so a result that comes anyway is dropped.
    let outcomes: Vec<Result<(), ProxyFetchError>> = replies
        .iter()
        .zip(&call_of)
        .map(|((_, row, _), &call)| {
            match sent.get(call) {
                Some(Ok(())) => {}
                Some(Err(e)) => return Err(e.clone()),
                None => return Err(ProxyFetchError::storage("the job was not sent")),
            }
            if let Some((_, e)) = unstored.iter().find(|(r, _)| r == row) {
                return Err(ProxyFetchError::storage(format!(
                    "a request's body was not stored: {e}"
                )));
            }
            // Its job went out and its record is stored: it is started, whether or not its
            // alarm could be set (logged below; the next start or sweep sets it).
            match puts.get(*row) {
                Some(Ok(())) => Ok(()),
                Some(Err(e)) => Err(ProxyFetchError::storage(e)),
                None => Err(ProxyFetchError::storage("the row was not written")),
            }
        })
        .collect();
    // Only the jobs of requests started: a start that fails sends nothing.
    let started: Vec<&str> = replies
        .iter()
        .zip(&outcomes)
        .filter(|(_, outcome)| outcome.is_ok())
        .map(|((id, _, _), _)| id.as_str())
        .collect();
    unawaited.retain(|job| started.contains(&job.id.as_str()));
    if !unawaited.is_empty() {
        send_unawaited(origin, unawaited);
    }
    // Bodies stored for rows that were not: no record names them, so nothing else removes them.
    let orphans: Vec<String> = apart
        .iter()
        .filter(|(row, _, _)| !matches!(puts.get(*row), Some(Ok(()))))
        .map(|(_, key, _)| key.clone())
        .collect();
    delete_bodies(origin, orphans).await;
    if let Err(e) = &armed {
        log_error(&format!(
            "proxy-fetch: the origin's alarm was not set for new requests: {e}"
        ));
    }
    let mut forgotten: Vec<(&str, Vec<Edit>)> = Vec::new();
    for ((id, row, _), outcome) in replies.iter().zip(&outcomes) {
        let written = matches!(puts.get(*row), Some(Ok(())));
        if outcome.is_err() && written {
            if let Some((key, _)) = stored.get(*row) {
                add_to_group(&mut forgotten, key.as_str(), (id.as_str(), None, None));
            }
        }
    }
    // A failed start whose record cannot be removed is a started request after all: the
    // backstop takes it over (dispatches it again, or tells its handler), so its start answers
    // `Ok`, and `Err` keeps meaning that no handler will run.
    let mut kept: Vec<&str> = Vec::new();
    for (key, edits) in forgotten {
        if let Err(e) = edit_row(origin, key, &edits).await.written {
            log_error(&format!(
                "proxy-fetch: failed starts' records could not be removed ({e}); the backstop \
                 takes their requests over"
            ));
            kept.extend(edits.iter().map(|(id, _, _)| *id));
        }
    }
    let kept: Vec<String> = kept.into_iter().map(str::to_owned).collect();
    for (((id, row, reply), outcome), &call) in replies.into_iter().zip(outcomes).zip(&call_of) {
        let answer = match outcome {
            Ok(()) => Ok(id),
            Err(_) if kept.contains(&id) => Ok(id),
            Err(e) => {
                if matches!(sent.get(call), Some(Ok(()))) {
                    // Queued, but its start failed: the orchestrator need not watch it.
                    if let Some(record) = stored.get(row).and_then(|(_, r)| r.get(&id)) {
                        forget_queued(env, record).await;
                    }
                }
                Err(e)
            }
        };
        reply.send(answer);
    }
    // The starts are answered once their rows are written, before they are on disk: the output
    // gate holds each answer, and every job sent, until they are. The writer takes no new
    // round until they are on disk, so the starts that come meanwhile share the next round's
    // rows and calls (group commit); no start, this round's leader included, waits for that.
    let hold = ledger::hold_writer(origin.state());
    let storage = origin.state().storage();
    origin.state().wait_until(async move {
        if let Err(e) = storage.sync().await {
            log_error(&format!(
                "proxy-fetch: the origin's writes were not synced: {e}"
            ));
        }
        drop(hold);
    });
}
