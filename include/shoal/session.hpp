// include/shoal/session.hpp — the session: the process tree that shares objects, and its broker.
//
// The first process that creates an object starts a broker (the `shoal-broker` executable) for
// a new session and exports SHOAL_SESSION so that the processes it starts create their objects
// in the same session. A process that attaches a handle connects to that handle's session (its
// own creates still go to SHOAL_SESSION's session, or to a new one). The broker holds one memfd per
// live object and hands it to attaching processes over a 0700 Unix socket; it exits by itself
// once no process is connected and no pin is pending, and the kernel frees what is left.
//
// All functions are thread-safe. After fork(), the child reconnects on its next call, but it
// holds no broker reference to the mappings it inherited (so it cannot pin or re-share them)
// until it calls after_fork_child(); the Python package does so from os.register_at_fork.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "shoal/error.hpp"
#include "shoal/handle.hpp"

namespace shoal {

/// The broker executable to start for new sessions. Defaults to $SHOAL_BROKER, else the path
/// this library was built with.
void set_broker_path(const std::string& path);
std::string broker_path();

/// The session this process creates objects in; zero if it has none yet.
Id128 current_session() noexcept;

/// Reconnects a forked child to its sessions and re-registers the mappings it inherited, so the
/// objects stay alive for it even if its parent releases them. Safe to call in any process.
void after_fork_child() noexcept;

/// A session found in the runtime directory.
struct SessionEntry {
  Id128 id;
  bool alive = false;       // its broker holds the session lock
  int64_t broker_pid = 0;   // as recorded by the broker (0 if unknown)
  std::string describe_json;  // the broker's own description (kList), empty if dead
};

/// Every session in the runtime directory, live or dead.
std::vector<SessionEntry> list_sessions();

/// Removes the runtime files of sessions whose broker is gone; returns how many were removed.
/// Never touches a live session.
int gc_runtime_dir();

/// Pin lifetime for handles made for sending: $SHOAL_PIN_TTL seconds, default 120.
uint64_t pin_ttl_ms() noexcept;

}  // namespace shoal
