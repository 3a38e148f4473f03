//! One shard of a cache: an index table into a slab of slots, the S3-FIFO queues as rings of
//! slot indices, an optional expiry ring, and a ghost filter. Everything here runs under the
//! shard's lock (reads under the read lock, the rest under the write lock); nothing here calls
//! user code except `Hash`/`Eq` of the key (the weigher and the eviction listener run outside).
//!
//! Layout, per live entry:
//! - a slot in `slots`: the key, the value, 32 bits of the key's hash (so evictions, removals
//!   and table growth never hash a key again), a 2-bit access counter (`freq`, an atomic so
//!   that reads under the read lock can bump it) and ring-membership flags; the enum tag and
//!   these six bytes fit in the alignment padding for most `K`/`V` (a `u64 → u64` slot is 24
//!   bytes);
//! - a `u32` in the index table (hashbrown's `HashTable`, which stores only the slot index and
//!   one control byte: keys are never duplicated);
//! - a `u32` in the small or the main ring (and one in the expiry ring when the cache expires);
//! - half a byte of ghost filter (a 2-byte fingerprint per four entries, of keys recently
//!   evicted from the small queue);
//! - the weight (`u64`) only when a weigher is set, and the times only when the cache expires.
//!
//! Removal of an arbitrary entry (explicit, expiry, replacement of a queue member) cannot
//! unlink it from a ring in O(1), so the slot becomes `Dead` (key and value dropped at once,
//! memory given back) and stays referenced by its rings until they pop it; the number of such
//! references is bounded by rebuilding the shard when they outnumber the live entries.

use super::EvictionCause;
use super::ring::Ring;
use hashbrown::HashTable;
use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::thread::ThreadId;

pub(super) const IN_SMALL: u8 = 1;
pub(super) const IN_MAIN: u8 = 2;
pub(super) const IN_TIMER: u8 = 4;
const NONE: u32 = u32::MAX;
/// The largest slot index a shard uses (indices are `u32`; `NONE` is reserved).
const MAX_SLOTS: usize = (u32::MAX - 1) as usize;
/// Saturation of the access counter (S3-FIFO uses 2 bits).
const FREQ_MAX: u8 = 3;
/// The ghost filter holds one fingerprint slot per `GHOST_SHARE` live entries (rounded up to a
/// power of two, at least 64). A larger filter sends more returning keys straight to the main
/// queue, where on a plain Zipf trace they displace better ones: a filter as large as the
/// entries gave a hit ratio of 0.784 at a capacity of 10 % of the keys, a quarter 0.791.
const GHOST_SHARE: usize = 4;
/// Upper bound of the ghost filter, in fingerprints (2 bytes each).
const GHOST_MAX: usize = 1 << 22;

pub(super) enum Slot<K, V> {
    Live {
        key: K,
        value: V,
        /// The key's hash as [`hash_of`] made it, in 32 bits ([`fold`] restores it): evictions,
        /// removals and table growth never call the key's `Hash` again.
        hash: u32,
        freq: AtomicU8,
        flags: u8,
    },
    /// Removed; still referenced by the rings named in `flags`.
    Dead { flags: u8 },
    /// On the free list.
    Free { next: u32 },
}

/// Per-entry times, kept only by caches that expire (nanoseconds of the cache's clock).
pub(super) struct Times {
    /// Insert (or last replace) + ttl; `u64::MAX` without a ttl.
    deadline: u64,
    /// Last read or write, for time-to-idle.
    accessed: AtomicU64,
    /// The effective deadline when the entry was last pushed on the expiry ring.
    queued: u64,
}

/// Static per-cache parameters a shard needs.
#[derive(Clone, Copy)]
pub(super) struct Params {
    pub ttl: Option<u64>,
    pub tti: Option<u64>,
    pub weighted: bool,
    /// Entry-capacity hint (for unweighted caches: the shard's capacity).
    pub entries_hint: usize,
}

impl Params {
    fn expires(&self) -> bool {
        self.ttl.is_some() || self.tti.is_some()
    }
}

/// Evicted or removed entries, handed to the listener and dropped outside the lock. The first
/// one is stored inline so the common case (one eviction per insert) allocates nothing.
pub(super) struct Evicted<K, V> {
    first: Option<(K, V, EvictionCause)>,
    more: Vec<(K, V, EvictionCause)>,
}

impl<K, V> Evicted<K, V> {
    pub fn new() -> Self {
        Self {
            first: None,
            more: Vec::new(),
        }
    }
    pub fn push(&mut self, key: K, value: V, cause: EvictionCause) {
        if self.first.is_none() {
            self.first = Some((key, value, cause));
        } else {
            self.more.push((key, value, cause));
        }
    }
    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }
    pub fn into_iter(self) -> impl Iterator<Item = (K, V, EvictionCause)> {
        self.first.into_iter().chain(self.more)
    }
}

/// A computation in flight for `get_or_insert_with`.
pub(super) struct Pending<K, V> {
    pub hash: u64,
    /// Shared, so that the computing thread can weigh the new entry outside the shard's lock.
    pub key: Arc<K>,
    pub owner: ThreadId,
    pub waiter: Arc<super::Waiter<V>>,
}

/// Direct-mapped table of 16-bit fingerprints of keys recently evicted from the small queue.
struct Ghost {
    fps: Vec<u16>,
}

impl Ghost {
    fn fingerprint(hash: u64) -> u16 {
        ((hash >> 48) as u16) | 1
    }
    fn slot(&self, hash: u64) -> usize {
        (hash as usize) & (self.fps.len() - 1)
    }
    fn insert(&mut self, hash: u64) {
        if !self.fps.is_empty() {
            let i = self.slot(hash);
            self.fps[i] = Self::fingerprint(hash);
        }
    }
    /// Whether `hash` was evicted recently; forgets it if so.
    fn take(&mut self, hash: u64) -> bool {
        if self.fps.is_empty() {
            return false;
        }
        let i = self.slot(hash);
        if self.fps[i] == Self::fingerprint(hash) {
            self.fps[i] = 0;
            true
        } else {
            false
        }
    }
    /// Grows to at least `entries` fingerprints (a power of two); the old ones stay valid
    /// because each is copied to both of its possible new positions.
    fn grow_to(&mut self, entries: usize) {
        let want = entries.clamp(64, GHOST_MAX).next_power_of_two();
        if self.fps.len() >= want {
            return;
        }
        if self.fps.is_empty() {
            self.fps = vec![0; want];
            return;
        }
        let mut fps = self.fps.clone();
        while fps.len() < want {
            let doubled: Vec<u16> = fps.iter().chain(fps.iter()).copied().collect();
            fps = doubled;
        }
        self.fps = fps;
    }
}

pub(super) enum Lookup<V> {
    Hit(V),
    Miss,
    Expired,
}

pub(super) struct Shard<K, V> {
    table: HashTable<u32>,
    slots: Vec<Slot<K, V>>,
    free_head: u32,
    small: Ring,
    main: Ring,
    timer: Ring,
    /// Ring references held by `Dead` slots.
    dead_refs: usize,
    /// Position of `sweep_expired` in the expiry ring.
    sweep_cursor: usize,
    weights: Vec<u64>,
    times: Vec<Times>,
    ghost: Ghost,
    len: usize,
    weight: u64,
    small_weight: u64,
    pub capacity: u64,
    small_target: u64,
    pub pending: Vec<Pending<K, V>>,
    pub inserts: u64,
    pub evictions: [u64; EvictionCause::COUNT],
    /// Where the index table's control bytes start and its bucket mask, for
    /// [`prefetch_table`]; computed again when the table is reallocated.
    table_at: (usize, usize),
    /// `table.num_buckets()` when `table_at` was computed (`usize::MAX`: compute again).
    table_at_buckets: usize,
}

/// Hashes a key with the cache's hasher.
#[inline]
pub(super) fn hash_of<S: BuildHasher, Q: Hash + ?Sized>(hasher: &S, key: &Q) -> u64 {
    fold(hasher.hash_one(key) as u32)
}

/// Odd multiplier of [`fold`]; [`UNFOLD`] is its inverse modulo 2^64.
const FOLD: u64 = 0x9E37_79B9_7F4A_7C15;
const UNFOLD: u64 = 0xF1DE_83E1_9937_733D;

/// Spreads 32 bits of a key's hash over 64 by a multiplication: the high bits (the shard
/// choice, hashbrown's control byte, the ghost fingerprint) depend on all 32, the low bits (the
/// table's bucket) are the hash's own low bits. A cache's hashes are all made this way, so a
/// slot keeps only the 32 bits and the full value is one multiplication away.
#[inline]
pub(super) fn fold(h: u32) -> u64 {
    u64::from(h).wrapping_mul(FOLD)
}

/// The 32 bits [`fold`] was given.
#[inline]
fn unfold(hash: u64) -> u32 {
    hash.wrapping_mul(UNFOLD) as u32
}

/// Asks the CPU to bring in the index table's lines for `hash` (its group of control bytes and
/// the slot indices beside them) before the shard's lock is taken, given where the table was
/// ([`Shard::table_at`], published beside the lock). A lookup is a chain of dependent loads
/// (control bytes, then the slot index, then the slot), and an atomic read-modify-write (the
/// lock) holds back the loads after it until it completes; a prefetch issued before it is not
/// held back, so the first two loads of the chain overlap the lock and each other. A prefetch
/// never faults and changes nothing: a stale or wrong address only wastes it.
#[inline(always)]
pub(super) fn prefetch_table(ctrl: usize, mask: usize, hash: u64) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // hashbrown's probe starts at the hash's low bits; the slot index of bucket `i` is at
        // `ctrl - (i + 1) * 4`, and a key is usually found in the first few buckets probed.
        let pos = (hash as usize) & mask;
        let group = ctrl.wrapping_add(pos);
        let index = ctrl.wrapping_sub((pos + 4) * std::mem::size_of::<u32>());
        // SAFETY: a prefetch is a hint that reads nothing in the program's memory model and
        // cannot fault, whatever the address.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(group as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(index as *const i8);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (ctrl, mask, hash);
}

impl<K, V> Shard<K, V> {
    /// Where the index table's control bytes are and its bucket mask, for
    /// [`prefetch_table`] by threads that have not taken the lock yet; `(0, 0)` without
    /// entries. Found from the address of an occupied bucket (hashbrown keeps bucket `i` just
    /// below the control bytes, at `ctrl - (i + 1) * 4`) and kept until the table is
    /// reallocated, so this costs a comparison per write. Only a hint: a wrong address costs a
    /// useless prefetch, never a wrong result.
    #[inline]
    pub fn table_at(&mut self) -> (usize, usize) {
        let buckets = self.table.num_buckets();
        if buckets != self.table_at_buckets || (self.table_at.0 == 0 && !self.table.is_empty()) {
            self.table_at = self.find_table();
            self.table_at_buckets = buckets;
        }
        self.table_at
    }

    #[cold]
    #[inline(never)]
    fn find_table(&self) -> (usize, usize) {
        let Some(i) = self.table.iter_buckets().next() else {
            return (0, 0);
        };
        match self.table.get_bucket(i) {
            Some(b) => {
                let at = std::ptr::from_ref::<u32>(b) as usize;
                let ctrl = at.wrapping_add((i + 1) * std::mem::size_of::<u32>());
                (ctrl, self.table.num_buckets() - 1)
            }
            None => (0, 0),
        }
    }
}

impl<K: Hash + Eq, V: Clone> Shard<K, V> {
    pub fn new(capacity: u64) -> Self {
        Self {
            table: HashTable::new(),
            slots: Vec::new(),
            free_head: NONE,
            small: Ring::new(),
            main: Ring::new(),
            timer: Ring::new(),
            dead_refs: 0,
            sweep_cursor: 0,
            weights: Vec::new(),
            times: Vec::new(),
            ghost: Ghost { fps: Vec::new() },
            len: 0,
            weight: 0,
            small_weight: 0,
            capacity,
            small_target: Self::small_target_of(capacity),
            pending: Vec::new(),
            inserts: 0,
            evictions: [0; EvictionCause::COUNT],
            table_at: (0, 0),
            table_at_buckets: usize::MAX,
        }
    }

    /// The small queue's share of the capacity: 1 %. New entries wait there for a second
    /// access before they may displace anything in the main queue, so the larger it is the
    /// longer one-time keys (a scan) stay. With 10 % (S3-FIFO's paper default) the hit ratio
    /// was below quick_cache's (whose cold queue takes 3 %) on the cache bench's Zipf traces,
    /// with and without scans; 1 % with a ghost filter of a quarter of the entries measured
    /// best (see [`GHOST_SHARE`]).
    fn small_target_of(capacity: u64) -> u64 {
        (capacity / 100).max(1)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn weight(&self) -> u64 {
        self.weight
    }

    pub fn timer_len(&self) -> usize {
        self.timer.len()
    }

    #[inline]
    fn weight_at(&self, idx: u32) -> u64 {
        if self.weights.is_empty() {
            1
        } else {
            self.weights[idx as usize]
        }
    }

    #[inline]
    fn find<Q>(&self, hash: u64, key: &Q) -> Option<u32>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let slots = &self.slots;
        // `get`, not indexing: an index the table holds is always in bounds, and a probe
        // without a panic path keeps the read path's registers free.
        self.table
            .find(hash, |&i| match slots.get(i as usize) {
                Some(Slot::Live { key: k, .. }) => k.borrow() == key,
                _ => false,
            })
            .copied()
    }

    /// The effective deadline of a live entry.
    #[inline]
    fn deadline_of(&self, idx: u32, p: &Params) -> u64 {
        let t = &self.times[idx as usize];
        match p.tti {
            Some(tti) => t.deadline.min(t.accessed.load(Relaxed).saturating_add(tti)),
            None => t.deadline,
        }
    }

    /// A read under the read lock in a cache without expiry: marks the entry accessed (the
    /// caller counts the hit or miss).
    #[inline]
    pub fn get<Q>(&self, hash: u64, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let idx = self.find(hash, key)?;
        let Some(Slot::Live { value, freq, .. }) = self.slots.get(idx as usize) else {
            return None;
        };
        // Load first: a saturated counter costs no write to a shared cache line.
        let f = freq.load(Relaxed);
        if f < FREQ_MAX {
            freq.store(f + 1, Relaxed);
        }
        Some(value.clone())
    }

    /// A read under the read lock in a cache that may expire (`now` is the time if it does):
    /// marks the entry accessed (the caller counts the hit or miss).
    #[inline]
    pub fn get_timed<Q>(&self, hash: u64, key: &Q, now: Option<u64>, p: &Params) -> Lookup<V>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let Some(idx) = self.find(hash, key) else {
            return Lookup::Miss;
        };
        if let Some(now) = now {
            if now >= self.deadline_of(idx, p) {
                return Lookup::Expired;
            }
            if p.tti.is_some() {
                self.times[idx as usize].accessed.store(now, Relaxed);
            }
        }
        let Slot::Live { value, freq, .. } = &self.slots[idx as usize] else {
            return Lookup::Miss;
        };
        // Load first: a saturated counter costs no write to a shared cache line.
        let f = freq.load(Relaxed);
        if f < FREQ_MAX {
            freq.store(f + 1, Relaxed);
        }
        Lookup::Hit(value.clone())
    }

    /// Whether a live, unexpired entry exists (no statistics, no access mark).
    pub fn contains<Q>(&self, hash: u64, key: &Q, now: Option<u64>, p: &Params) -> bool
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        match self.find(hash, key) {
            Some(idx) => now.is_none_or(|now| now < self.deadline_of(idx, p)),
            None => false,
        }
    }

    /// The value of a live, unexpired entry, marked accessed but not counted in the
    /// statistics (for `get_or_insert_with`'s second look, whose miss was already counted).
    pub fn peek_value<Q>(&self, hash: u64, key: &Q, now: Option<u64>, p: &Params) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let idx = self.find(hash, key)?;
        if let Some(now) = now {
            if now >= self.deadline_of(idx, p) {
                return None;
            }
            if p.tti.is_some() {
                self.times[idx as usize].accessed.store(now, Relaxed);
            }
        }
        match &self.slots[idx as usize] {
            Slot::Live { value, freq, .. } => {
                let f = freq.load(Relaxed);
                if f < FREQ_MAX {
                    freq.store(f + 1, Relaxed);
                }
                Some(value.clone())
            }
            _ => None,
        }
    }

    /// A slot for a new entry: the head of the free list (in a full cache, the slot of the
    /// entry just evicted), else a new one; the caller writes the entry into it. The entry is
    /// not passed in: built on the stack field by field and copied into the slot in wider
    /// loads, it made the CPU wait for those stores to reach the cache (a load that spans
    /// several pending stores cannot be forwarded from them) on every insert.
    #[inline(always)]
    fn alloc_slot(&mut self, p: &Params) -> Option<u32> {
        let idx = self.free_head;
        // `NONE` is past any slot index, so an empty free list finds nothing here.
        if let Some(Slot::Free { next }) = self.slots.get(idx as usize) {
            self.free_head = *next;
            return Some(idx);
        }
        self.push_slot(p)
    }

    #[inline(never)]
    fn push_slot(&mut self, p: &Params) -> Option<u32> {
        let idx = self.slots.len();
        if idx >= MAX_SLOTS {
            return None;
        }
        if self.slots.len() == self.slots.capacity() {
            // Grow by doubling, but never past the entry capacity of an unweighted shard, so a
            // full cache carries no slack.
            let len = self.slots.len();
            let mut extra = len.max(4);
            if !p.weighted && p.entries_hint > len {
                extra = extra.min(p.entries_hint - len);
            }
            self.slots.reserve_exact(extra);
            if p.weighted {
                self.weights.reserve_exact(extra);
            }
            if p.expires() {
                self.times.reserve_exact(extra);
            }
            self.reserve_table(self.slots.capacity());
        }
        self.slots.push(Slot::Free { next: NONE });
        if p.weighted {
            self.weights.push(0);
        }
        if p.expires() {
            self.times.push(Times {
                deadline: u64::MAX,
                accessed: AtomicU64::new(0),
                queued: u64::MAX,
            });
        }
        Some(idx as u32)
    }

    /// Sizes the index table for `entries` with room to spare: a table at most about half
    /// full (hashbrown fills its buckets to 7/8). In a full cache every insert erases an entry
    /// and adds one; in a fuller table an erase leaves a tombstone more often (whether it does
    /// depends on the neighbouring buckets, a branch the CPU cannot predict), and tombstones
    /// lengthen the probes of misses until the table is rehashed.
    #[cold]
    fn reserve_table(&mut self, entries: usize) {
        let want = entries.saturating_mul(7) / 4;
        if self.table.capacity() < want {
            let slots = &self.slots;
            self.table
                .reserve(want - self.table.len(), |&i| match slots.get(i as usize) {
                    Some(Slot::Live { hash, .. }) => fold(*hash),
                    _ => 0,
                });
        }
    }

    fn free_slot(&mut self, idx: u32) {
        self.slots[idx as usize] = Slot::Free {
            next: self.free_head,
        };
        self.free_head = idx;
    }

    /// Removes a live entry: out of the table, its key and value into `out`; the slot becomes
    /// `Dead` while rings other than `popped_from` still reference it.
    #[inline(never)]
    fn remove_live(
        &mut self,
        idx: u32,
        popped_from: u8,
        cause: EvictionCause,
        out: &mut Evicted<K, V>,
    ) {
        let weighted = !self.weights.is_empty();
        self.remove_live_inline(idx, popped_from, cause, weighted, out)
    }

    /// [`remove_live`](Self::remove_live), inlined where it is the common case (an eviction).
    /// `weighted`: the shard keeps weights (a constant where the caller's parameters are).
    #[inline(always)]
    fn remove_live_inline(
        &mut self,
        idx: u32,
        popped_from: u8,
        cause: EvictionCause,
        weighted: bool,
        out: &mut Evicted<K, V>,
    ) {
        let free_head = self.free_head;
        let Some(slot) = self.slots.get_mut(idx as usize) else {
            return;
        };
        let Slot::Live { flags, .. } = slot else {
            return;
        };
        let rest = *flags & !popped_from;
        // One write of the slot: free (the common case, an eviction from the only ring that
        // held it) or dead while other rings still reference it.
        let replacement = if rest == 0 {
            Slot::Free { next: free_head }
        } else {
            Slot::Dead { flags: rest }
        };
        let Slot::Live {
            key,
            value,
            hash,
            flags,
            ..
        } = std::mem::replace(slot, replacement)
        else {
            return;
        };
        if rest == 0 {
            self.free_head = idx;
        } else {
            self.dead_refs += rest.count_ones() as usize;
        }
        let w = if weighted {
            self.weights.get(idx as usize).copied().unwrap_or(1)
        } else {
            1
        };
        if let Ok(entry) = self.table.find_entry(fold(hash), |&i| i == idx) {
            entry.remove();
        }
        self.len -= 1;
        self.weight -= w;
        if flags & IN_SMALL != 0 {
            self.small_weight -= w;
        }
        self.evictions[cause as usize] += 1;
        out.push(key, value, cause);
    }

    /// Pops a ring head that refers to a dead slot: drops the reference. Returns whether the
    /// index was dead (and handled).
    #[inline]
    fn drop_dead_ref(&mut self, idx: u32, ring: u8) -> bool {
        if let Slot::Dead { flags } = &mut self.slots[idx as usize] {
            *flags &= !ring;
            self.dead_refs -= 1;
            if *flags == 0 {
                self.free_slot(idx);
            }
            true
        } else {
            matches!(self.slots[idx as usize], Slot::Free { .. })
        }
    }

    /// Evicts one entry from the small queue (moving accessed ones to main). `protect` is the
    /// entry being inserted, which is never chosen. Returns whether an entry was evicted.
    #[inline(always)]
    fn evict_small(
        &mut self,
        protect: u32,
        cause: EvictionCause,
        weighted: bool,
        out: &mut Evicted<K, V>,
    ) -> bool {
        while let Some(idx) = self.small.front() {
            if idx == protect {
                // Everything older has been looked at.
                self.small.rotate(idx);
                return false;
            }
            let w = if weighted { self.weight_at(idx) } else { 1 };
            let Some(Slot::Live {
                freq, flags, hash, ..
            }) = self.slots.get_mut(idx as usize)
            else {
                self.small.pop_front();
                self.drop_dead_ref(idx, IN_SMALL);
                continue;
            };
            self.small.pop_front();
            if *freq.get_mut() > 0 {
                *freq.get_mut() = 0;
                *flags = (*flags & !IN_SMALL) | IN_MAIN;
                self.small_weight -= w;
                self.main.push_back(idx);
                continue;
            }
            let hash = fold(*hash);
            self.ghost.insert(hash);
            self.remove_live_inline(idx, IN_SMALL, cause, weighted, out);
            return true;
        }
        false
    }

    /// Evicts one entry from the main queue (a CLOCK: an entry read since it was last looked
    /// at goes round again, its counter one lower). `protect` is never chosen.
    #[inline(always)]
    fn evict_main(
        &mut self,
        protect: u32,
        cause: EvictionCause,
        weighted: bool,
        out: &mut Evicted<K, V>,
    ) -> bool {
        let mut seen_protect = 0;
        while let Some(idx) = self.main.front() {
            let Some(Slot::Live { freq, .. }) = self.slots.get_mut(idx as usize) else {
                self.main.pop_front();
                self.drop_dead_ref(idx, IN_MAIN);
                continue;
            };
            let f = freq.get_mut();
            if idx == protect {
                seen_protect += 1;
                if seen_protect > usize::from(FREQ_MAX) + 1 {
                    return false;
                }
            } else if *f > 0 {
                *f -= 1;
            } else {
                self.main.pop_front();
                self.remove_live_inline(idx, IN_MAIN, cause, weighted, out);
                return true;
            }
            self.main.rotate(idx);
        }
        false
    }

    /// Gives back ring storage left over from a peak (amortized O(1): a ring is shrunk only
    /// after it has lost three quarters of its capacity), and clears the index table's
    /// tombstones when they pass a quarter of the entries (see [`clear_tombstones`]).
    ///
    /// [`clear_tombstones`]: Self::clear_tombstones
    #[inline]
    fn trim_rings(&mut self) {
        let sparse = |r: &Ring| r.capacity() > 64 && r.len() * 4 < r.capacity();
        if sparse(&self.small)
            || sparse(&self.main)
            || sparse(&self.timer)
            || self.tombstones() > self.tombstone_limit()
        {
            self.trim_rings_slow();
        }
    }

    #[cold]
    fn trim_rings_slow(&mut self) {
        for ring in [&mut self.small, &mut self.main, &mut self.timer] {
            if ring.capacity() > 64 && ring.len() * 4 < ring.capacity() {
                ring.shrink_to(ring.len() * 2);
            }
        }
        if self.tombstones() > self.tombstone_limit() {
            self.clear_tombstones();
        }
    }

    /// Buckets of the index table that hold a tombstone (an erased entry hashbrown could not
    /// mark empty): its full capacity less what `capacity()` still offers.
    #[inline]
    fn tombstones(&self) -> usize {
        let buckets = self.table.num_buckets();
        let full = if buckets < 8 {
            buckets.saturating_sub(1)
        } else {
            buckets / 8 * 7
        };
        full.saturating_sub(self.table.capacity())
    }

    #[inline]
    fn tombstone_limit(&self) -> usize {
        (self.len / 4).max(64)
    }

    /// Empties the index table (keeping its allocation) and inserts every live entry again
    /// from the stored hashes. In a full cache every insert erases an entry, and hashbrown
    /// leaves a tombstone where the erased bucket sits in a run of 16 occupied ones; nothing
    /// removes tombstones but a rehash, which hashbrown does only when they have used up all
    /// of the table's spare room. Under steady churn the table then spent most of its time
    /// more than half full of entries and tombstones: probes grew longer, and whether an
    /// erase or an insert met a tombstone became a coin toss for the branch predictor (1.6
    /// mispredicted branches per insert in the cache bench's `insert_evict` by callgrind's
    /// simulator, against 0.2 with a clean table). Clearing at a quarter of the entries costs
    /// one pass over the live slots every few tens of thousands of inserts.
    #[cold]
    #[inline(never)]
    fn clear_tombstones(&mut self) {
        self.table.clear();
        let slots = &self.slots;
        for (i, slot) in slots.iter().enumerate() {
            if let Slot::Live { hash, .. } = slot {
                self.table
                    .insert_unique(fold(*hash), i as u32, |&j| match slots.get(j as usize) {
                        Some(Slot::Live { hash, .. }) => fold(*hash),
                        _ => 0,
                    });
            }
        }
    }

    /// Evicts until the weight is at most `target`; out of line, for the rare callers.
    #[inline(never)]
    fn evict_to(
        &mut self,
        target: u64,
        protect: u32,
        cause: EvictionCause,
        out: &mut Evicted<K, V>,
    ) {
        let weighted = !self.weights.is_empty();
        self.evict_to_inline(target, protect, cause, weighted, out)
    }

    /// Evicts until the weight is at most `target`. Inlined into the insert, where `weighted`
    /// is a constant for a cache without a weigher: its entries weigh 1 and no weight is read.
    #[inline(always)]
    fn evict_to_inline(
        &mut self,
        target: u64,
        protect: u32,
        cause: EvictionCause,
        weighted: bool,
        out: &mut Evicted<K, V>,
    ) {
        while self.weight > target {
            let main_weight = self.weight - self.small_weight;
            let from_small = self.small_weight > self.small_target || main_weight == 0;
            // The queue over its share first, then the other. One call site each, so that both
            // loops are inlined here (an iterator's `any` over the two was compiled out of line).
            let mut small = from_small;
            let mut tried = 0;
            let done = loop {
                let evicted = if small {
                    self.evict_small(protect, cause, weighted, out)
                } else {
                    self.evict_main(protect, cause, weighted, out)
                };
                tried += 1;
                if evicted || tried == 2 {
                    break evicted;
                }
                small = !small;
            };
            if !done {
                // Only the protected entry is left and it alone is over the target.
                if protect != NONE && matches!(self.slots[protect as usize], Slot::Live { .. }) {
                    self.remove_live(protect, 0, cause, out);
                }
                break;
            }
        }
    }

    /// Inserts or replaces. `weight` is at least 1. Expired heads of the expiry ring are
    /// reclaimed on the way (bounded work).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub fn insert(
        &mut self,
        hash: u64,
        key: K,
        value: V,
        weight: u64,
        now: Option<u64>,
        p: &Params,
        out: &mut Evicted<K, V>,
    ) {
        self.inserts += 1;
        if let Some(now) = now {
            self.reclaim_expired(now, 4, p, out);
        }
        let existing = self.find(hash, &key);
        if weight > self.capacity {
            // Can never fit: the old value (if any) goes, the new one is not admitted.
            if let Some(idx) = existing {
                self.remove_live(idx, 0, EvictionCause::Replaced, out);
            }
            self.evictions[EvictionCause::Capacity as usize] += 1;
            out.push(key, value, EvictionCause::Capacity);
            self.after_removals(p);
            return;
        }
        // In an expiring cache a replacement is a removal plus a fresh insert, so that the
        // expiry ring stays in deadline order; elsewhere the value is replaced in place.
        let mut carried: Option<(bool, u8)> = None;
        if let (Some(idx), Some(now)) = (existing, now) {
            let cause = if now >= self.deadline_of(idx, p) {
                // Already expired, just not reclaimed yet: nothing is carried over.
                EvictionCause::Expired
            } else {
                if let Slot::Live { freq, flags, .. } = &mut self.slots[idx as usize] {
                    carried = Some((*flags & IN_MAIN != 0, *freq.get_mut()));
                }
                EvictionCause::Replaced
            };
            self.remove_live(idx, 0, cause, out);
        }
        let idx = match existing.filter(|_| now.is_none()) {
            Some(idx) => {
                // `p.weighted`, not `weight_at`: a constant where the caller's `p` is one.
                let old_w = if p.weighted {
                    self.weights[idx as usize]
                } else {
                    1
                };
                let Slot::Live {
                    value: slot_value,
                    freq,
                    flags,
                    ..
                } = &mut self.slots[idx as usize]
                else {
                    return;
                };
                let old = std::mem::replace(slot_value, value);
                let f = freq.get_mut();
                *f = (*f + 1).min(FREQ_MAX);
                let in_small = *flags & IN_SMALL != 0;
                if p.weighted {
                    self.weights[idx as usize] = weight;
                }
                self.weight = self.weight - old_w + weight;
                if in_small {
                    self.small_weight = self.small_weight - old_w + weight;
                }
                self.evictions[EvictionCause::Replaced as usize] += 1;
                out.push(key, old, EvictionCause::Replaced);
                if weight <= old_w || self.weight <= self.capacity {
                    // Replaced in place, nothing removed: no eviction, nothing to compact.
                    return;
                }
                idx
            }
            None => {
                let (to_main, freq) = match carried {
                    Some((in_main, f)) => (in_main, (f + 1).min(FREQ_MAX)),
                    None => (self.ghost.take(hash), 0),
                };
                // Make room first, so the slot of an evicted entry is reused and a full shard
                // never holds more slots than its capacity.
                if self.weight + weight > self.capacity {
                    let target = self.capacity - weight;
                    self.evict_to_inline(target, NONE, EvictionCause::Capacity, p.weighted, out);
                }
                let ring = if to_main { IN_MAIN } else { IN_SMALL };
                let timer = if now.is_some() { IN_TIMER } else { 0 };
                // Nothing is admitted if the shard is at its structural limit of slot indices.
                let Some(idx) = self.alloc_slot(p) else {
                    return;
                };
                if let Some(slot) = self.slots.get_mut(idx as usize) {
                    *slot = Slot::Live {
                        key,
                        value,
                        hash: unfold(hash),
                        freq: AtomicU8::new(freq),
                        flags: ring | timer,
                    };
                }
                let slots = &self.slots;
                self.table
                    .insert_unique(hash, idx, |&i| match &slots[i as usize] {
                        Slot::Live { hash, .. } => fold(*hash),
                        _ => 0,
                    });
                if p.weighted {
                    self.weights[idx as usize] = weight;
                }
                if let Some(now) = now {
                    let deadline = p.ttl.map_or(u64::MAX, |ttl| now.saturating_add(ttl));
                    let queued = p
                        .tti
                        .map_or(deadline, |tti| deadline.min(now.saturating_add(tti)));
                    self.times[idx as usize] = Times {
                        deadline,
                        accessed: AtomicU64::new(now),
                        queued,
                    };
                    self.timer.push_back(idx);
                }
                if to_main {
                    self.main.push_back(idx);
                } else {
                    self.small.push_back(idx);
                    self.small_weight += weight;
                }
                self.len += 1;
                self.weight += weight;
                if self.len / GHOST_SHARE > self.ghost.fps.len() {
                    self.ghost.grow_to(self.len / GHOST_SHARE);
                }
                idx
            }
        };
        if self.weight > self.capacity {
            self.evict_to(self.capacity, idx, EvictionCause::Capacity, out);
        }
        if p.weighted || p.expires() {
            self.after_removals(p);
        } else if self.evictions[EvictionCause::Capacity as usize].is_multiple_of(64) {
            // An insert into a cache without weigher or expiry evicts at most one entry (every
            // entry weighs 1) and leaves no dead slot, so there is nothing to compact; only
            // the rings' lengths drift as entries move between them, and they are looked at
            // every 64 evictions.
            self.trim_rings();
        }
    }

    /// Removes `key` if it is live. An entry that has expired but was not reclaimed yet is
    /// reclaimed with cause `Expired` and `false` is returned for it.
    pub fn remove<Q>(
        &mut self,
        hash: u64,
        key: &Q,
        now: Option<u64>,
        p: &Params,
        out: &mut Evicted<K, V>,
    ) -> bool
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let Some(idx) = self.find(hash, key) else {
            return false;
        };
        let expired = now.is_some_and(|now| now >= self.deadline_of(idx, p));
        let cause = if expired {
            EvictionCause::Expired
        } else {
            EvictionCause::Explicit
        };
        self.remove_live(idx, 0, cause, out);
        self.after_removals(p);
        !expired
    }

    /// Reclaims expired entries from the head of the expiry ring, looking at most at `budget`
    /// heads. Returns how many heads were looked at.
    pub fn reclaim_expired(
        &mut self,
        now: u64,
        budget: usize,
        p: &Params,
        out: &mut Evicted<K, V>,
    ) -> usize {
        let mut looked = 0;
        while looked < budget {
            let Some(idx) = self.timer.front() else {
                break;
            };
            looked += 1;
            if !matches!(self.slots[idx as usize], Slot::Live { .. }) {
                self.timer.pop_front();
                self.drop_dead_ref(idx, IN_TIMER);
                continue;
            }
            let deadline = self.deadline_of(idx, p);
            if now >= deadline {
                self.timer.pop_front();
                self.remove_live(idx, IN_TIMER, EvictionCause::Expired, out);
                continue;
            }
            let t = &mut self.times[idx as usize];
            if t.queued <= now {
                // Read or replaced since it was queued: queue it again with its new deadline.
                t.queued = deadline;
                self.timer.rotate(idx);
                continue;
            }
            break;
        }
        if looked > 0 {
            self.trim_rings();
        }
        looked
    }

    /// Looks at up to `budget` entries of the expiry ring from a cursor that wraps around,
    /// reclaiming the expired ones. With a time to idle the ring is only roughly in deadline
    /// order (reads move deadlines without reordering), so `reclaim_expired`, which stops at
    /// the first head that has not expired, can miss some; this sweep finds them. Returns how
    /// many entries were looked at.
    pub fn sweep_expired(
        &mut self,
        now: u64,
        budget: usize,
        p: &Params,
        out: &mut Evicted<K, V>,
    ) -> usize {
        let n = budget.min(self.timer.len());
        for _ in 0..n {
            if self.sweep_cursor >= self.timer.len() {
                self.sweep_cursor = 0;
            }
            let Some(idx) = self.timer.get(self.sweep_cursor) else {
                break;
            };
            self.sweep_cursor += 1;
            if matches!(self.slots[idx as usize], Slot::Live { .. })
                && now >= self.deadline_of(idx, p)
            {
                // Stays referenced by the ring (as a dead slot) until the ring pops it.
                self.remove_live(idx, 0, EvictionCause::Expired, out);
            }
        }
        self.after_removals(p);
        n
    }

    /// Evicts with cause `Pressure` down to `fraction` of the current weight.
    pub fn shrink(&mut self, fraction: f64, p: &Params, out: &mut Evicted<K, V>) {
        let target = (self.weight as f64 * fraction).floor() as u64;
        self.evict_to(target, NONE, EvictionCause::Pressure, out);
        self.after_removals(p);
    }

    /// Empties the shard with cause `Explicit`; the old storage is returned so the caller can
    /// hand its entries to the listener and drop it outside the lock.
    pub fn take_all(&mut self) -> Vec<Slot<K, V>> {
        self.evictions[EvictionCause::Explicit as usize] += self.len as u64;
        let slots = std::mem::take(&mut self.slots);
        self.table = HashTable::new();
        self.table_at_buckets = usize::MAX;
        self.free_head = NONE;
        self.small = Ring::new();
        self.main = Ring::new();
        self.timer = Ring::new();
        self.dead_refs = 0;
        self.weights = Vec::new();
        self.times = Vec::new();
        self.ghost = Ghost { fps: Vec::new() };
        self.len = 0;
        self.weight = 0;
        self.small_weight = 0;
        slots
    }

    /// Keeps the structures proportional to the live entries: rebuilds the shard when dead
    /// ring references outnumber live entries, or when most slots are unused; otherwise gives
    /// back ring storage left over from a peak.
    #[inline]
    fn after_removals(&mut self, p: &Params) {
        let slots = self.slots.len();
        if self.dead_refs > self.len + 64 || (slots > 256 && self.len * 4 < slots) {
            self.rebuild(p);
        } else {
            self.trim_rings();
        }
    }

    /// Compacts the shard: live entries move to a dense slab in ring order; dead references
    /// and free slots disappear; storage is sized to the live entries.
    #[cold]
    fn rebuild(&mut self, p: &Params) {
        let live = self.len;
        let mut old_slots = std::mem::take(&mut self.slots);
        let old_weights = std::mem::take(&mut self.weights);
        let mut old_times = std::mem::take(&mut self.times);
        let old_small = std::mem::take(&mut self.small);
        let old_main = std::mem::take(&mut self.main);
        let old_timer = std::mem::take(&mut self.timer);
        let mut map = vec![NONE; old_slots.len()];
        let mut slots = Vec::with_capacity(live);
        let mut weights = Vec::with_capacity(if p.weighted { live } else { 0 });
        let mut times = Vec::with_capacity(if p.expires() { live } else { 0 });
        let mut table = HashTable::with_capacity(live);
        let mut small = Ring::with_capacity(live / 4 + 1);
        let mut main = Ring::with_capacity(live);
        for (ring, queue) in [(IN_SMALL, &old_small), (IN_MAIN, &old_main)] {
            for old in queue.iter() {
                let o = old as usize;
                if !matches!(old_slots[o], Slot::Live { .. }) || map[o] != NONE {
                    continue;
                }
                let slot = std::mem::replace(&mut old_slots[o], Slot::Free { next: NONE });
                let new = slots.len() as u32;
                map[o] = new;
                if let Slot::Live { hash, .. } = &slot {
                    table.insert_unique(fold(*hash), new, |&i: &u32| match &slots[i as usize] {
                        Slot::Live { hash, .. } => fold(*hash),
                        _ => 0,
                    });
                }
                slots.push(slot);
                if p.weighted {
                    weights.push(old_weights[o]);
                }
                if p.expires() {
                    let t = std::mem::replace(
                        &mut old_times[o],
                        Times {
                            deadline: 0,
                            accessed: AtomicU64::new(0),
                            queued: 0,
                        },
                    );
                    times.push(t);
                }
                if ring == IN_SMALL {
                    small.push_back(new);
                } else {
                    main.push_back(new);
                }
            }
        }
        let mut timer = Ring::with_capacity(if p.expires() { live } else { 0 });
        for old in old_timer.iter() {
            let new = map[old as usize];
            if new != NONE {
                timer.push_back(new);
            }
        }
        // Flags in the new slots: only live ones exist, in exactly the rings rebuilt above.
        for slot in &mut slots {
            if let Slot::Live { flags, .. } = slot {
                *flags &= IN_SMALL | IN_MAIN | IN_TIMER;
            }
        }
        if self.ghost.fps.len() > 4 * (live / GHOST_SHARE).max(64) {
            self.ghost = Ghost { fps: Vec::new() };
            self.ghost.grow_to(live / GHOST_SHARE);
        }
        self.table = table;
        self.table_at_buckets = usize::MAX;
        self.slots = slots;
        self.weights = weights;
        self.times = times;
        self.small = small;
        self.main = main;
        self.timer = timer;
        self.free_head = NONE;
        self.dead_refs = 0;
        self.sweep_cursor = 0;
        // `len`, `weight` and `small_weight` are unchanged: only live entries were kept.
        drop(old_slots);
    }

    /// Bytes of bookkeeping this shard holds beyond the keys and values themselves
    /// (approximate: allocator size classes are not counted).
    #[cfg(test)]
    pub fn overhead_bytes(&self) -> usize {
        use std::mem::size_of;
        let slot_pad = size_of::<Slot<K, V>>().saturating_sub(size_of::<K>() + size_of::<V>());
        self.slots.capacity() * slot_pad
            + (self.slots.capacity() - self.len) * (size_of::<K>() + size_of::<V>())
            + self.table.capacity() * 5
            + (self.small.capacity() + self.main.capacity() + self.timer.capacity()) * 4
            + self.weights.capacity() * 8
            + self.times.capacity() * size_of::<Times>()
            + self.ghost.fps.len() * 2
    }

    /// Length and capacity of the small, main and expiry rings (tests only).
    #[cfg(test)]
    pub fn rings(&self) -> [(usize, usize); 3] {
        [&self.small, &self.main, &self.timer].map(|r| (r.len(), r.capacity()))
    }

    #[cfg(test)]
    pub fn overhead_breakdown(&self) -> String {
        format!(
            "len {} slots {}/{} table {} small {} main {} timer {} ghost {} dead_refs {}",
            self.len,
            self.slots.len(),
            self.slots.capacity(),
            self.table.capacity(),
            self.small.capacity(),
            self.main.capacity(),
            self.timer.capacity(),
            self.ghost.fps.len(),
            self.dead_refs
        )
    }

    /// Checks the internal invariants (tests only).
    #[cfg(test)]
    pub fn validate<S: BuildHasher>(&self, hasher: &S) {
        let mut live = 0;
        let mut weight = 0;
        let mut small_weight = 0;
        let mut dead_refs = 0;
        for (i, s) in self.slots.iter().enumerate() {
            match s {
                Slot::Live {
                    key, hash, flags, ..
                } => {
                    live += 1;
                    let w = self.weight_at(i as u32);
                    weight += w;
                    if flags & IN_SMALL != 0 {
                        small_weight += w;
                    }
                    assert_eq!(
                        (flags & IN_SMALL != 0) as u8 + (flags & IN_MAIN != 0) as u8,
                        1,
                        "a live entry is in exactly one queue"
                    );
                    let h = hash_of(hasher, key);
                    assert_eq!(fold(*hash), h, "the stored hash is the key's");
                    assert_eq!(self.table.find(h, |&j| j == i as u32), Some(&(i as u32)));
                }
                Slot::Dead { flags } => dead_refs += flags.count_ones() as usize,
                Slot::Free { .. } => {}
            }
        }
        assert_eq!(live, self.len);
        assert_eq!(self.table.len(), self.len);
        assert_eq!(weight, self.weight);
        assert_eq!(small_weight, self.small_weight);
        assert_eq!(dead_refs, self.dead_refs);
        assert!(self.weight <= self.capacity);
    }
}

#[cfg(test)]
mod fold_tests {
    use super::{fold, unfold};

    #[test]
    fn a_slot_keeps_enough_of_the_hash_to_restore_it() {
        let mut h: u32 = 1;
        for _ in 0..10_000 {
            assert_eq!(unfold(fold(h)), h);
            h = h.wrapping_mul(2_654_435_761).wrapping_add(0x9E37);
        }
        for h in [0, 1, u32::MAX, 0x8000_0000] {
            assert_eq!(unfold(fold(h)), h);
        }
    }

    #[test]
    fn the_hash_fits_in_the_padding_of_a_slot() {
        assert_eq!(std::mem::size_of::<super::Slot<u64, u64>>(), 24);
    }

    #[test]
    fn folded_hashes_differ_in_their_high_bits() {
        // The shard choice and the table's control byte come from the high bits.
        let tops: std::collections::HashSet<u64> = (0..4096u32).map(|h| fold(h) >> 57).collect();
        assert_eq!(tops.len(), 128, "all 128 control-byte values are reached");
    }
}

#[cfg(test)]
mod tombstone_tests {
    use super::*;

    #[test]
    fn churn_leaves_few_tombstones_in_the_index_table() {
        let hasher = hashbrown::DefaultHashBuilder::default();
        let p = Params {
            ttl: None,
            tti: None,
            weighted: false,
            entries_hint: 1250,
        };
        let mut shard: Shard<u64, u64> = Shard::new(1250);
        let mut most = 0;
        for k in 0..400_000u64 {
            let mut out = Evicted::new();
            shard.insert(hash_of(&hasher, &k), k, k, 1, None, &p, &mut out);
            most = most.max(shard.tombstones());
            if k % 50_000 == 0 {
                shard.validate(&hasher);
            }
        }
        shard.validate(&hasher);
        assert_eq!(shard.len(), 1250);
        // Without clearing they reached about 2 300 (all of the table's spare room) before
        // hashbrown rehashed; a clear comes at most 64 evictions after the limit is passed.
        assert!(most <= 1250 / 4 + 64, "{most} tombstones");
    }
}
