#include "client.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "layout/hold_ring_layout.hpp"
#include "layout/segment_layout.hpp"
#include "shoal/session.hpp"
#include "shoal/system.hpp"

#ifndef SHOAL_BROKER_DEFAULT_PATH
#define SHOAL_BROKER_DEFAULT_PATH ""
#endif

namespace shoal {
namespace {

using layout::Op;
using layout::WireMsg;
using platform::UniqueFd;

// Round trips to a live broker take microseconds; this only bounds a stopped or wedged one.
constexpr int kReplyTimeoutMs = 30000;

std::mutex g_broker_path_mu;
std::string g_broker_path;  // guarded by g_broker_path_mu

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  long x = std::strtol(v, &end, 10);
  if (end == v || *end != '\0' || x < 0 || x > 1000000000L) return fallback;
  return static_cast<int>(x);
}

// More descriptors for processes that create many objects (the creator keeps an fd per
// unsealed segment). Raising the soft limit to the hard one is always allowed.
void raise_fd_limit() noexcept {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
}

Status connect_socket(const std::string& path, const Id128& session, UniqueFd* out) {
  UniqueFd s(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!s.valid()) return {Errc::kSystem, errno_message("socket", errno)};
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    return {Errc::kInvalidArgument, "socket path too long: " + path};
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int rc;
  do {
    rc = ::connect(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    int err = errno;
    std::string sid = session.hex();
    if (err == ENOENT) {
      return {Errc::kStaleHandle,
              "session " + sid + " is not running on this machine: all of its processes have "
              "exited or its broker died (or the handle comes from another machine, user or "
              "SHOAL_RUNTIME_DIR)"};
    }
    if (err == ECONNREFUSED) {
      return {Errc::kSessionGone,
              "the broker of session " + sid + " is gone (killed or crashed): objects already "
              "mapped keep working, but no process can attach new ones; share them again "
              "from a process that still maps them"};
    }
    if (err == EACCES || err == EPERM) {
      return {Errc::kPermission, "no permission to reach session " + sid + " at " + path +
                                     ": it belongs to another user"};
    }
    return {Errc::kSystem, errno_message("connect to " + path, err)};
  }
  *out = std::move(s);
  return {};
}

// A pidfd for `pid`, or an invalid fd (kernel before 5.3, or a sandbox that forbids it).
UniqueFd open_pidfd(pid_t pid) noexcept {
#ifdef SYS_pidfd_open
  return UniqueFd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
#else
  (void)pid;
  return UniqueFd();
#endif
}

// A copy of descriptor `target_fd` of the process behind `pidfd` (pidfd_getfd(2), Linux 5.6:
// one system call, no path walk through /proc, and no open() of whatever the number names).
// -1 with errno set on failure; EPERM where ptrace rules (Yama) forbid it.
int get_remote_fd(int pidfd, int target_fd) noexcept {
#ifdef SYS_pidfd_getfd
  return static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd, target_fd, 0));
#else
  (void)pidfd;
  (void)target_fd;
  errno = ENOSYS;
  return -1;
#endif
}

}  // namespace

void set_broker_path(const std::string& path) {
  std::lock_guard<std::mutex> g(g_broker_path_mu);
  g_broker_path = path;
}

std::string broker_path() {
  {
    std::lock_guard<std::mutex> g(g_broker_path_mu);
    if (!g_broker_path.empty()) return g_broker_path;
  }
  if (const char* e = std::getenv("SHOAL_BROKER"); e != nullptr && *e != '\0') return e;
  return SHOAL_BROKER_DEFAULT_PATH;
}

uint64_t pin_ttl_ms() noexcept {
  const auto s = static_cast<uint64_t>(env_int("SHOAL_PIN_TTL", 120));
  return std::min(s, kMaxPinTtlSeconds) * 1000ULL;
}

Id128 current_session() noexcept { return detail::Client::instance().current_session(); }

void after_fork_child() noexcept { detail::Client::instance().after_fork_child(); }

namespace detail {

std::string socket_path(const std::string& dir, const Id128& session) {
  return dir + "/" + session.hex() + ".sock";
}
std::string lock_path(const std::string& dir, const Id128& session) {
  return dir + "/" + session.hex() + ".lock";
}

Mapping::~Mapping() {
  platform::unmap(base, total);
  // Close the creator's descriptor before releasing, so the broker holds the last reference
  // and frees the pages in its own time; otherwise this close could be the one that frees a
  // large segment (~150 ms/GiB) on the caller's thread.
  memfd.reset();
  Client::instance().release(session, object);
}

Client& Client::instance() {
  // Leaked on purpose: Segments held by static objects may be destroyed after any other static.
  static Client* c = new Client();
  return *c;
}

// True while this thread forks to start a broker: it already holds mu_, and the child only
// execs, so the fork handlers must leave mu_ alone.
thread_local bool t_own_fork = false;

Client::Client() {
  raise_fd_limit();
  // Any other fork takes mu_ first, so the child never inherits it locked by a thread that
  // does not exist there.
  // The child handler also marks the fork, so that check_fork_locked needs no getpid(): that
  // was one more system call on every attach and release, each costly in a worker that was
  // asleep until the handle came.
  ::pthread_atfork([] { if (!t_own_fork) Client::instance().mu_.lock(); },
                   [] { if (!t_own_fork) Client::instance().mu_.unlock(); },
                   [] {
                     if (t_own_fork) return;
                     Client& c = Client::instance();
                     c.forked_ = true;  // under mu_, taken by the prepare handler
                     c.mu_.unlock();
                   });
}

void Client::check_fork_locked() noexcept {
  if (!forked_) return;
  // A forked child: the connections are the parent's references, not ours. Closing our copy of
  // the descriptor leaves the parent's connection open.
  forked_ = false;
  conns_.clear();
}

Id128 Client::current_session() noexcept {
  std::lock_guard<std::mutex> g(mu_);
  check_fork_locked();
  return current_;
}

Status Client::roundtrip_locked(const Id128& session, Conn* c, const WireMsg& req, int send_fd,
                                WireMsg* reply, int* recv_fd, std::string* payload) {
  auto gone = [&](Status st) -> Status {
    if (st.code() == Errc::kSessionGone) {
      c->gone = true;
      c->sock.reset();
      return {Errc::kSessionGone,
              "the broker of session " + session.hex() + " is gone (killed or crashed): objects "
              "already mapped keep working, but no process can attach new ones"};
    }
    return st;
  };
  Status st = platform::send_msg(c->sock.get(), req, nullptr, send_fd);
  if (!st) return gone(st);
  std::vector<char> buf(payload != nullptr ? layout::kWireMaxPayload : 0);
  for (;;) {
    int fd = -1;
    st = platform::recv_msg(c->sock.get(), reply, &fd, payload != nullptr ? buf.data() : nullptr,
                            buf.size(), kReplyTimeoutMs);
    UniqueFd owned(fd);
    if (!st) {
      if (st.code() != Errc::kSessionGone) {  // a confused connection cannot be trusted again
        c->gone = true;
        c->sock.reset();
      }
      return gone(st);
    }
    if (payload != nullptr) payload->append(buf.data(), reply->payload_size);
    if (payload != nullptr && reply->arg == 1) continue;  // more pages follow
    if (recv_fd != nullptr) *recv_fd = owned.release();
    break;
  }
  if (reply->status != 0) {
    auto code = static_cast<Errc>(reply->status);
    // A code this build does not know (a newer broker's) is reported as a corrupt answer.
    if (reply->status >= static_cast<uint32_t>(Errc::kCount)) code = Errc::kCorrupt;
    return {code, reply->text};
  }
  return {};
}

Result<Client::Conn*> Client::conn_locked(const Id128& session) {
  check_fork_locked();
  auto it = conns_.find(session);
  if (it != conns_.end()) {
    if (it->second.gone) {
      return {Errc::kSessionGone,
              "the broker of session " + session.hex() + " is gone (killed or crashed): objects "
              "already mapped keep working, but no process can attach new ones"};
    }
    return &it->second;
  }
  auto c = connect_locked(session);
  if (!c) return c.status();
  auto [pos, _] = conns_.emplace(session, std::move(c.value()));
  return &pos->second;
}

Result<Client::Conn> Client::connect_locked(const Id128& session) {
  auto dir = runtime_dir(false);
  if (!dir) {
    if (dir.status().code() == Errc::kNotFound) {
      return {Errc::kStaleHandle, "session " + session.hex() +
                                      " is not running on this machine (no runtime directory)"};
    }
    return dir.status();
  }
  Conn c;
  Status st = connect_socket(socket_path(dir.value(), session), session, &c.sock);
  if (!st) return st;
  WireMsg req = platform::make_msg(Op::kHello);
  req.arg = static_cast<uint64_t>(::getpid());
  // The hold ring travels with kHello. Without one (a memfd refused here) fast attaches send
  // kHold messages instead; a broker that does not answer kHelloHoldRing never reads it.
  UniqueFd ring_fd;
  platform::UniqueMapping ring;
  if (auto fd = platform::create_memfd("shoal-holds", layout::kHoldRingBytes)) {
    if (auto p = platform::map_fd(fd.value().get(), layout::kHoldRingBytes, true, false)) {
      ring = platform::UniqueMapping(p.value(), layout::kHoldRingBytes);
      auto* r = static_cast<layout::HoldRingHeader*>(p.value());  // zero-filled: head = tail = 0
      r->magic = layout::kHoldRingMagic;
      r->version = layout::kHoldRingVersion;
      r->entry_size = sizeof(layout::HoldEntry);
      r->capacity = layout::kHoldRingCapacity;
      ring_fd = std::move(fd.value());
    }
  }
  WireMsg rep{};
  st = roundtrip_locked(session, &c, req, ring_fd.get(), &rep, nullptr, nullptr);
  if (!st) return st;
  if (Id128{rep.object_hi, rep.object_lo} != session) {
    return {Errc::kIncompatible, "the socket of session " + session.hex() +
                                     " is served by another session's broker"};
  }
  c.broker_pid = static_cast<pid_t>(rep.arg);
  c.can_hold = (rep.flags & layout::kHelloCanHold) != 0;
  c.can_drop_pins = (rep.flags & layout::kHelloDropPins) != 0;
  if (c.can_hold && (rep.flags & layout::kHelloHoldRing) != 0) c.ring = std::move(ring);
  if (c.can_hold && c.broker_pid > 0) c.broker_pidfd = open_pidfd(c.broker_pid);
  return c;
}

Result<Id128> Client::start_session_locked() {
  auto dir_r = runtime_dir(true);
  if (!dir_r) return dir_r.status();
  const std::string dir = dir_r.value();
  gc_runtime_dir();  // the next shoal process cleans up after sessions that were SIGKILLed whole
  std::string exe = broker_path();
  if (exe.empty() || ::access(exe.c_str(), X_OK) != 0) {
    return {Errc::kSystem, "the shoal broker executable was not found at '" + exe +
                               "'; reinstall shoal or set SHOAL_BROKER to its path"};
  }
  Id128 sid = Id128::random();
  std::string sid_hex = sid.hex();
  const char* log = std::getenv("SHOAL_BROKER_LOG");
  std::string log_path = log != nullptr && *log != '\0' ? log : "/dev/null";
  // Everything the child needs is prepared before fork: after it, only async-signal-safe calls.
  std::vector<std::string> args = {exe, "--runtime-dir", dir, "--session", sid_hex,
                                   "--ready-fd", "3"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return {Errc::kSystem, errno_message("pipe2", errno)};
  UniqueFd ready_r(pipefd[0]);
  UniqueFd ready_w(pipefd[1]);
  t_own_fork = true;
  pid_t child = ::fork();
  if (child != 0) t_own_fork = false;  // the child keeps it set: it forks once more
  if (child < 0) return {Errc::kSystem, errno_message("fork (starting the broker)", errno)};
  if (child == 0) {
    // Intermediate child: a new session (no controlling terminal, so Ctrl-C in the user's
    // terminal does not reach the broker), then fork again so the broker is not our child: no
    // zombie in the user's process, no surprise for code that calls wait().
    ::setsid();
    pid_t g = ::fork();
    if (g != 0) ::_exit(g < 0 ? 1 : 0);
    // The caller may have closed 0-2, so any descriptor here may be 0-3: move every one we
    // need above 9 first, then wire 0-3.
    int ready = ::fcntl(ready_w.get(), F_DUPFD, 10);
    int devnull = ::open("/dev/null", O_RDWR);
    if (devnull >= 0) devnull = ::fcntl(devnull, F_DUPFD, 10);
    int logfd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (logfd >= 0) logfd = ::fcntl(logfd, F_DUPFD, 10);
    if (ready < 0 || devnull < 0) ::_exit(126);
    ::dup2(devnull, 0);
    ::dup2(logfd >= 0 ? logfd : devnull, 1);
    ::dup2(logfd >= 0 ? logfd : devnull, 2);
    ::dup2(ready, 3);  // dup2 clears FD_CLOEXEC on the copy
    // Close everything else we inherited (pytest's pipes, the user's sockets...).
    if (::syscall(SYS_close_range, 4U, ~0U, 0U) != 0) {
      for (int fd = 4; fd < 65536; ++fd) ::close(fd);
    }
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ready_w.reset();
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  // The broker writes "OK" once its socket listens; EOF first means it failed to start.
  int timeout_ms = std::min(env_int("SHOAL_BROKER_TIMEOUT", 30), 3600) * 1000;
  pollfd p{ready_r.get(), POLLIN, 0};
  int pr;
  do {
    pr = ::poll(&p, 1, timeout_ms);
  } while (pr < 0 && errno == EINTR);
  char okbuf[2] = {0, 0};
  ssize_t n = pr > 0 ? ::read(ready_r.get(), okbuf, 2) : -1;
  if (pr == 0) {
    return {Errc::kTimeout, "the shoal broker did not start within " +
                                std::to_string(timeout_ms / 1000) +
                                " s; set SHOAL_BROKER_LOG=/tmp/shoal-broker.log to see why"};
  }
  if (n != 2 || okbuf[0] != 'O' || okbuf[1] != 'K') {
    return {Errc::kSystem, "the shoal broker at '" + exe +
                               "' failed to start; set SHOAL_BROKER_LOG=/tmp/shoal-broker.log "
                               "to see why"};
  }
  return sid;
}

Result<Client::Conn*> Client::current_conn_locked() {
  check_fork_locked();
  if (!current_.is_zero()) {
    auto c = conn_locked(current_);
    if (c) return c;
    if (c.status().code() != Errc::kSessionGone && c.status().code() != Errc::kStaleHandle) {
      return c;
    }
    current_ = {};  // our session is gone: new objects go to a new session
  }
  // Join the session our parent exported, if it still runs.
  if (const char* env = std::getenv("SHOAL_SESSION"); env != nullptr && *env != '\0') {
    auto sid = Id128::from_hex(env);
    if (sid) {
      auto c = conn_locked(sid.value());
      if (c) {
        current_ = sid.value();
        return c;
      }
    }
  }
  auto sid = start_session_locked();
  if (!sid) return sid.status();
  auto c = conn_locked(sid.value());
  if (!c) return c;
  current_ = sid.value();
  ::setenv("SHOAL_SESSION", current_.hex().c_str(), 1);
  return c;
}

void init_segment_header(layout::SegmentHeader* h, const Id128& object, ObjectKind kind,
                         uint64_t total) noexcept {
  h->magic = layout::kSegmentMagic;
  h->format_version = layout::kSegmentFormatVersion;
  h->layout_fingerprint = layout::kLayoutFingerprint;
  h->kind = static_cast<uint32_t>(kind);
  h->size = total;
  h->header_size = layout::kSegmentHeaderSize;
  h->object_hi = object.hi;
  h->object_lo = object.lo;
  h->reserved = 0;
  // Pairs with the acquire load in validate_segment_header: every field above is visible to a
  // process that sees kSegmentReady.
  h->state.store(layout::kSegmentReady, std::memory_order_release);
}

namespace {

void check_size(uint64_t data_size) {
  if (data_size > (1ULL << 56)) {
    throw_error(Errc::kInvalidArgument, "segment size " + std::to_string(data_size) + " is absurd");
  }
}

}  // namespace

Id128 Client::session_for_create() {
  std::lock_guard<std::mutex> g(mu_);
  current_conn_locked().take();
  return current_;
}

std::shared_ptr<Mapping> Client::create(uint64_t data_size, const Segment::Options& opts) {
  check_size(data_size);
  const uint64_t total = data_size + layout::kSegmentHeaderSize;
  check_capacity(total).throw_if_error();
  Id128 session = session_for_create();
  // Reserving pages may take a while: mu_ is not held, other threads' round trips go on.
  Id128 object = Id128::random();
  UniqueFd fd = platform::create_memfd("shoal", total).take();
  void* base = platform::map_fd(fd.get(), total, true, opts.populate).take();
  auto m = std::make_shared<Mapping>();
  m->session = session;
  m->object = object;
  m->base = static_cast<std::byte*>(base);
  m->total = total;
  m->kind = opts.kind;
  m->read_only = false;
  init_segment_header(reinterpret_cast<layout::SegmentHeader*>(base), object, opts.kind, total);
  register_new(*m, fd.get(), data_size);
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
  auto m = std::make_shared<Mapping>();
  m->session = session;
  m->object = object;
  m->base = static_cast<std::byte*>(base);
  m->total = total;
  m->kind = kind;
  m->read_only = seal;
  register_new(*m, fd.get(), data_size);
  if (!seal) m->memfd = std::move(fd);
  return m;
}

void Client::register_new(Mapping& m, int fd, uint64_t data_size) {
  WireMsg req = platform::make_msg(Op::kRegister);
  req.object_hi = m.object.hi;
  req.object_lo = m.object.lo;
  req.size = data_size;
  req.kind = static_cast<uint32_t>(m.kind);
  WireMsg rep{};
  std::unique_lock<std::mutex> g(mu_);
  Id128 session = m.session;
  // Our session's broker may have died since we last talked to it; we learn that only now.
  // New objects then go to a new session (once: a second failure is reported).
  for (int attempt = 0;; ++attempt) {
    Status st = Status::ok();
    auto conn = conn_locked(session);
    if (conn) {
      st = roundtrip_locked(session, conn.value(), req, fd, &rep, nullptr, nullptr);
    } else {
      st = conn.status();
    }
    if (st) break;
    if (st.code() == Errc::kSessionGone && attempt == 0) {
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
          WireMsg req = platform::make_msg(Op::kAdopt);
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
  // The fast path needs a connection to the broker the hint names, and a pin to keep that
  // broker's descriptor number ours until it reads our kHold (docs/design/segment.md, "Fast
  // attach"). A process not connected yet connects first (a round trip it needs either way),
  // then takes the fast path: one round trip where connecting and kAttach were two.
  const bool hinted = h.has_hint() && h.pin != 0;
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
  WireMsg req = platform::make_msg(Op::kAttach);
  req.object_hi = h.object.hi;
  req.object_lo = h.object.lo;
  req.pin = h.pin;
  WireMsg rep{};
  int rfd = -1;
  roundtrip_locked(h.session, c, req, -1, &rep, &rfd, nullptr).throw_if_error();
  UniqueFd fd(rfd);
  // From here on the broker counts a reference for us: every failure path must release it.
  auto fail = [&](Status st) {
    WireMsg rel = platform::make_msg(Op::kRelease);
    rel.object_hi = h.object.hi;
    rel.object_lo = h.object.lo;
    (void)platform::send_msg(c->sock.get(), rel);
    g.unlock();
    st.throw_if_error();
  };
  if (!fd.valid()) fail({Errc::kCorrupt, "the broker answered an attach without a descriptor"});
  const uint64_t total = rep.size + layout::kSegmentHeaderSize;
  if (rep.size > (1ULL << 56)) fail({Errc::kCorrupt, "the broker reported an absurd size"});
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
  cache_[h.object] = m;
  return m;
}

std::shared_ptr<Mapping> Client::attach_by_hint_locked(const Handle& h, Conn* c) noexcept {
  try {
    if (h.size > (1ULL << 56)) return nullptr;
    const uint64_t total = h.size + layout::kSegmentHeaderSize;
    // Allocated first, so that nothing can fail once kHold is sent. Until then its session is
    // zero, so destroying it under mu_ sends nothing and takes no lock (L8 holds).
    auto m = std::make_shared<Mapping>();
    std::weak_ptr<Mapping>& slot = cache_[h.object];  // empty: harmless if we fall back
    // Whatever the descriptor number names now, the checks below refuse anything but a memfd
    // of this object.
    UniqueFd fd;
    if (c->broker_pidfd.valid()) {
      const int got = get_remote_fd(c->broker_pidfd.get(), static_cast<int>(h.hint_fd));
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
  WireMsg req = platform::make_msg(Op::kHold);
  req.object_hi = object.hi;
  req.object_lo = object.lo;
  req.pin = pin;
  send_locked(c, req);
}

void Client::send_locked(Conn* c, const WireMsg& msg) noexcept {
  if (!platform::send_msg(c->sock.get(), msg)) {
    c->gone = true;
    c->sock.reset();
  }
}

uint64_t Client::pin(const Mapping& m, Handle* hint) {
  std::lock_guard<std::mutex> g(mu_);
  Conn* c = conn_locked(m.session).take();
  WireMsg req = platform::make_msg(Op::kPin);
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
  WireMsg req = platform::make_msg(Op::kRelease);
  req.object_hi = object.hi;
  req.object_lo = object.lo;
  if (!platform::send_msg(it->second.sock.get(), req)) {
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
      WireMsg req = platform::make_msg(Op::kAdopt);
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

Result<Client::Conn*> Client::conn_or_temp_locked(const Id128& session, Conn* temp) {
  // Our connection if we have one; otherwise a temporary one, so that `shoal ls` or `shoal gc`
  // in a long-lived process does not keep every broker it looked at alive.
  if (auto it = conns_.find(session); it != conns_.end() && !it->second.gone) return &it->second;
  auto made = connect_locked(session);
  if (!made) return made.status();
  *temp = std::move(made.value());
  return temp;
}

Result<std::string> Client::describe(const Id128& session) noexcept {
  try {
    std::lock_guard<std::mutex> g(mu_);
    check_fork_locked();
    Conn temp;
    auto got = conn_or_temp_locked(session, &temp);
    if (!got) return got.status();
    Conn* c = got.value();
    WireMsg req = platform::make_msg(Op::kList);
    WireMsg rep{};
    std::string payload;
    Status st = roundtrip_locked(session, c, req, -1, &rep, nullptr, &payload);
    if (!st) return st;
    return payload;
  } catch (const std::exception& e) {
    return {Errc::kSystem, e.what()};
  }
}

Result<uint64_t> Client::drop_orphan_pins(const Id128& session) noexcept {
  try {
    std::lock_guard<std::mutex> g(mu_);
    check_fork_locked();
    Conn temp;
    auto got = conn_or_temp_locked(session, &temp);
    if (!got) return got.status();
    Conn* c = got.value();
    if (!c->can_drop_pins) {  // an older broker drops a peer that sends an unknown op
      return {Errc::kSystem, "the broker of session " + session.hex() +
                                 " predates dropping pins; its pins expire after their TTL"};
    }
    WireMsg req = platform::make_msg(Op::kDropPins);
    WireMsg rep{};
    Status st = roundtrip_locked(session, c, req, -1, &rep, nullptr, nullptr);
    if (!st) return st;
    return rep.arg;
  } catch (const std::exception& e) {
    return {Errc::kSystem, e.what()};
  }
}

}  // namespace detail

uint64_t drop_orphan_pins(const Id128& session) {
  return detail::Client::instance().drop_orphan_pins(session).take();
}

std::vector<SessionEntry> list_sessions() {
  std::vector<SessionEntry> out;
  auto dir = runtime_dir(false);
  if (!dir) return out;
  DIR* d = ::opendir(dir.value().c_str());
  if (d == nullptr) return out;
  std::vector<Id128> ids;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.size() != 37 || name.substr(32) != ".lock") continue;
    auto id = Id128::from_hex(name.substr(0, 32));
    if (id) ids.push_back(id.value());
  }
  ::closedir(d);
  for (const Id128& id : ids) {
    SessionEntry s;
    s.id = id;
    UniqueFd lf(::open(detail::lock_path(dir.value(), id).c_str(), O_RDONLY | O_CLOEXEC));
    if (!lf.valid()) continue;
    char buf[32] = {};
    ssize_t n = ::pread(lf.get(), buf, sizeof buf - 1, 0);
    if (n > 0) s.broker_pid = std::strtoll(buf, nullptr, 10);
    if (::flock(lf.get(), LOCK_SH | LOCK_NB) == 0) {
      ::flock(lf.get(), LOCK_UN);
      s.alive = false;
    } else {
      s.alive = true;
      auto j = detail::Client::instance().describe(id);
      if (j) s.describe_json = j.value();
    }
    out.push_back(std::move(s));
  }
  return out;
}

int gc_runtime_dir() {
  auto dir = runtime_dir(false);
  if (!dir) return 0;
  DIR* d = ::opendir(dir.value().c_str());
  if (d == nullptr) return 0;
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) names.emplace_back(e->d_name);
  ::closedir(d);
  int removed = 0;
  for (const std::string& name : names) {
    if (name.size() == 42 && name.rfind(".tmp-", 0) == 0 && name.substr(37) == ".lock") {
      // A broker that died between creating its lock file and renaming it into place.
      std::string tmp = dir.value() + "/" + name;
      UniqueFd lf(::open(tmp.c_str(), O_RDWR | O_CLOEXEC));
      if (lf.valid() && ::flock(lf.get(), LOCK_EX | LOCK_NB) == 0) {
        ::unlink(tmp.c_str());
        ++removed;
      }
      continue;
    }
    if (name.size() != 37) continue;
    auto id = Id128::from_hex(name.substr(0, 32));
    if (!id) continue;
    std::string suffix = name.substr(32);
    std::string lock = detail::lock_path(dir.value(), id.value());
    std::string sock = detail::socket_path(dir.value(), id.value());
    if (suffix == ".lock") {
      // The broker holds this lock for its whole life (and creates the file already locked, by
      // rename), so getting it means the broker is dead.
      UniqueFd lf(::open(lock.c_str(), O_RDWR | O_CLOEXEC));
      if (!lf.valid() || ::flock(lf.get(), LOCK_EX | LOCK_NB) != 0) continue;
      ::unlink(sock.c_str());
      ::unlink(lock.c_str());
      ++removed;
    } else if (suffix == ".sock" && ::access(lock.c_str(), F_OK) != 0) {
      // A socket without its lock: the broker died between the two unlinks. (When the .lock
      // entry came first, its branch already removed this socket: unlink fails, no count.)
      if (::unlink(sock.c_str()) == 0) ++removed;
    }
  }
  return removed;
}

}  // namespace shoal
