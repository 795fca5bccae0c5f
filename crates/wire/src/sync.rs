//! The one way the workspace takes a mutex.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, going on with its data if a panicking holder poisoned it:
/// every critical section in this workspace leaves its data consistent
/// (a panic mid-section is a bug the panic itself reports), so one
/// thread's panic does not take every other user of the lock down with it.
///
/// ```
/// let counter = std::sync::Mutex::new(1);
/// *fileuploader_wire::sync::lock(&counter) += 1;
/// assert_eq!(*fileuploader_wire::sync::lock(&counter), 2);
/// ```
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
