// src/session/client.cpp — the Client's connections: connecting, round trips, starting a
// session's broker, fork handling. Objects (create, attach, pin, release) are in objects.cpp,
// the session-wide queries (describe, list, gc) in sessions.cpp.
#include "session/client.hpp"

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
#include "session/wire.hpp"
#include "shoal/session.hpp"
#include "shoal/system.hpp"

// The broker of the build tree this library was built in, and where `cmake --install` puts it
// (CMakeLists.txt); broker_path() tries them in this order.
#ifndef SHOAL_BROKER_DEFAULT_PATH
#define SHOAL_BROKER_DEFAULT_PATH ""
#endif
#ifndef SHOAL_BROKER_INSTALLED_PATH
#define SHOAL_BROKER_INSTALLED_PATH ""
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
  // The build tree's broker while it exists (the tests, a program linked against the build),
  // else the installed one; when neither is there, the build tree's path names what is missing.
  const std::string built = SHOAL_BROKER_DEFAULT_PATH;
  const std::string installed = SHOAL_BROKER_INSTALLED_PATH;
  if (built.empty() || (::access(built.c_str(), X_OK) != 0 && !installed.empty() &&
                        ::access(installed.c_str(), X_OK) == 0)) {
    return installed;
  }
  return built;
}

uint64_t pin_ttl_ms() noexcept {
  const auto s = static_cast<uint64_t>(env_int("SHOAL_PIN_TTL", 120));
  return std::min(s, kMaxPinTtlSeconds) * 1000ULL;
}

Id128 current_session() noexcept { return detail::Client::instance().current_session(); }

void after_fork_child() noexcept { detail::Client::instance().after_fork_child(); }

namespace detail {


Mapping::~Mapping() {
  platform::unmap(base, total);
  // Close the creator's descriptor before releasing, so the broker holds the last reference
  // and frees the pages in its own time; otherwise this close could be the one that frees a
  // large segment, which takes time in proportion to its size, on the caller's thread.
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
  // The child handler also marks the fork, so that check_fork_locked needs no getpid(): no
  // system call on any attach or release, each costly in a worker asleep until the handle came.
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
  Status st = wire::send_msg(c->sock.get(), req, nullptr, send_fd);
  if (!st) return gone(st);
  std::vector<char> buf(payload != nullptr ? layout::kWireMaxPayload : 0);
  for (;;) {
    int fd = -1;
    st = wire::recv_msg(c->sock.get(), reply, &fd, payload != nullptr ? buf.data() : nullptr,
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
  Status st = connect_socket(wire::socket_path(dir.value(), session), session, &c.sock);
  if (!st) return st;
  WireMsg req = wire::make_msg(Op::kHello);
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
  c.can_ref = (rep.flags & layout::kHelloRefs) != 0;
  if (c.can_hold && (rep.flags & layout::kHelloHoldRing) != 0) c.ring = std::move(ring);
  if (c.can_hold && c.broker_pid > 0) c.broker_pidfd = platform::open_pidfd(c.broker_pid);
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

}  // namespace detail
}  // namespace shoal
