//! The work stack a walk's threads share: directories still to walk, depth first. A
//! thread that pops one owes the stack its subdirectories (`done`); the walk is over
//! when the stack is empty and no thread still walks a directory (whose subdirectories
//! may still come).

use std::sync::{Condvar, Mutex};

pub(crate) struct DirQueue<T> {
    /// Pending items, how many are being walked, and whether the walk stopped.
    state: Mutex<(Vec<T>, usize, bool)>,
    changed: Condvar,
}

impl<T> DirQueue<T> {
    pub(crate) fn new(root: T) -> DirQueue<T> {
        DirQueue { state: Mutex::new((vec![root], 0, false)), changed: Condvar::new() }
    }

    /// The next item, or `None` when the walk is over (or stopped). Waits while the
    /// stack is empty but others still walk.
    pub(crate) fn pop(&self) -> Option<T> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let (stack, walking, stopped) = &mut *state;
            if *stopped {
                return None;
            }
            if let Some(item) = stack.pop() {
                *walking += 1;
                return Some(item);
            }
            if *walking == 0 {
                return None;
            }
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// An item popped is walked; these are its children, in order (the first is popped
    /// next).
    pub(crate) fn done(&self, children: Vec<T>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.0.extend(children.into_iter().rev());
        state.1 -= 1;
        self.changed.notify_all();
    }

    /// Stops the walk: every `pop`, waiting or later, returns `None`.
    pub(crate) fn cancel(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).2 = true;
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_come_depth_first_and_the_queue_ends_only_when_nobody_walks() {
        let q = DirQueue::new("/");
        assert_eq!(q.pop(), Some("/"));
        q.done(vec!["/a", "/b"]);
        assert_eq!(q.pop(), Some("/a"));
        // "/a" is still being walked: "/b" is next, and then the queue is not over yet.
        assert_eq!(q.pop(), Some("/b"));
        q.done(vec![]);
        q.done(vec!["/a/x"]);
        assert_eq!(q.pop(), Some("/a/x"));
        q.done(vec![]);
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn a_thread_waiting_for_more_wakes_when_the_walk_ends_or_is_cancelled() {
        for cancel in [false, true] {
            let q = std::sync::Arc::new(DirQueue::new(0));
            assert_eq!(q.pop(), Some(0));
            let waiter = {
                let q = q.clone();
                std::thread::spawn(move || q.pop())
            };
            std::thread::sleep(std::time::Duration::from_millis(50));
            if cancel {
                q.cancel();
                assert_eq!(waiter.join().unwrap(), None);
            } else {
                q.done(vec![7]);
                assert_eq!(waiter.join().unwrap(), Some(7));
            }
        }
    }
}
