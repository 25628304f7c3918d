//! Bounded capture of a child's stdout/stderr: the first and the last `cap`
//! bytes are kept, everything is counted. A script writing gigabytes costs a
//! counter, never memory, and never blocks on a full pipe (SPEC §7).

use std::collections::VecDeque;

/// Default number of bytes kept at each end of a stream (SPEC §7: 64 KiB).
pub const DEFAULT_OUTPUT_CAP: usize = 64 * 1024;

/// What was kept of one output stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    /// The first bytes written, up to the cap.
    pub head: Vec<u8>,
    /// The last bytes written after `head`, up to the cap; empty when the
    /// whole stream fit in `head`.
    pub tail: Vec<u8>,
    /// Every byte the stream carried, kept or not.
    pub total: u64,
    /// Bytes were dropped between `head` and `tail`.
    pub truncated: bool,
}

impl Captured {
    /// Bytes dropped between head and tail.
    pub fn omitted(&self) -> u64 {
        self.total - (self.head.len() + self.tail.len()) as u64
    }

    /// Lossy UTF-8 text: head, then `…[N bytes omitted]…` when truncated,
    /// then tail. Head and tail are joined before decoding when nothing was
    /// omitted, so a character split across the boundary survives.
    pub fn text(&self) -> String {
        if !self.truncated {
            let mut all = Vec::with_capacity(self.head.len() + self.tail.len());
            all.extend_from_slice(&self.head);
            all.extend_from_slice(&self.tail);
            return String::from_utf8_lossy(&all).into_owned();
        }
        format!(
            "{}…[{} bytes omitted]…{}",
            String::from_utf8_lossy(&self.head),
            self.omitted(),
            String::from_utf8_lossy(&self.tail)
        )
    }

    /// Lossy UTF-8 of at most the last `max` bytes kept (for one-line
    /// summaries such as the status JSON's `stderrTail`).
    pub fn tail_text(&self, max: usize) -> String {
        let mut all = Vec::with_capacity(self.head.len() + self.tail.len());
        all.extend_from_slice(&self.head);
        all.extend_from_slice(&self.tail);
        let from = all.len().saturating_sub(max);
        String::from_utf8_lossy(&all[from..]).into_owned()
    }
}

/// The growing side of [`Captured`].
#[derive(Debug)]
pub(crate) struct CaptureBuffer {
    cap: usize,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: u64,
}

impl CaptureBuffer {
    pub(crate) fn new(cap: usize) -> Self {
        CaptureBuffer {
            cap,
            head: Vec::new(),
            tail: VecDeque::new(),
            total: 0,
        }
    }

    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    pub(crate) fn push(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        if self.head.len() < self.cap {
            let take = (self.cap - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        if data.is_empty() || self.cap == 0 {
            return;
        }
        if data.len() >= self.cap {
            self.tail.clear();
            self.tail.extend(&data[data.len() - self.cap..]);
        } else {
            let overflow = (self.tail.len() + data.len()).saturating_sub(self.cap);
            self.tail.drain(..overflow);
            self.tail.extend(data);
        }
    }

    pub(crate) fn snapshot(&self) -> Captured {
        let tail: Vec<u8> = self.tail.iter().copied().collect();
        let kept = (self.head.len() + tail.len()) as u64;
        Captured {
            head: self.head.clone(),
            tail,
            total: self.total,
            truncated: kept < self.total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_output_is_kept_whole() {
        let mut b = CaptureBuffer::new(8);
        b.push(b"hello");
        let c = b.snapshot();
        assert_eq!(
            (c.head.as_slice(), c.tail.len(), c.total, c.truncated),
            (&b"hello"[..], 0, 5, false)
        );
        assert_eq!(c.text(), "hello");
    }

    #[test]
    fn exactly_head_plus_tail_is_not_truncated() {
        let mut b = CaptureBuffer::new(4);
        for chunk in [&b"ab"[..], b"cdef", b"gh"] {
            b.push(chunk);
        }
        let c = b.snapshot();
        assert_eq!(c.head, b"abcd");
        assert_eq!(c.tail, b"efgh");
        assert!(!c.truncated);
        assert_eq!(c.text(), "abcdefgh");
    }

    #[test]
    fn long_output_keeps_head_and_tail_and_counts_everything() {
        let mut b = CaptureBuffer::new(4);
        b.push(b"0123456789");
        b.push(b"abc");
        b.push(b"XYZWVU");
        let c = b.snapshot();
        assert_eq!(c.head, b"0123");
        assert_eq!(c.tail, b"ZWVU");
        assert_eq!(c.total, 19);
        assert!(c.truncated);
        assert_eq!(c.omitted(), 11);
        assert_eq!(c.text(), "0123…[11 bytes omitted]…ZWVU");
        assert_eq!(c.tail_text(2), "VU");
    }

    #[test]
    fn utf8_split_across_head_and_tail_survives_when_whole() {
        let mut b = CaptureBuffer::new(2);
        b.push("aé".as_bytes()); // 'é' is two bytes: one lands in head, one in tail
        assert_eq!(b.snapshot().text(), "aé");
    }
}
