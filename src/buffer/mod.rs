//! The per-worker buffer registry: one mmap'd region of fixed-size slots. On io_uring it
//! is registered as fixed buffers (when the locked-memory limit allows) and published
//! through a provided-buffer ring, so the kernel takes a slot only when data arrives and
//! an idle session holds none; on epoll the driver takes a free slot only once a socket
//! is readable, to the same effect.
//!
//! Ownership: a slot is either free (in the provided ring, the kernel's to take, or in the
//! free list), or held by exactly one session direction (received data not yet fully
//! sent), plus one reference per zero-copy send whose notification has not arrived. It
//! is free again only when its last reference is released.

use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::Submitter;

/// Buffer group id of the one provided-buffer ring each worker has.
pub const BUFFER_GROUP: u16 = 0;

/// The kernel's limit on provided-ring entries, and so on slots per worker.
pub const MAX_SLOTS: usize = 32768;
/// The kernel's limit on registered fixed buffers (`UIO_MAXIOV`-sized table).
pub const MAX_FIXED: usize = 16384;

/// Of a worker's `count` slots, how many directions that already hold a slot may not
/// take: half. A receive of a direction that holds slots is armed only while the free
/// slots, less those such receives already armed may take, exceed it; so directions
/// that hold none (a new or idle session, a quiet direction) still find a slot after
/// stalled directions have taken all they may. `max_in_flight` thereby shrinks to 1
/// as the pool fills past half.
pub fn reserve(count: usize) -> usize {
    count / 2
}

/// The fewest directions that can hold every one of `count` slots when each holds at
/// most `max_in_flight`: slots beyond a direction's first come only from the part
/// above the reserve, so `d` directions hold at most `d + min(d (max_in_flight - 1),
/// count - reserve)`, which reaches `count` first at `max(reserve, ceil(count /
/// max_in_flight))`.
pub fn directions_to_exhaust(count: usize, max_in_flight: usize) -> usize {
    reserve(count).max(count.div_ceil(max_in_flight.max(1)))
}

/// Why a worker's slots stayed unregistered although the plan asked for it.
#[derive(Debug)]
pub enum Unregistered {
    /// More slots than io_uring can register as fixed buffers.
    TooMany(usize),
    /// The kernel refused them (usually `RLIMIT_MEMLOCK`): `bytes` would have been pinned.
    Refused { bytes: usize, error: io::Error },
}

/// Whether fixed-buffer registration worked; decided per worker, warned about once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    Registered,
    /// Registration failed (usually `RLIMIT_MEMLOCK`); receives still use the provided
    /// ring, sends use plain `send`.
    Unregistered,
}

/// No slot: the end of a queue.
const NONE: u16 = u16::MAX;

/// Bookkeeping of one slot.
#[derive(Debug, Clone, Copy)]
struct SlotMeta {
    /// References: 0 = in the provided ring.
    refs: u16,
    /// The next slot of the queue this one is in.
    next: u16,
    /// Bytes of the slot already sent.
    offset: u32,
    /// Bytes of the slot still to send.
    len: u32,
}

/// A direction's queue of held slots (received, not yet fully sent), oldest first.
/// The links live in the registry, so a session pays six bytes per direction for it
/// whatever the in-flight cap.
#[derive(Debug, Clone, Copy)]
pub struct SlotQueue {
    head: u16,
    tail: u16,
    len: u16,
}

impl Default for SlotQueue {
    fn default() -> Self {
        SlotQueue {
            head: NONE,
            tail: NONE,
            len: 0,
        }
    }
}

impl SlotQueue {
    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A part of a held slot still to send. Only the registry makes one, so a send's
/// pointer and length always lie inside a held slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    slot: u16,
    offset: usize,
    len: usize,
}

impl Pending {
    pub fn slot(&self) -> u16 {
        self.slot
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// How free slots reach the receives that fill them.
enum Provision {
    /// Not yet decided (a registry before [`BufferRegistry::register`], or epoll's):
    /// free slots wait in the free list for the driver to take.
    FreeList,
    /// A provided-buffer ring of `mask + 1` entries the kernel takes from. Free slots
    /// beyond its room wait in the free list and move in as the kernel takes slots out.
    Ring {
        map: Mapping,
        mask: u16,
        /// Our copy of the ring tail; the kernel reads the shared one.
        tail: u16,
        /// Slots published and not yet reported taken.
        in_ring: usize,
    },
}

/// An anonymous private mapping, unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Mapping> {
        // SAFETY: an anonymous private mapping with no address hint has no preconditions;
        // the result is checked against MAP_FAILED before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned, unmapped once. No op can touch
        // the region afterwards: the registry is owned by its driver and declared after
        // the ring (or the epoll set, whose syscalls never outlive a call), so the ring is
        // closed first. A worker usually waits for every completion before that, but not
        // on the stop-grace exit or when io_uring_enter fails; that is still sound
        // because closing a ring cancels its ops and the kernel keeps registered and
        // in-flight pages pinned until it has let go of them.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// One worker's slots.
pub struct BufferRegistry {
    region: Mapping,
    provision: Provision,
    /// Free slots not in the provided ring, the most recently freed last.
    free: Vec<u16>,
    slot_size: usize,
    count: usize,
    slots: Vec<SlotMeta>,
    in_use: usize,
    in_use_max: usize,
    allocations: u64,
    registration: Registration,
}

impl BufferRegistry {
    /// Maps `count` slots of `slot_size` bytes, all free.
    pub fn new(count: usize, slot_size: usize) -> io::Result<BufferRegistry> {
        if count == 0 || count > MAX_SLOTS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{count} buffer slots per worker; 1..={MAX_SLOTS} supported"),
            ));
        }
        Ok(BufferRegistry {
            region: Mapping::new(count * slot_size)?,
            provision: Provision::FreeList,
            // Popped from the back: slot 0 first.
            free: (0..count as u16).rev().collect(),
            slot_size,
            count,
            slots: vec![
                SlotMeta {
                    refs: 0,
                    next: NONE,
                    offset: 0,
                    len: 0,
                };
                count
            ],
            in_use: 0,
            in_use_max: 0,
            allocations: 0,
            registration: Registration::Unregistered,
        })
    }

    /// Registers the region as fixed buffers when `fixed` and a provided ring of
    /// `ring_entries` (a power of two, at most the slot count rounded up), then publishes
    /// as many free slots as it holds. Returns why the slots stayed unregistered when
    /// `fixed` was asked for and refused (the driver says so, with the limit it knows).
    pub fn register(
        &mut self,
        submitter: &Submitter<'_>,
        fixed: bool,
        ring_entries: usize,
    ) -> io::Result<Option<Unregistered>> {
        debug_assert!(ring_entries.is_power_of_two() && ring_entries <= 32768);
        let refused = if fixed {
            self.register_fixed(submitter).err()
        } else {
            None
        };
        self.registration = if fixed && refused.is_none() {
            Registration::Registered
        } else {
            Registration::Unregistered
        };
        let map = Mapping::new(ring_entries * std::mem::size_of::<BufRingEntry>())?;
        // SAFETY: the mapping is page aligned and sized for `ring_entries` entries; it
        // moves into `self.provision` below and so lives as long as the registry. The
        // registry is a field of the ring's owner declared after the ring, so it is
        // dropped after the ring is closed, and closing a ring unregisters its buffer
        // rings: the kernel never reads the mapping after it is unmapped.
        unsafe {
            submitter.register_buf_ring_with_flags(
                map.ptr as u64,
                ring_entries as u16,
                BUFFER_GROUP,
                0,
            )?;
        }
        self.provision = Provision::Ring {
            map,
            mask: (ring_entries - 1) as u16,
            tail: 0,
            in_ring: 0,
        };
        self.top_up_ring();
        Ok(refused)
    }

    /// Moves free slots into the provided ring while it has room.
    fn top_up_ring(&mut self) {
        let mut moved = false;
        while let Provision::Ring { mask, in_ring, .. } = self.provision {
            if in_ring > mask as usize {
                break;
            }
            let Some(slot) = self.free.pop() else {
                break;
            };
            self.push_to_ring(slot);
            moved = true;
        }
        if moved {
            self.publish_tail();
        }
    }

    /// The epoll driver takes a free slot for a receive about to be made.
    pub(crate) fn pop_free(&mut self) -> Option<u16> {
        debug_assert!(matches!(self.provision, Provision::FreeList));
        self.free.pop()
    }

    /// The epoll driver gives back a slot its receive did not fill.
    pub(crate) fn unpop(&mut self, slot: u16) {
        self.free.push(slot);
    }

    fn register_fixed(&self, submitter: &Submitter<'_>) -> Result<(), Unregistered> {
        if self.count > MAX_FIXED {
            return Err(Unregistered::TooMany(self.count));
        }
        let iovecs: Vec<libc::iovec> = (0..self.count)
            .map(|i| libc::iovec {
                // SAFETY: i < count, so the offset stays inside the region.
                iov_base: unsafe { self.region.ptr.add(i * self.slot_size) }.cast(),
                iov_len: self.slot_size,
            })
            .collect();
        // SAFETY: every iovec points into the region, which outlives the ring.
        unsafe { submitter.register_buffers(&iovecs) }.map_err(|e| Unregistered::Refused {
            bytes: self.count * self.slot_size,
            error: e,
        })
    }

    pub fn registration(&self) -> Registration {
        self.registration
    }

    pub fn slot_size(&self) -> usize {
        self.slot_size
    }

    pub fn count(&self) -> usize {
        self.count
    }

    pub fn in_use(&self) -> usize {
        self.in_use
    }

    pub fn in_use_max(&self) -> usize {
        self.in_use_max
    }

    pub fn allocations(&self) -> u64 {
        self.allocations
    }

    /// Records that a receive filled `slot`: the caller now holds it.
    pub fn take(&mut self, slot: u16) {
        let meta = &mut self.slots[slot as usize];
        debug_assert_eq!(meta.refs, 0, "slot {slot} taken twice");
        meta.refs = 1;
        self.in_use += 1;
        self.in_use_max = self.in_use_max.max(self.in_use);
        self.allocations += 1;
        if let Provision::Ring { in_ring, .. } = &mut self.provision {
            *in_ring -= 1;
            self.top_up_ring();
        }
    }

    /// Adds a reference to a held slot (a zero-copy send awaiting its notification).
    pub fn retain(&mut self, slot: u16) {
        self.slots[slot as usize].refs += 1;
    }

    /// Drops one reference; the slot goes back to the ring with its last one.
    /// Returns whether it did.
    pub fn release(&mut self, slot: u16) -> bool {
        let meta = &mut self.slots[slot as usize];
        debug_assert!(meta.refs > 0, "slot {slot} released while free");
        meta.refs -= 1;
        if meta.refs > 0 {
            return false;
        }
        self.in_use -= 1;
        self.free.push(slot);
        self.top_up_ring();
        true
    }

    /// Appends a held slot with `len` received bytes to a queue; the queue now owns the
    /// slot's reference.
    pub fn enqueue(&mut self, q: &mut SlotQueue, slot: u16, len: usize) {
        let meta = &mut self.slots[slot as usize];
        debug_assert_eq!(meta.refs, 1, "slot {slot} queued without being held once");
        meta.next = NONE;
        meta.offset = 0;
        meta.len = len as u32;
        if q.tail == NONE {
            q.head = slot;
        } else {
            self.slots[q.tail as usize].next = slot;
        }
        q.tail = slot;
        q.len += 1;
    }

    /// The unsent parts of a queue's slots, oldest first.
    pub fn pending<'a>(&'a self, q: &SlotQueue) -> impl Iterator<Item = Pending> + 'a {
        let mut at = q.head;
        std::iter::from_fn(move || {
            if at == NONE {
                return None;
            }
            let meta = self.slots[at as usize];
            let p = Pending {
                slot: at,
                offset: meta.offset as usize,
                len: meta.len as usize,
            };
            at = meta.next;
            Some(p)
        })
    }

    /// Records that `sent` bytes from the front of a queue went out: fully sent slots leave
    /// the queue and drop its reference. Returns how many slots went back to the ring.
    pub fn consume(&mut self, q: &mut SlotQueue, mut sent: usize) -> usize {
        let mut recycled = 0;
        while sent > 0 && q.head != NONE {
            let slot = q.head;
            let meta = &mut self.slots[slot as usize];
            let n = sent.min(meta.len as usize);
            meta.offset += n as u32;
            meta.len -= n as u32;
            sent -= n;
            if meta.len > 0 {
                break;
            }
            q.head = meta.next;
            q.len -= 1;
            if q.head == NONE {
                q.tail = NONE;
            }
            recycled += usize::from(self.release(slot));
        }
        recycled
    }

    /// Drops every slot of a queue (the session is gone). Returns how many went back to the ring.
    pub fn clear(&mut self, q: &mut SlotQueue) -> usize {
        let mut recycled = 0;
        while q.head != NONE {
            let slot = q.head;
            q.head = self.slots[slot as usize].next;
            recycled += usize::from(self.release(slot));
        }
        *q = SlotQueue::default();
        recycled
    }

    /// Where `part`'s unsent bytes start; `part.len()` of them lie inside its slot.
    pub(crate) fn ptr(&self, part: Pending) -> *const u8 {
        self.at(part.slot, part.offset)
    }

    /// The start of a free slot, for the epoll driver's receive into it.
    pub(crate) fn free_slot_ptr(&mut self, slot: u16) -> *mut u8 {
        debug_assert_eq!(self.slots[slot as usize].refs, 0);
        self.at(slot, 0).cast_mut()
    }

    fn at(&self, slot: u16, offset: usize) -> *const u8 {
        assert!((slot as usize) < self.count && offset <= self.slot_size);
        // SAFETY: slot < count and offset <= slot_size (asserted) keep the pointer inside
        // the region, or one past a slot's end, which is never read with a non-zero length.
        unsafe { self.region.ptr.add(slot as usize * self.slot_size + offset) }
    }

    fn push_to_ring(&mut self, slot: u16) {
        let addr = self.at(slot, 0) as u64;
        let size = self.slot_size as u32;
        let Provision::Ring {
            map,
            mask,
            tail,
            in_ring,
        } = &mut self.provision
        else {
            return;
        };
        let index = (*tail & *mask) as usize;
        // SAFETY: index <= mask, inside the ring mapping; the kernel does not read an
        // entry at or past the tail we have published, so writing it races with nothing.
        unsafe {
            let entry = &mut *map.ptr.cast::<BufRingEntry>().add(index);
            entry.set_addr(addr);
            entry.set_len(size);
            entry.set_bid(slot);
        }
        *tail = tail.wrapping_add(1);
        *in_ring += 1;
    }

    fn publish_tail(&self) {
        let Provision::Ring { map, tail, .. } = &self.provision else {
            return;
        };
        // SAFETY: the tail field overlays entry 0's reserved field, inside the mapping, and
        // is only ever accessed atomically; the release store orders the entry writes
        // before the kernel sees the new tail.
        unsafe {
            let shared = BufRingEntry::tail(map.ptr.cast::<BufRingEntry>()) as *const AtomicU16;
            (*shared).store(*tail, Ordering::Release);
        }
    }
}

/// Registers (and at once unregisters) a provided-buffer ring of one entry: whether this
/// kernel and process may use them at all.
pub(crate) fn probe_buf_ring(submitter: &Submitter<'_>) -> io::Result<()> {
    let map = Mapping::new(PROBE_RING_BYTES)?;
    // SAFETY: the mapping is page aligned and holds the one entry registered. It is
    // unregistered below before `map` is dropped; if that failed, the kernel still holds
    // its own pin on the ring's page until the probe ring closes, so unmapping our view
    // leaves it nothing dangling. No op ever selects from this group.
    unsafe {
        submitter.register_buf_ring_with_flags(map.ptr as u64, 1, PROBE_GROUP, 0)?;
    }
    submitter.unregister_buf_ring(PROBE_GROUP)
}

const PROBE_RING_BYTES: usize = 4096;
/// A group id no worker uses.
const PROBE_GROUP: u16 = 0xfffe;

#[cfg(test)]
mod tests;
