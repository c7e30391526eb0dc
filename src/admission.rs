//! `Admission`: the global `max_active` limit across workers, with a bounded first-come
//! queue of clients that wait ("blocked", not refused) until a session ends.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// A waiting client: which worker holds it and its connection-table identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    pub worker: usize,
    pub key: usize,
    pub gen: u32,
    pub since: Instant,
}

/// The outcome of asking for a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// A slot is held now; release it when the session ends.
    Now,
    /// Queued; a grant arrives through [`Admission::take_grants`].
    Queued,
    /// The queue is full: close the client.
    Rejected,
}

pub struct Admission {
    /// Both limits change on a reload; read with every admission.
    max_active: AtomicUsize,
    max_queued: AtomicUsize,
    active: AtomicUsize,
    queued: AtomicUsize,
    queue: Mutex<VecDeque<Ticket>>,
    /// Per worker: tickets granted a slot, to be picked up by that worker.
    grants: Vec<Mutex<Vec<Ticket>>>,
}

impl Admission {
    pub fn new(max_active: usize, max_queued: usize, workers: usize) -> Admission {
        Admission {
            max_active: AtomicUsize::new(max_active.max(1)),
            max_queued: AtomicUsize::new(max_queued),
            active: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            queue: Mutex::new(VecDeque::new()),
            grants: (0..workers).map(|_| Mutex::new(Vec::new())).collect(),
        }
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    fn try_take_slot(&self) -> bool {
        self.active
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.max_active.load(Ordering::SeqCst)).then_some(n + 1)
            })
            .is_ok()
    }

    fn lock_queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Ticket>> {
        // A worker that panicked while holding the lock left a consistent queue (every
        // critical section is a few VecDeque operations); keep serving.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks for a slot for a new client. Lock-free while under the limit with nobody
    /// waiting; otherwise the client joins the back of the queue, so nobody jumps it.
    /// Returns the workers to wake for grants this call made.
    pub fn admit(&self, ticket: Ticket, woken: &mut Vec<usize>) -> Admit {
        // SeqCst on `queued` and `active` throughout: admit writes `queued` then reads
        // `active`, release writes `active` then reads `queued`; weaker orderings would
        // let both read the old values and leave a client waiting beside a free slot.
        if self.queued.load(Ordering::SeqCst) == 0 && self.try_take_slot() {
            return Admit::Now;
        }
        let mut q = self.lock_queue();
        if q.is_empty() && self.try_take_slot() {
            return Admit::Now;
        }
        if q.len() >= self.max_queued.load(Ordering::SeqCst) {
            return Admit::Rejected;
        }
        q.push_back(ticket);
        self.queued.store(q.len(), Ordering::SeqCst);
        // A slot may have been released between our check and the push.
        self.grant_locked(&mut q, woken);
        Admit::Queued
    }

    /// New limits (a reload). A higher `max_active` serves waiting clients at once; a
    /// lower one lets the sessions above it finish and admits nobody until under it.
    pub fn set_limits(&self, max_active: usize, max_queued: usize, woken: &mut Vec<usize>) {
        self.max_active.store(max_active.max(1), Ordering::SeqCst);
        self.max_queued.store(max_queued, Ordering::SeqCst);
        let mut q = self.lock_queue();
        self.grant_locked(&mut q, woken);
    }

    /// Gives a session's slot back; the oldest waiting client gets it.
    pub fn release(&self, woken: &mut Vec<usize>) {
        self.active.fetch_sub(1, Ordering::SeqCst);
        if self.queued.load(Ordering::SeqCst) > 0 {
            let mut q = self.lock_queue();
            self.grant_locked(&mut q, woken);
        }
    }

    fn grant_locked(&self, q: &mut VecDeque<Ticket>, woken: &mut Vec<usize>) {
        while !q.is_empty() && self.try_take_slot() {
            let Some(t) = q.pop_front() else { break };
            self.grants[t.worker]
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(t);
            if !woken.contains(&t.worker) {
                woken.push(t.worker);
            }
        }
        self.queued.store(q.len(), Ordering::SeqCst);
    }

    /// Takes a waiting client out of the queue (it timed out or went away). `false` when
    /// it was already granted: the grant will still arrive and its slot must be released.
    pub fn withdraw(&self, worker: usize, key: usize, gen: u32) -> bool {
        let mut q = self.lock_queue();
        let before = q.len();
        q.retain(|t| !(t.worker == worker && t.key == key && t.gen == gen));
        self.queued.store(q.len(), Ordering::SeqCst);
        q.len() < before
    }

    /// The grants made to `worker` since it last looked.
    pub fn take_grants(&self, worker: usize, out: &mut Vec<Ticket>) {
        out.append(
            &mut self.grants[worker]
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(worker: usize, key: usize) -> Ticket {
        Ticket {
            worker,
            key,
            gen: 1,
            since: Instant::now(),
        }
    }

    #[test]
    fn blocks_at_the_limit_and_serves_in_order() {
        let a = Admission::new(2, 10, 2);
        let mut woken = Vec::new();
        assert_eq!(a.admit(ticket(0, 1), &mut woken), Admit::Now);
        assert_eq!(a.admit(ticket(0, 2), &mut woken), Admit::Now);
        assert_eq!(a.admit(ticket(1, 3), &mut woken), Admit::Queued);
        assert_eq!(a.admit(ticket(0, 4), &mut woken), Admit::Queued);
        assert_eq!((a.active(), a.queued()), (2, 2));
        a.release(&mut woken);
        assert_eq!(woken, [1]);
        let mut g = Vec::new();
        a.take_grants(1, &mut g);
        assert_eq!(
            g.iter().map(|t| t.key).collect::<Vec<_>>(),
            [3],
            "first come, first served"
        );
        assert_eq!((a.active(), a.queued()), (2, 1));
        // A withdrawn ticket is skipped; a new client queues behind the waiting one.
        assert!(a.withdraw(0, 4, 1));
        assert!(!a.withdraw(0, 4, 1));
        assert_eq!(a.queued(), 0);
        a.release(&mut woken);
        assert_eq!(a.admit(ticket(0, 5), &mut woken), Admit::Now);
    }

    #[test]
    fn raising_the_limit_serves_the_queue() {
        let a = Admission::new(1, 10, 1);
        let mut woken = Vec::new();
        assert_eq!(a.admit(ticket(0, 1), &mut woken), Admit::Now);
        assert_eq!(a.admit(ticket(0, 2), &mut woken), Admit::Queued);
        a.set_limits(2, 10, &mut woken);
        assert_eq!(woken, [0]);
        assert_eq!((a.active(), a.queued()), (2, 0));
    }

    #[test]
    fn the_queue_is_bounded() {
        let a = Admission::new(1, 1, 1);
        let mut woken = Vec::new();
        assert_eq!(a.admit(ticket(0, 1), &mut woken), Admit::Now);
        assert_eq!(a.admit(ticket(0, 2), &mut woken), Admit::Queued);
        assert_eq!(a.admit(ticket(0, 3), &mut woken), Admit::Rejected);
    }
}
