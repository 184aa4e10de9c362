// src/session/objects.cpp — the Client's objects: creating a segment and registering it with
// the broker, attaching by handle (through the mapping cache, the handle's hint, or a round
// trip), pins, sealing, release, and re-registering inherited mappings after fork.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "layout/hold_ring_layout.hpp"
#include "layout/segment_layout.hpp"
#include "session/client.hpp"
#include "session/segment_header.hpp"
#include "session/wire.hpp"
#include "shoal/session.hpp"
#include "shoal/system.hpp"

namespace shoal::detail {

using layout::Op;
using layout::WireMsg;
using platform::UniqueFd;

namespace {

void check_size(uint64_t data_size) {
  if (data_size > layout::kMaxSegmentBytes) {
    throw_error(Errc::kInvalidArgument, "segment size " + std::to_string(data_size) + " is absurd");
  }
}

// A new creator's mapping of `total` bytes at `base` (the Mapping unmaps them when it dies).
std::shared_ptr<Mapping> new_mapping(const Id128& session, const Id128& object, void* base,
                                     uint64_t total, ObjectKind kind, bool read_only) {
  auto m = std::make_shared<Mapping>();
  m->session = session;
  m->object = object;
  m->base = static_cast<std::byte*>(base);
  m->total = total;
  m->kind = kind;
  m->read_only = read_only;
  return m;
}

}  // namespace

Id128 Client::session_for_create() {
  std::lock_guard<std::mutex> g(mu_);
  current_conn_locked().take();
  return current_;
}

std::shared_ptr<Mapping> Client::create(uint64_t data_size, ObjectKind kind, bool populate,
                                        const Id128& in_session) {
  check_size(data_size);
  const uint64_t total = data_size + layout::kSegmentHeaderSize;
  check_capacity(total).throw_if_error();
  Id128 session = in_session.is_zero() ? session_for_create() : in_session;
  // Reserving pages may take a while: mu_ is not held, other threads' round trips go on.
  Id128 object = Id128::random();
  UniqueFd fd = platform::create_memfd("shoal", total).take();
  void* base = platform::map_fd(fd.get(), total, true, populate).take();
  auto m = new_mapping(session, object, base, total, kind, false);
  init_segment_header(reinterpret_cast<layout::SegmentHeader*>(base), object, kind, total);
  register_new(*m, fd.get(), data_size, in_session.is_zero());
  m->memfd = std::move(fd);
  return m;
}

std::shared_ptr<Mapping> Client::create_filled(uint64_t data_size, ObjectKind kind,
                                               const platform::Piece* pieces, size_t n,
                                               bool seal) {
  check_size(data_size);
  const uint64_t total = data_size + layout::kSegmentHeaderSize;
  check_capacity(total).throw_if_error();
  Id128 session = session_for_create();
  Id128 object = Id128::random();
  alignas(layout::SegmentHeader) unsigned char hbytes[sizeof(layout::SegmentHeader)] = {};
  init_segment_header(reinterpret_cast<layout::SegmentHeader*>(hbytes), object, kind, total);
  std::vector<platform::Piece> all;
  all.reserve(n + 1);
  all.push_back({0, hbytes, sizeof hbytes});
  for (size_t i = 0; i < n; ++i) {
    all.push_back({pieces[i].offset + layout::kSegmentHeaderSize, pieces[i].data, pieces[i].size});
  }
  UniqueFd fd = platform::create_memfd_filled("shoal", total, all.data(), all.size(), seal).take();
  void* base = platform::map_fd(fd.get(), total, !seal, false).take();
  auto m = new_mapping(session, object, base, total, kind, seal);
  register_new(*m, fd.get(), data_size);
  if (!seal) m->memfd = std::move(fd);
  return m;
}

void Client::register_new(Mapping& m, int fd, uint64_t data_size, bool may_move) {
  WireMsg req = wire::make_msg(Op::kRegister);
  req.object_hi = m.object.hi;
  req.object_lo = m.object.lo;
  req.size = data_size;
  req.kind = static_cast<uint32_t>(m.kind);
  WireMsg rep{};
  std::unique_lock<std::mutex> g(mu_);
  Id128 session = m.session;
  Conn* registered_on = nullptr;
  // Our session's broker may have died since we last talked to it; we learn that only now.
  // New objects then go to a new session (once: a second failure is reported).
  for (int attempt = 0;; ++attempt) {
    Status st = Status::ok();
    auto conn = conn_locked(session);
    if (conn) {
      st = roundtrip_locked(session, conn.value(), req, fd, &rep, nullptr, nullptr);
      registered_on = conn.value();
    } else {
      st = conn.status();
    }
    if (st) break;
    if (st.code() == Errc::kSessionGone && attempt == 0 && may_move) {
      if (current_ == session) current_ = {};
      auto fresh = current_conn_locked();
      if (fresh) {
        session = current_;
        m.session = session;
        continue;
      }
      st = fresh.status();
    }
    g.unlock();
    m.session = {};  // never registered: nothing to release
    st.throw_if_error();
  }
  set_hint_locked(m, registered_on, rep.arg);
  cache_[m.object] = m.shared_from_this();
}

std::shared_ptr<Mapping> Client::attach(const Handle& h, bool may_wait) {
  // Declared before the lock, so destroyed after it is released (L8: no Mapping dies under mu_).
  std::shared_ptr<Mapping> not_this_session;
  std::unique_lock<std::mutex> g(mu_, std::defer_lock);
  if (may_wait) {
    g.lock();
  } else if (!g.try_lock()) {
    return nullptr;  // another thread is attaching, or waits on the broker
  }
  check_fork_locked();
  if (auto it = cache_.find(h.object); it != cache_.end()) {
    auto m = it->second.lock();
    if (m && m->session != h.session) {
      // Our object's id under another session's id: a forged handle. It must not reach our
      // mapping; it takes the path of a process that maps nothing, which asks the session the
      // handle names and fails there exactly as a fresh process would.
      not_this_session = std::move(m);
    } else if (m) {
      if (m->total != h.size + layout::kSegmentHeaderSize || m->kind != static_cast<ObjectKind>(h.kind)) {
        g.unlock();
        throw_error(Errc::kStaleHandle, "the handle says " + std::to_string(h.size) +
                                            " bytes of kind " + std::to_string(h.kind) +
                                            ", the object differs: the handle was altered");
      }
      if (h.pin != 0) {  // consume the pin, or it would keep the object alive until it expires
        if (!may_wait) {
          // Without a connection that takes the ring, consuming the pin is a round trip.
          auto it2 = conns_.find(h.session);
          if (it2 == conns_.end() || it2->second.gone || !it2->second.can_hold) {
            g.unlock();  // m may be the last reference (L8: no Mapping dies under mu_)
            return nullptr;
          }
        }
        auto c = conn_locked(h.session);
        if (c && c.value()->can_hold) {
          hold_locked(c.value(), h.object, h.pin);  // kAdopt without the reply it would ignore
        } else if (c) {
          WireMsg req = wire::make_msg(Op::kAdopt);
          req.object_hi = h.object.hi;
          req.object_lo = h.object.lo;
          req.pin = h.pin;
          WireMsg rep{};
          (void)roundtrip_locked(h.session, c.value(), req, -1, &rep, nullptr, nullptr);
        }
      }
      return m;
    } else {
      cache_.erase(it);
    }
  }
  // The fast path needs a connection to the broker the hint names, and something that keeps
  // that broker's descriptor number the object's until it reads our kHold: a pin, or, for a
  // held handle, the sender's hold (docs/design/segment.md, "Fast attach", "Held handles"). A
  // process not connected yet connects first (a round trip it needs either way), then takes
  // the fast path: one round trip where connecting and kAttach were two. A bare handle
  // (handle(false)) has no hint.
  const bool hinted = h.has_hint() && (h.pin != 0 || h.held());
  auto takes_hint = [&](const Conn& c) {
    return !c.gone && c.can_hold && c.broker_pid == static_cast<pid_t>(h.hint_pid);
  };
  if (hinted) {
    if (auto it = conns_.find(h.session); it != conns_.end() && takes_hint(it->second)) {
      if (auto m = attach_by_hint_locked(h, &it->second)) return m;
    }
  }
  if (!may_wait) return nullptr;
  const bool was_connected = conns_.count(h.session) != 0;
  Conn* c = conn_locked(h.session).take();
  if (hinted && !was_connected && takes_hint(*c)) {
    if (auto m = attach_by_hint_locked(h, c)) return m;
  }
  WireMsg req = wire::make_msg(Op::kAttach);
  req.object_hi = h.object.hi;
  req.object_lo = h.object.lo;
  req.pin = h.pin;
  WireMsg rep{};
  int rfd = -1;
  Status asked = roundtrip_locked(h.session, c, req, -1, &rep, &rfd, nullptr);
  if (!asked && asked.code() == Errc::kStaleHandle && h.held()) {
    g.unlock();
    throw_error(Errc::kStaleHandle,
                asked.message() + " (a held handle is valid only while its sender holds the "
                                  "object: the sender let go of it before this attach)");
  }
  asked.throw_if_error();
  UniqueFd fd(rfd);
  // From here on the broker counts a reference for us: every failure path must release it.
  auto fail = [&](Status st) {
    WireMsg rel = wire::make_msg(Op::kRelease);
    rel.object_hi = h.object.hi;
    rel.object_lo = h.object.lo;
    (void)wire::send_msg(c->sock.get(), rel);
    g.unlock();
    st.throw_if_error();
  };
  if (!fd.valid()) fail({Errc::kCorrupt, "the broker answered an attach without a descriptor"});
  const uint64_t total = rep.size + layout::kSegmentHeaderSize;
  if (rep.size > layout::kMaxSegmentBytes) fail({Errc::kCorrupt, "the broker reported an absurd size"});
  if (rep.size != h.size || rep.kind != h.kind) {
    fail({Errc::kStaleHandle, "the handle says " + std::to_string(h.size) + " bytes of kind " +
                                  std::to_string(h.kind) + ", the object has " +
                                  std::to_string(rep.size) + " bytes of kind " +
                                  std::to_string(rep.kind) + ": the handle was altered"});
  }
  bool read_only = false;
  Status st = platform::check_received_fd(fd.get(), total, &read_only);
  if (!st) fail(st);
  auto mapped = platform::map_fd(fd.get(), total, !read_only, false);
  if (!mapped) fail(mapped.status());
  st = validate_segment_header(mapped.value(), total, h.object);
  if (st) {
    // The broker reports the kind its creator registered; the header must say the same, or
    // a view of one kind would read the bytes of another (the fast path checks this too).
    const uint32_t header_kind = __atomic_load_n(
        &static_cast<const layout::SegmentHeader*>(mapped.value())->kind, __ATOMIC_RELAXED);
    if (header_kind != rep.kind) {
      st = {Errc::kCorrupt, "segment header says kind " + std::to_string(header_kind) +
                                " at offset 20, its handle and broker kind " +
                                std::to_string(rep.kind)};
    }
  }
  if (!st) {
    platform::unmap(mapped.value(), total);
    fail(st);
  }
  auto m = std::make_shared<Mapping>();
  m->session = h.session;
  m->object = h.object;
  m->base = static_cast<std::byte*>(mapped.value());
  m->total = total;
  m->kind = static_cast<ObjectKind>(rep.kind);
  m->read_only = read_only;
  set_hint_locked(*m, c, rep.arg);
  cache_[h.object] = m;
  return m;
}

std::shared_ptr<Mapping> Client::attach_by_hint_locked(const Handle& h, Conn* c) noexcept {
  try {
    if (h.size > layout::kMaxSegmentBytes) return nullptr;
    const uint64_t total = h.size + layout::kSegmentHeaderSize;
    // Allocated first, so that nothing can fail once kHold is sent. Until then its session is
    // zero, so destroying it under mu_ sends nothing and takes no lock (L8 holds).
    auto m = std::make_shared<Mapping>();
    std::weak_ptr<Mapping>& slot = cache_[h.object];  // empty: harmless if we fall back
    // Whatever the descriptor number names now, the checks below refuse anything but a memfd
    // of this object.
    UniqueFd fd;
    if (c->broker_pidfd.valid()) {
      const int got = platform::pidfd_getfd(c->broker_pidfd.get(), static_cast<int>(h.hint_fd));
      if (got < 0 && errno != EBADF) c->broker_pidfd.reset();  // refused: use /proc
      fd.reset(got);
    }
    if (!fd.valid() && !c->broker_pidfd.valid()) {
      char path[48];
      std::snprintf(path, sizeof path, "/proc/%u/fd/%u", h.hint_pid, h.hint_fd);
      // A socket fails to open (ENXIO); O_NOCTTY and O_NONBLOCK make opening a terminal or a
      // FIFO harmless.
      fd.reset(::open(path, O_RDWR | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
    }
    if (!fd.valid()) return nullptr;
    // The header is read with pread, not through the mapping: one system call where fstat and
    // a page fault were two costs (each tens of µs in a process that was asleep). A short read
    // (an empty file) or ESPIPE (a socket, a pipe) refuses the descriptor without touching it,
    // and I1-I5 on the copy, I5 (this object's id) above all, tell this object's memfd from
    // whatever else the number may name now; nothing is mapped before they pass. The size and
    // seals need no check of their own: every memfd the broker holds for an object passed
    // check_received_fd at kRegister (exact size, sealed against shrink and grow).
    ssize_t got;
    do {
      got = ::pread(fd.get(), m->head.data(), std::min<uint64_t>(m->head.size(), total), 0);
    } while (got < 0 && errno == EINTR);
    if (got < static_cast<ssize_t>(layout::kSegmentHeaderSize)) return nullptr;
    layout::SegmentHeader copy;
    std::memcpy(static_cast<void*>(&copy), m->head.data(), sizeof copy);
    if (!validate_segment_header(m->head.data(), total, h.object) || copy.kind != h.kind) {
      return nullptr;
    }
    m->head_len = static_cast<uint32_t>(got);
    // Read-only from the handle: sealing is for good, so a handle made read-only stays right.
    // One made writable may be older than a seal(): the writable mmap then fails (EPERM under
    // F_SEAL_FUTURE_WRITE) and the segment is mapped read-only, as the round trip would.
    bool read_only = (h.flags & kHandleReadOnly) != 0;
    auto mapped = platform::map_fd(fd.get(), total, !read_only, false);
    if (!mapped && !read_only) {
      read_only = true;
      mapped = platform::map_fd(fd.get(), total, false, false);
    }
    if (!mapped) return nullptr;
    // A broker that died before this point made pidfd_getfd (or the open) fail above; one that
    // dies from here on leaves a valid mapping, as for any process attached before it died.
    hold_locked(c, h.object, h.pin);
    if (c->gone) {  // the broker died (kHold's send failed): the round trip reports it
      platform::unmap(mapped.value(), total);
      return nullptr;
    }
    m->session = h.session;
    m->object = h.object;
    m->base = static_cast<std::byte*>(mapped.value());
    m->total = total;
    m->kind = static_cast<ObjectKind>(h.kind);
    m->read_only = read_only;
    m->hint_pid = h.hint_pid;  // right: the descriptor it names was this object's
    m->hint_fd = h.hint_fd;
    slot = m;
    return m;
  } catch (...) {  // out of memory before kHold: the round trip will report it
    return nullptr;
  }
}

void Client::hold_locked(Conn* c, const Id128& object, uint64_t pin) noexcept {
  if (auto* r = static_cast<layout::HoldRingHeader*>(c->ring.get())) {
    const uint64_t head = r->head.load(std::memory_order_relaxed);  // ours alone (R2)
    // Acquire: the broker has copied out every entry below tail, so they may be overwritten.
    if (head - r->tail.load(std::memory_order_acquire) < layout::kHoldRingCapacity) {
      layout::hold_entries(r)[head % layout::kHoldRingCapacity] =
          layout::HoldEntry{object.hi, object.lo, pin, 0};
      r->head.store(head + 1, std::memory_order_release);
      return;
    }
  }
  // Full (the broker has not served this connection for kHoldRingCapacity holds) or absent. The
  // broker drains the ring before it serves this message, so the holds stay in order (R3).
  WireMsg req = wire::make_msg(Op::kHold);
  req.object_hi = object.hi;
  req.object_lo = object.lo;
  req.pin = pin;
  send_locked(c, req);
}

void Client::set_hint_locked(Mapping& m, const Conn* c, uint64_t broker_fd) noexcept {
  // 0-2 never name an object's memfd (the broker's standard streams stay open); 0 is a broker
  // that does not say (older than held handles): its handles then carry no hint.
  if (c != nullptr && c->broker_pid > 0 && broker_fd > 2 && broker_fd <= 0x7FFFFFFF) {
    m.hint_pid = static_cast<uint32_t>(c->broker_pid);
    m.hint_fd = static_cast<uint32_t>(broker_fd);
  }
}

void Client::send_locked(Conn* c, const WireMsg& msg) noexcept {
  if (!wire::send_msg(c->sock.get(), msg)) {
    c->gone = true;
    c->sock.reset();
  }
}

uint64_t Client::pin(const Mapping& m, Handle* hint) {
  std::lock_guard<std::mutex> g(mu_);
  Conn* c = conn_locked(m.session).take();
  WireMsg req = wire::make_msg(Op::kPin);
  req.object_hi = m.object.hi;
  req.object_lo = m.object.lo;
  req.arg = pin_ttl_ms();
  WireMsg rep{};
  roundtrip_locked(m.session, c, req, -1, &rep, nullptr, nullptr).throw_if_error();
  // The hint: valid while the pin lives (the pin keeps the object, hence the descriptor).
  if (rep.arg > 2 && rep.arg <= 0x7FFFFFFF && c->broker_pid > 0) {
    hint->hint_pid = static_cast<uint32_t>(c->broker_pid);
    hint->hint_fd = static_cast<uint32_t>(rep.arg);
  }
  return rep.pin;
}

void Client::seal(Mapping& m) {
  std::lock_guard<std::mutex> g(mu_);
  if (m.read_only) return;
  if (!m.memfd.valid()) {
    throw_error(Errc::kInvalidArgument,
                "only the process that created a segment can seal it read-only");
  }
  platform::seal_read_only(m.memfd.get()).throw_if_error();
  platform::protect_read_only(m.base, m.total).throw_if_error();
  m.read_only = true;
  m.memfd.reset();
}

void Client::add_reference(const Mapping& source, const Mapping& target) {
  if (!source.name.empty() || !target.name.empty()) {
    throw_error(Errc::kInvalidArgument,
                "named segments have no broker, so they can neither hold nor be held by a "
                "reference; use anonymous segments");
  }
  if (source.session.is_zero() || target.session.is_zero()) {
    throw_error(Errc::kSessionGone, "a segment of a session that is gone cannot take part in "
                                    "a reference; share it again from a live session");
  }
  if (source.session != target.session) {
    throw_error(Errc::kInvalidArgument,
                "object " + target.object.hex() + " lives in session " + target.session.hex() +
                    ", object " + source.object.hex() + " in session " + source.session.hex() +
                    ": a reference joins two objects of one session (create both in one)");
  }
  std::lock_guard<std::mutex> g(mu_);
  Conn* c = conn_locked(source.session).take();
  if (!c->can_ref) {  // an older broker drops a peer that sends an unknown op
    throw_error(Errc::kIncompatible,
                "the broker of session " + source.session.hex() +
                    " predates references between objects: start a new session with this "
                    "shoal (the broker comes with it) to use add_reference");
  }
  WireMsg req = wire::make_msg(Op::kRef);
  req.object_hi = source.object.hi;
  req.object_lo = source.object.lo;
  layout::set_ref_target(&req, target.object.hi, target.object.lo);
  WireMsg rep{};
  roundtrip_locked(source.session, c, req, -1, &rep, nullptr, nullptr).throw_if_error();
}

void Client::drop_reference(const Mapping& source, const Id128& target) noexcept {
  if (source.session.is_zero() || !source.name.empty()) return;  // it never had one
  std::lock_guard<std::mutex> g(mu_);
  check_fork_locked();
  auto it = conns_.find(source.session);
  // No connection (or a forked child's, dropped): this process made no reference through it
  // that the broker still counts; the one who did drops it, or its source's end does.
  if (it == conns_.end() || it->second.gone || !it->second.can_ref) return;
  WireMsg req = wire::make_msg(Op::kUnref);
  req.object_hi = source.object.hi;
  req.object_lo = source.object.lo;
  layout::set_ref_target(&req, target.hi, target.lo);
  send_locked(&it->second, req);
}

void Client::release(const Id128& session, const Id128& object) noexcept {
  if (session.is_zero()) return;
  std::lock_guard<std::mutex> g(mu_);
  check_fork_locked();
  if (auto it = cache_.find(object); it != cache_.end()) {
    // Another thread attached the object again between our unmap and this lock: its new
    // mapping owns the broker reference now, so there is nothing to release.
    if (!it->second.expired()) return;
    cache_.erase(it);
  }
  auto it = conns_.find(session);
  if (it == conns_.end() || it->second.gone) return;  // the broker already forgot us
  // Fire and forget: the broker sends no reply to kRelease, so closing a segment costs one
  // sendmsg, not a round trip.
  WireMsg req = wire::make_msg(Op::kRelease);
  req.object_hi = object.hi;
  req.object_lo = object.lo;
  if (!wire::send_msg(it->second.sock.get(), req)) {
    it->second.gone = true;
    it->second.sock.reset();
  }
}

void Client::adopt_all_locked(std::vector<std::shared_ptr<Mapping>>* keep) noexcept {
  try {
    for (auto& [object, weak] : cache_) {
      auto m = weak.lock();
      if (!m) continue;
      keep->push_back(m);  // dropped by the caller after unlocking (~Mapping takes mu_)
      m->memfd.reset();    // a creator's descriptor is the parent's business: no sealing here
      auto c = conn_locked(m->session);
      if (!c) continue;  // the session is gone: the mapping stays valid, only re-sharing fails
      WireMsg req = wire::make_msg(Op::kAdopt);
      req.object_hi = object.hi;
      req.object_lo = object.lo;
      WireMsg rep{};
      (void)roundtrip_locked(m->session, c.value(), req, -1, &rep, nullptr, nullptr);
    }
  } catch (...) {
    // Out of memory in a forked child: the mappings still work; re-sharing may fail later.
  }
}

void Client::after_fork_child() noexcept {
  std::vector<std::shared_ptr<Mapping>> keep;
  {
    std::lock_guard<std::mutex> g(mu_);
    check_fork_locked();
    adopt_all_locked(&keep);
  }
}

void Client::reset_for_testing() noexcept {
  std::lock_guard<std::mutex> g(mu_);
  conns_.clear();
  current_ = {};
}

}  // namespace shoal::detail
