//! Hand-offs between the pipeline's threads that sleep at once.
//!
//! std's channels, before they sleep, spin and then call `sched_yield` a few
//! times, in the hope that the other side comes within microseconds. On a
//! quiet node that is cheap. On a shared node where every core also runs
//! someone else's busy process, each yield hands the core to that process
//! for a whole time slice (milliseconds), so a run of many small images,
//! which hands off several times per image, slowed down fifteenfold. These
//! channels wait on a condition variable (a futex) straight away: the waiting
//! thread costs nothing, and the kernel wakes it as soon as the other side
//! acts.
//!
//! `channel(0)` is a rendezvous, as `std::sync::mpsc::sync_channel(0)`: a
//! send returns only once a receiver has taken the value, so a stage never
//! holds an image the next one has not asked for. Senders and receivers may
//! both be cloned; the channel closes for receivers when the last sender is
//! dropped, and sends fail when the last receiver is.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A channel holding at most `capacity` values (0: a rendezvous).
pub fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            capacity,
            taken: 0,
            sent: 0,
            senders: 1,
            receivers: 1,
        }),
        items: Condvar::new(),
        room: Condvar::new(),
    });
    (
        Sender {
            shared: Arc::clone(&shared),
        },
        Receiver { shared },
    )
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Signalled when a value arrives or the last sender leaves.
    items: Condvar,
    /// Signalled when a value is taken or the last receiver leaves.
    room: Condvar,
}

struct State<T> {
    queue: VecDeque<T>,
    capacity: usize,
    /// Values taken by receivers and values sent, since the start: a
    /// rendezvous sender waits until `taken` passes its own number.
    taken: u64,
    sent: u64,
    senders: usize,
    receivers: usize,
}

impl<T> Shared<T> {
    /// The state, even if a thread panicked while holding it: every change
    /// to it is a single push, pop or count, never left half done.
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sending end; clones share the channel.
pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Sender<T> {
    /// Sends `value`, waiting for room (for a receiver to take it, in a
    /// rendezvous). Gives it back if every receiver has gone.
    pub fn send(&self, value: T) -> Result<(), T> {
        let shared = &*self.shared;
        let mut s = shared.lock();
        // A rendezvous holds one value at a time, waiting for its taker.
        let room = s.capacity.max(1);
        while s.queue.len() >= room && s.receivers > 0 {
            s = shared.room.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        if s.receivers == 0 {
            return Err(value);
        }
        s.queue.push_back(value);
        s.sent += 1;
        let ticket = s.sent;
        shared.items.notify_one();
        if s.capacity > 0 {
            return Ok(());
        }
        while s.taken < ticket && s.receivers > 0 {
            s = shared.room.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        if s.taken < ticket {
            // Not taken, and nobody left to: the one value held is ours.
            return s.queue.pop_back().map_or(Ok(()), Err);
        }
        Ok(())
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Sender {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut s = self.shared.lock();
        s.senders -= 1;
        if s.senders == 0 {
            self.shared.items.notify_all();
        }
    }
}

/// The receiving end; clones share the values (each goes to one of them).
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Receiver<T> {
    /// The next value; `None` once the channel is empty and every sender
    /// has gone.
    pub fn recv(&self) -> Option<T> {
        let shared = &*self.shared;
        let mut s = shared.lock();
        while s.queue.is_empty() && s.senders > 0 {
            s = shared.items.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        Self::take(shared, &mut s)
    }

    /// The next value if one comes within `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<T> {
        let Some(deadline) = Instant::now().checked_add(timeout) else {
            return self.recv();
        };
        let shared = &*self.shared;
        let mut s = shared.lock();
        while s.queue.is_empty() && s.senders > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            s = shared
                .items
                .wait_timeout(s, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        Self::take(shared, &mut s)
    }

    /// The next value if one is waiting now.
    pub fn try_recv(&self) -> Option<T> {
        let shared = &*self.shared;
        Self::take(shared, &mut shared.lock())
    }

    fn take(shared: &Shared<T>, s: &mut State<T>) -> Option<T> {
        let value = s.queue.pop_front()?;
        s.taken += 1;
        shared.room.notify_all();
        Some(value)
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        self.shared.lock().receivers += 1;
        Receiver {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut s = self.shared.lock();
        s.receivers -= 1;
        if s.receivers == 0 {
            self.shared.room.notify_all();
        }
    }
}

impl<T> IntoIterator for Receiver<T> {
    type Item = T;
    type IntoIter = IntoIter<T>;
    fn into_iter(self) -> IntoIter<T> {
        IntoIter(self)
    }
}

/// The values of a receiver, until the channel is empty and closed.
pub struct IntoIter<T>(Receiver<T>);

impl<T> Iterator for IntoIter<T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.0.recv()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn a_rendezvous_send_returns_only_once_taken() {
        let (tx, rx) = channel::<u32>(0);
        let sent = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                tx.send(7).unwrap();
                sent.store(true, Ordering::SeqCst);
            });
            std::thread::sleep(Duration::from_millis(50));
            assert!(
                !sent.load(Ordering::SeqCst),
                "send returned before a receiver took it"
            );
            assert_eq!(rx.recv(), Some(7));
        });
        assert!(sent.load(Ordering::SeqCst));
    }

    #[test]
    fn every_value_arrives_once_from_many_senders_to_many_receivers() {
        let (tx, rx) = channel::<u64>(0);
        let got = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for k in 0..3u64 {
                let tx = tx.clone();
                s.spawn(move || (0..1000).for_each(|i| tx.send(k * 1000 + i).unwrap()));
            }
            drop(tx);
            for _ in 0..2 {
                let (rx, got) = (rx.clone(), &got);
                s.spawn(move || {
                    // Collected first: both receivers take values at once.
                    let mine: Vec<u64> = rx.into_iter().collect();
                    got.lock().unwrap().push(mine);
                });
            }
        });
        let per_receiver = got.into_inner().unwrap();
        assert!(
            per_receiver.iter().all(|v| !v.is_empty()),
            "a receiver took nothing"
        );
        let mut got: Vec<u64> = per_receiver.concat();
        got.sort_unstable();
        assert_eq!(got, (0..3000).collect::<Vec<_>>());
    }

    #[test]
    fn the_last_sender_closes_and_the_last_receiver_refuses() {
        let (tx, rx) = channel::<u32>(2);
        tx.send(1).unwrap();
        drop(tx);
        assert_eq!(rx.recv(), Some(1));
        assert_eq!(rx.recv(), None);

        // A rendezvous send blocked on a receiver that leaves gets its value back.
        let (tx, rx) = channel::<u32>(0);
        std::thread::scope(|s| {
            let h = s.spawn(move || tx.send(5));
            std::thread::sleep(Duration::from_millis(30));
            drop(rx);
            assert_eq!(h.join().unwrap(), Err(5));
        });
    }

    #[test]
    fn a_bounded_channel_holds_its_capacity_and_times_out_empty() {
        let (tx, rx) = channel::<u32>(2);
        tx.send(1).unwrap();
        tx.send(2).unwrap();
        assert_eq!(rx.try_recv(), Some(1));
        assert_eq!(rx.recv_timeout(Duration::from_millis(10)), Some(2));
        assert_eq!(rx.recv_timeout(Duration::from_millis(10)), None);
    }
}
