// src/broker/broker.cpp — shoal-broker: the one process per session that holds the segments.
//
// Why a process: a memfd lives as long as some descriptor or mapping refers to it. The broker
// holds one descriptor per live object, hands copies to attaching processes (SCM_RIGHTS), and
// counts references per connection. A process's references therefore die with its connection,
// however it dies. When no connection and no pin is left, the broker exits and the kernel frees
// whatever no process still maps. If the broker itself is killed, mappings stay valid (the
// kernel keeps the pages while they are mapped); only new attaches fail. Design note:
// docs/design/segment.md.
//
// References between objects (kRef/kUnref): an object also lives while another live object
// refers to it. Freeing is reference counting along those edges (maybe_free cascades, with a
// work list, never recursion), plus a mark and sweep from the held and pinned objects for
// cycles, run only in sessions that have edges (collect_unreachable).
//
// Single-threaded poll loop; every request is O(1) except kList, kDropPins, kCollect, a
// connection's close in a session with references (the sweep) and a free that cascades. The
// broker never maps a
// segment, so a corrupt segment cannot hurt it, and it never trusts a message: a malformed one
// disconnects its sender.
//
// Files in the runtime directory (0700): <session>.lock (flock'ed by the broker for its whole
// life; holds its pid), <session>.sock (the listening socket). Both are removed on a clean exit;
// after a SIGKILL, gc_runtime_dir() removes them (it can take the lock).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>
#include <algorithm>

#include "layout/hold_ring_layout.hpp"
#include "layout/protocol_layout.hpp"
#include "layout/segment_layout.hpp"
#include "platform/platform.hpp"
#include "session/wire.hpp"
#include "shoal/handle.hpp"
#include "shoal/session.hpp"
#include "shoal/system.hpp"

namespace shoal::broker {
namespace {

using layout::Op;
using layout::WireMsg;
using platform::UniqueFd;

volatile sig_atomic_t g_stop = 0;

// A broker that never sees its first connection (its starter died right after starting it)
// gives up after this long.
constexpr uint64_t kFirstConnectGraceNs = 60ULL * 1000000000ULL;
// A client that does not read a reply for this long is disconnected (its references dropped).
constexpr time_t kSendTimeoutSec = 5;
// Objects at least this big are closed off the event loop (see maybe_free).
constexpr uint64_t kAsyncCloseBytes = 64ULL << 20;

// A handle in transit: it keeps its object alive until received or until its deadline.
struct Pin {
  uint64_t deadline = 0;  // monotonic ns
  int64_t sender = 0;     // pid of the process that asked for it (kDropPins looks at it)
};

struct Object {
  UniqueFd fd;
  uint64_t size = 0;  // data bytes
  uint32_t kind = 0;
  int64_t creator_pid = 0;
  int64_t created_unix = 0;
  std::set<int> holders;              // connection fds holding a reference
  std::map<uint64_t, Pin> pins;       // pin id -> its deadline and sender
  // Edges to other objects (kRef): target -> how many kRefs not yet undone (>= 1). A target in
  // here is always in objects_ (R1: it cannot be freed while this object, which refers to it,
  // is in the table).
  std::unordered_map<Id128, uint64_t, Id128Hash> refs_out;
  // How many objects of the table have this one in their refs_out (distinct sources).
  uint64_t referrers = 0;
};

struct Conn {
  UniqueFd sock;
  int64_t pid = 0;
  std::unordered_set<Id128, Id128Hash> held;  // at most one reference per object
  std::string refused;  // non-empty: another uid; its first message gets this kPermission reply
  // The hold ring the client passed with kHello (layout/hold_ring_layout.hpp), and how many of
  // its entries this broker has taken: our count, never the shared tail, is trusted (R4).
  platform::UniqueMapping ring;
  uint64_t ring_taken = 0;
};

class Broker {
 public:
  Broker(std::string dir, Id128 session, int ready_fd)
      : dir_(std::move(dir)), session_(session), ready_fd_(ready_fd) {}
  int run();

 private:
  bool setup();
  void accept_all();
  void serve(int fd);
  // One message, read and checked by serve(); each on_* below answers one op (or none: kHold,
  // kRelease). `passed` is the descriptor that came with the message, if any.
  struct Request {
    int fd;
    Conn& conn;
    const WireMsg& req;
    WireMsg& rep;  // op, object id filled in
    UniqueFd passed;
    Id128 id;
  };
  void on_hello(Request& r);
  void on_register(Request& r);
  void on_attach(Request& r);  // kAttach, and kAdopt (no descriptor in the reply)
  void on_hold(Request& r);
  void on_release(Request& r);
  void on_pin(Request& r);
  void on_drop_pins(Request& r);
  void on_list(Request& r);
  void on_ref(Request& r);
  void on_unref(Request& r);
  void on_collect(Request& r);
  void drop_conn(int fd);
  // kHold's work: connection `fd` now holds object `id`; `pin` (if any) is used up.
  void hold(int fd, Conn& conn, const Id128& id, uint64_t pin);
  // Takes the holds published in `conn`'s ring since the last call. False if the ring breaks
  // R3 (the caller disconnects the client, as for a malformed message).
  bool drain_ring(int fd, Conn& conn);
  // drain_ring for every connection (before pins expire, before kList).
  void drain_rings();
  // Maps a hold ring passed with kHello, if it is one (R1, sealed, one page); null otherwise.
  platform::UniqueMapping map_ring(int fd);
  // Frees `id` if nothing keeps it (no holder, pin or referrer), then whatever that leaves
  // unreferenced, and so on (a work list: a chain of 10^5 objects costs no stack).
  void maybe_free(const Id128& id);
  // Removes the object from the table: its bytes leave total_bytes_, its descriptor is closed
  // (off the loop when big). Its edges must be gone already.
  void erase_object(std::unordered_map<Id128, Object, Id128Hash>::iterator it);
  // Mark and sweep for reference cycles: frees every object that no held or pinned object
  // reaches along edges; returns how many. O(objects + edges); a no-op without edges.
  uint64_t collect_unreachable();
  void drop_broken();  // drops the connections in broken_
  void expire_pins(uint64_t now);
  void reply_error(int fd, const WireMsg& req, Errc code, const std::string& text);
  std::string describe() const;
  void cleanup();

  std::string dir_;
  Id128 session_;
  int ready_fd_;
  std::string sock_path_, lock_path_;
  UniqueFd listen_;
  UniqueFd lock_;
  std::unordered_map<int, Conn> conns_;
  std::unordered_map<Id128, Object, Id128Hash> objects_;
  uint64_t total_bytes_ = 0;  // data + headers of live objects, for SHOAL_MAX_BYTES
  bool had_conn_ = false;
  bool leaving_ = false;  // the socket is unlinked; late connections are turned away
  uint64_t started_ns_ = 0;
  int64_t started_unix_ = 0;
  uint64_t pins_expired_ = 0;
  uint64_t holds_ = 0;        // holds served (fast attaches, cached re-attaches): ring + kHold
  uint64_t ring_holds_ = 0;   // ... of which came through a hold ring
  uint64_t hold_misses_ = 0;  // ... of which named an object already freed (see kHold)
  uint64_t ring_errors_ = 0;  // clients disconnected for a ring that broke R3
  uint64_t edges_ = 0;        // distinct (source, target) pairs: Σ |refs_out| over objects
  uint64_t collected_ = 0;    // objects freed by collect_unreachable (cycles)
  uint64_t attaches_ = 0;     // kAttach round trips served (whatever their answer)
  uint64_t pins_made_ = 0;    // kPin answered with a new pin
  // Connections whose ring broke while maybe_free drained every ring; dropped by the loop
  // (maybe_free's callers hold references into conns_).
  std::vector<int> broken_;
  bool draining_ = false;  // maybe_free is draining every ring (no re-entry)
  size_t pins_ = 0;                     // live pins over all objects
  uint64_t next_deadline_ = UINT64_MAX;  // no pin expires before this (may be early, never late)
  uid_t uid_ = ::geteuid();
};

bool Broker::setup() {
  sock_path_ = wire::socket_path(dir_, session_);
  lock_path_ = wire::lock_path(dir_, session_);
  // Create the lock file under a temporary name, lock it, then rename it into place: gc never
  // sees the final name unlocked while this broker lives.
  std::string tmp = dir_ + "/.tmp-" + session_.hex() + ".lock";
  lock_.reset(::open(tmp.c_str(), O_CREAT | O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!lock_.valid() || ::flock(lock_.get(), LOCK_EX | LOCK_NB) != 0) {
    std::perror("shoal-broker: lock");
    return false;
  }
  std::string pid = std::to_string(::getpid()) + "\n";
  if (::write(lock_.get(), pid.data(), pid.size()) < 0) std::perror("shoal-broker: write pid");
  if (::rename(tmp.c_str(), lock_path_.c_str()) != 0) {
    std::perror("shoal-broker: rename lock");
    ::unlink(tmp.c_str());
    return false;
  }
  listen_.reset(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (!listen_.valid() || sock_path_.size() >= sizeof addr.sun_path) return false;
  std::memcpy(addr.sun_path, sock_path_.c_str(), sock_path_.size() + 1);
  if (::bind(listen_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listen_.get(), 512) != 0) {
    std::perror("shoal-broker: bind/listen");
    return false;
  }
  ::chmod(sock_path_.c_str(), 0600);
  return true;
}

void Broker::cleanup() {
  // Socket first, so no new client connects to a broker that is leaving; then the lock, while
  // we still hold it.
  ::unlink(sock_path_.c_str());
  ::unlink(lock_path_.c_str());
}

void Broker::reply_error(int fd, const WireMsg& req, Errc code, const std::string& text) {
  WireMsg rep = wire::make_msg(static_cast<Op>(req.op));
  rep.status = static_cast<uint32_t>(code);
  rep.object_hi = req.object_hi;
  rep.object_lo = req.object_lo;
  wire::set_text(&rep, text);
  (void)wire::send_msg(fd, rep);
}

void Broker::accept_all() {
  for (;;) {
    // Blocking sockets: we only read after poll says so, and a send may wait for a slow reader
    // (a multi-page kList) for up to kSendTimeout before that client is given up on.
    int fd = ::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE) {
        // Out of descriptors: the pending client cannot be accepted now. Back off instead of
        // spinning on a listening socket that stays readable.
        ::usleep(10000);
      }
      return;
    }
    UniqueFd s(fd);
    timeval tv{kSendTimeoutSec, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    ucred cred{};
    socklen_t len = sizeof cred;
    Conn c;
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.uid != uid_) {
      // Refused, but only once its first message has been read: closing a socket with unread
      // data resets it, and the client would see "broker gone" instead of this refusal.
      c.refused = "the shoal session belongs to uid " + std::to_string(uid_) + "; uid " +
                  std::to_string(cred.uid) + " may not use it";
    }
    if (leaving_) {
      // The socket is already unlinked: tell a client that raced in that this session is
      // over, so it starts a new one instead of creating objects nobody else can reach.
      WireMsg rep = wire::make_msg(Op::kHello);
      rep.status = static_cast<uint32_t>(Errc::kSessionGone);
      wire::set_text(&rep, "session " + session_.hex() + " is shutting down");
      (void)wire::send_msg(fd, rep);
      continue;
    }
    c.pid = cred.pid;
    c.sock = std::move(s);
    conns_.emplace(fd, std::move(c));
    had_conn_ = true;
  }
}

void Broker::erase_object(std::unordered_map<Id128, Object, Id128Hash>::iterator it) {
  total_bytes_ -= it->second.size + layout::kSegmentHeaderSize;
  // Closing our descriptor frees the pages if no process maps them any more, which takes
  // time in proportion to their size: for big objects do it on a thread of its own, so that
  // the loop keeps answering other processes meanwhile.
  if (it->second.size >= kAsyncCloseBytes) {
    std::thread([fd = it->second.fd.release()] { ::close(fd); }).detach();
  }
  objects_.erase(it);
}

void Broker::maybe_free(const Id128& id) {
  std::vector<Id128> work{id};
  bool drained = false;
  while (!work.empty()) {
    const Id128 next = work.back();
    work.pop_back();
    auto it = objects_.find(next);
    if (it == objects_.end()) continue;
    if (!it->second.holders.empty() || !it->second.pins.empty() || it->second.referrers != 0) {
      continue;
    }
    if (!drained && !draining_) {
      // Before freeing, take every hold published so far: a receiver of a held handle (which
      // carries no pin) may have mapped the object while its sender still held it, and told
      // the sender so, before the sender's release reached us; its hold sits in its ring,
      // which we read only when it next sends a message. Reading it now counts it
      // (docs/design/segment.md, "Held handles"). O(connections), once per maybe_free, and
      // only when an object is about to go.
      drained = true;
      draining_ = true;
      for (auto& [fd, c] : conns_) {
        if (!drain_ring(fd, c)) broken_.push_back(fd);
      }
      draining_ = false;
      work.push_back(next);  // look again: a hold may have come in
      continue;
    }
    Object& o = it->second;
    // Nothing keeps it: its edges go with it, and each target loses one referrer (R1 holds:
    // every target is still in the table, since this object referred to it until now).
    for (const auto& [target, count] : o.refs_out) {
      auto t = objects_.find(target);
      if (t != objects_.end()) {
        --t->second.referrers;
        work.push_back(target);
      }
    }
    edges_ -= o.refs_out.size();
    erase_object(it);
  }
}

uint64_t Broker::collect_unreachable() {
  if (edges_ == 0) return 0;  // without edges reference counting frees everything (L1)
  // Holds published before now count as roots: take the rings first (as kList does).
  drain_rings();
  std::unordered_set<Id128, Id128Hash> marked;
  std::vector<Id128> work;
  for (const auto& [id, o] : objects_) {
    if (!o.holders.empty() || !o.pins.empty()) {
      marked.insert(id);
      work.push_back(id);
    }
  }
  while (!work.empty()) {
    const Id128 next = work.back();
    work.pop_back();
    for (const auto& [target, count] : objects_.at(next).refs_out) {
      if (marked.insert(target).second) work.push_back(target);
    }
  }
  std::vector<Id128> garbage;
  for (const auto& [id, o] : objects_) {
    if (marked.count(id) == 0) garbage.push_back(id);
  }
  // Edges first, all of them, then the objects: an unmarked object's targets are unmarked
  // too or reachable (then they only lose a referrer and stay).
  for (const Id128& id : garbage) {
    Object& o = objects_.at(id);
    for (const auto& [target, count] : o.refs_out) {
      auto t = objects_.find(target);
      if (t != objects_.end()) --t->second.referrers;
    }
    edges_ -= o.refs_out.size();
    o.refs_out.clear();
  }
  for (const Id128& id : garbage) erase_object(objects_.find(id));
  collected_ += garbage.size();
  return garbage.size();
}

void Broker::drop_conn(int fd) {
  auto it = conns_.find(fd);
  if (it == conns_.end()) return;
  // Holds the client published and we had not read yet: it held those objects too (and used
  // their pins), so they are taken, then dropped with the rest.
  (void)drain_ring(fd, it->second);
  std::vector<Id128> held(it->second.held.begin(), it->second.held.end());
  conns_.erase(it);
  for (const Id128& id : held) {
    auto o = objects_.find(id);
    if (o == objects_.end()) continue;
    o->second.holders.erase(fd);
    maybe_free(id);
  }
  // A process that exits (SIGKILL included) may have been the last holder of part of a cycle,
  // which counting cannot free. Sessions without references pay nothing here.
  if (!held.empty()) (void)collect_unreachable();
}

void Broker::hold(int fd, Conn& conn, const Id128& id, uint64_t pin) {
  // The client maps the object already (it checked the object id in the header). If the pin
  // is still here, it kept the object (so the descriptor number) alive until now, and this is
  // exactly kAdopt. If not (a second attacher of one handle, or the pin expired meanwhile),
  // every holder may have released it before this hold was read: the client then keeps a
  // valid mapping that nobody counts (as after a lost fork adopt race). Nothing to undo here.
  ++holds_;
  auto it = objects_.find(id);
  if (it == objects_.end()) {
    ++hold_misses_;
    return;
  }
  Object& o = it->second;
  if (pin != 0) pins_ -= o.pins.erase(pin);  // a pin is used once
  o.holders.insert(fd);
  conn.held.insert(id);
}

bool Broker::drain_ring(int fd, Conn& conn) {
  auto* r = static_cast<layout::HoldRingHeader*>(conn.ring.get());
  if (r == nullptr) return true;
  const bool ok = layout::drain_hold_ring(r, &conn.ring_taken, [&](const layout::HoldEntry& e) {
    ++ring_holds_;
    hold(fd, conn, Id128{e.object_hi, e.object_lo}, e.pin);
  });
  if (!ok) {
    ++ring_errors_;
    conn.ring.reset();  // never read again, whoever disconnects it
  }
  return ok;
}

void Broker::drain_rings() {
  std::vector<int> broken;
  for (auto& [fd, c] : conns_) {
    if (!drain_ring(fd, c)) broken.push_back(fd);
  }
  for (int fd : broken) drop_conn(fd);
}

platform::UniqueMapping Broker::map_ring(int fd) {
  bool ro = true;
  if (!platform::check_received_fd(fd, layout::kHoldRingBytes, &ro) || ro) return {};
  auto p = platform::map_fd(fd, layout::kHoldRingBytes, true, false);
  if (!p) return {};
  platform::UniqueMapping ring(p.value(), layout::kHoldRingBytes);
  if (!layout::hold_ring_fresh(static_cast<const layout::HoldRingHeader*>(p.value()))) return {};
  return ring;
}

void Broker::expire_pins(uint64_t now) {
  // O(1) until the earliest deadline passes; then one scan that also finds the next one.
  if (now < next_deadline_) return;
  // A hold published before now uses its pin: it must not be taken for an expired one.
  drain_rings();
  std::vector<Id128> touched;
  uint64_t next = UINT64_MAX;
  for (auto& [id, o] : objects_) {
    for (auto p = o.pins.begin(); p != o.pins.end();) {
      if (p->second.deadline <= now) {
        p = o.pins.erase(p);
        --pins_;
        ++pins_expired_;
        touched.push_back(id);
      } else {
        next = std::min(next, p->second.deadline);
        ++p;
      }
    }
  }
  next_deadline_ = next;
  for (const Id128& id : touched) maybe_free(id);
  // An expired pin may have been the last root of a cycle (this scan was O(objects) anyway).
  if (!touched.empty()) (void)collect_unreachable();
}

void Broker::drop_broken() {
  while (!broken_.empty()) {
    const int fd = broken_.back();
    broken_.pop_back();
    drop_conn(fd);
  }
}

std::string Broker::describe() const {
  // JSON by hand: every value is a number, a bool or a hex string, so nothing needs escaping.
  uint64_t now = platform::monotonic_ns();
  std::string j = "{\"session\":\"" + session_.hex() + "\",\"broker_pid\":" +
                  std::to_string(::getpid()) + ",\"started_unix\":" +
                  std::to_string(started_unix_) + ",\"pin_ttl_s\":" +
                  std::to_string(pin_ttl_ms() / 1000) + ",\"pins_expired\":" +
                  std::to_string(pins_expired_) + ",\"holds\":" + std::to_string(holds_) +
                  ",\"ring_holds\":" + std::to_string(ring_holds_) + ",\"hold_misses\":" +
                  std::to_string(hold_misses_) + ",\"ring_errors\":" +
                  std::to_string(ring_errors_) + ",\"attaches\":" + std::to_string(attaches_) +
                  ",\"pins_made\":" + std::to_string(pins_made_) + ",\"total_bytes\":" +
                  std::to_string(total_bytes_) + ",\"edges\":" + std::to_string(edges_) +
                  ",\"collected\":" + std::to_string(collected_) + ",\"connections\":[";
  bool first = true;
  for (const auto& [fd, c] : conns_) {
    j += (first ? "" : ",") + std::string("{\"pid\":") + std::to_string(c.pid) +
         ",\"refs\":" + std::to_string(c.held.size()) + "}";
    first = false;
  }
  j += "],\"objects\":[";
  first = true;
  for (const auto& [id, o] : objects_) {
    const bool ro = platform::sealed_read_only(o.fd.get());
    j += (first ? "" : ",") + std::string("{\"id\":\"") + id.hex() + "\",\"kind\":" +
         std::to_string(o.kind) + ",\"size\":" + std::to_string(o.size) +
         ",\"read_only\":" + (ro ? "true" : "false") + ",\"creator_pid\":" +
         std::to_string(o.creator_pid) + ",\"created_unix\":" + std::to_string(o.created_unix) +
         ",\"refs\":" + std::to_string(o.holders.size()) + ",\"holders\":[";
    bool f2 = true;
    for (int h : o.holders) {
      auto c = conns_.find(h);
      j += (f2 ? "" : ",") + std::to_string(c != conns_.end() ? c->second.pid : 0);
      f2 = false;
    }
    j += "],\"pins\":" + std::to_string(o.pins.size()) + ",\"pin_senders\":[";
    bool f3 = true;
    for (const auto& [p, pin] : o.pins) {
      j += (f3 ? "" : ",") + std::to_string(pin.sender);
      f3 = false;
    }
    j += "],\"refs_out\":[";
    bool f4 = true;
    for (const auto& [target, count] : o.refs_out) {
      j += (f4 ? "" : ",") + std::string("{\"id\":\"") + target.hex() + "\",\"count\":" +
           std::to_string(count) + "}";
      f4 = false;
    }
    j += "],\"referrers\":" + std::to_string(o.referrers);
    uint64_t soonest = UINT64_MAX;
    for (const auto& [p, pin] : o.pins) soonest = std::min(soonest, pin.deadline);
    if (soonest != UINT64_MAX) {
      j += ",\"pin_expires_in_s\":" +
           std::to_string(soonest > now ? static_cast<double>(soonest - now) / 1e9 : 0.0);
    }
    j += "}";
    first = false;
  }
  j += "]}";
  return j;
}

void Broker::serve(int fd) {
  Conn& conn = conns_.at(fd);
  WireMsg req{};
  int rfd = -1;
  Status st = wire::recv_msg(fd, &req, &rfd, nullptr, 0, 0);
  UniqueFd passed(rfd);
  if (!conn.refused.empty()) {
    // Whatever it sent (unless it already hung up), another uid gets its refusal, then EOF.
    if (st || st.code() != Errc::kSessionGone) {
      reply_error(fd, req, Errc::kPermission, conn.refused);
    }
    drop_conn(fd);
    return;
  }
  if (!st && st.code() == Errc::kOutOfSpace) {
    // The message arrived but its descriptor did not: the broker is out of descriptors (it
    // holds one per live object), not the client. Say so, with the limit that ran out: the
    // text recv_msg wrote speaks of "this process", which the client would read as itself.
    rlimit rl{};
    const bool known = ::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY;
    // (At most 150 characters or so: the reply's text field is short.)
    reply_error(fd, req, Errc::kOutOfSpace,
                "the session's broker (pid " + std::to_string(::getpid()) +
                    ") is out of file descriptors (limit " +
                    (known ? std::to_string(static_cast<unsigned long long>(rl.rlim_cur)) : "?") +
                    ", one per live object): release objects, or raise ulimit -Hn where the "
                    "session starts");
    return;
  }
  if (!st) {
    if (st.code() == Errc::kTimeout) return;  // spurious wake-up
    drop_conn(fd);  // EOF (the process exited or was killed), or garbage: drop its references
    return;
  }
  // Holds the client published before it sent this message come first (R3): a kRelease must
  // find the object held, a kHold must not overtake older holds.
  if (!drain_ring(fd, conn)) {
    drop_conn(fd);
    return;
  }
  const Id128 id{req.object_hi, req.object_lo};
  WireMsg rep = wire::make_msg(static_cast<Op>(req.op));
  rep.object_hi = req.object_hi;
  rep.object_lo = req.object_lo;
  Request r{fd, conn, req, rep, std::move(passed), id};
  switch (static_cast<Op>(req.op)) {
    case Op::kHello: return on_hello(r);
    case Op::kRegister: return on_register(r);
    case Op::kAttach:
    case Op::kAdopt: return on_attach(r);
    case Op::kHold: return on_hold(r);
    case Op::kRelease: return on_release(r);
    case Op::kPin: return on_pin(r);
    case Op::kDropPins: return on_drop_pins(r);
    case Op::kList: return on_list(r);
    case Op::kRef: return on_ref(r);
    case Op::kUnref: return on_unref(r);
    case Op::kCollect: return on_collect(r);
  }
  drop_conn(fd);  // an unknown op: a confused or hostile peer
}

void Broker::on_hello(Request& r) {
  r.rep.object_hi = session_.hi;
  r.rep.object_lo = session_.lo;
  r.rep.arg = static_cast<uint64_t>(::getpid());
  r.rep.flags = layout::kHelloCanHold | layout::kHelloDropPins | layout::kHelloRefs;
  if (r.passed.valid() && !r.conn.ring.get()) {
    r.conn.ring = map_ring(r.passed.get());
    if (r.conn.ring.get() != nullptr) r.rep.flags |= layout::kHelloHoldRing;
  }
  (void)wire::send_msg(r.fd, r.rep);
}

void Broker::on_register(Request& r) {
  if (!r.passed.valid() || r.id.is_zero()) {
    reply_error(r.fd, r.req, Errc::kInvalidArgument, "register needs a descriptor and an id");
    return;
  }
  if (objects_.count(r.id) != 0) {
    reply_error(r.fd, r.req, Errc::kExists, "object id already registered");
    return;
  }
  bool ro = false;
  Status ok = platform::check_received_fd(r.passed.get(), r.req.size + layout::kSegmentHeaderSize, &ro);
  if (!ok) {
    reply_error(r.fd, r.req, Errc::kInvalidArgument, ok.message());
    return;
  }
  // The creator checked MemAvailable and the cgroup; the session-wide SHOAL_MAX_BYTES can
  // only be enforced here, where every object of the session is known.
  if (const char* mb = std::getenv("SHOAL_MAX_BYTES"); mb != nullptr && *mb != '\0') {
    auto max = parse_bytes(mb);
    if (max && total_bytes_ + r.req.size + layout::kSegmentHeaderSize > *max) {
      reply_error(r.fd, r.req, Errc::kOutOfSpace,
                  "SHOAL_MAX_BYTES (" + std::to_string(*max) + " bytes) would be exceeded: "
                  "the session holds " + std::to_string(total_bytes_) +
                  " bytes; raise it or release objects first");
      return;
    }
  }
  Object o;
  o.fd = std::move(r.passed);
  o.size = r.req.size;
  o.kind = r.req.kind;
  o.creator_pid = r.conn.pid;
  o.created_unix = static_cast<int64_t>(::time(nullptr));
  o.holders.insert(r.fd);
  r.rep.arg = static_cast<uint64_t>(o.fd.get());  // the hint of the object's handles
  objects_.emplace(r.id, std::move(o));
  r.conn.held.insert(r.id);
  total_bytes_ += r.req.size + layout::kSegmentHeaderSize;
  (void)wire::send_msg(r.fd, r.rep);
}

void Broker::on_attach(Request& r) {
  if (static_cast<Op>(r.req.op) == Op::kAttach) ++attaches_;
  auto it = objects_.find(r.id);
  if (it == objects_.end()) {
    reply_error(r.fd, r.req, Errc::kStaleHandle,
                "object " + r.id.hex() + " no longer exists in session " + session_.hex() +
                    ": every process released it and its handle's pin expired or was used");
    return;
  }
  Object& o = it->second;
  if (r.req.pin != 0) pins_ -= o.pins.erase(r.req.pin);  // a pin is used once
  o.holders.insert(r.fd);
  r.conn.held.insert(r.id);
  if (static_cast<Op>(r.req.op) == Op::kAttach) {
    r.rep.size = o.size;
    r.rep.kind = o.kind;
    r.rep.flags = platform::sealed_read_only(o.fd.get()) ? kHandleReadOnly : 0;
    r.rep.arg = static_cast<uint64_t>(o.fd.get());  // the hint, for the attacher's own handles
    (void)wire::send_msg(r.fd, r.rep, nullptr, o.fd.get());
  } else {
    (void)wire::send_msg(r.fd, r.rep);
  }
}

void Broker::on_hold(Request& r) {  // kAdopt without a reply: the client does not wait for one
  hold(r.fd, r.conn, r.id, r.req.pin);
}

void Broker::on_release(Request& r) {  // no reply: the client does not wait for one
  if (r.conn.held.erase(r.id) != 0) {
    auto it = objects_.find(r.id);
    if (it != objects_.end()) {
      it->second.holders.erase(r.fd);
      maybe_free(r.id);
    }
  }
}

void Broker::on_pin(Request& r) {
  auto it = objects_.find(r.id);
  if (it == objects_.end() || r.conn.held.count(r.id) == 0) {
    reply_error(r.fd, r.req, Errc::kStaleHandle,
                "cannot pin object " + r.id.hex() + ": this process does not hold it");
    return;
  }
  uint64_t pin = 0;
  while (pin == 0) pin = Id128::random().lo;
  // Capped here too, whatever the client asks (pin_ttl_ms caps SHOAL_PIN_TTL).
  const uint64_t ttl_ns = std::min<uint64_t>(r.req.arg, kMaxPinTtlSeconds * 1000) * 1000000ULL;
  const uint64_t deadline = platform::monotonic_ns() + ttl_ns;
  it->second.pins[pin] = Pin{deadline, r.conn.pid};
  ++pins_;
  ++pins_made_;
  next_deadline_ = std::min(next_deadline_, deadline);
  r.rep.pin = pin;
  r.rep.arg = static_cast<uint64_t>(it->second.fd.get());  // the handle's hint
  (void)wire::send_msg(r.fd, r.rep);
}

void Broker::on_drop_pins(Request& r) {
  // A hold published before this message may use a pin: take the rings first (R3).
  drain_rings();
  if (conns_.count(r.fd) == 0) return;
  uint64_t dropped = 0;
  std::vector<Id128> touched;
  for (auto& [oid, o] : objects_) {
    for (auto p = o.pins.begin(); p != o.pins.end();) {
      // kill(pid, 0) fails with ESRCH only once the sender is gone (a zombie still counts
      // as alive, and a reused pid keeps the pin: both err on the side of keeping).
      const bool dead = p->second.sender > 0 &&
                        ::kill(static_cast<pid_t>(p->second.sender), 0) != 0 && errno == ESRCH;
      if (dead) {
        p = o.pins.erase(p);
        --pins_;
        ++dropped;
        touched.push_back(oid);
      } else {
        ++p;
      }
    }
  }
  for (const Id128& oid : touched) maybe_free(oid);
  if (!touched.empty()) (void)collect_unreachable();
  r.rep.arg = dropped;
  (void)wire::send_msg(r.fd, r.rep);
}

void Broker::on_list(Request& r) {
  drain_rings();  // may drop connections whose ring is broken, this one included
  if (conns_.count(r.fd) == 0) return;
  std::string j = describe();
  size_t off = 0;
  do {
    size_t n = std::min(layout::kWireMaxPayload, j.size() - off);
    WireMsg page = r.rep;
    page.payload_size = static_cast<uint32_t>(n);
    page.arg = off + n < j.size() ? 1 : 0;
    if (!wire::send_msg(r.fd, page, j.data() + off)) return;
    off += n;
  } while (off < j.size());
}

void Broker::on_ref(Request& r) {
  const Id128 target{layout::ref_target_hi(r.req), layout::ref_target_lo(r.req)};
  auto src = objects_.find(r.id);
  if (src == objects_.end() || r.conn.held.count(r.id) == 0) {
    // Only a holder may make its object keep others alive: a process must not pin memory
    // through an object it let go of (or never had).
    reply_error(r.fd, r.req, Errc::kStaleHandle,
                "cannot add a reference from object " + r.id.hex() +
                    ": this process does not hold it (released, or lost in a fork)");
    return;
  }
  auto dst = objects_.find(target);
  if (dst == objects_.end()) {
    reply_error(r.fd, r.req, Errc::kStaleHandle,
                "cannot refer to object " + target.hex() + ": it no longer exists in session " +
                    session_.hex() + " (every holder released it)");
    return;
  }
  uint64_t& count = src->second.refs_out[target];
  if (count++ == 0) {  // a new edge (a self-edge too: a cycle of one, left to the sweep)
    ++dst->second.referrers;
    ++edges_;
  }
  (void)wire::send_msg(r.fd, r.rep);
}

void Broker::on_unref(Request& r) {  // no reply: the client does not wait for one
  const Id128 target{layout::ref_target_hi(r.req), layout::ref_target_lo(r.req)};
  if (r.conn.held.count(r.id) == 0) return;  // as kRelease: only a holder speaks for it
  auto src = objects_.find(r.id);
  if (src == objects_.end()) return;
  auto e = src->second.refs_out.find(target);
  if (e == src->second.refs_out.end()) return;  // never added, or already dropped
  if (--e->second != 0) return;
  src->second.refs_out.erase(e);
  --edges_;
  if (auto t = objects_.find(target); t != objects_.end()) --t->second.referrers;
  maybe_free(target);
}

void Broker::on_collect(Request& r) {
  const uint64_t freed = collect_unreachable();  // may drop connections with a broken ring
  if (conns_.count(r.fd) == 0) return;
  r.rep.arg = freed;
  (void)wire::send_msg(r.fd, r.rep);
}

int Broker::run() {
  ::signal(SIGPIPE, SIG_IGN);
  ::signal(SIGINT, SIG_IGN);  // Ctrl-C belongs to the user's processes, not to their broker
  struct sigaction sa {};
  sa.sa_handler = [](int) { g_stop = 1; };
  ::sigaction(SIGTERM, &sa, nullptr);
  ::umask(077);
  // One descriptor per live object: take every descriptor the hard limit allows.
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
  started_ns_ = platform::monotonic_ns();
  started_unix_ = static_cast<int64_t>(::time(nullptr));
  if (!setup()) return 1;
  if (ready_fd_ >= 0) {
    (void)!::write(ready_fd_, "OK", 2);
    ::close(ready_fd_);
  }
  std::vector<pollfd> fds;
  while (g_stop == 0) {
    uint64_t now = platform::monotonic_ns();
    expire_pins(now);
    drop_broken();
    if (conns_.empty() && pins_ == 0 &&
        (had_conn_ || now - started_ns_ > kFirstConnectGraceNs)) {
      // Leave: unlink the socket, then serve anyone who connected in the meantime.
      ::unlink(sock_path_.c_str());
      leaving_ = true;
      accept_all();  // turns away anyone who connected before the unlink
      break;
    }
    fds.clear();
    fds.push_back({listen_.get(), POLLIN, 0});
    for (const auto& [fd, c] : conns_) fds.push_back({fd, POLLIN, 0});
    uint64_t deadline = next_deadline_;
    if (!had_conn_) deadline = std::min(deadline, started_ns_ + kFirstConnectGraceNs);
    int timeout = -1;
    if (deadline != UINT64_MAX) {
      timeout = deadline <= now ? 0 : static_cast<int>(std::min<uint64_t>((deadline - now) / 1000000ULL + 1, 60000));
    }
    int r = ::poll(fds.data(), fds.size(), timeout);
    if (r < 0) {
      if (errno == EINTR) continue;
      std::perror("shoal-broker: poll");
      break;
    }
    if ((fds[0].revents & POLLIN) != 0) accept_all();
    for (size_t i = 1; i < fds.size(); ++i) {
      if (fds[i].revents == 0) continue;
      if (conns_.count(fds[i].fd) == 0) continue;
      if ((fds[i].revents & POLLIN) != 0) {
        serve(fds[i].fd);
      } else {  // POLLHUP / POLLERR without data: the peer is gone
        drop_conn(fds[i].fd);
      }
      drop_broken();
    }
  }
  cleanup();
  return 0;
}

}  // namespace
}  // namespace shoal::broker

int main(int argc, char** argv) {
  std::string dir;
  std::string session;
  int ready_fd = -1;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    if (k == "--runtime-dir") {
      dir = argv[i + 1];
    } else if (k == "--session") {
      session = argv[i + 1];
    } else if (k == "--ready-fd") {
      ready_fd = std::atoi(argv[i + 1]);
    }
  }
  auto sid = shoal::Id128::from_hex(session);
  if (dir.empty() || !sid) {
    std::fprintf(stderr,
                 "usage: shoal-broker --runtime-dir DIR --session <32 hex> [--ready-fd N]\n"
                 "(started by shoal itself; there is no need to run it by hand)\n");
    return 2;
  }
  shoal::broker::Broker b(dir, sid.value(), ready_fd);
  return b.run();
}
