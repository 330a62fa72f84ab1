//! Refused calls, made visible: every refusal (a wrong token, another origin's request, a
//! malformed job or delivery, a job outside the executor's policy) is logged with what was
//! refused and why, and counted (per isolate: `stats` and `health` show the count of the
//! isolate that answers them). A caller cannot flood the log: an isolate logs at most [`LOGGED_PER_WINDOW`]
//! refusals a minute, and says how many it left out when it logs again.

use std::cell::RefCell;

use super::now_ms;
use crate::rpc::log_error;

/// Refusals logged per window, per isolate.
pub(crate) const LOGGED_PER_WINDOW: u32 = 20;
const WINDOW_MS: f64 = 60_000.0;

#[derive(Default)]
struct Log {
    /// Refusals in this isolate since it started.
    total: u64,
    window_start: f64,
    logged: u32,
    /// Refusals not logged since the last one that was.
    left_out: u64,
}

thread_local! {
    static LOG: RefCell<Log> = RefCell::new(Log::default());
}

/// Logs (within the rate) and counts a refused call: `who` is the role and method refusing,
/// `what` names the request or the call, `why` says what was wrong.
pub(crate) fn refused(who: &str, what: &str, why: &str) {
    let now = now_ms();
    let line = LOG.with(|log| {
        let mut log = log.borrow_mut();
        log.total += 1;
        if now - log.window_start >= WINDOW_MS {
            log.window_start = now;
            log.logged = 0;
        }
        if log.logged >= LOGGED_PER_WINDOW {
            log.left_out += 1;
            return None;
        }
        log.logged += 1;
        let left_out = std::mem::take(&mut log.left_out);
        Some(if left_out > 0 {
            format!(
                "proxy-fetch refused {who} {what}: {why} ({left_out} earlier refusals not logged)"
            )
        } else {
            format!("proxy-fetch refused {who} {what}: {why}")
        })
    });
    if let Some(line) = line {
        log_error(&line);
    }
}

/// Refusals in this isolate since it started.
pub(crate) fn count() -> u32 {
    LOG.with(|log| u32::try_from(log.borrow().total).unwrap_or(u32::MAX))
}
