// include/shoal/queue.hpp — a queue of byte messages in shared memory, for any number of
// producer and consumer processes of a session (the C++ core of shoal.Queue).
//
//   shoal::Queue q = shoal::Queue::create({.ring_bytes = 1 << 20});
//   q.put("hello");                               // blocks while the queue is full
//   std::string h = q.handle();                    // to another process:
//   shoal::Queue same = shoal::Queue::attach(h);
//   std::string msg;
//   same.get(msg);                                 // "hello"; blocks while it is empty
//   same.try_get(msg);                             // QueueStatus::kEmpty at once
//
// Concurrency contract. Every method may be called from any thread of any process that holds
// the queue. Messages are delivered in FIFO order (one total order over all producers), each to
// exactly one consumer. put and get take the queue's lock (a robust lock in the queue itself)
// for one copy of the message; a waiting side spins briefly, then sleeps on a futex word in
// bounded slices, so there is no system call when the other side is awake and no sleeper is
// stranded by a waker that died. Crash safety: a producer killed at any instant of put leaves
// either no message or the whole message, and the queue goes on; a consumer killed in get
// leaves the messages it was taking in the queue if it died before consuming them and takes
// them with it if after (so it loses at most what that call was taking, documented in
// docs/design/queue.md). The next lock holder repairs the derived state and counts it in
// stats().recoveries.
//
// Differs from std::queue / multiprocessing.Queue: messages are bytes, copied in and out (no
// references into shared memory are handed out); no feeder thread (put returns when the message
// is in the queue); bounded by a byte ring and the optional bounds. A message whose record
// would take more than a quarter of the ring travels out of band: it is copied into a block of
// the queue's heap before the lock is taken, and the ring holds a 24-byte record naming it, so
// any size up to Heap::kMaxAllocation (64 GiB) goes through a ring of any size.
// Layout: src/layout/queue_layout.hpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "shoal/heap.hpp"
#include "shoal/sync.hpp"

namespace shoal {

/// How a put or get ended. Only kOk moved a message; the others changed nothing.
enum class QueueStatus : uint8_t {
  kOk,           // the message(s) went in / came out
  kFull,         // put: no room (maxsize, max_bytes or the ring) before the deadline
  kEmpty,        // get: no message before the deadline
  kInterrupted,  // only with interruptible: a signal interrupted the wait
  kTimeout,      // join: tasks still unfinished at the deadline
  kClosed,       // only from recv / send: the other end is closed (every holder of it closed
                 // it or died) and, for recv, nothing is left: end of stream / broken pipe
};
/// "ok", "full", "empty", "interrupted", "timeout", "closed".
const char* queue_status_name(QueueStatus s) noexcept;

struct QueueStats {
  uint64_t size = 0;        // messages in the queue (a snapshot)
  uint64_t bytes = 0;       // their payload bytes
  uint64_t puts = 0;
  uint64_t gets = 0;
  uint64_t recoveries = 0;  // times a lock holder found the previous one dead and repaired
  // Zero-copy receive (get_messages with hand_out_blocks; snapshots without the lock):
  uint64_t handed_out = 0;  // blocks handed to processes that have not released them (a
                            // dead holder's count until the next reclaim)
  uint64_t handouts_reclaimed = 0;  // blocks freed because their holder died
  uint64_t handouts_copied = 0;     // hand-outs copied instead: the hand-out table was full
  uint64_t handouts_kept = 0;  // of handed_out: kept slots (share_handout), which no death frees:
                               // reserved for a forked child to adopt, or kept for the queue's life
  // check() only (0 from stats()):
  uint64_t out_of_band = 0;   // messages held in heap blocks (larger than a quarter ring)
  uint64_t stray_blocks = 0;  // committed heap blocks that neither a record nor a hand-out
                              // slot names: none unless the heap or the queue is corrupt
};

namespace layout {
struct QueueHeader;
struct TaskTable;
}

/// The two ends of a queue, for end of stream (docs/design/queue.md "Ends").
enum class QueueEnd : uint8_t { kProducer = 0, kConsumer = 1 };
/// One message as get_messages hands it out: its encoding (the record's tag bits, which the
/// queue stores but never interprets: 0 for raw bytes, what C++ producers put; the Python
/// layer's encodings otherwise, src/layout/queue_layout.hpp) and its bytes, either copied into
/// `data` or, for an out-of-band message taken with hand_out_blocks, the heap block that holds
/// them, which then belongs to the calling process (release it with Queue::release(block) when
/// done, never heap().free: the queue's hand-out table names it; if the process dies first, the
/// next reclaim frees it, docs/design/queue.md "Zero-copy receive").
struct QueueMessage {
  std::string data;     // the message, unless block != 0
  HeapRef block = 0;    // the out-of-band block handed to the caller, or 0
  uint64_t length = 0;  // the message's length (== data.size() unless block != 0)
  uint8_t encoding = 0;
};

class Queue {
 public:
  struct Options {
    /// The ring's size in bytes (rounded up to 8; 64 B .. 1 GiB). A message takes 8 bytes of
    /// header plus its length rounded up to 8.
    uint64_t ring_bytes = uint64_t{1} << 20;
    /// maxsize: at most this many messages (0: as many as the ring holds).
    uint64_t max_messages = 0;
    /// At most this many payload bytes in the queue (0: as many as the ring holds).
    uint64_t max_bytes = 0;
    /// Task accounting (multiprocessing.JoinableQueue): task_done() and join().
    bool joinable = false;
  };

  /// A new, empty queue in this process's session. InvalidArgumentError for a ring size out of
  /// range; OutOfSpaceError as Heap::create.
  static Queue create(Options opts);
  static Queue create() { return create(Options{}); }
  /// The queue a handle names. Throws as Heap::attach does; IncompatibleSegmentError for a heap
  /// that holds no queue or another layout version, CorruptSegmentError for a header that
  /// fails Q1/Q2 (src/layout/queue_layout.hpp).
  static Queue attach(std::string_view handle);
  static Queue attach(Heap heap);

  Queue() noexcept = default;
  bool valid() const noexcept { return heap_.valid(); }
  std::string handle(bool pin = true) const { return heap_.handle(pin); }
  const Heap& heap() const noexcept { return heap_; }

  // ---- put: the message is in the queue when kOk returns ------------------------------------
  /// Blocks until there is room (kOk), the deadline passes (kFull), or with `interruptible` a
  /// signal interrupts the wait (kInterrupted). A message that can never fit (longer than
  /// max_message_bytes(), or than max_bytes) throws InvalidArgumentError; a queue whose shared
  /// state fails its checks throws CorruptSegmentError.
  QueueStatus put(std::string_view msg, Deadline deadline = Deadline::never(),
                  bool interruptible = false);
  QueueStatus put(std::span<const std::byte> msg, Deadline deadline = Deadline::never(),
                  bool interruptible = false) {
    return put(std::string_view(reinterpret_cast<const char*>(msg.data()), msg.size()), deadline,
               interruptible);
  }
  /// Never waits for room: kOk or kFull.
  QueueStatus try_put(std::string_view msg) { return put(msg, Deadline{0}); }
  QueueStatus put_for(std::string_view msg, double seconds) {
    return put(msg, Deadline::after(seconds));
  }
  /// All of msgs or none, in order, under one lock hold: waits until all fit (faster-fifo's
  /// put_many). Throws InvalidArgumentError if together they can never fit.
  QueueStatus put_many(std::span<const std::string_view> msgs,
                       Deadline deadline = Deadline::never(), bool interruptible = false) {
    return put_encoded(msgs, {}, deadline, interruptible);
  }
  /// put_many with each message's encoding (encodings empty: all raw bytes, else one per
  /// message, each below layout::kEncodingCount, else InvalidArgumentError): the Python
  /// layer's message header, handed back by get_messages.
  QueueStatus put_encoded(std::span<const std::string_view> msgs,
                          std::span<const uint8_t> encodings,
                          Deadline deadline = Deadline::never(), bool interruptible = false);

  /// One message that is the concatenation of `parts`, with its encoding (put_encoded's):
  /// copied from the parts straight into the ring or its out-of-band block, never joined
  /// first (the Python layer's pickle and its buffers).
  QueueStatus put_parts(std::span<const std::string_view> parts, uint8_t encoding,
                        Deadline deadline = Deadline::never(), bool interruptible = false);

  // ---- get ----------------------------------------------------------------------------------
  /// Blocks until a message is there and copies it into `out` (kOk; out's buffer is reused), or
  /// the deadline passes (kEmpty), or kInterrupted. `out` is left unchanged unless kOk (or an
  /// exception: CorruptSegmentError, bad_alloc, which leave the queue unchanged).
  /// `encoding`, when given, receives the message's encoding (put_encoded's).
  QueueStatus get(std::string& out, Deadline deadline = Deadline::never(),
                  bool interruptible = false, uint8_t* encoding = nullptr);
  QueueStatus try_get(std::string& out, uint8_t* encoding = nullptr) {
    return get(out, Deadline{0}, false, encoding);
  }
  QueueStatus get_for(std::string& out, double seconds) {
    return get(out, Deadline::after(seconds));
  }
  /// Waits as get() for one message, then takes up to max_messages (at least 1) and up to
  /// max_bytes payload bytes (0: no bound; the first message is always taken) under one lock
  /// hold, appending them to `out` (faster-fifo's get_many).
  QueueStatus get_many(std::vector<std::string>& out, size_t max_messages,
                       Deadline deadline = Deadline::never(), bool interruptible = false,
                       uint64_t max_bytes = 0);

  // ---- ends: end of stream (docs/design/queue.md "Ends") ------------------------------------
  // A queue knows which processes hold each end only if they say so: a process that opens an
  // end holds it until it closes it or dies (each open counts; a process holds one table slot
  // per end). Once any process opened the producer end, a consumer's recv on an empty queue
  // whose producer holders are all gone returns kClosed instead of waiting; likewise send when
  // every consumer is gone. put and get never report kClosed but stop waiting (kFull, kEmpty)
  // when the other end closes.
  /// This process holds one more of `end`. More than kQueueEndSlots processes on one side
  /// still count, but are never reclaimed if they die (that end is then never reported closed).
  void open_end(QueueEnd end);
  /// One less; a process that holds none changes nothing. The last hold of the last live
  /// holder wakes the other side's waiters.
  void close_end(QueueEnd end);
  /// Moves one of this process's holds of `end` into transit (a pickled handle): it keeps the
  /// end open until claim_lent, or this process's death. Returns the lender token for
  /// claim_lent. The caller's hold itself stays.
  uint64_t lend_end(QueueEnd end);
  /// The receiver of a lent hold: opens `end` for this process, then releases the lender's
  /// transit hold (nothing when the lender died or the token was already claimed).
  void claim_lent(QueueEnd end, uint64_t lender);
  /// The processes that hold `end` now, after reclaiming the slots of dead ones (system calls:
  /// one or two per holder); overflow holds count one each.
  uint64_t holders(QueueEnd end);
  /// The holds of `end` in transit now (lent, not yet claimed): a hint, without the lock.
  uint64_t lent_holds(QueueEnd end) const noexcept;
  /// Whether `end` was opened and no live process holds it (reclaims dead holders).
  bool end_closed(QueueEnd end);
  /// get that returns kClosed when the queue is empty and the producer end is closed, and
  /// notices a producer's death within 100 ms.
  /// `encoding`, when given, receives the message's encoding (the Pipe's value messages).
  QueueStatus recv(std::string& out, Deadline deadline = Deadline::never(),
                   bool interruptible = false, uint8_t* encoding = nullptr);
  /// put that returns kClosed when the consumer end is closed (checked before each put, from
  /// a hint without system calls, and while it waits for room).
  /// `encoding` as put_encoded's (below layout::kEncodingCount; 0: raw bytes).
  QueueStatus send(std::string_view msg, Deadline deadline = Deadline::never(),
                   bool interruptible = false, uint8_t encoding = 0);
  /// The flag a consumer that waits in a selector sets (watch) so that producers also signal
  /// the queue's wake-up FIFO; read without the lock.
  void set_watched(QueueEnd end, bool on) noexcept;
  bool watched(QueueEnd end) const noexcept;

  /// get_many with each message's encoding: `out` holds the messages taken (none unless kOk;
  /// its elements are reused, so their buffers are not allocated again); with `hand_out_blocks` an
  /// out-of-band message is not copied: its block is handed to this process (QueueMessage), which
  /// releases it with release(). The zero-copy receive of the Python layer. The hand-out table
  /// holds layout::kQueueHandoutSlots blocks: when every slot is a live process's, the message
  /// is copied into `data` as without hand_out_blocks (counted in stats().handouts_copied).
  QueueStatus get_messages(std::vector<QueueMessage>& out, size_t max_messages,
                           Deadline deadline = Deadline::never(), bool interruptible = false,
                           uint64_t max_bytes = 0, bool hand_out_blocks = false);
  /// Gives up this process's claim on a block get_messages handed to it (or that it adopted):
  /// clears its hand-out slot and frees the block unless another slot names it (a co-owner: a
  /// child this process forked, or its parent), all under the queue's lock.
  /// InvalidArgumentError when no slot names `block` as this process's (never handed out,
  /// released already, or another process's): nothing is freed then.
  void release(HeapRef block);
  /// Fork support (the Python layer's at-fork handlers): before forking, a holder of `block`
  /// claims one more slot for it, kept (layout::kQueueHandoutKept: no death frees it), and passes
  /// the returned slot to the child, which adopts it (adopt_handout) as its own claim; from then
  /// on the block is freed only when both have released it or died. Returns
  /// layout::kQueueHandoutSlots when the table has no free slot even after a reclaim: this
  /// process's own claim is then made kept instead, so the block stays allocated until the queue
  /// is freed, and neither this process nor the child may release it (release would throw).
  /// InvalidArgumentError when `block` is not this process's.
  uint32_t share_handout(HeapRef block);
  /// In the child forked after share_handout(block) returned `slot`: makes the kept slot this
  /// process's claim on `block`, released with release(block). false when `slot` is not a kept
  /// slot naming `block` (nothing changes then: the block stays allocated, never released).
  bool adopt_handout(uint32_t slot, HeapRef block);
  /// Frees the handed-out blocks whose holding process is gone (exited, or its pid reused) and
  /// clears their slots; returns how many. System calls: about two per distinct live holder.
  /// Also run by recovery, check(), a hand-out that finds the table full, and an out-of-band put
  /// (at most once per 100 ms for the whole queue, and only while a slot is owned).
  uint64_t reclaim_handouts();

  // ---- tasks (a joinable queue) -------------------------------------------------------------
  // The unfinished tasks are the messages in the queue plus those got and not yet marked done
  // by live processes: a process killed after taking messages (in get or later) has them
  // counted done, so join() never waits for ever on a dead consumer (docs/design/queue.md).
  /// Marks one message got by this process done (or, when it holds none, one got by another
  /// process). false when no message is unfinished but in the queue (called too many times).
  /// InvalidArgumentError on a queue that is not joinable.
  bool task_done();
  /// Blocks until no task is unfinished (kOk), the deadline passes (kTimeout), or kInterrupted.
  QueueStatus join(Deadline deadline = Deadline::never(), bool interruptible = false);
  /// The unfinished tasks now (a snapshot under the lock, dead takers reclaimed); 0 when the
  /// queue is not joinable.
  uint64_t unfinished();
  bool joinable() const noexcept;

  // ---- state --------------------------------------------------------------------------------
  /// Messages in the queue: a snapshot without the lock (qsize()).
  uint64_t size() const noexcept;
  bool empty() const noexcept { return size() == 0; }
  /// Whether a put of `length` bytes would wait now (a snapshot).
  bool full(uint64_t length = 0) const noexcept;
  uint64_t ring_bytes() const noexcept;
  uint64_t max_messages() const noexcept;
  uint64_t max_bytes() const noexcept;
  /// The longest message this queue takes (64 GiB less a little, or max_bytes).
  uint64_t max_message_bytes() const noexcept;
  QueueStats stats() const noexcept;
  /// Verifies Q1..Q6 under the lock (recovering first if its holder died) and the heap's own
  /// invariants; CorruptSegmentError names the first failure. Fills out_of_band and
  /// stray_blocks.
  QueueStats check();

 private:
  Queue(Heap heap, HeapRef top, layout::QueueHeader* h, std::byte* ring,
        layout::TaskTable* tasks) noexcept
      : heap_(std::move(heap)), top_(top), h_(h), ring_(ring), tasks_(tasks) {}
  void note_taken(uint64_t n) noexcept;  // under the lock: a joinable get's bookkeeping

  template <class M>
  QueueStatus put_msgs(std::span<const M> msgs, std::span<const uint8_t> encodings,
                       Deadline deadline, bool interruptible);
  template <class Sink>
  QueueStatus take(Sink& sink, size_t max_messages, uint64_t max_bytes, Deadline deadline,
                   bool interruptible);
  friend struct QueueAccess;
  uint32_t slot_hint_ = 0;  // this process's task slot, last time (checked before use)
  Heap heap_;
  HeapRef top_ = 0;
  layout::QueueHeader* h_ = nullptr;  // in heap_'s root; valid while heap_ lives
  std::byte* ring_ = nullptr;
  layout::TaskTable* tasks_ = nullptr;  // a joinable queue's task table (heap_'s block)
};

}  // namespace shoal
