//! The freeze window: mount discovery, locks (work in progress).
