//! Supervised children (work in progress).
