//! Client sessions run on worker threads, each with its own single-threaded
//! tokio runtime, instead of on one work-stealing runtime.
//!
//! Why: a session is a short chain of socket reads and writes, and on a
//! work-stealing runtime a wake-up often unparks another worker (a futex
//! wake and a context switch) to share the load. On 2 cores with 16
//! pgbench clients one single-threaded runtime served 30-40% more
//! transactions per second than the default two-worker runtime, at less
//! CPU per transaction. Clients are handed to the workers round robin when
//! accepted and stay there; the accept loop, the monitor and the admin API
//! stay on the main runtime.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The worker threads. Dropping this stops them, cancelling what still
/// runs there (the proxy drops it only after its sessions have ended or
/// `shutdown_timeout` has passed).
pub struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
    /// Dropped with `Workers`: each worker's signal to stop.
    _stop: Vec<oneshot::Sender<()>>,
}

impl Workers {
    /// Starts `count` workers (at least one).
    pub fn start(count: usize) -> std::io::Result<Workers> {
        let mut handles = Vec::new();
        let mut stops = Vec::new();
        for index in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            stops.push(stop);
            std::thread::Builder::new()
                .name(format!("pgsplit-worker-{index}"))
                .spawn(move || {
                    // A single-threaded runtime runs its tasks while blocked on.
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                })?;
        }
        Ok(Workers {
            handles,
            next: AtomicUsize::new(0),
            _stop: stops,
        })
    }

    /// Runs the future `make` builds on the next worker. `make` itself runs
    /// in that worker's context, so sockets it registers belong to the
    /// worker's I/O driver.
    pub fn spawn<F>(&self, make: impl FnOnce() -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        let handle = &self.handles[index];
        let _context = handle.enter();
        handle.spawn(make());
    }
}
