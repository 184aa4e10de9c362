// src/layout/queue_layout.hpp — a multi-producer multi-consumer queue of byte messages
// (shoal::Queue, include/shoal/queue.hpp). Design note: docs/design/queue.md.
//
// A queue is a shoal::Heap (include/shoal/heap.hpp) whose root word names one block holding a
// QueueHeader followed by the ring: `ring_bytes` bytes of variable-size records.
//
//   heap root word ──> [ QueueHeader (6,528 bytes) | ring: ring_bytes bytes ............ ]
//                        magic, version, sizes      records at positions head .. tail
//                        lock, head, tail           (mod ring_bytes), 8-byte aligned
//                        counts, futex words, stats
//
// Positions. head and tail are byte positions that only grow (64-bit: they never wrap in the
// life of a machine); the byte of position p is ring[p % ring_bytes]. The published records are
// exactly those in [head, tail), one after the other with no gap.
//
// A record: an 8-byte QueueRecord {length, tag} and `length` payload bytes, padded with zeros
// to a multiple of 8: it spans record_span(length) = 8 + round_up(length, 8) bytes. Records may
// wrap: the header never does (positions and ring_bytes are multiples of 8), the payload may
// continue at ring[0]. tag = kRecordMarker << 8 | flags; the marker lets a walk tell a record
// from garbage; flags (bits 0..7) say what the payload is: bit 0 kRecordBytes (the message's
// bytes) or kRecordOutOfBand (length == 16: an OutOfBandRef naming a block of the queue's heap
// that holds the message); bits 1..3 the message's encoding (kEncoding*: raw bytes, or one of
// the Python layer's), stored and handed back, never interpreted. Other flags are refused by
// this version's reader (kCorrupt), so a later version's records are not misread. A message goes out of band when its
// inline record would take more than a quarter of the ring (so a big message never waits for
// a big contiguous stretch of ring, and any size up to Heap::kMaxAllocation goes through).
//
// Invariants (Queue::check verifies every one; queue_core.cpp's decode_ring runs the part that
// reads bytes, which the fuzz target fuzz/queue_fuzzer.cpp drives):
//   Q1  magic == kQueueMagic, version == kQueueVersion, header_bytes == sizeof(QueueHeader);
//       written once by the creator before the heap's root word names the block.
//   Q2  ring_bytes is a multiple of 8, kQueueMinRing <= ring_bytes <= kQueueMaxRing; the block
//       holds header_bytes + ring_bytes bytes. max_messages and max_bytes never change (0: no
//       bound but the ring).
//   Q3  head <= tail, tail - head <= ring_bytes, both multiples of 8.
//   Q4  walking from head, every record's tag holds kRecordMarker and known flags (an encoding
//       below kEncodingCount), its length
//       <= ring_bytes - 8, and the walk lands exactly on tail.
//   Q5  at rest (lock free, or recovered) count == the records of Q4 and bytes == the sum of
//       their message lengths (an out-of-band record's OutOfBandRef::length); count <=
//       max_messages and bytes <= max_bytes when they are set.
//   Q6  every out-of-band record names a used, committed block of the heap of at least its
//       length, and no two records name one block; at rest put_intent and get_intent are idle.
//   Q8  the end table (QueueEnds, docs/design/queue.md "Ends"): opened[s] is 0 or 1; a slot
//       whose owner is 0 is free (its counts mean nothing); an owner's pid half is below
//       kQueueMaxPid; at rest a slot of a live owner holds refs + lent > 0 (a slot whose counts
//       are 0 is one whose owner died mid-update: reclaimed like a dead owner's).
//   Q9  the hand-out table (QueueHandouts, docs/design/queue.md "Zero-copy receive"): a slot
//       whose owner is 0 is free (its block means nothing); an owned slot's pid half (less the
//       kQueueHandoutKept bit) is nonzero and below kQueueMaxPid and its block is nonzero; several
//       owned slots may name one block (co-owners: a holder and the children it forked), but no
//       owner word names one block twice. At rest every owned slot names a used, committed block
//       of the heap that no record names: a block get_messages handed to that process (or that
//       its parent held when it forked), which it has not released; the block is freed when the
//       last slot naming it is cleared.
// Who writes what: every field but the statistics' lock-free readers' view is written under
// `lock` (a RobustMutexWord, src/sync/robust_mutex.hpp). count and bytes are also read without
// the lock (size(), empty(): a hint, stale at once). The futex words put_seq and get_seq change
// under the lock; waiters sleep on them without it.
// Crash consistency: a put writes its record past tail, then publishes it with ONE store of
// tail (release); a get copies its records out, then consumes them with ONE store of head. Every
// other field is derived and recomputed by recovery (the next holder, told kOwnerDied, walks
// [head, tail) and rewrites count and bytes). Out-of-band blocks add two intents, so recovery
// knows which blocks a dead holder was committing (put) or freeing (get); it frees those still
// committed (Heap::committed_block), never one twice; see queue.md. So a producer killed anywhere in put leaves either
// no message (bytes past tail are ignored and overwritten) or the whole message; a consumer
// killed in get leaves its messages in the queue (before the head store) or takes them with it
// (after). A block handed out (zero-copy receive) is named by a hand-out slot, claimed before the
// consume store and cleared after the release's free (a free only when no other slot names the
// block), so a holder that dies holding it leaves a slot naming a dead process, and the next
// reclaim frees the block unless a co-owner (a forked child) still names it (Q9).
// docs/design/queue.md has the table, step by step.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "layout/robust_mutex_layout.hpp"

namespace shoal::layout {

inline constexpr uint64_t kQueueMagic = 0x4555514C414F4853ULL;  // ASCII "SHOALQUE" in memory order
// 2: encodings in the record tags; the task table of a joinable queue. 3: the end table
// (QueueEnds). 4: the hand-out table (QueueHandouts), so a handed-out block whose holder died is
// reclaimed while the queue lives.
inline constexpr uint32_t kQueueVersion = 4;
inline constexpr uint64_t kQueueMinRing = 64;
// Positions are 64-bit and lengths 32-bit: a ring of at most 1 GiB keeps every record's length
// (<= ring_bytes - 8) in 32 bits with room to spare.
inline constexpr uint64_t kQueueMaxRing = uint64_t{1} << 30;

// Bits of the futex words put_seq / get_seq: a 31-bit counter bumped by every publish (put_seq)
// or consume (get_seq), and a waiters bit a sleeper sets (under the lock) before it sleeps, so
// the other side calls futex_wake only when someone may sleep. A sleeper that dies leaves the
// bit set: the next bump clears it after one wake that wakes nobody (self-healing).
inline constexpr uint32_t kSeqWaiters = 1u << 31;
inline constexpr uint32_t kSeqMask = kSeqWaiters - 1;

inline constexpr uint32_t kRecordMarker = 0x51524Du;  // "MRQ": 24 bits, in tag bits 8..31
inline constexpr uint32_t kRecordBytes = 0;           // flags: the payload is the message
inline constexpr uint32_t kRecordOutOfBand = 1;       // flags: the payload is an OutOfBandRef
// flags bits 1..3: the message's encoding, which the queue stores and hands back but never
// interprets (the Python layer's message header): kEncodingBytes is what C++ puts (raw bytes);
// the others are the Python layer's (python/shoal/_queues.py). A reader refuses encodings it
// does not know (kCorrupt) rather than misread them.
inline constexpr uint32_t kRecordEncodingShift = 1;
inline constexpr uint32_t kRecordEncodingMask = 7;  // after the shift
inline constexpr uint8_t kEncodingBytes = 0;   // raw bytes (C++ messages, Python bytes)
inline constexpr uint8_t kEncodingPickle = 1;  // a pickle (multiprocessing's ForkingPickler)
inline constexpr uint8_t kEncodingPickleBuffers = 2;  // a pickle and its out-of-band buffers
// a frozen image (docs/design/frozen.md) of a plain value, the shared value codec's format:
// what Python puts for None/bool/int/float/str/bytes and lists, tuples, dicts, sets and
// frozensets of them (python/bindings/codec.hpp, encode_message / decode_message)
inline constexpr uint8_t kEncodingValue = 3;
inline constexpr uint8_t kEncodingCount = 4;   // encodings this version reads
inline constexpr uint64_t kRecordHeaderBytes = 8;
// The largest out-of-band message: what one heap block can hold (Heap::kMaxAllocation).
inline constexpr uint64_t kQueueMaxOutOfBand = (uint64_t{1} << 36) - (uint64_t{64} << 10) - 16;

// Intent states (put_intent_state, get_intent_state), each stored under the lock.
inline constexpr uint64_t kIntentIdle = 0;
inline constexpr uint64_t kIntentCommitting = 1;  // put: records past tail written; commits begun
inline constexpr uint64_t kIntentCommitted = 2;   // put: every block committed, tail not stored
inline constexpr uint64_t kIntentFreeing = 1;     // get: about to store head, then free blocks

inline constexpr uint32_t record_tag(uint32_t flags) noexcept { return kRecordMarker << 8 | flags; }
inline constexpr uint64_t record_span(uint64_t length) noexcept {
  return kRecordHeaderBytes + ((length + 7) & ~uint64_t{7});
}

// The end table (Q8). Which processes hold each end of the queue (kEndProducer: may put,
// kEndConsumer: may get), so that a consumer can tell "every producer closed or died" from
// "nothing yet" (end of stream) and a producer "no consumer left" (a broken pipe). A process
// holds one slot per side, whatever the number of its holds (refs); `lent` counts holds it
// pickled for another process that has not claimed them yet (a hold in transit keeps the end
// open, as multiprocessing keeps a sent descriptor open until the receiver takes it). A slot's
// owner is pid << 32 | tag (sync::self_tag()), so a dead owner is told from a reused pid the
// way the tracked Semaphore tells its dead holders (sync::process_gone) and reclaimed the same
// way. Every field is written under `lock`; owner is also read without it (a hint).
inline constexpr uint32_t kEndProducer = 0;
inline constexpr uint32_t kEndConsumer = 1;
inline constexpr uint32_t kQueueEndSlots = 64;  // per side; more holders go to `overflow`
inline constexpr uint64_t kQueueMaxPid = uint64_t{1} << 22;  // Linux's PID_MAX_LIMIT

struct QueueEndSlot {
  std::atomic<uint64_t> owner;  // pid << 32 | tag; 0: free
  std::atomic<uint32_t> refs;   // holds this process has open
  std::atomic<uint32_t> lent;   // holds it pickled that no receiver claimed yet
};
static_assert(sizeof(QueueEndSlot) == 16);

struct QueueEnds {
  // 1 once any process opened that side: a queue nobody opened an end of (plain shoal.Queue
  // use) never reports a closed end.
  std::atomic<uint32_t> opened[2];
  // Holds beyond the slots (more than kQueueEndSlots processes on one side): never reclaimed,
  // so such an end is never reported closed while any of them is counted (the safe side).
  std::atomic<uint32_t> overflow[2];
  // A consumer that waits in a selector (Connection.fileno()) sets watched[kEndConsumer]; a
  // producer then also writes a byte to the queue's wake-up FIFO after each put. 0: no system
  // call on the common path.
  std::atomic<uint32_t> watched[2];
  uint32_t reserved[10];
  QueueEndSlot slots[2][kQueueEndSlots];
};
static_assert(sizeof(QueueEnds) == 64 + 2 * 16 * kQueueEndSlots);

// The hand-out table (Q9). get_messages with hand_out_blocks gives an out-of-band message's
// block to the consumer instead of copying it (the Python layer's zero-copy receive); the slot
// records which process holds it (owner: pid << 32 | tag, sync::self_tag(), as the end table's
// owners, so a reused pid is never taken for the dead holder: sync::process_gone). A holder that
// forks shares the block with its child: one more slot names it (co-owners, kQueueHandoutKept
// below). The holder releases the block with Queue::release (free it when no other slot names
// it, then clear the slot); a slot whose owner is gone is reclaimed the same way (its block freed
// unless a co-owner's slot names it, then the slot cleared) by the next reclaim: recovery,
// check(), an out-of-band put, or a hand-out that finds the table full. A hand-out that finds no
// free slot copies the message out instead. Every field is written under `lock`; owner is also read
// without it (the put's scan for dead holders, stats(): hints).
inline constexpr uint32_t kQueueHandoutSlots = 256;
// The owner bit of a kept slot: owner = kQueueHandoutKept | pid << 32 | tag of the process that
// wrote it, a holder about to fork (Queue::share_handout). No death frees a kept slot's block
// and no reclaim clears it: the forked child adopts it (Queue::adopt_handout: the owner becomes
// the child's own word), or, when the table had no free slot for the child, the holder's own
// slot is made kept and the block stays allocated until the queue is freed (so does a kept slot
// no child adopts: the fork failed, or the child died before its first after-fork step).
inline constexpr uint64_t kQueueHandoutKept = uint64_t{1} << 63;

struct QueueHandout {
  std::atomic<uint64_t> owner;  // pid << 32 | tag of the holder (| kQueueHandoutKept); 0: free
  std::atomic<uint64_t> block;  // the HeapRef handed out; written before owner, meaningless at 0
};
static_assert(sizeof(QueueHandout) == 16);

struct QueueHandouts {
  std::atomic<uint64_t> reclaimed;  // blocks freed because their holder died (statistics)
  std::atomic<uint64_t> copied;     // hand-outs copied out because no slot was free (statistics)
  // CLOCK_MONOTONIC (system-wide) ns of the last reclaim an out-of-band put ran: puts run one at
  // most every kHandoutScanNs (queue.cpp), so its system calls stay rare.
  std::atomic<uint64_t> scanned_ns;
  uint64_t reserved[5];
  QueueHandout slots[kQueueHandoutSlots];
};
static_assert(sizeof(QueueHandouts) == 64 + 16 * kQueueHandoutSlots);

struct QueueRecord {
  uint32_t length;  // payload bytes
  uint32_t tag;     // record_tag(flags)
};
static_assert(sizeof(QueueRecord) == kRecordHeaderBytes);

// The payload of an out-of-band record (16 bytes; it may wrap around the ring's end as a whole
// payload may, between its two words).
struct OutOfBandRef {
  uint64_t ref;     // a HeapRef of the queue's heap: the block that holds the message
  uint64_t length;  // the message's bytes (<= the block's usable size, <= kQueueMaxOutOfBand)
};
static_assert(sizeof(OutOfBandRef) == 16);

// 16-byte aligned, as every heap block's payload is (not 64: a heap block does not promise a
// cache line; the groups below are 64 bytes apart relative to the block, which is what the
// layout fixes; every field is touched under the lock anyway, so sharing a line costs little).
struct alignas(16) QueueHeader {
  // Written once by the creator (Q1, Q2), read by everyone without the lock.
  uint64_t magic;          // kQueueMagic
  uint32_t version;        // kQueueVersion; bump on any change in this file
  uint32_t header_bytes;   // sizeof(QueueHeader): the ring starts here in the block
  uint64_t ring_bytes;     // the ring's size (Q2)
  uint64_t max_messages;   // maxsize: a put waits while count == max_messages (0: unbounded)
  uint64_t max_bytes;      // a put waits while bytes + its length > max_bytes (0: unbounded)
  uint64_t tasks;          // a joinable queue's TaskTable block (a HeapRef), else 0 (Q7)
  uint64_t reserved0[2];   // zero

  // The lock and what it guards (64: its own cache line with the positions).
  RobustMutexWord lock;             // guards everything below but the stats' lock-free reads
  std::atomic<uint64_t> head;       // first unread record; the consume store (get's last step)
  std::atomic<uint64_t> tail;       // end of the last published record; the publish store
  std::atomic<uint64_t> count;      // records in [head, tail) (derived; lock-free readers: hint)
  std::atomic<uint64_t> bytes;      // their payload bytes (derived; a hint without the lock)
  uint64_t reserved1[3];

  // Futex words (128: consumers sleep on put_seq, producers on get_seq).
  std::atomic<uint32_t> put_seq;    // bumped under the lock after each publish (kSeqMask bits)
  std::atomic<uint32_t> get_seq;    // bumped under the lock after each consume
  std::atomic<uint32_t> done_seq;  // joiners sleep on it; bumped under the lock when the
                                   // unfinished tasks may have reached 0 (task_done, reclaim)
  uint32_t reserved2[13];

  // Statistics (192), written under the lock, read without it (may be stale).
  std::atomic<uint64_t> puts;        // messages published
  std::atomic<uint64_t> gets;        // messages consumed
  std::atomic<uint64_t> recoveries;  // times a holder found the previous one dead
  // Intents (216), under the lock: what a holder that dies mid-way leaves for recovery.
  std::atomic<uint64_t> put_intent_state;  // kIntentIdle / kIntentCommitting / kIntentCommitted
  std::atomic<uint64_t> put_intent_tail;   // the tail the records past tail end at
  std::atomic<uint64_t> get_intent_state;  // kIntentIdle / kIntentFreeing
  std::atomic<uint64_t> get_intent_head;   // the head before the consume store
  std::atomic<uint64_t> get_intent_end;    // the head after it
  // The end table (256), Q8.
  QueueEnds ends;
  // The hand-out table (2368), Q9.
  QueueHandouts handouts;
};
static_assert(sizeof(QueueHeader) == 256 + sizeof(QueueEnds) + sizeof(QueueHandouts),
              "layout is ABI: bump kQueueVersion");
static_assert(offsetof(QueueHeader, ends) == 256, "layout is ABI: bump kQueueVersion");
static_assert(offsetof(QueueHeader, handouts) == 2368, "layout is ABI: bump kQueueVersion");

// A joinable queue's task accounting (JoinableQueue's task_done/join), in its own heap block
// named by QueueHeader::tasks, every field under the queue's lock. The unfinished tasks are
// derived, never stored: count (messages in the ring) + the sum of the slots' `taken` (messages
// a live process got and has not marked done) + orphans. A get adds what it takes to its
// process's slot BEFORE its consume store, so a consumer killed at any instant either left the
// messages in the ring or holds them in its slot; a slot whose process is gone
// (sync::process_gone on pid and tag) is reclaimed -- its messages count as done -- by the next
// join, task_done or slot claim. A slot is a process's only while taken > 0.
//   Q7  tasks == 0, or it names a used block of sizeof(TaskTable) bytes with magic ==
//       kTaskMagic and slots == kTaskSlots; every slot with taken == 0 has pid == 0 at rest.
inline constexpr uint64_t kTaskMagic = 0x4B5341544C414F48ULL;  // "HOALTASK"
inline constexpr uint32_t kTaskSlots = 1024;
struct TaskSlot {
  uint32_t pid;    // the process that got the messages (0: free)
  uint32_t tag;    // its robust tag (start time), so a reused pid is not taken for it
  uint64_t taken;  // messages it got and has not marked done
};
struct TaskTable {
  uint64_t magic;    // kTaskMagic
  uint32_t slots;    // kTaskSlots
  uint32_t reserved;
  uint64_t orphans;  // messages taken when every slot was busy: never reclaimed (queue.md)
  uint64_t reclaimed;  // messages counted done because their taker died (statistics)
  TaskSlot slot[kTaskSlots];
};
static_assert(sizeof(TaskSlot) == 16 && sizeof(TaskTable) == 32 + 16 * kTaskSlots,
              "layout is ABI: bump kQueueVersion");
static_assert(alignof(QueueHeader) <= 16, "a heap block's payload is only 16-byte aligned");
static_assert(offsetof(QueueHeader, lock) == 64, "layout is ABI: bump kQueueVersion");
static_assert(offsetof(QueueHeader, put_seq) == 128, "layout is ABI: bump kQueueVersion");
static_assert(offsetof(QueueHeader, puts) == 192, "layout is ABI: bump kQueueVersion");
static_assert(offsetof(QueueHeader, put_intent_state) == 216, "layout is ABI: bump kQueueVersion");
static_assert(std::atomic<uint64_t>::is_always_lock_free,
              "atomics in shared memory must be lock-free, or they are per-process");
static_assert(kQueueMaxRing - kRecordHeaderBytes <= UINT32_MAX,
              "a record's length must fit its 32-bit field");

}  // namespace shoal::layout
