//! The FIFO rings of a shard (small queue, main queue, expiry ring): slot indices in a
//! circular buffer.
//!
//! A minimal `VecDeque<u32>` with the one operation the eviction loop needs most:
//! [`rotate`](Ring::rotate), the front moved to the back (CLOCK's second chance), which is a
//! store and a masked increment with no length change and no capacity check. With `VecDeque`
//! the same step is a `pop_front` and a `push_back`, each wrapping its position with a compare
//! and updating the length, the push checking for growth; at three to four rotations per
//! eviction (in the benchmark's Zipf mix) that was the larger part of an eviction's cost.
//!
//! The capacity is a power of two, so a position wraps with a mask. Growing doubles it (from
//! 4), as `VecDeque`'s growth does, so a cache filled by inserts holds the same ring storage as
//! before; a ring sized at once (a shard's rebuild) or shrunk is rounded up to a power of two,
//! at most twice its length.

/// A FIFO of slot indices.
#[derive(Default)]
pub(super) struct Ring {
    buf: Box<[u32]>,
    /// Position of the front in `buf` (less than `buf.len()`, or 0 when `buf` is empty).
    head: usize,
    len: usize,
}

impl Ring {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: vec![0; pow2(capacity)].into_boxed_slice(),
            head: 0,
            len: 0,
        }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// `i` reduced to a position in `buf` (whose length is 0 or a power of two).
    #[inline]
    fn wrap(&self, i: usize) -> usize {
        i & self.buf.len().wrapping_sub(1)
    }

    /// The position after `i` (a position in `buf`).
    #[inline]
    fn next(&self, i: usize) -> usize {
        self.wrap(i + 1)
    }

    #[inline]
    pub fn front(&self) -> Option<u32> {
        if self.len == 0 {
            return None;
        }
        self.buf.get(self.head).copied()
    }

    #[inline]
    pub fn pop_front(&mut self) -> Option<u32> {
        if self.len == 0 {
            return None;
        }
        let x = self.buf.get(self.head).copied();
        self.head = self.next(self.head);
        self.len -= 1;
        x
    }

    #[inline]
    pub fn push_back(&mut self, x: u32) {
        if self.len == self.buf.len() {
            self.grow();
        }
        let tail = self.wrap(self.head + self.len);
        if let Some(slot) = self.buf.get_mut(tail) {
            *slot = x;
            self.len += 1;
        }
    }

    /// Moves the front, `front` (what [`front`](Self::front) returned), to the back. The
    /// position after the back is free, or is the front's own when the ring is full. The
    /// caller passes the front it already read, so the loop that decides about it does not
    /// load it twice.
    #[inline]
    pub fn rotate(&mut self, front: u32) {
        debug_assert_eq!(self.front(), Some(front));
        if self.len == 0 {
            return;
        }
        let tail = self.wrap(self.head + self.len);
        if let Some(slot) = self.buf.get_mut(tail) {
            *slot = front;
            self.head = self.next(self.head);
        }
    }

    /// The `i`-th index from the front.
    pub fn get(&self, i: usize) -> Option<u32> {
        if i >= self.len {
            return None;
        }
        self.buf.get(self.wrap(self.head + i)).copied()
    }

    /// The indices from front to back.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        let (a, b) = self.as_slices();
        a.iter().chain(b).copied()
    }

    fn as_slices(&self) -> (&[u32], &[u32]) {
        let first = self.len.min(self.buf.len() - self.head);
        (
            &self.buf[self.head..self.head + first],
            &self.buf[..self.len - first],
        )
    }

    #[cold]
    #[inline(never)]
    fn grow(&mut self) {
        let capacity = (self.buf.len() * 2).max(4);
        self.reallocate(capacity);
    }

    /// Gives back storage beyond `max(capacity, len)`.
    pub fn shrink_to(&mut self, capacity: usize) {
        let capacity = pow2(capacity.max(self.len));
        if capacity < self.buf.len() {
            self.reallocate(capacity);
        }
    }

    fn reallocate(&mut self, capacity: usize) {
        let mut buf = Vec::with_capacity(capacity);
        buf.extend(self.iter());
        buf.resize(capacity, 0);
        self.buf = buf.into_boxed_slice();
        self.head = 0;
    }
}

/// The power of two a buffer for `n` indices has (none for 0).
fn pow2(n: usize) -> usize {
    if n == 0 { 0 } else { n.next_power_of_two() }
}

#[cfg(test)]
mod tests {
    use super::Ring;
    use std::collections::VecDeque;

    /// xorshift64*: deterministic operation sequences without a dependency.
    fn rng(state: &mut u64) -> u64 {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    #[test]
    fn a_ring_behaves_as_a_vecdeque() {
        let mut state = 0x9E37_79B9_7F4A_7C15;
        let mut ring = Ring::new();
        let mut model: VecDeque<u32> = VecDeque::new();
        for step in 0..200_000u32 {
            match rng(&mut state) % 16 {
                0..=5 => {
                    ring.push_back(step);
                    model.push_back(step);
                }
                6..=8 => assert_eq!(ring.pop_front(), model.pop_front()),
                9..=12 => {
                    if let Some(x) = model.pop_front() {
                        ring.rotate(x);
                        model.push_back(x);
                    }
                }
                13 => {
                    let i = (rng(&mut state) % (model.len() as u64 + 2)) as usize;
                    assert_eq!(ring.get(i), model.get(i).copied());
                }
                14 => {
                    let want = (rng(&mut state) % (model.len() as u64 * 2 + 2)) as usize;
                    ring.shrink_to(want);
                    assert!(ring.capacity() >= ring.len());
                }
                _ if step % 1000 == 0 => {
                    // Drain most of it, so that the ring shrinks and wraps at other places.
                    while model.len() > 3 {
                        assert_eq!(ring.pop_front(), model.pop_front());
                    }
                }
                _ => {}
            }
            assert_eq!(ring.len(), model.len());
            assert_eq!(ring.front(), model.front().copied());
            if step % 97 == 0 {
                assert!(ring.iter().eq(model.iter().copied()));
            }
        }
    }

    #[test]
    fn a_full_ring_rotates_in_place() {
        let mut ring = Ring::with_capacity(3);
        assert_eq!(ring.capacity(), 4, "capacities are powers of two");
        for x in [1, 2, 3, 4] {
            ring.push_back(x);
        }
        ring.rotate(1);
        assert_eq!(ring.iter().collect::<Vec<_>>(), [2, 3, 4, 1]);
        ring.rotate(2);
        ring.rotate(3);
        assert_eq!(ring.iter().collect::<Vec<_>>(), [4, 1, 2, 3]);
        assert_eq!(ring.capacity(), 4, "rotation never grows the ring");
    }

    #[test]
    fn a_ring_shrinks_to_a_power_of_two_no_smaller_than_its_length() {
        let mut ring = Ring::new();
        for x in 0..1000 {
            ring.push_back(x);
        }
        assert_eq!(ring.capacity(), 1024);
        for _ in 0..900 {
            ring.pop_front();
        }
        ring.shrink_to(200);
        assert_eq!(ring.capacity(), 256);
        assert!(ring.iter().eq(900..1000));
        ring.shrink_to(0);
        assert_eq!(ring.capacity(), 128);
        assert!(ring.iter().eq(900..1000));
    }

    #[test]
    fn an_empty_ring_is_inert() {
        let mut ring = Ring::new();
        assert_eq!(ring.pop_front(), None);
        assert_eq!(ring.front(), None);
        assert_eq!(ring.get(0), None);
        assert_eq!(ring.iter().count(), 0);
        ring.shrink_to(0);
        assert_eq!(ring.capacity(), 0);
    }
}
