//! The registry's bookkeeping: queues, references, the reserve, a small ring's top-up.

use super::*;

fn registry(count: usize) -> BufferRegistry {
    BufferRegistry::new(count, 4096).expect("mmap")
}

/// Takes `slot` as a receive would: out of the free list, then held.
fn take(r: &mut BufferRegistry, slot: u16) {
    let at = r.free.iter().position(|&s| s == slot).expect("free slot");
    r.free.remove(at);
    r.take(slot);
}

#[test]
fn queue_keeps_order_and_recycles_fully_sent_slots() {
    let mut r = registry(4);
    let mut q = SlotQueue::default();
    for (slot, len) in [(2u16, 100), (0, 50), (3, 10)] {
        take(&mut r, slot);
        r.enqueue(&mut q, slot, len);
    }
    assert_eq!(r.in_use(), 3);
    let order: Vec<(u16, usize)> = r.pending(&q).map(|p| (p.slot, p.len)).collect();
    assert_eq!(order, vec![(2, 100), (0, 50), (3, 10)]);
    // A short send: part of the first slot.
    assert_eq!(r.consume(&mut q, 60), 0);
    assert_eq!(
        r.pending(&q).next(),
        Some(Pending {
            slot: 2,
            offset: 60,
            len: 40
        })
    );
    // The rest of the first, all of the second, part of the third.
    assert_eq!(r.consume(&mut q, 40 + 50 + 5), 2);
    assert_eq!(q.len(), 1);
    assert_eq!(r.in_use(), 1);
    assert_eq!(r.clear(&mut q), 1);
    assert!(q.is_empty());
    assert_eq!(r.in_use(), 0);
    assert_eq!(r.in_use_max(), 3);
}

#[test]
fn directions_to_exhaust_follow_the_arithmetic() {
    // 1000 slots over 2 workers, 4 per direction: the reserve (250) decides.
    assert_eq!(directions_to_exhaust(500, 4), 250);
    assert_eq!(directions_to_exhaust(64, 4), 32);
    // A cap of 1: every slot needs its own direction.
    assert_eq!(directions_to_exhaust(64, 1), 64);
    assert_eq!(directions_to_exhaust(1, 4), 1);
    // Brute force over the bound d + min(d (m - 1), count - reserve).
    for count in 1..80 {
        for m in 1..=16 {
            let holds = |d: usize| d + (d * (m - 1)).min(count - reserve(count));
            let least = (1..=count).find(|&d| holds(d) >= count);
            assert_eq!(least, Some(directions_to_exhaust(count, m)), "{count} {m}");
        }
    }
}

/// A provided ring smaller than the slots (a tight memlock limit): the free slots
/// beyond it wait in the free list and move in as the kernel takes slots out, so the
/// ring stays full while any slot is free.
#[test]
fn a_small_ring_is_topped_up_from_the_free_list() {
    let mut r = registry(8);
    // What `register` sets up, less the registration (no kernel reads this ring).
    r.provision = Provision::Ring {
        map: Mapping::new(4096).expect("mmap"),
        mask: 3,
        tail: 0,
        in_ring: 0,
    };
    r.top_up_ring();
    let in_ring = |r: &BufferRegistry| match r.provision {
        Provision::Ring { in_ring, .. } => in_ring,
        Provision::FreeList => 0,
    };
    assert_eq!((in_ring(&r), r.free.len()), (4, 4));
    // The kernel hands out the ring's slots in order: 0, 1, 2, 3.
    for slot in 0..4 {
        r.take(slot);
    }
    assert_eq!(
        (in_ring(&r), r.free.len()),
        (4, 0),
        "refilled from the list"
    );
    for slot in 4..8 {
        r.take(slot);
    }
    assert_eq!((in_ring(&r), r.in_use()), (0, 8), "every slot out");
    assert!(r.release(5));
    assert_eq!(
        (in_ring(&r), r.free.len()),
        (1, 0),
        "a freed slot goes to the ring"
    );
}

#[test]
fn a_zero_copy_reference_keeps_the_slot_out_of_the_ring() {
    let mut r = registry(2);
    let mut q = SlotQueue::default();
    take(&mut r, 1);
    r.enqueue(&mut q, 1, 8);
    r.retain(1);
    assert_eq!(r.consume(&mut q, 8), 0, "the notification still holds it");
    assert_eq!(r.in_use(), 1);
    assert!(r.release(1));
    assert_eq!(r.in_use(), 0);
}
