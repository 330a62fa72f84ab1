//! The origin's ledger: a record per request from its start until its handler ran, kept so
//! that requests started together cost one row write, not one each.
//!
//! Row `proxy-fetch:request:<name>` maps request ids to their records. Requests proxy-fetch
//! names share rows: a row named `<random>~` holds the requests `<random>~0`, `<random>~1`,
//! ... that started together. A request started with a caller's `request_id` has a row of
//! its own, named by the id (caller ids cannot contain `~`, so the two kinds never meet).
//!
//! Every write goes through one writer per Durable Object ([`submit`]): what is asked while
//! it writes waits for its next round, and a round applies every change to a row and writes it
//! once. So two changes to one row never race, and a burst of starts or results costs a few
//! writes.
//!
//! The rows an instance read or wrote stay decoded in its memory ([`read`], [`edit`]): a
//! result finds its record without decoding the row it shares, and a round encodes each row it
//! writes once. The cache belongs to one instance of the Durable Object (a new instance, e.g.
//! after a failed write reset it, starts empty) and is dropped whenever a write fails.

use serde::{Deserialize, Serialize};
use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;

use wasm_bindgen::JsValue;
use worker::State;

use crate::rpc::log_error;
use crate::system::batch::{Answer, Batcher, Hold, Reply};
use crate::system::protocol::{row_name, same_secret, FetchJob};
use crate::system::storage;
use crate::system::{now_ms, ProxyFetchError, RequestId};

pub(super) const LEDGER: &str = "proxy-fetch:request:";
/// Where a body kept apart from its record is stored (not under [`LEDGER`], so listing the
/// ledger does not load it).
const BODIES: &str = "proxy-fetch:body:";
/// A body the record keeps is kept in its row up to this size, apart from it beyond.
pub(super) const INLINE_BODY: usize = 16 * 1024;

/// The key of request `id`'s body, when it is kept apart from its record.
pub(super) fn body_key(id: &str) -> String {
    format!("{BODIES}{id}")
}
/// A row holds at most this many requests...
pub(super) const ROW_RECORDS: usize = 32;
/// ...and about this many bytes of them (a request larger than this has a row to itself).
pub(super) const ROW_BYTES: usize = 64 * 1024;

/// A request waiting for its result.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct PendingRecord {
    pub handler: String,
    pub data: serde_json::Value,
    pub created_ms: f64,
    /// When the origin's alarm acts on the request if no result came.
    pub due_ms: f64,
    /// Times the job went to an executor (direct flow).
    pub dispatches: u32,
    /// Times the handler was started for this request without finishing (crashed instance).
    pub handler_runs: u32,
    /// The job as sent; its body is dropped when the request may not be sent again, and kept
    /// apart (`body_apart`) when it is larger than [`INLINE_BODY`].
    pub job: FetchJob,
    /// The job's body is stored under [`body_key`], not in the row: listing or reading the
    /// ledger never loads a large body, only sending the job again does.
    #[serde(default)]
    pub body_apart: bool,
    /// Long path: times a queue consumer claimed the request (`__proxyFetchClaim`).
    #[serde(default)]
    pub claims: u32,
    /// Long path: when the last claim was made (ms).
    #[serde(default)]
    pub claimed_ms: Option<f64>,
}

impl PendingRecord {
    /// About how many bytes the record takes in a row, and in memory. A body in the row is
    /// stored as JSON numbers, up to 4 bytes each ([`encode`]).
    pub fn bytes(&self) -> usize {
        let body = self.job.request.body.as_ref().map_or(0, |b| b.len());
        self.job.weight() + 3 * body + json_len(&self.data)
    }
}

/// The length of `value` as JSON text, counted without building the text.
fn json_len(value: &serde_json::Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to `Count` cannot fail, nor can writing a `Value`.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// One ledger row: the records of the requests in it, by id, in the order of their ids.
///
/// Encoded as a `BTreeMap<RequestId, PendingRecord>` is (a map, in that order), but kept as
/// a sorted `Vec`: a row holds at most [`ROW_RECORDS`] records, and a map type of its own
/// costs several KiB of Wasm. Stored as that map's JSON text, or as a JS `Map` when the text
/// would be too large ([`encode`]); decoded from either (earlier builds stored every row as a
/// `Map`, and a row may outlive a deploy).
#[derive(Clone, Default)]
pub(super) struct Row {
    records: Vec<Entry>,
    /// For a shared row this instance named: the number its next request gets (numbers are
    /// never given twice, so a late result for a settled request never meets a new one). Not
    /// stored: a row read from storage is not given new requests.
    next: Option<usize>,
}

#[derive(Clone)]
struct Entry {
    id: RequestId,
    record: PendingRecord,
    /// The record's JSON text, once the row was encoded with it: a row is written again at
    /// each change, and only the records changed since are encoded again.
    text: OnceCell<Rc<str>>,
}

impl Entry {
    fn new(id: RequestId, record: PendingRecord) -> Self {
        Entry {
            id,
            record,
            text: OnceCell::new(),
        }
    }
}

impl Row {
    pub fn new() -> Self {
        Row::default()
    }

    fn position(&self, id: &str) -> Result<usize, usize> {
        self.records.binary_search_by(|e| e.id.as_str().cmp(id))
    }

    pub fn get(&self, id: &str) -> Option<&PendingRecord> {
        let i = self.position(id).ok()?;
        self.records.get(i).map(|e| &e.record)
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut PendingRecord> {
        let i = self.position(id).ok()?;
        self.records.get_mut(i).map(|e| {
            e.text.take();
            &mut e.record
        })
    }

    /// Adds the record of `id`, or replaces it.
    pub fn insert(&mut self, id: RequestId, record: PendingRecord) {
        match self.position(&id) {
            Ok(i) => {
                if let Some(slot) = self.records.get_mut(i) {
                    *slot = Entry::new(id, record);
                }
            }
            Err(i) => self.records.insert(i, Entry::new(id, record)),
        }
    }

    pub fn remove(&mut self, id: &str) -> Option<PendingRecord> {
        let i = self.position(id).ok()?;
        Some(self.records.remove(i).record)
    }

    /// About how many bytes the row's records take.
    pub fn bytes(&self) -> usize {
        self.records.iter().map(|e| e.record.bytes()).sum()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The number the next request put in this row gets, if it may take new requests.
    pub fn next(&self) -> Option<usize> {
        self.next
    }

    pub fn set_next(&mut self, next: usize) {
        self.next = Some(next);
    }

    pub fn into_keys(self) -> impl Iterator<Item = RequestId> {
        self.records.into_iter().map(|e| e.id)
    }

    pub fn into_records(self) -> impl Iterator<Item = (RequestId, PendingRecord)> {
        self.records.into_iter().map(|e| (e.id, e.record))
    }

    /// The row's JSON text, as [`Serialize`] writes it, from the records' texts kept since the
    /// last encoding (each record changed since is encoded, and its text kept).
    fn json(&self) -> serde_json::Result<String> {
        let mut out = String::from("{");
        for (i, entry) in self.records.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&serde_json::to_string(&entry.id)?);
            out.push(':');
            let text = match entry.text.get() {
                Some(text) => text,
                None => {
                    let text: Rc<str> = serde_json::to_string(&entry.record)?.into();
                    entry.text.get_or_init(|| text)
                }
            };
            out.push_str(text);
        }
        out.push('}');
        Ok(out)
    }
}

impl Serialize for Row {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.records.iter().map(|e| (&e.id, &e.record)))
    }
}

impl<'de> Deserialize<'de> for Row {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RowVisitor;
        impl<'de> serde::de::Visitor<'de> for RowVisitor {
            type Value = Row;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map, or its JSON text")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Row, E> {
                parse(text).map_err(E::custom)
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Row, A::Error> {
                let mut row = Row::new();
                while let Some((id, record)) = map.next_entry()? {
                    row.insert(id, record);
                }
                Ok(row)
            }
        }
        deserializer.deserialize_any(RowVisitor)
    }
}

/// A row from its JSON text: the runtime's `JSON.parse`, then the decoder of JS values every
/// stored value goes through (serde_json's decoder would add about 40 KiB of Wasm for the
/// same types). Natively, for the tests, serde_json's.
#[cfg(target_arch = "wasm32")]
fn parse(text: &str) -> Result<Row, String> {
    let value = js_sys::JSON::parse(text).map_err(|e| format!("{e:?}"))?;
    serde_wasm_bindgen::from_value(value).map_err(|e| e.to_string())
}

#[cfg(not(target_arch = "wasm32"))]
fn parse(text: &str) -> Result<Row, String> {
    serde_json::from_str(text).map_err(|e| e.to_string())
}

/// A row as it is stored: its JSON text. One string for the runtime to store, where a JS
/// object built field by field from Wasm cost a string crossing per field and name, and a
/// structured clone of every object (about a tenth of a burst's CPU, re-encoded at each edit).
///
/// A row whose text would take more than [`TEXT_LIMIT`] bytes in storage is stored as the JS
/// `Map` earlier builds stored (bodies as bytes, each string apart), which every reader takes:
/// a key-value-backed Durable Object stores at most 128 KiB per value, and text is larger than
/// bytes (a body's byte up to 4 characters), or twice as large (below).
fn encode(row: &Row) -> Result<JsValue, String> {
    let text = row.json().map_err(|e| e.to_string())?;
    if stored_size(&text) <= TEXT_LIMIT {
        Ok(JsValue::from_str(&text))
    } else {
        serde_wasm_bindgen::to_value(row).map_err(|e| e.to_string())
    }
}

/// The most a row's text may take in storage (under the 128 KiB a value may take).
const TEXT_LIMIT: usize = 120 * 1024;

/// About how many bytes `text` takes in storage, at most: the runtime serializes a string of
/// characters up to U+00FF one byte each, any other string two bytes per UTF-16 unit (one
/// character past U+00FF doubles the whole string). A UTF-8 text has no more UTF-16 units than
/// bytes.
fn stored_size(text: &str) -> usize {
    if text.is_ascii() {
        text.len()
    } else {
        2 * text.len()
    }
}

/// The key of the row that holds request `id`.
pub(super) fn row_key(id: &str) -> String {
    format!("{LEDGER}{}", row_name(id))
}

/// The id of request `n` of the shared row named `row` (`row` ends in `~`).
pub(super) fn shared_id(row: &str, n: usize) -> RequestId {
    format!("{row}{n}")
}

/// A request to start: its record, with the job's id still to be given when `id` is `None`.
pub(super) struct Start {
    pub id: Option<RequestId>,
    pub record: PendingRecord,
    /// About how many bytes the record takes in its row.
    pub bytes: usize,
    pub reply: Reply<Result<RequestId, ProxyFetchError>>,
}

/// A change to a stored record: `Some` replaces it (if it is still there), `None` deletes it.
pub(super) struct Change {
    pub id: RequestId,
    pub record: Option<PendingRecord>,
    /// Only if the record stored is this one (what its maker read): a change made from a copy
    /// that another change overtook meanwhile is not made (the reply says `Ok(false)`).
    pub expect: Option<PendingRecord>,
    pub reply: Reply<Result<bool, String>>,
}

/// What the writer of an origin does in a round.
pub(super) enum Op {
    Start(Box<Start>),
    Change(Box<Change>),
}

/// Queues `op` for the next round of `object`'s writer and returns its answer (`None`: the
/// round dropped it unanswered). See [`Batcher::submit`] for who runs the rounds.
pub(super) async fn submit<R, F, Fut>(
    object: &str,
    op: Op,
    answer: Answer<R>,
    round: F,
) -> Option<R>
where
    F: Fn(Vec<Op>) -> Fut,
    Fut: Future<Output = ()>,
{
    let writer = with_object(object, |o| {
        o.writer
            .get_or_insert_with(|| Rc::new(Batcher::new()))
            .clone()
    });
    let answered = writer.submit(op, answer, round).await;
    if writer.is_idle() {
        with_object(object, |o| {
            if o.writer.as_ref().is_some_and(|w| Rc::ptr_eq(w, &writer)) {
                o.writer = None;
            }
        });
    }
    answered
}

/// For a round of `state`'s writer about to end: its next round waits until the returned hold
/// is dropped ([`Batcher::hold`]).
pub(super) fn hold_writer(state: &State) -> Option<Hold<Op>> {
    let object = instance(state);
    with_object(&object, |o| o.writer.as_ref().map(|w| w.hold()))
}

/// A shared row this instance named, which a round may add new requests to: its name
/// (ending in `~`), the number its next request gets, and its records after the round's
/// changes (count and bytes).
pub(super) struct OpenRow {
    pub name: String,
    pub next: usize,
    pub len: usize,
    pub bytes: usize,
}

/// Requests going into one row: its key, for a shared row the number its next request will
/// get, and the requests with their ids.
pub(super) struct NewRow {
    pub key: String,
    pub next: Option<usize>,
    pub members: Vec<(RequestId, Start)>,
}

/// For the round under way in `state`'s writer: waits until a start is queued, or `ms` have
/// passed, and takes into the round every op queued by then.
pub(super) async fn linger(state: &State, ms: u64) -> Vec<Op> {
    let object = instance(state);
    let Some(writer) = with_object(&object, |o| o.writer.clone()) else {
        return Vec::new();
    };
    let timer = worker::Delay::from(std::time::Duration::from_millis(ms));
    writer.linger(timer, |op| matches!(op, Op::Start(_))).await
}

/// Splits requests into rows and names them: a caller-named request alone, the others
/// together while the row holds fewer than [`ROW_RECORDS`] and about [`ROW_BYTES`], filling
/// `host` first when there is one (a row the round writes anyway). `new_row` makes a random
/// name for a shared row; a request that gets no row is answered with its error here.
pub(super) fn into_rows(
    starts: Vec<Start>,
    host: Option<OpenRow>,
    mut new_row: impl FnMut() -> Result<String, ProxyFetchError>,
) -> Vec<NewRow> {
    let mut rows: Vec<NewRow> = Vec::new();
    // The shared row being filled, and its index in `rows`.
    let mut open: Option<(OpenRow, usize)> = None;
    let mut host = host;
    for start in starts {
        if let Some(id) = start.id.clone() {
            rows.push(NewRow {
                key: row_key(&id),
                next: None,
                members: vec![(id, start)],
            });
            continue;
        }
        if let Some(host) = host.take() {
            rows.push(NewRow {
                key: format!("{LEDGER}{}", host.name),
                next: Some(host.next),
                members: Vec::new(),
            });
            open = Some((host, rows.len() - 1));
        }
        if let Some((row, i)) = &mut open {
            if row.len < ROW_RECORDS && row.bytes + start.bytes <= ROW_BYTES {
                if let Some(new) = rows.get_mut(*i) {
                    row.len += 1;
                    row.bytes += start.bytes;
                    new.members.push((shared_id(&row.name, row.next), start));
                    row.next += 1;
                    new.next = Some(row.next);
                    continue;
                }
            }
        }
        match new_row() {
            Ok(random) => {
                let name = format!("{random}~");
                let id = shared_id(&name, 0);
                let bytes = start.bytes;
                rows.push(NewRow {
                    key: format!("{LEDGER}{name}"),
                    next: Some(1),
                    members: vec![(id, start)],
                });
                open = Some((
                    OpenRow {
                        name,
                        next: 1,
                        len: 1,
                        bytes,
                    },
                    rows.len() - 1,
                ));
            }
            Err(e) => {
                start.reply.send(Err(e));
            }
        }
    }
    rows.retain(|row| !row.members.is_empty());
    rows
}

/// A cache that would take in more rows than this (deleted ones included), or more bytes
/// of rows than the next, drops what it holds first.
const CACHED_ROWS: usize = 4096;
const CACHED_BYTES: usize = 4 * 1024 * 1024;
/// All the caches of an isolate together hold at most about this many bytes: past it, the
/// other instances' caches are dropped (an isolate has 128 MB, shared by everything in it).
const ISOLATE_CACHED_BYTES: usize = 16 * 1024 * 1024;
/// An isolate keeps state for at most this many instances; past it, the state of those with
/// no write under way is dropped (their rows are read again when they need them).
const KEPT_OBJECTS: usize = 256;

#[derive(Default)]
struct Cache {
    /// The rows read or written, by key; an empty row is one known not to exist. Once a row
    /// is here, every write to it goes through here first.
    rows: HashMap<String, Row>,
    /// Counts the times the cache was dropped: a read begun before cannot fill it.
    generation: u64,
    /// Bytes of the rows taken in since it was last dropped. What edits remove is not taken
    /// off, so the memory the cache holds stays under [`CACHED_BYTES`].
    taken: usize,
}

impl Cache {
    /// Takes in `row` as row `key`, dropping what the cache holds first if the row would take
    /// it over its limits.
    fn take_in(&mut self, key: &str, row: Row) -> &mut Row {
        // Its records, and their JSON text once the row is written.
        let bytes = 2 * row.bytes();
        if self.rows.len() >= CACHED_ROWS || self.taken + bytes > CACHED_BYTES {
            self.drop_all();
        }
        self.taken += bytes;
        CACHED_ALL.with(|all| all.set(all.get() + bytes));
        let slot = self.rows.entry(key.to_owned()).or_default();
        *slot = row;
        slot
    }

    fn drop_all(&mut self) {
        self.rows.clear();
        CACHED_ALL.with(|all| all.set(all.get().saturating_sub(self.taken)));
        self.taken = 0;
        self.generation += 1;
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        CACHED_ALL.with(|all| all.set(all.get().saturating_sub(self.taken)));
    }
}

/// What an instance of a Durable Object keeps in this isolate.
struct Object {
    /// Which instance of the object (see [`instance`]).
    mark: String,
    /// Its ledger's writer, while it has work.
    writer: Option<Rc<Batcher<Op>>>,
    cache: Cache,
    /// The alarm time the instance last set or read, so that most starts need not read it.
    alarm: Option<f64>,
    /// Its requests started `LostOnCrash`, which only this memory holds.
    unrecorded: Unrecorded,
    /// Requests whose job the executor did not take after their start was answered, for the
    /// alarm ([`unsent`]).
    unsent: Vec<Unsent>,
}

impl Object {
    fn new(mark: &str) -> Self {
        Object {
            mark: mark.to_owned(),
            writer: None,
            cache: Cache::default(),
            alarm: None,
            unrecorded: Unrecorded::default(),
            unsent: Vec::new(),
        }
    }
}

/// The alarm time instance `object` last set or read ([`set_alarm`]).
fn alarm(object: &str) -> Option<f64> {
    with_object(object, |o| o.alarm)
}

/// Remembers the alarm time instance `object` set or read (`None`: it must read it).
pub(super) fn set_alarm(object: &str, at: Option<f64>) {
    with_object(object, |o| o.alarm = at);
}

/// Makes sure the origin's alarm fires no later than `at`. An origin with an alarm of its own
/// (`own_alarm`) may move it at any time, so its alarm is read rather than remembered.
pub(super) async fn arm(state: &State, own_alarm: bool, at: f64) -> worker::Result<()> {
    let object = instance(state);
    let known = if own_alarm { None } else { alarm(&object) };
    let set = storage::arm(&state.storage(), known, at).await?;
    set_alarm(&object, Some(set));
    Ok(())
}

/// A request whose job the executor did not take: its id, and the executor's refusal when it
/// refused the call (which sending it again would not change).
pub(super) type Unsent = (String, Option<String>);

/// Notes requests of this instance whose job the executor did not take (their starts were
/// answered already), for its alarm to act on ([`take_unsent`]). Forgotten with the instance:
/// then the backstop finds them at their due time, as if their executor was lost.
pub(super) fn unsent(state: &State, requests: Vec<Unsent>) {
    with_object(&instance(state), |o| o.unsent.extend(requests));
}

/// The requests [`unsent`] noted, taken.
pub(super) fn take_unsent(state: &State) -> Vec<Unsent> {
    with_object(&instance(state), |o| std::mem::take(&mut o.unsent))
}

thread_local! {
    /// By Durable Object id: what its current instance in this isolate keeps. One map, not one
    /// each for the writers, the caches and the alarm times, as each map type is more code in
    /// the Wasm.
    static OBJECTS: RefCell<HashMap<String, Object>> = RefCell::new(HashMap::new());
    /// Requests started `LostOnCrash` that the isolate's instances hold, and their bytes.
    static UNRECORDED_ALL: std::cell::Cell<(usize, usize)> = const { std::cell::Cell::new((0, 0)) };
    /// Bytes the caches of all instances took in ([`Cache::taken`], summed).
    static CACHED_ALL: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// Instances marked in this Wasm instance so far.
    static INSTANCES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// Random, so that marks made by an earlier Wasm instance (before a panic restarted it)
    /// never equal this one's.
    static PREFIX: String = format!("{:x}", (js_sys::Math::random() * 9_007_199_254_740_992.0) as u64);
}

/// Calls `f` with what `instance` keeps here. A newer instance of the object replaces an older
/// one's state; an older one (work left over from an instance that was reset) gets a scratch
/// state that is not kept.
///
/// The isolate's state stays bounded across instances: past [`KEPT_OBJECTS`] the state of
/// instances with no write under way goes, and past [`ISOLATE_CACHED_BYTES`] the other
/// instances' caches are dropped.
fn with_object<T>(instance: &str, f: impl FnOnce(&mut Object) -> T) -> T {
    let (id, mark) = instance.split_once('#').unwrap_or((instance, ""));
    OBJECTS.with(|o| {
        let mut objects = o.borrow_mut();
        if objects.len() >= KEPT_OBJECTS && !objects.contains_key(id) {
            objects.retain(|_, object| {
                object.writer.as_ref().is_some_and(|w| !w.is_idle())
                    || !object.unrecorded.is_empty()
                    || !object.unsent.is_empty()
            });
        }
        if CACHED_ALL.with(|all| all.get()) > ISOLATE_CACHED_BYTES {
            for (other, object) in objects.iter_mut() {
                if other != id {
                    object.cache.drop_all();
                }
            }
        }
        let object = objects
            .entry(id.to_owned())
            .or_insert_with(|| Object::new(mark));
        if object.mark != mark {
            if !newer(mark, &object.mark) {
                return f(&mut Object::new(mark));
            }
            *object = Object::new(mark);
        }
        f(object)
    })
}

/// Whether mark `a` names a later instance than mark `b` (marks are `<counter>.<prefix>`).
fn newer(a: &str, b: &str) -> bool {
    let parse = |m: &str| {
        m.split_once('.')
            .and_then(|(n, prefix)| Some((n.parse::<u64>().ok()?, prefix.to_owned())))
    };
    let ours = PREFIX.with(|p| p.clone());
    match (parse(a), parse(b)) {
        (Some((n, pa)), Some((m, pb))) if pa == pb => n > m,
        (Some((_, pa)), _) => pa == ours,
        (None, _) => false,
    }
}

/// Names this instance of the Durable Object: its id and a mark (`<id>#<mark>`). The name is
/// kept on its state object, so that a new instance in the same isolate does not see what an
/// old one kept, and so that naming it again, as every ledger call does, is one property read.
pub(super) fn instance(state: &State) -> String {
    const NAME: &str = "__proxyFetchInstance";
    let raw: &JsValue = state.as_raw().as_ref();
    let key = crate::rpc::js::name(NAME);
    let read = || {
        js_sys::Reflect::get(raw, &key)
            .ok()
            .and_then(|v| v.as_string())
    };
    if let Some(name) = read() {
        return name;
    }
    let n = INSTANCES.with(|c| {
        c.set(c.get() + 1);
        c.get()
    });
    let name = PREFIX.with(|p| format!("{}#{n}.{p}", state.id()));
    let _ = js_sys::Reflect::set(raw, &key, &JsValue::from_str(&name));
    // A state that keeps no name gets one name for all its instances (never one per call:
    // each instance must have one writer).
    read().unwrap_or_else(|| format!("{}#", state.id()))
}

/// Calls `f` with row `key` if this instance has it cached.
pub(super) fn cached<T>(state: &State, key: &str, f: impl FnOnce(&Row) -> T) -> Option<T> {
    let object = instance(state);
    with_object(&object, |o| o.cache.rows.get(key).map(f))
}

/// Calls `f` with row `key` (empty when there is none), read from storage unless cached.
pub(super) async fn read<T>(
    state: &State,
    key: &str,
    f: impl Fn(&mut Row) -> T,
) -> Result<T, worker::Error> {
    let object = instance(state);
    let cached =
        |f: &dyn Fn(&mut Row) -> T| with_object(&object, |o| o.cache.rows.get_mut(key).map(f));
    if let Some(t) = cached(&f) {
        return Ok(t);
    }
    let generation = with_object(&object, |o| o.cache.generation);
    let stored: Option<Row> = state.storage().get(key).await?;
    // Cached meanwhile (by a write): that is newer than what was read.
    if let Some(t) = cached(&f) {
        return Ok(t);
    }
    let mut row = stored.unwrap_or_default();
    with_object(&object, |o| {
        let cache = &mut o.cache;
        if cache.generation != generation {
            // Dropped meanwhile: what was read may predate a failed write. Not kept.
            return Ok(f(&mut row));
        }
        Ok(f(cache.take_in(key, row)))
    })
}

/// The writer's side: applies `f` to row `key` (read first if needed) and stores the row
/// (deleted once empty). Only a round may call it: writes to one row must not overlap.
pub(super) async fn edit(
    state: &State,
    key: &str,
    f: impl Fn(&mut Row) -> bool,
) -> Result<(), String> {
    // `f` says whether it changed the row; the encoding is taken in the same step.
    let encoded = read(state, key, |row| {
        if !f(row) {
            return Ok(None);
        }
        if row.is_empty() {
            Ok(Some(None))
        } else {
            encode(row).map(|v| Some(Some(v)))
        }
    })
    .await
    .map_err(|e| e.to_string())??;
    let storage = state.storage();
    let written = match encoded {
        None => return Ok(()),
        Some(None) => storage.delete(key).await.map(|_| ()),
        Some(Some(value)) => storage.put_raw(key, value).await,
    };
    written.map_err(|e| {
        forget(state);
        e.to_string()
    })
}

/// Stores a new row (the writer's side), cached from now on.
pub(super) async fn insert(state: &State, key: &str, row: Row) -> Result<(), String> {
    let value = encode(&row)?;
    let object = instance(state);
    with_object(&object, |o| {
        o.cache.take_in(key, row);
    });
    state.storage().put_raw(key, value).await.map_err(|e| {
        forget(state);
        e.to_string()
    })
}

/// Where a ledger row that cannot be decoded is set aside (by the sweep), under the rest of its
/// key: out of the ledger, so no sweep reads it again, and kept for whoever can repair it.
pub(super) const UNREADABLE: &str = "proxy-fetch:unreadable:";

/// A ledger row as read: its records, or, when it cannot be decoded, the stored value.
pub(super) type ReadRow = Result<Row, JsValue>;

/// Moves the undecodable row `key` (stored as `value`) aside to [`UNREADABLE`]; returns its new
/// key. Its requests' handlers cannot run: nothing in it can be read.
pub(super) async fn set_aside(state: &State, key: &str, value: JsValue) -> Result<String, String> {
    let aside = format!("{UNREADABLE}{}", key.strip_prefix(LEDGER).unwrap_or(key));
    let storage = state.storage();
    storage
        .put_raw(&aside, value)
        .await
        .map_err(|e| e.to_string())?;
    storage.delete(key).await.map_err(|e| e.to_string())?;
    Ok(aside)
}

/// The ledger's rows, a page at a time: each row's key and its records (`Err`: the row could
/// not be decoded, with its stored value).
pub(super) struct RowPages(storage::Pages);

impl RowPages {
    pub fn new() -> Self {
        RowPages(storage::Pages::new(LEDGER))
    }

    /// The next page of rows; `None` once all were read.
    pub async fn next(&mut self, state: &State) -> worker::Result<Option<Vec<(String, ReadRow)>>> {
        let Some(page) = self.0.next(&state.storage()).await? else {
            return Ok(None);
        };
        let rows = page.into_iter();
        Ok(Some(
            rows.map(|(key, value)| {
                let row = serde_wasm_bindgen::from_value(value.clone()).map_err(|_| value);
                (key, row)
            })
            .collect(),
        ))
    }
}

/// Drops what this instance cached: after a failed write, storage may hold either version.
pub(super) fn forget(state: &State) {
    let object = instance(state);
    with_object(&object, |o| o.cache.drop_all());
}

/// A request started [`Durability::LostOnCrash`](crate::system::Durability): what its
/// delivery needs, kept in its instance's memory only (no row, no alarm).
pub(super) struct Kept {
    pub handler: String,
    pub data: serde_json::Value,
    pub token: String,
    /// When a recorded request would be due for its backstop: with no result by then, the
    /// request is given up as lost (its executor was lost).
    pub due_ms: f64,
}

impl Kept {
    fn bytes(&self) -> usize {
        self.handler.len() + self.token.len() + json_len(&self.data) + 64
    }
}

/// At most this many `LostOnCrash` requests, of about this many bytes, wait for their result
/// in one isolate; a start beyond is refused.
pub(super) const UNRECORDED_REQUESTS: usize = 4096;
pub(super) const UNRECORDED_BYTES: usize = 8 * 1024 * 1024;

/// An instance's `LostOnCrash` requests. Counted isolate-wide while held.
#[derive(Default)]
struct Unrecorded(Vec<(RequestId, Kept)>);

impl Unrecorded {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Drops the requests past their due time, each with a log line: their results are lost.
    fn prune(&mut self, now: f64) {
        self.0.retain(|(id, kept)| {
            let due = kept.due_ms > now;
            if !due {
                Unrecorded::count(kept, -1);
                log_error(&format!(
                    "proxy-fetch {id}: a LostOnCrash request had no result by its due time (its \
                     executor was lost?); given up, no handler runs"
                ));
            }
            due
        });
    }

    fn count(kept: &Kept, sign: isize) {
        UNRECORDED_ALL.with(|all| {
            let (n, bytes) = all.get();
            all.set((
                n.saturating_add_signed(sign),
                bytes.saturating_add_signed(sign * kept.bytes() as isize),
            ))
        });
    }
}

impl Drop for Unrecorded {
    fn drop(&mut self) {
        for (_, kept) in &self.0 {
            Unrecorded::count(kept, -1);
        }
    }
}

/// Holds request `id` of this instance in memory until its result comes. Refused when the
/// isolate holds as many as it may.
pub(super) fn keep(state: &State, id: &str, kept: Kept) -> Result<(), ProxyFetchError> {
    let now = now_ms();
    let full = || {
        let (n, bytes) = UNRECORDED_ALL.with(|all| all.get());
        (n >= UNRECORDED_REQUESTS || bytes + kept.bytes() > UNRECORDED_BYTES).then_some((n, bytes))
    };
    if full().is_some() {
        // What every instance holds past its due time is given up first (an idle instance
        // does not look at its own).
        OBJECTS.with(|o| {
            for object in o.borrow_mut().values_mut() {
                object.unrecorded.prune(now);
            }
        });
    }
    if let Some((n, bytes)) = full() {
        return Err(ProxyFetchError::Rejected(format!(
            "{n} LostOnCrash requests ({bytes} bytes) already wait for their result in this \
             isolate (at most {UNRECORDED_REQUESTS}, {UNRECORDED_BYTES} bytes): start it \
             recorded, or later"
        )));
    }
    let object = instance(state);
    with_object(&object, |o| {
        o.unrecorded.prune(now_ms());
        Unrecorded::count(&kept, 1);
        o.unrecorded.0.push((id.to_owned(), kept));
    });
    Ok(())
}

/// What this instance holds of request `id` started `LostOnCrash`.
pub(super) enum Take {
    /// It was held, and now is not: its result goes to its handler.
    Taken(Kept),
    /// The token does not match: nothing changed.
    WrongToken,
    /// Not held: never started so here, delivered already, or started by an instance that is
    /// gone.
    NotHeld,
}

/// Takes request `id` out of this instance's memory, if `token` is its own (`None`: the origin
/// itself asks, as `cancel` does).
pub(super) fn take_kept(state: &State, id: &str, token: Option<&str>) -> Take {
    let object = instance(state);
    with_object(&object, |o| {
        o.unrecorded.prune(now_ms());
        let held = &mut o.unrecorded.0;
        let Some(i) = held.iter().position(|(held, _)| held == id) else {
            return Take::NotHeld;
        };
        match (token, held.get(i)) {
            (Some(token), Some((_, kept))) if !same_secret(token, &kept.token) => Take::WrongToken,
            _ => {
                let (_, kept) = held.swap_remove(i);
                Unrecorded::count(&kept, -1);
                Take::Taken(kept)
            }
        }
    })
}

/// Whether this instance holds request `id` in memory.
pub(super) fn is_kept(state: &State, id: &str) -> bool {
    let object = instance(state);
    with_object(&object, |o| {
        o.unrecorded.prune(now_ms());
        o.unrecorded.0.iter().any(|(held, _)| held == id)
    })
}

/// The ids of the requests this instance holds in memory.
pub(super) fn kept_ids(state: &State) -> Vec<RequestId> {
    let object = instance(state);
    with_object(&object, |o| {
        o.unrecorded.prune(now_ms());
        o.unrecorded.0.iter().map(|(id, _)| id.clone()).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::batch::reply;
    use crate::system::protocol::OriginRef;
    use crate::system::{ProxyFetchOptions, ProxyRequest};
    use futures_util::FutureExt;
    use std::collections::BTreeMap;

    fn start(
        id: Option<&str>,
        bytes: usize,
    ) -> (Start, Answer<Result<RequestId, ProxyFetchError>>) {
        let (reply, answer) = reply();
        let record = PendingRecord {
            handler: "onResult".into(),
            data: serde_json::Value::Null,
            created_ms: 0.0,
            due_ms: 0.0,
            dispatches: 1,
            handler_runs: 0,
            body_apart: false,
            claims: 0,
            claimed_ms: None,
            job: FetchJob {
                id: String::new(),
                token: String::new(),
                request: ProxyRequest::get("http://127.0.0.1/"),
                origin: OriginRef {
                    binding: "O".into(),
                    id: "0".into(),
                },
                queue: None,
                options: ProxyFetchOptions::default(),
            },
        };
        let start = Start {
            id: id.map(str::to_owned),
            record,
            bytes,
            reply,
        };
        (start, answer)
    }

    fn names() -> impl FnMut() -> Result<String, ProxyFetchError> {
        let mut n = 0;
        move || {
            n += 1;
            Ok(format!("r{n}"))
        }
    }

    fn shape(rows: &[NewRow]) -> Vec<(String, Vec<String>)> {
        rows.iter()
            .map(|row| {
                let ids = row.members.iter().map(|(id, _)| id.clone()).collect();
                (row.key.clone(), ids)
            })
            .collect()
    }

    #[test]
    fn a_shared_id_and_a_caller_id_live_in_different_rows() {
        assert_eq!(row_key("r1~0"), format!("{LEDGER}r1~"));
        assert_eq!(row_key("r1~31"), format!("{LEDGER}r1~"));
        // A caller's id cannot hold `~` (ProxyFetchOptions::validate), so it never names a
        // shared row, even when it is a shared row's name without the `~`.
        assert_eq!(row_key("r1"), format!("{LEDGER}r1"));
        assert_eq!(row_key("order:1"), format!("{LEDGER}order:1"));
    }

    #[test]
    fn starts_fill_rows_up_to_the_record_limit_and_caller_ids_stay_alone() {
        let mut starts: Vec<Start> = (0..ROW_RECORDS + 2).map(|_| start(None, 100).0).collect();
        starts.insert(3, start(Some("mine"), 100).0);
        let rows = into_rows(starts, None, names());
        let shape = shape(&rows);
        assert_eq!(shape.len(), 3);
        assert_eq!(shape[0].0, format!("{LEDGER}r1~"));
        assert_eq!(shape[0].1.len(), ROW_RECORDS);
        assert_eq!(shape[0].1[0], "r1~0");
        assert_eq!(
            shape[0].1[ROW_RECORDS - 1],
            format!("r1~{}", ROW_RECORDS - 1)
        );
        assert_eq!(shape[1], (format!("{LEDGER}mine"), vec!["mine".to_owned()]));
        assert_eq!(
            shape[2],
            (
                format!("{LEDGER}r2~"),
                vec!["r2~0".to_owned(), "r2~1".to_owned()]
            )
        );
        for (key, row) in &shape {
            for id in row {
                assert_eq!(
                    &row_key(id),
                    key,
                    "{id} must be found in the row it was put in"
                );
            }
        }
    }

    #[test]
    fn starts_fill_the_host_row_first_with_numbers_never_given_before() {
        let host = OpenRow {
            name: "h~".into(),
            next: 7,
            len: ROW_RECORDS - 2,
            bytes: 100,
        };
        let starts = (0..3).map(|_| start(None, 10).0).collect();
        let rows = into_rows(starts, Some(host), names());
        assert_eq!(
            shape(&rows),
            vec![
                (
                    format!("{LEDGER}h~"),
                    vec!["h~7".to_owned(), "h~8".to_owned()]
                ),
                (format!("{LEDGER}r1~"), vec!["r1~0".to_owned()]),
            ]
        );
        assert_eq!(
            rows.iter().map(|r| r.next).collect::<Vec<_>>(),
            vec![Some(9), Some(1)]
        );
        // A host no start fits in is not written.
        let host = OpenRow {
            name: "h~".into(),
            next: 0,
            len: ROW_RECORDS,
            bytes: 0,
        };
        let rows = into_rows(vec![start(None, 10).0], Some(host), names());
        assert_eq!(
            shape(&rows),
            vec![(format!("{LEDGER}r1~"), vec!["r1~0".to_owned()])]
        );
    }

    #[test]
    fn a_start_too_large_to_share_gets_a_row_of_its_own() {
        let starts = vec![
            start(None, 10).0,
            start(None, ROW_BYTES).0,
            start(None, 10).0,
        ];
        let rows = shape(&into_rows(starts, None, names()));
        assert_eq!(
            rows.iter().map(|(_, ids)| ids.len()).collect::<Vec<_>>(),
            vec![1, 1, 1]
        );
    }

    #[test]
    fn a_start_that_gets_no_row_is_answered_with_the_error() {
        let (only, mut answer) = start(None, 10);
        let rows = into_rows(vec![only], None, || {
            Err(ProxyFetchError::Storage("no randomness".into()))
        });
        assert!(rows.is_empty());
        assert_eq!(
            (&mut answer).now_or_never().flatten(),
            Some(Err(ProxyFetchError::Storage("no randomness".into())))
        );
    }

    fn record(n: u32) -> PendingRecord {
        PendingRecord {
            handler: format!("on_{n}"),
            data: serde_json::json!({ "n": n }),
            created_ms: 1.0,
            due_ms: 2.0,
            dispatches: n,
            handler_runs: 0,
            body_apart: false,
            claims: 0,
            claimed_ms: None,
            job: FetchJob {
                id: format!("r~{n}"),
                token: "00".into(),
                request: ProxyRequest::get("http://127.0.0.1/"),
                origin: OriginRef {
                    binding: "ORIGIN".into(),
                    id: "o".into(),
                },
                queue: None,
                options: ProxyFetchOptions::default(),
            },
        }
    }

    fn cached_all() -> usize {
        CACHED_ALL.with(|all| all.get())
    }

    #[test]
    fn the_isolate_keeps_state_for_a_bounded_number_of_instances_and_bytes() {
        // Rows of about 100 KiB, each from another instance, as many origins would leave.
        let big = |n: u32| {
            let mut r = record(n);
            r.job.request.body = Some(serde_bytes::ByteBuf::from(vec![0u8; 100 * 1024]));
            let mut row = Row::new();
            row.insert(format!("r~{n}"), r);
            row
        };
        for n in 0..2000u32 {
            with_object(&format!("object-{n}#1.x"), |o| {
                o.cache.take_in("k", big(n));
            });
            let kept = OBJECTS.with(|o| o.borrow().len());
            assert!(kept <= KEPT_OBJECTS, "{kept} instances kept after {n}");
            assert!(
                cached_all() <= ISOLATE_CACHED_BYTES + CACHED_BYTES,
                "{} bytes cached after {n}",
                cached_all()
            );
        }
        // The count follows what the caches hold.
        let held: usize = OBJECTS.with(|o| o.borrow().values().map(|o| o.cache.taken).sum());
        assert_eq!(held, cached_all());
    }

    #[test]
    fn row_encodes_and_decodes_as_a_btreemap_of_its_records() -> serde_json::Result<()> {
        let ids = ["r~2", "r~10", "r~0", "caller", "r~1", "r~2"];
        let mut row = Row::new();
        let mut map = BTreeMap::new();
        for (n, id) in (0..).zip(ids) {
            row.insert(id.to_owned(), record(n));
            map.insert(id.to_owned(), record(n));
        }
        let encoded = serde_json::to_string(&map)?;
        assert_eq!(serde_json::to_string(&row)?, encoded);
        let decoded: Row = serde_json::from_str(&encoded)?;
        assert_eq!(serde_json::to_string(&decoded)?, encoded);
        // As stored: the map's JSON text, a string value.
        let stored: Row = serde_json::from_value(serde_json::Value::String(encoded.clone()))?;
        assert_eq!(serde_json::to_string(&stored)?, encoded);

        for id in ["r~10", "caller", "none"] {
            assert_eq!(
                row.get(id).map(|r| r.dispatches),
                map.get(id).map(|r| r.dispatches)
            );
        }
        assert_eq!(row.remove("r~10").map(|r| r.dispatches), Some(1));
        assert!(row.remove("r~10").is_none());
        map.remove("r~10");
        assert_eq!(serde_json::to_string(&row)?, serde_json::to_string(&map)?);
        assert!(row.clone().into_keys().eq(map.into_keys()));
        Ok(())
    }

    #[test]
    fn a_rows_stored_text_is_its_json_after_every_kind_of_change() -> serde_json::Result<()> {
        let mut row = Row::new();
        for n in 0..4 {
            row.insert(format!("r~{n}"), record(n));
        }
        let same = |row: &Row| -> serde_json::Result<()> {
            assert_eq!(row.json()?, serde_json::to_string(row)?);
            Ok(())
        };
        same(&row)?;
        // Changed in place, replaced, removed, added, each after the texts were kept.
        if let Some(r) = row.get_mut("r~1") {
            r.dispatches = 7;
        }
        same(&row)?;
        row.insert("r~2".into(), record(9));
        same(&row)?;
        row.remove("r~0");
        row.insert("r~5\"x".into(), record(5));
        same(&row)?;
        let copy = row.clone();
        if let Some(r) = row.get_mut("r~3") {
            r.handler_runs = 2;
        }
        same(&row)?;
        same(&copy)?;
        assert_ne!(copy.json()?, row.json()?, "a copy keeps its own texts");
        Ok(())
    }

    #[test]
    fn a_rows_stored_size_counts_two_bytes_a_unit_once_a_character_is_not_ascii() {
        assert_eq!(stored_size(&"a".repeat(1000)), 1000);
        // One character past U+00FF makes the runtime store every character in two bytes.
        let text = format!("{}\u{20ac}", "a".repeat(1000));
        assert!(stored_size(&text) >= 2 * text.encode_utf16().count());
    }

    #[test]
    fn a_rows_json_text_reads_back_the_same_floats() -> serde_json::Result<()> {
        // Written as the shortest text that reads back exactly (JSON.parse reads it so; natively
        // serde_json with `float_roundtrip`, without which the first two read back one bit off).
        let floats = [
            1.0715660391465826e-75,
            -1.81996730402717e-179,
            0.1 + 0.2,
            5e-324,
        ];
        let mut row = Row::new();
        let mut r = record(0);
        r.data = serde_json::json!(floats);
        r.created_ms = 1_764_000_000_123.0;
        row.insert("r~0".into(), r.clone());
        let text = serde_json::to_string(&row)?;
        let back: Row = serde_json::from_value(serde_json::Value::String(text))?;
        assert!(
            back.get("r~0") == Some(&r),
            "every float read back bit for bit"
        );
        Ok(())
    }
}
