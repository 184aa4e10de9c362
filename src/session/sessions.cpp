// src/session/sessions.cpp — what one process can learn of every session of this user: the
// broker's description of a session, dropping orphan pins, the list of sessions and the
// clean-up of runtime files left by brokers that died (gc_runtime_dir).
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstdlib>
#include <vector>

#include "session/client.hpp"
#include "session/wire.hpp"
#include "shoal/session.hpp"
#include "shoal/system.hpp"

namespace shoal {

using platform::UniqueFd;

namespace detail {

using layout::Op;
using layout::WireMsg;

template <class T, class F>
Result<T> Client::query(const Id128& session, F&& f) noexcept {
  try {
    std::lock_guard<std::mutex> g(mu_);
    check_fork_locked();
    if (auto it = conns_.find(session); it != conns_.end() && !it->second.gone) {
      return f(&it->second);
    }
    auto temp = connect_locked(session);
    if (!temp) return temp.status();
    return f(&temp.value());
  } catch (const std::exception& e) {
    return {Errc::kSystem, e.what()};
  }
}

Result<std::string> Client::describe(const Id128& session) noexcept {
  return query<std::string>(session, [&](Conn* c) -> Result<std::string> {
    WireMsg req = wire::make_msg(Op::kList);
    WireMsg rep{};
    std::string payload;
    Status st = roundtrip_locked(session, c, req, -1, &rep, nullptr, &payload);
    if (!st) return st;
    return payload;
  });
}

Result<uint64_t> Client::drop_orphan_pins(const Id128& session) noexcept {
  return query<uint64_t>(session, [&](Conn* c) -> Result<uint64_t> {
    if (!c->can_drop_pins) {  // an older broker drops a peer that sends an unknown op
      return {Errc::kSystem, "the broker of session " + session.hex() +
                                 " predates dropping pins; its pins expire after their TTL"};
    }
    WireMsg req = wire::make_msg(Op::kDropPins);
    WireMsg rep{};
    Status st = roundtrip_locked(session, c, req, -1, &rep, nullptr, nullptr);
    if (!st) return st;
    return rep.arg;
  });
}

Result<uint64_t> Client::collect_cycles(const Id128& session) noexcept {
  return query<uint64_t>(session, [&](Conn* c) -> Result<uint64_t> {
    if (!c->can_ref) return uint64_t{0};  // no references there, so no cycles either
    WireMsg req = wire::make_msg(Op::kCollect);
    WireMsg rep{};
    Status st = roundtrip_locked(session, c, req, -1, &rep, nullptr, nullptr);
    if (!st) return st;
    return rep.arg;
  });
}

}  // namespace detail

uint64_t drop_orphan_pins(const Id128& session) {
  return detail::Client::instance().drop_orphan_pins(session).take();
}

uint64_t collect_cycles(const Id128& session) {
  return detail::Client::instance().collect_cycles(session).take();
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
    UniqueFd lf(::open(wire::lock_path(dir.value(), id).c_str(), O_RDONLY | O_CLOEXEC));
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
    if (name.size() == 75 && name.compare(32, 6, ".pipe-") == 0 &&
        name.compare(70, 5, ".fifo") == 0) {
      // A shoal.Pipe's wake-up FIFO (python/shoal/_pipes.py): its last holder removes it, a
      // killed one leaves it; it is garbage once its session is dead (lock gone, or free).
      auto sid = Id128::from_hex(name.substr(0, 32));
      if (!sid) continue;
      const std::string lock = wire::lock_path(dir.value(), sid.value());
      UniqueFd lf(::open(lock.c_str(), O_RDWR | O_CLOEXEC));
      if (lf.valid() && ::flock(lf.get(), LOCK_EX | LOCK_NB) != 0) continue;  // alive
      (void)::unlink((dir.value() + "/" + name).c_str());  // not counted: not a session
      continue;
    }
    if (name.size() != 37) continue;
    auto id = Id128::from_hex(name.substr(0, 32));
    if (!id) continue;
    std::string suffix = name.substr(32);
    std::string lock = wire::lock_path(dir.value(), id.value());
    std::string sock = wire::socket_path(dir.value(), id.value());
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
