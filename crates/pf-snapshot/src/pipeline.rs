//! The threads of a snapshot: they chunk files, in walk order, and read
//! back the new packs the planner (the calling thread) closes, packs
//! first, so that packs are read back (and written, when encoded ahead)
//! while later files are still being chunked. A large file's chunks reach
//! the planner in parts as it is read ([`Msg::Part`]), so its packs are
//! written while the rest of it is still being chunked.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Condvar, Mutex, MutexGuard};

use pf_registry_core::codec::EncodeAhead;
use pf_registry_core::{RegistryError, Result};

use crate::packjob::{self, PackDone, PackSpec};
use crate::snapshot::{chunk_file, Chunking, Hashed, PendingFile};

/// What a thread reports to the planner.
pub(crate) enum Msg {
    /// File `i` (index in the walk's files) chunked: its chunks, and
    /// whether it still had the walk's stamp once read.
    File(usize, Result<(Hashed, bool)>),
    /// The next chunks of file `i`, read while it still had the walk's
    /// stamp, ahead of its [`Msg::File`] (which has the rest).
    Part(usize, Hashed),
    /// New pack `k` (index among the new packs) read back.
    Pack(usize, Result<PackDone>),
}

/// Files to chunk and packs to read back, shared by the threads.
pub(crate) struct Work<'a> {
    files: &'a [PendingFile],
    /// Indices of the files to chunk, in walk order.
    misses: Vec<usize>,
    /// The next entry of `misses` to take.
    next: AtomicUsize,
    chunking: Chunking,
    ahead: Option<&'a EncodeAhead>,
    /// Packs are named by their content (else by their chunks).
    by_content: bool,
    queue: Mutex<Queue>,
    wake: Condvar,
}

#[derive(Default)]
struct Queue {
    packs: VecDeque<(usize, PackSpec)>,
    /// No more packs will be queued.
    closed: bool,
    /// The planner gave up: threads stop taking work.
    stop: bool,
    /// Packs being read back.
    packing: usize,
}

/// Packs read back at once while files are left to chunk. Encoded ahead
/// to a local destination, a pack's writes bypass the page cache and wait
/// for the disk (see `pf_registry_core::codec::write_framed`), so packs
/// read back on threads of their own, besides one chunking thread per
/// core, keep both the disk and the cores busy; once every file is
/// chunked, any thread takes packs.
const PACKS_AT_ONCE: usize = 2;

impl<'a> Work<'a> {
    /// Work to chunk `files[i]` for every `i` in `misses` (walk order) with
    /// `chunking`, and to read back the packs queued, naming them by their
    /// content if `by_content` and encoding them ahead with `ahead`.
    pub(crate) fn new(
        files: &'a [PendingFile],
        misses: Vec<usize>,
        chunking: Chunking,
        ahead: Option<&'a EncodeAhead>,
        by_content: bool,
    ) -> Work<'a> {
        Work {
            files,
            misses,
            next: AtomicUsize::new(0),
            chunking,
            ahead,
            by_content,
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues new pack `k` to be read back.
    pub(crate) fn queue(&self, k: usize, spec: PackSpec) {
        self.lock().packs.push_back((k, spec));
        self.wake.notify_one();
    }

    /// Says no more packs will be queued: threads end once the rest is done.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_all();
    }

    /// Runs `planner` on this thread, with the threads' reports, while the
    /// threads work; stops them once it returns, and returns what it did.
    pub(crate) fn run<T>(
        &self,
        planner: impl FnOnce(&Receiver<Msg>, &Self) -> Result<T>,
    ) -> Result<T> {
        // A thread reading a pack back mostly waits for its writes (see
        // `PACKS_AT_ONCE`): one per core chunks, and up to that many more
        // read packs back.
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let read_back = self.by_content || self.ahead.is_some();
        let threads = cores + if read_back { PACKS_AT_ONCE } else { 0 };
        let (tx, rx) = channel();
        std::thread::scope(|s| {
            for _ in 0..threads {
                let tx = tx.clone();
                s.spawn(move || self.worker(tx));
            }
            drop(tx);
            let out = planner(&rx, self);
            let mut q = self.lock();
            q.stop = true;
            q.closed = true;
            drop(q);
            self.wake.notify_all();
            out
        })
    }

    /// One thread: reads back a queued pack first (unless
    /// [`PACKS_AT_ONCE`] are being read while files are left), else
    /// chunks the next file, else waits for a pack or the end.
    fn worker(&self, tx: Sender<Msg>) {
        loop {
            let pack = {
                let mut q = self.lock();
                loop {
                    if q.stop {
                        return;
                    }
                    let files_left = self.next.load(Ordering::Relaxed) < self.misses.len();
                    if !files_left || q.packing < PACKS_AT_ONCE {
                        if let Some(job) = q.packs.pop_front() {
                            q.packing += 1;
                            break Some(job);
                        }
                    }
                    if files_left {
                        break None;
                    }
                    if q.closed {
                        return;
                    }
                    q = self.wake.wait(q).unwrap_or_else(|e| e.into_inner());
                }
            };
            // A panic is reported as that task's error: the planner waits
            // for every task it handed out, so none may vanish.
            let msg = match pack {
                Some((k, spec)) => Msg::Pack(
                    k,
                    caught(|| packjob::run(&spec, self.ahead, self.by_content)),
                ),
                None => {
                    let n = self.next.fetch_add(1, Ordering::Relaxed);
                    let Some(&i) = self.misses.get(n) else {
                        continue;
                    };
                    {
                        let mut part = |h: Hashed| {
                            let _ = tx.send(Msg::Part(i, h));
                        };
                        Msg::File(
                            i,
                            caught(|| chunk_file(&self.files[i], &self.chunking, &mut part)),
                        )
                    }
                }
            };
            if matches!(msg, Msg::Pack(..)) {
                self.lock().packing -= 1;
                self.wake.notify_one();
            }
            if tx.send(msg).is_err() {
                return;
            }
        }
    }
}

/// `f()`, or an error if it panicked.
fn caught<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(RegistryError::invalid(
            "snapshot",
            "a reading thread panicked (a bug in pf)",
        ))
    })
}
