//! A task's wake-ups of itself, kept inside it.
//!
//! hyper's HTTP/1 connection and the request on it talk through channels.
//! When one task polls both (a server's connection with the handler of its
//! request, a client's request with the connection carrying it), each
//! message between them wakes that very task while it is being polled.
//! tokio then queues the task again and, as its queue now holds work
//! another worker could steal, wakes a parked worker, which finds nothing
//! and parks again: a futex wake and two context switches for nothing, a
//! few times per request. [`Waking::poll`] polls with a waker of its own
//! instead: a wake-up during the poll only asks for one more pass at once,
//! and any other is passed on to the task's waker.
//!
//! Written here rather than taken from a crate: what it needs is the
//! "during the poll" distinction, which the waker utilities of `futures`
//! do not make.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// Passes over the polled futures at most per poll of the task: a future
/// that wakes itself every time (one out of its cooperative budget, say)
/// must still let the task yield.
const PASSES_MAX: usize = 8;

/// The waker the futures polled through one [`Waking`] see.
pub struct Waking {
    shared: Arc<Shared>,
    waker: Waker,
}

struct Shared {
    /// The task's own waker, from its latest poll.
    task: AtomicWaker,
    polling: AtomicBool,
    woken: AtomicBool,
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, SeqCst);
        // A wake-up while the futures are being polled is seen when the
        // pass ends (`Waking::poll` reads `woken` after clearing
        // `polling`); any other goes to the task.
        if !self.polling.load(SeqCst) {
            self.task.wake();
        }
    }
}

impl Default for Waking {
    fn default() -> Self {
        let shared = Arc::new(Shared {
            task: AtomicWaker::new(),
            polling: AtomicBool::new(false),
            woken: AtomicBool::new(false),
        });
        let waker = Waker::from(shared.clone());
        Self { shared, waker }
    }
}

impl std::fmt::Debug for Waking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waking").finish_non_exhaustive()
    }
}

impl Waking {
    /// Runs `pass` (which polls the futures) with this waker, once more
    /// for as long as the pass woke them, up to a bound.
    pub fn poll<T>(
        &self,
        cx: &mut Context<'_>,
        mut pass: impl FnMut(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        self.shared.task.register(cx.waker());
        let mut inner = Context::from_waker(&self.waker);
        for _ in 0..PASSES_MAX {
            self.shared.woken.store(false, SeqCst);
            self.shared.polling.store(true, SeqCst);
            let poll = pass(&mut inner);
            self.shared.polling.store(false, SeqCst);
            if poll.is_ready() || !self.shared.woken.load(SeqCst) {
                return poll;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts the wake-ups the task's waker gets.
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    fn task() -> (Arc<Counter>, Waker) {
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        (counter, waker)
    }

    #[test]
    fn a_wake_up_during_the_pass_is_one_more_pass_not_a_task_wake_up() {
        let (counter, waker) = task();
        let mut cx = Context::from_waker(&waker);
        let waking = Waking::default();
        let mut passes = 0;
        let poll = waking.poll(&mut cx, |cx| {
            passes += 1;
            if passes < 3 {
                cx.waker().wake_by_ref();
                Poll::Pending
            } else {
                Poll::Ready(passes)
            }
        });
        assert_eq!(poll, Poll::Ready(3));
        assert_eq!(counter.0.load(SeqCst), 0);
    }

    #[test]
    fn a_wake_up_after_the_poll_reaches_the_task() {
        let (counter, waker) = task();
        let mut cx = Context::from_waker(&waker);
        let waking = Waking::default();
        let mut kept = None;
        let poll: Poll<()> = waking.poll(&mut cx, |cx| {
            kept = Some(cx.waker().clone());
            Poll::Pending
        });
        assert!(poll.is_pending());
        assert_eq!(counter.0.load(SeqCst), 0);
        let Some(kept) = kept else {
            panic!("the pass ran")
        };
        // From another thread, as a socket's readiness would come.
        std::thread::spawn(move || kept.wake()).join().ok();
        assert_eq!(counter.0.load(SeqCst), 1);
    }

    #[test]
    fn a_pass_that_always_wakes_itself_still_lets_the_task_yield() {
        let (counter, waker) = task();
        let mut cx = Context::from_waker(&waker);
        let waking = Waking::default();
        let mut passes = 0;
        let poll: Poll<()> = waking.poll(&mut cx, |cx| {
            passes += 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        });
        assert!(poll.is_pending());
        assert_eq!(passes, PASSES_MAX);
        assert_eq!(counter.0.load(SeqCst), 1);
    }
}
