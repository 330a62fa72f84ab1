//! Installing a tool into the per-user cache: one install at a time, visible while it runs.
//!
//! - **One at a time**: an install takes `<folder>.lock` (an exclusive `flock`, released by the
//!   kernel when the process ends however it ends; `tools/setup.sh` takes the same lock with
//!   `flock(1)`). A build that finds the lock taken says whose it is (the holder writes its pid
//!   and what it is into the file) and waits, then uses what the holder installed.
//! - **Visible**: a line at least every [`PROGRESS_EVERY`] while an install runs or waits, with
//!   the time so far and where the tool goes (for cargo, how many crates it compiled and which).
//! - **Whole or nothing**: the tool is installed into `<folder>.tmp.<pid>` and renamed to
//!   `<folder>` only when complete, so an interrupted install leaves no half tool.
//! - **Cancellable**: the build installs while cargo builds the crate; when that build fails,
//!   the install is stopped ([`Cancel`]) rather than left running behind a finished command.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::Result;

/// How often a running or waiting install reports.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// How often the loops look at the child process, the lock and the cancel flag.
const POLL: Duration = Duration::from_millis(200);
/// How long a build waits for another process's install before giving up (a cold
/// `cargo install wasm-bindgen-cli` takes 6 to 11 minutes on 2 cores).
pub const WAIT_FOR_OTHERS: Duration = Duration::from_secs(45 * 60);

/// Set by the build when the install is no longer wanted (its cargo build failed).
#[derive(Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// "42 s", "3 min 05 s".
pub fn elapsed(since: Instant) -> String {
    let secs = since.elapsed().as_secs();
    if secs < 60 {
        format!("{secs} s")
    } else {
        format!("{} min {:02} s", secs / 60, secs % 60)
    }
}

/// Prints a line of the build's own (stderr, beside cargo's output).
pub fn say(message: &str) {
    eprintln!("proxy-fetch-build: {message}");
}

/// The exclusive lock on installing into `dir`, held until dropped.
pub struct InstallLock {
    _file: File,
}

/// Takes the lock on installing into `dir` (`<dir>.lock`), waiting for another process that
/// holds it, with a line every [`PROGRESS_EVERY`] naming that process, for at most `deadline`.
/// `building` (the crate this process builds) goes into the lock file for the waiters to read.
pub fn lock(
    dir: &Path,
    what: &str,
    building: &Path,
    deadline: Duration,
    cancel: &Cancel,
) -> Result<InstallLock> {
    let path = crate::sibling(dir, ".lock");
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| format!("cannot open the lock file {}: {e}", path.display()))?;
    let start = Instant::now();
    let mut next_report = start;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => {
                return Err(format!("cannot lock {}: {e}", path.display()))
            }
        }
        if cancel.is_cancelled() {
            return Err(format!(
                "stopped waiting for the install of {what}: the build failed"
            ));
        }
        if start.elapsed() > deadline {
            return Err(format!(
                "gave up after {} waiting for {} to finish installing {what} into {} (it holds {}); \
                 if no such install is running, delete that file",
                elapsed(start),
                holder(&path),
                dir.display(),
                path.display()
            ));
        }
        if Instant::now() >= next_report {
            say(&format!(
                "waiting for {} to finish installing {what} into {} ({} so far; it holds {})",
                holder(&path),
                dir.display(),
                elapsed(start),
                path.display()
            ));
            next_report += PROGRESS_EVERY;
        }
        std::thread::sleep(POLL);
    }
    // Who holds it, for the builds that wait: this process, and what it is.
    let me = format!(
        "pid {} (proxy-fetch-build of {})",
        std::process::id(),
        building.display()
    );
    let _ = file.set_len(0).and_then(|()| file.write_all(me.as_bytes()));
    Ok(InstallLock { _file: file })
}

/// What the holder of a lock file wrote about itself, or "another process".
fn holder(path: &Path) -> String {
    let mut text = String::new();
    let read = File::open(path).and_then(|f| f.take(500).read_to_string(&mut text));
    match read {
        Ok(_) if !text.trim().is_empty() => text.trim().to_owned(),
        _ => "another process".to_owned(),
    }
}

/// What a running install has printed: a count of cargo's `Compiling` lines, the last crate,
/// and the last lines, for the error message when it fails.
#[derive(Default)]
struct Log {
    compiled: usize,
    current: Option<String>,
    tail: Vec<String>,
}

impl Log {
    const TAIL: usize = 30;

    fn line(&mut self, line: &str) {
        if let Some(rest) = line.trim_start().strip_prefix("Compiling ") {
            self.compiled += 1;
            self.current = Some(rest.trim().to_owned());
        }
        if self.tail.len() == Self::TAIL {
            self.tail.remove(0);
        }
        self.tail.push(line.to_owned());
    }

    fn progress(&self) -> String {
        match &self.current {
            Some(current) => format!("; {} crate(s) started, now {current}", self.compiled),
            None => String::new(),
        }
    }
}

/// Runs an install `command` that writes `what` into `staging`, and moves `staging` to `dir`
/// when it succeeds. Prints a line every [`PROGRESS_EVERY`]; stops the command when `cancel` is
/// set or `deadline` passes; on failure, the error holds the command's last lines of output.
pub fn run(
    mut command: Command,
    what: &str,
    staging: &Path,
    dir: &Path,
    deadline: Duration,
    cancel: &Cancel,
) -> Result<()> {
    crate::remove_dir(staging)?;
    let start = Instant::now();
    let program = command.get_program().to_owned();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {:?} to install {what}: {e}", program))?;
    let log = Arc::new(Mutex::new(Log::default()));
    let readers = [
        child.stdout.take().map(|s| read_lines(s, &log)),
        child.stderr.take().map(|s| read_lines(s, &log)),
    ];
    let mut next_report = start + PROGRESS_EVERY;
    let outcome = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) => {}
            Err(e) => break Err(format!("cannot watch the install of {what}: {e}")),
        }
        if cancel.is_cancelled() {
            stop(&mut child);
            break Err(format!(
                "the install of {what} was stopped: the build failed"
            ));
        }
        if start.elapsed() > deadline {
            stop(&mut child);
            break Err(format!(
                "the install of {what} took over {}: stopped",
                elapsed(start)
            ));
        }
        if Instant::now() >= next_report {
            let progress = log.lock().map(|l| l.progress()).unwrap_or_default();
            say(&format!(
                "installing {what} into {}: {} so far{progress}",
                dir.display(),
                elapsed(start)
            ));
            next_report += PROGRESS_EVERY;
        }
        std::thread::sleep(POLL);
    };
    for reader in readers.into_iter().flatten() {
        let _ = reader.join();
    }
    let tail = || log.lock().map(|l| l.tail.join("\n")).unwrap_or_default();
    let status = match outcome {
        Ok(status) => status,
        Err(e) => {
            let _ = std::fs::remove_dir_all(staging);
            return Err(e);
        }
    };
    if !status.success() {
        let _ = std::fs::remove_dir_all(staging);
        return Err(format!(
            "installing {what} failed ({status}) after {}; its last output:\n{}",
            elapsed(start),
            tail()
        ));
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    // The lock makes a concurrent install of the same folder impossible among processes that
    // take it; an older proxy-fetch-build does not, so a folder that appeared meanwhile wins.
    if std::fs::rename(staging, dir).is_err() {
        let _ = std::fs::remove_dir_all(staging);
    }
    say(&format!(
        "installed {what} into {} in {}",
        dir.display(),
        elapsed(start)
    ));
    Ok(())
}

fn read_lines<R: Read + Send + 'static>(
    stream: R,
    log: &Arc<Mutex<Log>>,
) -> std::thread::JoinHandle<()> {
    let log = Arc::clone(log);
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(|l| l.ok()) {
            if let Ok(mut log) = log.lock() {
                log.line(&line);
            }
        }
    })
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// `<dir>.tmp.<pid>`: where an install goes before it is complete.
pub fn staging(dir: &Path) -> PathBuf {
    crate::sibling(dir, &format!(".tmp.{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder of the test's own, removed when the test ends (pass or fail).
    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn scratch(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("pf-install-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    #[test]
    fn elapsed_reads_as_seconds_then_minutes() {
        let now = Instant::now();
        assert_eq!(elapsed(now), "0 s");
        let earlier = now.checked_sub(Duration::from_secs(185)).unwrap();
        assert!(
            elapsed(earlier).starts_with("3 min 0"),
            "{}",
            elapsed(earlier)
        );
    }

    #[test]
    fn cargo_progress_counts_compiled_crates_and_names_the_last() {
        let mut log = Log::default();
        assert_eq!(log.progress(), "");
        log.line("   Compiling serde v1.0.228");
        log.line("warning: something");
        log.line("   Compiling walrus v0.27.2");
        assert_eq!(log.progress(), "; 2 crate(s) started, now walrus v0.27.2");
        for i in 0..100 {
            log.line(&format!("line {i}"));
        }
        assert_eq!(log.tail.len(), Log::TAIL);
        assert_eq!(log.tail.last().map(String::as_str), Some("line 99"));
    }

    #[test]
    fn a_second_locker_waits_names_the_holder_and_gives_up_at_its_deadline() {
        let base = scratch("lock");
        let dir = base.0.join("tool-1.0");
        let held = lock(
            &dir,
            "tool 1.0",
            Path::new("/w"),
            Duration::from_secs(1),
            &Cancel::default(),
        )
        .unwrap();
        assert!(holder(&crate::sibling(&dir, ".lock")).starts_with(&format!(
            "pid {} (proxy-fetch-build of /w)",
            std::process::id()
        )));
        // flock is per open file description: a second open in this process conflicts too.
        let err = lock(
            &dir,
            "tool 1.0",
            Path::new("/w"),
            Duration::from_millis(300),
            &Cancel::default(),
        )
        .err()
        .unwrap();
        assert!(
            err.contains("gave up after") && err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(held);
        assert!(lock(
            &dir,
            "tool 1.0",
            Path::new("/w"),
            Duration::from_millis(300),
            &Cancel::default()
        )
        .is_ok());
    }

    #[test]
    fn a_cancelled_wait_stops_at_once() {
        let base = scratch("cancel");
        let dir = base.0.join("tool-1.0");
        let _held = lock(
            &dir,
            "tool 1.0",
            Path::new("/w"),
            Duration::from_secs(1),
            &Cancel::default(),
        )
        .unwrap();
        let cancel = Cancel::default();
        cancel.cancel();
        let start = Instant::now();
        let err = lock(
            &dir,
            "tool 1.0",
            Path::new("/w"),
            Duration::from_secs(60),
            &cancel,
        )
        .err()
        .unwrap();
        assert!(err.contains("the build failed"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn an_install_moves_its_staging_folder_in_whole_or_leaves_nothing() {
        let base = scratch("run");
        let dir = base.0.join("tool-1.0");
        let staging = staging(&dir);
        let mut ok = Command::new("sh");
        ok.arg("-c").arg(format!(
            "mkdir -p '{0}/bin' && echo hi > '{0}/bin/tool'",
            staging.display()
        ));
        run(
            ok,
            "tool 1.0",
            &staging,
            &dir,
            Duration::from_secs(60),
            &Cancel::default(),
        )
        .unwrap();
        assert!(dir.join("bin/tool").is_file() && !staging.exists());

        let other = base.0.join("tool-2.0");
        let staging = super::staging(&other);
        let mut failing = Command::new("sh");
        failing.arg("-c").arg(format!(
            "mkdir -p '{}' && echo 'error: no such version' >&2 && exit 3",
            staging.display()
        ));
        let err = run(
            failing,
            "tool 2.0",
            &staging,
            &other,
            Duration::from_secs(60),
            &Cancel::default(),
        )
        .err()
        .unwrap();
        assert!(
            err.contains("installing tool 2.0 failed") && err.contains("error: no such version"),
            "{err}"
        );
        assert!(!other.exists() && !staging.exists());
    }

    #[test]
    fn a_cancelled_install_is_stopped() {
        let base = scratch("stop");
        let dir = base.0.join("tool-1.0");
        let staging = staging(&dir);
        let mut slow = Command::new("sleep");
        slow.arg("30");
        // Cancelled before it starts: the first look at the flag stops the running command.
        let cancel = Cancel::default();
        cancel.cancel();
        let start = Instant::now();
        let err = run(
            slow,
            "tool 1.0",
            &staging,
            &dir,
            Duration::from_secs(60),
            &cancel,
        )
        .err()
        .unwrap();
        assert!(err.contains("was stopped"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(10) && !dir.exists());
    }
}
