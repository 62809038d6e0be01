//! The one way pc-eventd locks a `std::sync::Mutex`.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, ignoring poisoning: every value guarded this way is changed by single method
/// calls or plain assignments, so a thread that panicked while holding it cannot have left it
/// half-changed, and the daemon goes on rather than panicking too.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
