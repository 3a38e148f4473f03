//! The entries of a cache: a slab of nodes (`Vec<Option<Node>>` with a free list) indexed by
//! a `hashbrown::HashTable<u32>` keyed by the Python hash of the key (computed once per
//! operation and kept in the node), and two intrusive doubly linked lists through the nodes:
//! the exact LRU order and the iteration order.

use super::NIL;
use super::time::Time;
use hashbrown::HashTable;
use pyo3::prelude::*;
use std::os::raw::c_int;

pub(super) struct Node {
    pub(super) key: Py<PyAny>,
    pub(super) value: Py<PyAny>,
    pub(super) hash: isize,
    pub(super) size: f64,
    pub(super) expires: Option<Time>,
    pub(super) lru: Link,
    pub(super) ord: Link,
    /// The key is an exact int whose value is its hash (set by `Core::insert`): two such
    /// keys are equal exactly when their hashes are.
    pub(super) small_int: bool,
}

impl Node {
    /// A new entry, not yet linked: `key` hashed as `kh`.
    #[inline(always)]
    pub(super) fn new(
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        kh: KeyHash,
        size: f64,
        expires: Option<Time>,
    ) -> Node {
        Node {
            key: key.clone().unbind(),
            value: value.clone().unbind(),
            hash: kh.hash,
            size,
            expires,
            lru: UNLINKED,
            ord: UNLINKED,
            small_int: kh.small_int,
        }
    }

    /// Drops the node's objects, the thread being attached: one `Py_DECREF` each, without
    /// the check of the thread's state that dropping a `Py` makes.
    pub(super) fn release(self, py: Python<'_>) {
        let Node {
            key,
            value,
            expires,
            ..
        } = self;
        drop(key.into_bound(py));
        drop(value.into_bound(py));
        if let Some(Time::Obj(t)) = expires {
            drop(t.into_bound(py));
        }
    }
}

#[derive(Clone, Copy)]
pub(super) struct Link {
    pub(super) prev: u32,
    pub(super) next: u32,
}

pub(super) const UNLINKED: Link = Link {
    prev: NIL,
    next: NIL,
};

#[derive(Clone, Copy)]
pub(super) struct Ends {
    pub(super) head: u32,
    pub(super) tail: u32,
}

pub(super) const EMPTY: Ends = Ends {
    head: NIL,
    tail: NIL,
};

/// Spreads a Python hash (small ints hash to themselves) over the 64 bits hashbrown uses.
pub(super) fn mix(hash: isize) -> u64 {
    let x = (hash as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^ (x >> 32)
}

pub(super) struct Core {
    pub(super) slots: Vec<Option<Node>>,
    pub(super) free: Vec<u32>,
    pub(super) table: HashTable<u32>,
    pub(super) lru: Ends,
    pub(super) ord: Ends,
    pub(super) len: usize,
    pub(super) currsize: f64,
}

/// Whether `key` is an exact int whose value is its hash: |value| < 2**61 - 1 (the modulus
/// of Python's hash of ints) and not -1 (whose hash is -2). Two such ints with equal hashes
/// are equal, which a lookup then knows without Python's comparison.
#[inline]
pub(super) fn small_int(key: *mut pyo3::ffi::PyObject) -> bool {
    small_int_value(key).is_some()
}

/// The value of `key` when it is a small exact int (see `small_int`): then also its hash.
#[inline(always)]
fn small_int_value(key: *mut pyo3::ffi::PyObject) -> Option<isize> {
    // SAFETY: `key` is a live object and the thread is attached; an exact int converts
    // without error, an overflow is reported in `overflow`, not raised.
    unsafe {
        if pyo3::ffi::Py_TYPE(key) != std::ptr::addr_of_mut!(pyo3::ffi::PyLong_Type) {
            return None;
        }
        let mut overflow = 0;
        let v = pyo3::ffi::PyLong_AsLongAndOverflow(key, &mut overflow);
        (overflow == 0 && v != -1 && (v as i64).unsigned_abs() < (1 << 61) - 1)
            .then_some(v as isize)
    }
}

/// `a == b` as `PyObject_RichCompareBool` tells it (1, 0, or -1 with an exception set), with
/// a shorter way for two exact tuples of one length (the keys of the memoizing decorators):
/// item by item as the tuple's own comparison does, two small exact ints told apart by value
/// (see `small_int`) and any other pair of items compared by Python.
///
/// # Safety
///
/// Both are live objects and the thread is attached.
///
/// Out of line: inlined into [`Core::find`]'s probe loop it cost every lookup ~40 instructions
/// (the loop's registers spilled), where a call costs a few on the rarer path that compares.
#[inline(never)]
unsafe fn keys_equal(a: *mut pyo3::ffi::PyObject, b: *mut pyo3::ffi::PyObject) -> c_int {
    use pyo3::ffi;
    // SAFETY: the caller's contract; the items of a tuple are live while it is.
    unsafe {
        let tuple = std::ptr::addr_of_mut!(ffi::PyTuple_Type);
        if ffi::Py_TYPE(a) != tuple || ffi::Py_TYPE(b) != tuple {
            return ffi::PyObject_RichCompareBool(a, b, ffi::Py_EQ);
        }
        let len = ffi::PyTuple_Size(a);
        if len != ffi::PyTuple_Size(b) {
            // The tuple's comparison, which compares the common items first.
            return ffi::PyObject_RichCompareBool(a, b, ffi::Py_EQ);
        }
        for i in 0..len {
            let (x, y) = (ffi::PyTuple_GetItem(a, i), ffi::PyTuple_GetItem(b, i));
            if x == y {
                continue;
            }
            if let (Some(vx), Some(vy)) = (small_int_value(x), small_int_value(y)) {
                if vx == vy {
                    continue;
                }
                return 0;
            }
            let r = ffi::PyObject_RichCompareBool(x, y, ffi::Py_EQ);
            if r != 1 {
                return r;
            }
        }
        1
    }
}

/// The Python hash of a key, and whether the key is a small exact int (see `small_int`).
#[derive(Clone, Copy)]
pub(super) struct KeyHash {
    pub(super) hash: isize,
    pub(super) small_int: bool,
}

impl KeyHash {
    /// `hash(key)`. A small exact int is its own hash: one call into CPython, which also
    /// tells that the key is one, instead of `PyObject_Hash` and that check.
    #[inline(always)]
    pub(super) fn of(key: &Bound<'_, PyAny>) -> PyResult<KeyHash> {
        if let Some(v) = small_int_value(key.as_ptr()) {
            return Ok(KeyHash {
                hash: v,
                small_int: true,
            });
        }
        // SAFETY: `key` is a live object and the thread is attached.
        let hash = unsafe { pyo3::ffi::PyObject_Hash(key.as_ptr()) };
        if hash == -1 {
            return Err(PyErr::fetch(key.py()));
        }
        Ok(KeyHash {
            hash,
            small_int: false,
        })
    }
}

/// The occupied slot `i` (every linked index is one).
#[inline(always)]
fn occupied(slots: &mut [Option<Node>], i: u32) -> &mut Node {
    match slots.get_mut(i as usize) {
        Some(Some(n)) => n,
        _ => unreachable!("a linked slot is occupied"),
    }
}

/// Moves the linked node `i` to the back of the list whose ends are `ends` and whose links
/// `link` picks in a node.
#[inline(always)]
fn relink_back(
    slots: &mut [Option<Node>],
    ends: &mut Ends,
    i: u32,
    link: impl Fn(&mut Node) -> &mut Link,
) {
    let tail = ends.tail;
    if tail == i {
        return;
    }
    let Link { prev, next } = *link(occupied(slots, i));
    // `i` is linked and not the tail: it has a next node.
    if prev == NIL {
        ends.head = next;
    } else {
        link(occupied(slots, prev)).next = next;
    }
    link(occupied(slots, next)).prev = prev;
    link(occupied(slots, tail)).next = i;
    *link(occupied(slots, i)) = Link {
        prev: tail,
        next: NIL,
    };
    ends.tail = i;
}

/// Which list of a node.
#[derive(Clone, Copy)]
pub(super) enum List {
    Lru,
    Ord,
}

impl Core {
    pub(super) fn new() -> Self {
        Core {
            slots: Vec::new(),
            free: Vec::new(),
            table: HashTable::new(),
            lru: EMPTY,
            ord: EMPTY,
            len: 0,
            currsize: 0.0,
        }
    }

    #[inline(always)]
    pub(super) fn node(&self, i: u32) -> &Node {
        match &self.slots[i as usize] {
            Some(n) => n,
            None => unreachable!("a linked slot is occupied"),
        }
    }

    #[inline(always)]
    pub(super) fn node_mut(&mut self, i: u32) -> &mut Node {
        match &mut self.slots[i as usize] {
            Some(n) => n,
            None => unreachable!("a linked slot is occupied"),
        }
    }

    pub(super) fn link(&mut self, i: u32, list: List) -> &mut Link {
        let n = self.node_mut(i);
        match list {
            List::Lru => &mut n.lru,
            List::Ord => &mut n.ord,
        }
    }

    pub(super) fn ends(&mut self, list: List) -> &mut Ends {
        match list {
            List::Lru => &mut self.lru,
            List::Ord => &mut self.ord,
        }
    }

    pub(super) fn unlink(&mut self, i: u32, list: List) {
        let Link { prev, next } = *self.link(i, list);
        if prev == NIL {
            self.ends(list).head = next;
        } else {
            self.link(prev, list).next = next;
        }
        if next == NIL {
            self.ends(list).tail = prev;
        } else {
            self.link(next, list).prev = prev;
        }
        *self.link(i, list) = UNLINKED;
    }

    pub(super) fn push_back(&mut self, i: u32, list: List) {
        let tail = self.ends(list).tail;
        *self.link(i, list) = Link {
            prev: tail,
            next: NIL,
        };
        if tail == NIL {
            self.ends(list).head = i;
        } else {
            self.link(tail, list).next = i;
        }
        self.ends(list).tail = i;
    }

    /// Moves node `i` to the back of `list` (the most recently used end of the LRU list):
    /// the hot path of every hit, so written out once per list without the generic helpers.
    #[inline(always)]
    pub(super) fn move_back(&mut self, i: u32, list: List) {
        match list {
            List::Lru => relink_back(&mut self.slots, &mut self.lru, i, |n| &mut n.lru),
            List::Ord => relink_back(&mut self.slots, &mut self.ord, i, |n| &mut n.ord),
        }
    }

    /// The node of `key` (whose hash is `kh`), comparing keys as a dict does (identity, then
    /// `==`).
    #[inline(always)]
    pub(super) fn find(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        kh: KeyHash,
    ) -> PyResult<Option<u32>> {
        let mut failed = false;
        let KeyHash {
            hash,
            small_int: key_small,
        } = kh;
        let slots = &self.slots;
        let key_ptr = key.as_ptr();
        let found = self.table.find(mix(hash), |&i| {
            let Some(Some(n)) = slots.get(i as usize) else {
                return false;
            };
            if n.hash != hash || failed {
                return false;
            }
            if n.key.as_ptr() == key_ptr {
                return true;
            }
            if n.small_int && key_small {
                // Two small exact ints with equal hashes.
                return true;
            }
            // SAFETY: both pointers are live objects (the node's key is owned by the node, `key`
            // is borrowed for the call) and this thread is attached to the interpreter.
            match unsafe { keys_equal(n.key.as_ptr(), key_ptr) } {
                1 => true,
                0 => false,
                _ => {
                    // The exception stays set; no further comparison runs.
                    failed = true;
                    false
                }
            }
        });
        if failed {
            return Err(PyErr::fetch(py));
        }
        Ok(found.copied())
    }

    /// Stores `node` (the thread is attached: its key is looked at unless `node.small_int`
    /// says already that it is a small exact int).
    pub(super) fn insert(&mut self, mut node: Node) -> u32 {
        // A caller that hashed the key with `KeyHash::of` knows; others leave it false.
        if !node.small_int {
            node.small_int = small_int(node.key.as_ptr());
        }
        let hash = node.hash;
        let size = node.size;
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(node);
                i
            }
            None => {
                self.slots.push(Some(node));
                (self.slots.len() - 1) as u32
            }
        };
        let slots = &self.slots;
        self.table
            .insert_unique(mix(hash), i, |&j| match &slots[j as usize] {
                Some(n) => mix(n.hash),
                None => 0,
            });
        self.push_back(i, List::Lru);
        self.push_back(i, List::Ord);
        self.len += 1;
        self.currsize += size;
        i
    }

    /// `remove(i)` then `insert(node)` in one step, for a write whose last eviction is the
    /// node `i` (a full cache's usual write): the new entry takes `i`'s slot and goes to the
    /// back of both lists, without giving the slot back and taking it again. Returns the
    /// node that left, unlinked. Not for the last entry (`remove` gives an emptied cache's
    /// slab back).
    #[inline(always)]
    pub(super) fn replace(&mut self, i: u32, mut node: Node) -> Node {
        debug_assert!(self.len > 1, "replace is not for the last entry");
        if !node.small_int {
            node.small_int = small_int(node.key.as_ptr());
        }
        let old_hash = self.node(i).hash;
        if let Ok(entry) = self.table.find_entry(mix(old_hash), |&j| j == i) {
            entry.remove();
        }
        self.move_back(i, List::Lru);
        self.move_back(i, List::Ord);
        let hash = node.hash;
        let slot = self.node_mut(i);
        node.lru = slot.lru;
        node.ord = slot.ord;
        let mut old = std::mem::replace(slot, node);
        old.lru = UNLINKED;
        old.ord = UNLINKED;
        let slots = &self.slots;
        self.table
            .insert_unique(mix(hash), i, |&j| match &slots[j as usize] {
                Some(n) => mix(n.hash),
                None => 0,
            });
        self.currsize -= old.size;
        self.currsize += self.node(i).size;
        old
    }

    pub(super) fn remove(&mut self, i: u32) -> Node {
        self.unlink(i, List::Lru);
        self.unlink(i, List::Ord);
        let hash = self.node(i).hash;
        if let Ok(entry) = self.table.find_entry(mix(hash), |&j| j == i) {
            entry.remove();
        }
        let node = self.slots[i as usize].take();
        self.free.push(i);
        self.len -= 1;
        let Some(node) = node else {
            unreachable!("a linked slot is occupied")
        };
        self.currsize -= node.size;
        if self.len == 0 {
            // No rounding left over from float sizes, and the slab given back.
            self.currsize = 0.0;
            if self.slots.len() > 64 {
                self.slots = Vec::new();
                self.free = Vec::new();
                self.table = HashTable::new();
            }
        }
        node
    }

    pub(super) fn take_all(&mut self) -> Vec<Option<Node>> {
        let slots = std::mem::take(&mut self.slots);
        *self = Core::new();
        slots
    }

    /// Keys in iteration order.
    pub(super) fn ord_iter(&self) -> impl Iterator<Item = &Node> + '_ {
        let mut i = self.ord.head;
        std::iter::from_fn(move || {
            if i == NIL {
                return None;
            }
            let n = self.node(i);
            i = n.ord.next;
            Some(n)
        })
    }
}
