//! A test that measures time runs alone. When each file was its own test
//! binary, a timed test shared the machine only with its file's tests; in
//! one binary every module's tests share the harness's threads, so a
//! latency bound could fail because an indicators dataset or a 2,000-form
//! push ran beside it. `exclusive()` waits until no other test holds a
//! server (in process or a child `casesync serve`) and holds new ones back
//! until it ends; every server takes `shared()` as it starts.
//!
//! Only the timed test takes `exclusive()`: everything else runs in
//! parallel as before.

use std::cell::Cell;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::ThreadId;

#[derive(Default)]
struct State {
    /// Servers running now.
    shared: usize,
    /// A timed test is running.
    exclusive: bool,
    /// Timed tests waiting for the servers to stop: new ones wait too.
    waiting: usize,
}

static STATE: Mutex<State> = Mutex::new(State {
    shared: 0,
    exclusive: false,
    waiting: 0,
});
static CHANGED: Condvar = Condvar::new();

thread_local! {
    /// Servers this thread holds: a test's second server never waits
    /// behind a timed test that waits for its first (no deadlock).
    static HELD: Cell<usize> = const { Cell::new(0) };
    /// This thread is the timed test: its own servers start at once.
    static ALONE: Cell<bool> = const { Cell::new(false) };
}

fn state() -> MutexGuard<'static, State> {
    // A test that panics never holds this lock, but stay usable anyway.
    STATE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Held by a running server; dropped with it.
pub struct Shared {
    thread: ThreadId,
}

pub fn shared() -> Shared {
    let free_pass = HELD.get() > 0 || ALONE.get();
    let mut s = state();
    if !free_pass {
        while s.exclusive || s.waiting > 0 {
            s = CHANGED.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
    }
    s.shared += 1;
    HELD.set(HELD.get() + 1);
    Shared {
        thread: std::thread::current().id(),
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if std::thread::current().id() == self.thread {
            HELD.set(HELD.get().saturating_sub(1));
        }
        state().shared -= 1;
        CHANGED.notify_all();
    }
}

/// Held by a timed test for its whole run.
pub struct Exclusive(());

pub fn exclusive() -> Exclusive {
    let mut s = state();
    s.waiting += 1;
    while s.exclusive || s.shared > 0 {
        s = CHANGED.wait(s).unwrap_or_else(PoisonError::into_inner);
    }
    s.waiting -= 1;
    s.exclusive = true;
    ALONE.set(true);
    Exclusive(())
}

impl Drop for Exclusive {
    fn drop(&mut self) {
        ALONE.set(false);
        state().exclusive = false;
        CHANGED.notify_all();
    }
}
