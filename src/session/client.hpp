// src/session/client.hpp — the per-process side of the session protocol (not API).
//
// One Client per process (a leaked singleton: it must outlive every static Segment). It owns one
// connection per session it talks to and a cache of live mappings by object id, so attaching an
// object this process already maps costs no round trip.
//
// Threading: mu_ guards everything below and is held across each broker round trip (one request
// in flight per connection). Mapping destructors call release(), which takes mu_, so no Mapping
// may be destroyed while mu_ is held (the cache holds weak_ptrs only).
//
// Fork: pthread_atfork keeps mu_ consistent and marks the child (forked_); the child drops the
// parent's connections (they are the parent's references) and reconnects on its next call, or at
// once in after_fork_child(). Only fork() through libc is seen (what os.fork and multiprocessing
// call); a child of a raw clone() system call must not use the Client it inherited.
#pragma once

#include <sys/types.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "layout/protocol_layout.hpp"
#include "layout/segment_layout.hpp"
#include "platform/platform.hpp"
#include "shoal/handle.hpp"

namespace shoal::detail {

struct Mapping : std::enable_shared_from_this<Mapping> {
  Id128 session;
  Id128 object;
  std::byte* base = nullptr;  // start of the segment (the header)
  uint64_t total = 0;         // bytes mapped, header included
  ObjectKind kind = ObjectKind::kBytes;
  bool read_only = false;
  platform::UniqueFd memfd;   // the creator keeps its fd until seal() (needed to add seals)
  // A fast attach reads the segment's first bytes with pread instead of faulting the mapping
  // in (Segment::head_copy); head_len is 0 for any other mapping.
  static constexpr size_t kHeadCopy = 512;
  std::array<std::byte, kHeadCopy> head{};
  uint32_t head_len = 0;
  std::string name;           // named segments only; they have no session and no broker
  // The hint of this object's handles: its broker's pid and the broker's descriptor number for
  // it, from the kRegister or kAttach reply or the handle a fast attach used (0: not told, by a
  // broker older than held handles). Set before the mapping is published, never changed: the
  // broker keeps one descriptor per object for the object's whole life.
  uint32_t hint_pid = 0;
  uint32_t hint_fd = 0;
  // Live Segment::Hold tokens: while non-zero, HandleMode::kSend writes held handles.
  std::atomic<uint32_t> send_holds{0};
  // The held handle's text, made once (remade if a seal changed the read-only flag).
  std::mutex held_mu;
  std::string held_text;      // guarded by held_mu
  bool held_text_ro = false;  // the read-only flag held_text was made with
  ~Mapping();
};

class Client {
 public:
  static Client& instance();

  /// A zero-filled segment of `data_size` usable bytes; `populate` pre-faults this mapping.
  /// In `in_session` when it is not zero (never moved to another), else in the current one.
  std::shared_ptr<Mapping> create(uint64_t data_size, ObjectKind kind, bool populate,
                                  const Id128& in_session = {});
  /// A segment whose data area is written from `pieces` (offsets relative to the data area)
  /// with pwrite, and sealed read-only at once when `seal`.
  std::shared_ptr<Mapping> create_filled(uint64_t data_size, ObjectKind kind,
                                         const platform::Piece* pieces, size_t n, bool seal);
  /// With `may_wait` false: null, nothing done, where the attach would wait for mu_ or for a
  /// round trip to the broker (Segment::try_attach_now).
  std::shared_ptr<Mapping> attach(const Handle& h, bool may_wait = true);
  /// A new pin for `m`; the hint for its handle in `hint` (hint_pid zero if the broker gave
  /// none).
  uint64_t pin(const Mapping& m, Handle* hint);
  void seal(Mapping& m);
  /// kRef: `source` (held by this process) refers to `target` from now on (counted).
  void add_reference(const Mapping& source, const Mapping& target);
  /// kUnref (fire and forget): undoes one add_reference(source, target).
  void drop_reference(const Mapping& source, const Id128& target) noexcept;
  void release(const Id128& session, const Id128& object) noexcept;
  void after_fork_child() noexcept;
  Id128 current_session() noexcept;
  /// The broker's JSON description of a session (kList), connecting if needed.
  Result<std::string> describe(const Id128& session) noexcept;
  /// kDropPins: drops the pins of dead senders; how many were dropped.
  Result<uint64_t> drop_orphan_pins(const Id128& session) noexcept;
  /// kCollect: frees the session's unreachable reference cycles; how many objects went.
  Result<uint64_t> collect_cycles(const Id128& session) noexcept;
  /// Tests only: forget every connection and the current session (each test has its own
  /// runtime directory, hence its own sessions).
  void reset_for_testing() noexcept;

 private:
  struct Conn {
    platform::UniqueFd sock;
    bool gone = false;
    pid_t broker_pid = 0;   // from the kHello reply
    bool can_hold = false;  // the broker understands kHold (kHello reply flags)
    bool can_drop_pins = false;  // ... and kDropPins
    bool can_ref = false;        // ... and kRef, kUnref, kCollect
    // A pidfd of the broker (pidfd_open, once per connection) for pidfd_getfd: the fastest
    // way to the broker's memfd of a hint. Invalid where the kernel or ptrace rules refuse
    // either call; attach then opens /proc/<pid>/fd/<n> instead.
    platform::UniqueFd broker_pidfd;
    // The hold ring shared with the broker (layout/hold_ring_layout.hpp), when the broker took
    // it (kHelloHoldRing); unmapped with the connection, in a forked child too, which never
    // writes its copy.
    platform::UniqueMapping ring;
  };

  Client();
  // All *_locked functions require mu_ held.
  void check_fork_locked() noexcept;
  Result<Conn*> conn_locked(const Id128& session);    // cached in conns_
  Result<Conn> connect_locked(const Id128& session);  // a new connection, not cached
  // A session-wide query (describe, drop_orphan_pins): f(Conn*) -> Result<T> runs under mu_
  // on our live connection to `session`, or on a temporary one closed afterwards, so that
  // `shoal ls` or `shoal gc` in a long-lived process does not keep every broker it looked at
  // alive. A C++ exception becomes kSystem. Defined in sessions.cpp, its only user.
  template <class T, class F>
  Result<T> query(const Id128& session, F&& f) noexcept;
  Result<Conn*> current_conn_locked();
  Result<Id128> start_session_locked();
  Id128 session_for_create();
  // Registers a new segment's fd (mu_ not held on entry); on a dead session, once more in a
  // new session. Throws on failure, leaving m.session zero (nothing to release).
  // `may_move` false: the object must stay in m.session (a dead broker there is an error).
  void register_new(Mapping& m, int fd, uint64_t data_size, bool may_move = true);
  Status roundtrip_locked(const Id128& session, Conn* c, const layout::WireMsg& req, int send_fd,
                          layout::WireMsg* reply, int* recv_fd, std::string* payload);
  void adopt_all_locked(std::vector<std::shared_ptr<Mapping>>* keep) noexcept;
  // The fast path of attach: maps the broker's memfd (pidfd_getfd, or /proc/<pid>/fd/<n>)
  // from the handle's hint, then holds it (hold_locked). Null on any mismatch or failure
  // (nothing sent, nothing kept): the caller then takes the round trip.
  std::shared_ptr<Mapping> attach_by_hint_locked(const Handle& h, Conn* c) noexcept;
  // Records on `m` the hint a kRegister or kAttach reply gave (the broker's descriptor number
  // in `arg`) with `c`'s broker pid; leaves it unset for a broker that gave none.
  void set_hint_locked(Mapping& m, const Conn* c, uint64_t broker_fd) noexcept;
  // Fire and forget; a failed send marks the connection gone.
  void send_locked(Conn* c, const layout::WireMsg& msg) noexcept;
  // Tells the broker that this connection now holds `object` (using `pin`): an entry in the
  // hold ring (no system call), or kHold when the ring is full or absent.
  void hold_locked(Conn* c, const Id128& object, uint64_t pin) noexcept;

  std::mutex mu_;
  // Set in a forked child by the atfork handler (fork() through libc: os.fork, multiprocessing);
  // a child made by a raw clone() system call is not seen, and must not use its parent's Client.
  bool forked_ = false;
  Id128 current_;
  std::unordered_map<Id128, Conn, Id128Hash> conns_;
  std::unordered_map<Id128, std::weak_ptr<Mapping>, Id128Hash> cache_;
};

}  // namespace shoal::detail
