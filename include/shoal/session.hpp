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

/// The broker executable to start for new sessions: the path given to set_broker_path(), else
/// $SHOAL_BROKER, else the build tree's `shoal-broker` this library was built with if it still
/// exists, else the one `cmake --install` puts in the install prefix (<prefix>/bin/shoal-broker,
/// the prefix configured at build time). The Python package sets its own (shoal/_bin).
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

/// Removes the runtime files of sessions whose broker is gone (shoal.Pipe's FIFOs of such
/// sessions included); returns how many sessions' files were removed. Never touches a live
/// session.
int gc_runtime_dir();

/// The longest a pin lives, whatever SHOAL_PIN_TTL asks: a pin outlives its sender by design (a
/// worker returns an object and exits), so only a deadline frees the pin of a handle that is
/// never received; a day bounds what a forgotten one can hold.
inline constexpr uint64_t kMaxPinTtlSeconds = 24 * 3600;

/// Pin lifetime for handles made for sending: $SHOAL_PIN_TTL seconds, default 120, at most
/// kMaxPinTtlSeconds.
uint64_t pin_ttl_ms() noexcept;

/// Drops the pins of `session` whose sender process is dead, and returns how many. Use it only
/// when no handle those processes sent is still in transit (`shoal gc --pins`): such a handle
/// then attaches as stale. AccessDeniedError / SessionGoneError / StaleHandleError as for any
/// connection; ShoalOSError when the session's broker predates this call.
uint64_t drop_orphan_pins(const Id128& session);

/// Frees the objects of `session` that only reference cycles keep alive (no process holds or
/// pins any object that refers to them), and returns how many (`shoal gc --cycles`). The broker
/// also does this whenever a process of the session exits, so this is only needed to free a
/// cycle sooner. Always safe: what it frees, no process can reach any more except by an
/// unpinned handle. 0 from a broker that predates references (it has none).
uint64_t collect_cycles(const Id128& session);

}  // namespace shoal
