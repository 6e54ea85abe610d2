//! The contract the simulated world drives: [`TaskQueue`]. The reference [`Queue`]
//! implements it; so can your own queue (a wrapper around SQS, Asynq, River or a
//! table), which then gets the invariants, the fault plans, shrinking and the reports.
//!
//! The world plays the producers, the workers and the target services; the queue only
//! has to keep its tasks. A queue process that is down is modelled by the world not
//! calling it; [`restart`](TaskQueue::restart) is the crash: what the queue did not
//! keep durably is gone.

use crate::clock::Instant;
use crate::queue::core::{
    DeadLetter, Enqueued, Fenced, Lease, LeaseToken, Nacked, Queue, QueueCounts, Task, TaskKey,
};

/// A task queue the world can drive.
pub trait TaskQueue {
    /// Accepts `task`; once this returns, the task must survive a restart.
    fn enqueue(&mut self, task: Task, now: Instant) -> Enqueued;
    /// The next task due at `now`, leased until its deadline.
    fn lease(&mut self, now: Instant) -> Option<Lease>;
    /// Extends a lease; the new deadline, or [`Fenced`] when it is no longer valid.
    fn heartbeat(&mut self, token: &LeaseToken, now: Instant) -> Result<Instant, Fenced>;
    /// The task was delivered.
    fn ack(&mut self, token: &LeaseToken, now: Instant) -> Result<(), Fenced>;
    /// The delivery failed.
    fn nack(&mut self, token: &LeaseToken, now: Instant) -> Result<Nacked, Fenced>;
    /// The unexpired lease on `key`, if any.
    fn lease_of(&self, key: TaskKey, now: Instant) -> Option<LeaseToken>;
    /// Where the tasks are (enqueued = done + superseded + pending + leased +
    /// retrying + dead).
    fn counts(&self) -> QueueCounts;
    /// Every dead letter, redriven ones included.
    fn dead_letters(&self) -> Vec<DeadLetter>;
    /// Puts the dead letters back, keeping each key's order; returns how many.
    fn redrive(&mut self, now: Instant) -> usize;
    /// The queue process crashed and restarts from its durable state.
    fn restart(&mut self, now: Instant);
    /// When to call [`lease`](TaskQueue::lease) again at the latest.
    fn poll_timeout(&self) -> Option<Instant>;
}

impl TaskQueue for Queue {
    fn enqueue(&mut self, task: Task, now: Instant) -> Enqueued {
        Queue::enqueue(self, task, now)
    }
    fn lease(&mut self, now: Instant) -> Option<Lease> {
        Queue::lease(self, now)
    }
    fn heartbeat(&mut self, token: &LeaseToken, now: Instant) -> Result<Instant, Fenced> {
        Queue::heartbeat(self, token, now)
    }
    fn ack(&mut self, token: &LeaseToken, now: Instant) -> Result<(), Fenced> {
        Queue::ack(self, token, now)
    }
    fn nack(&mut self, token: &LeaseToken, now: Instant) -> Result<Nacked, Fenced> {
        Queue::nack(self, token, now)
    }
    fn lease_of(&self, key: TaskKey, now: Instant) -> Option<LeaseToken> {
        Queue::lease_of(self, key, now)
    }
    fn counts(&self) -> QueueCounts {
        Queue::counts(self)
    }
    fn dead_letters(&self) -> Vec<DeadLetter> {
        Queue::dead_letters(self).to_vec()
    }
    fn redrive(&mut self, now: Instant) -> usize {
        Queue::redrive(self, now)
    }
    fn restart(&mut self, _now: Instant) {
        Queue::restart(self);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Queue::poll_timeout(self)
    }
}
