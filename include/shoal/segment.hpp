// include/shoal/segment.hpp — an anonymous shared-memory segment, reference-counted per process.
//
// A Segment is one mapping of one memfd held by the session broker. Create it in one process,
// send `handle()` (a 133- or 163-byte string) to any process of the same user on this machine, and
// `Segment::attach(handle)` maps the same physical pages there. Nothing is ever named in
// /dev/shm, so nothing can leak: the kernel frees the pages when the last process that maps
// them, and the broker, let go (docs/design/segment.md).
//
// Lifetime contract:
//   - Each process holds at most one broker reference per object, however many Segment copies
//     it has; the last copy (or close()) releases it. A process that dies releases everything.
//   - handle() pins the object for SHOAL_PIN_TTL seconds (default 120) or until one process
//     attaches with that handle, so the creator may exit right after sending it.
//   - handle(HandleMode::kHeld) pins nothing and asks the broker nothing: the same text, sent
//     any number of times, is valid while this process holds the object (keeps a Segment copy
//     or a Segment::Hold). For an object sent many times (docs/design/segment.md, "Held
//     handles").
//   - A mapping stays valid for as long as this process keeps it, whatever happens elsewhere:
//     the creator's death, the broker's death or the object's release by everyone else.
//
// Concurrency: Segment is a value type; copies may be used from several threads. The bytes are
// the user's: shoal does not synchronise access to data().
//
// Differs from boost::interprocess::shared_memory_object: no name, no remove(), no leak on
// SIGKILL; from multiprocessing.shared_memory: no resource tracker, any start method.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "shoal/error.hpp"
#include "shoal/handle.hpp"

namespace shoal {

namespace detail {
struct Mapping;
}

/// What a handle made for sending promises its receiver (Segment::handle).
enum class HandleMode {
  /// One-shot: a new pin (one broker round trip) keeps the object alive until one process
  /// attaches with it or SHOAL_PIN_TTL passes, even if the sender exits first. handle(true).
  kPinned,
  /// Valid while the sending process holds the object: no pin, no round trip, the same text
  /// every time (cached), with the hint, so a connected receiver attaches without a round trip.
  /// A receiver that attaches after every holder let go gets StaleHandleError.
  kHeld,
  /// No pin and no hint: a plain reference, valid while any process holds the object.
  /// handle(false).
  kBare,
  /// kHeld while a Segment::Hold of this object lives in this process, else kPinned: what
  /// pickling writes (shoal.hold in Python).
  kSend,
};

class Segment {
 public:
  struct Options {
    ObjectKind kind = ObjectKind::kBytes;
    bool populate = false;  // pre-fault the creator's mapping (MAP_POPULATE)
    /// The session to create it in; zero: this process's session. A Heap grows in its root's
    /// session, which need not be the growing process's (one that attached a handle of another
    /// session): a reference joins only objects of one session. SessionGoneError when that
    /// session's broker is gone (the object is not moved to a new session then).
    Id128 session{};
  };

  /// Creates a zero-filled segment of `size` usable bytes in this process's session (starting
  /// the session broker on first use). Throws OutOfSpaceError when the request exceeds
  /// MemAvailable, the cgroup limit or SHOAL_MAX_BYTES; SessionGoneError never (a dead session
  /// is replaced by a new one).
  static Segment create(uint64_t size, Options opts);
  static Segment create(uint64_t size) { return create(size, Options{}); }

  /// Maps the object a handle names. Throws DecodeError (malformed handle), StaleHandleError
  /// (object freed, or session not running), SessionGoneError (the broker died),
  /// IncompatibleSegmentError / CorruptSegmentError (the segment fails validation).
  static Segment attach(std::string_view handle);
  static Segment attach(const Handle& handle);
  /// attach() without waiting: nullopt where it would wait (a round trip to the broker: no
  /// connection yet, no hint, or another thread of this process in the middle of one). Throws
  /// as attach() does for a handle it can judge. For callers that must not block, such as the
  /// Python binding, which holds the GIL through this and releases it only for attach().
  static std::optional<Segment> try_attach_now(const Handle& handle);

  /// A segment of `size` bytes whose data area holds `data` at `offset` (bytes outside it are
  /// zero), written with pwrite rather than through a mapping; sealed read-only when `seal`.
  static Segment create_from(uint64_t size, ObjectKind kind,
                             std::span<const std::pair<uint64_t, std::span<const std::byte>>> parts,
                             bool seal);

  Segment() noexcept = default;

  bool valid() const noexcept { return m_ != nullptr; }
  explicit operator bool() const noexcept { return valid(); }

  /// The usable bytes (after the 64-byte segment header). Read-only segments are mapped
  /// PROT_READ: writing through data() faults, by design.
  std::byte* data() const noexcept;
  uint64_t size() const noexcept;
  std::span<std::byte> bytes() const noexcept { return {data(), static_cast<size_t>(size())}; }

  Id128 id() const noexcept;
  Id128 session() const noexcept;
  ObjectKind kind() const noexcept;
  bool read_only() const noexcept;
  /// The first bytes of the data area as they were read (pread) when a fast attach checked the
  /// header, so that a reader of a header of its own (shoal.Array's) need not fault the first
  /// page in; empty when the segment was mapped otherwise. The header bytes never change after
  /// a segment is published, so the copy stays right.
  std::span<const std::byte> head_copy() const noexcept;

  /// Makes the segment immutable for every process that attaches from now on
  /// (F_SEAL_FUTURE_WRITE) and mprotects this process's view read-only. Only the creator can
  /// seal, and only before it sends the first handle if every reader must see it read-only.
  void seal();

  /// Makes this object hold `target`, another object of the same session: the broker keeps
  /// `target` alive while this object lives, whoever else lets it go, and frees it with this
  /// object (a whole group goes when the last outside reference to it goes, SIGKILL included).
  /// Counted: n calls need n drop_reference calls. One round trip. This process must hold this
  /// object and `target` must be alive (StaleHandleError otherwise); both must be anonymous
  /// objects of one session (InvalidArgumentError); a broker older than references raises
  /// IncompatibleSegmentError. Cycles, a self-reference included, are allowed: the broker
  /// frees a cycle nobody holds when the next process of the session exits (so at the latest
  /// when the last process that held part of it does), or at `shoal gc --cycles` (docs/design/segment.md, "References between objects").
  void add_reference(const Segment& target) const;
  /// Undoes one add_reference(target), whichever process made it (this process must hold this
  /// object); no round trip, and the broker frees `target` if nothing else keeps it. Takes the
  /// id so that a closed `target` can still be let go. Dropping a reference that was never
  /// added does nothing.
  void drop_reference(const Id128& target) const;

  /// A handle for sending. With pin=true (the default) the object stays alive until a process
  /// attaches with it or the pin expires, even if every holder exits meanwhile.
  std::string handle(bool pin = true) const;
  Handle raw_handle(bool pin = true) const;
  /// A handle of the given mode (see HandleMode). kHeld and kSend-while-held make no round trip.
  std::string handle(HandleMode mode) const;
  Handle raw_handle(HandleMode mode) const;

  /// A token that keeps the object alive in this process (as a Segment copy does) and, while it
  /// lives, makes handle(HandleMode::kSend) (what pickling uses) write held handles. Tokens
  /// count: the object is "held for sending" while any of them lives. Movable, not copyable.
  class Hold {
   public:
    Hold() noexcept = default;
    Hold(Hold&& o) noexcept : m_(std::move(o.m_)) {}
    Hold& operator=(Hold&& o) noexcept;
    Hold(const Hold&) = delete;
    Hold& operator=(const Hold&) = delete;
    ~Hold() { release(); }
    bool active() const noexcept { return m_ != nullptr; }
    /// Ends the hold now (idempotent); the destructor does the same.
    void release() noexcept;

   private:
    friend class Segment;
    std::shared_ptr<detail::Mapping> m_;
  };
  /// Starts a hold (no system call). InvalidArgumentError for a closed or named segment.
  Hold hold() const;
  /// True while a Hold of this object lives in this process.
  bool held() const noexcept;

  // ---- named, persistent segments --------------------------------------------------------
  // Files in named_dir() (mode 0600, this user only) with the same 64-byte header. They live
  // until removed (`shoal rm NAME`), survive every process and are listed by `shoal ls`.
  // Unlike anonymous segments they cannot be sealed against truncation: a process that
  // truncates the file under a reader makes that reader fault (SIGBUS), as with any mmap'ed
  // file, so named segments are for cooperating processes of one user.

  /// Creates `name` with `size` zero-filled usable bytes, pages reserved. kExists if present.
  static Segment create_named(const std::string& name, uint64_t size,
                              ObjectKind kind = ObjectKind::kBytes);
  /// Maps an existing named segment (read-only unless `writable`). kNotFound if absent.
  static Segment open_named(const std::string& name, bool writable = false);
  /// Deletes the file; processes that map it keep their mapping. kNotFound if absent.
  static void remove_named(const std::string& name);
  /// The name of a named segment; empty for anonymous ones.
  const std::string& name() const noexcept;

  /// Drops this copy's reference now (the destructor does the same).
  void close() noexcept { m_.reset(); }

  /// Number of Segment copies sharing this process's mapping (diagnostics).
  long use_count() const noexcept { return m_.use_count(); }

 private:
  explicit Segment(std::shared_ptr<detail::Mapping> m) noexcept : m_(std::move(m)) {}
  std::shared_ptr<detail::Mapping> m_;
};

struct NamedEntry {
  std::string name;
  uint64_t size = 0;  // usable bytes (file size minus the header), 0 if not a valid segment
  std::string path;
  bool valid = false;  // the header validates
};
/// Every named segment of this user (files in named_dir()).
std::vector<NamedEntry> list_named();

/// Validates the first bytes of a segment (a local copy is taken first): magic, version,
/// fingerprint, sizes. `expect_object` may be zero to skip the id check. Used on every attach
/// and by fuzz/segment_header_fuzzer.cpp; never crashes on any input.
Status validate_segment_header(const void* base, uint64_t mapped_size, Id128 expect_object) noexcept;

}  // namespace shoal
