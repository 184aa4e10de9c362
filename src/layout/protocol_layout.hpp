// src/layout/protocol_layout.hpp — the messages between a process and its session broker.
//
// Transport: one AF_UNIX SOCK_SEQPACKET connection per (process, session), on the socket
// <runtime dir>/<session hex>.sock (directory 0700; the broker also checks SO_PEERCRED's uid).
// SEQPACKET keeps message boundaries, so every message is exactly one WireMsg, optionally
// followed in the same packet by `payload_size` bytes (kList replies), and carries at most one
// file descriptor (SCM_RIGHTS: kRegister requests, kAttach replies). Design note:
// docs/design/segment.md ("Broker protocol").
//
// The connection IS the process's reference set: every object a process attaches or registers
// is held by its connection until it sends kRelease or the connection closes (exit, SIGKILL,
// exec). There is one request in flight per connection; the client serialises them.
//
// Ops (request -> reply):
//   kHello    [fd: the hold ring]        -> broker pid in arg, session id in object_*,
//                                           kHelloCanHold, kHelloHoldRing, kHelloDropPins and
//                                           kHelloRefs in flags;
//                                           version check (the peer's pid and uid come from
//                                           SO_PEERCRED). The ring: hold_ring_layout.hpp
//   kRegister fd, object id, size, kind  -> ok | kOutOfSpace (SHOAL_MAX_BYTES, or the broker is
//                                           out of descriptors) | kInvalidArgument | kExists
//   kAttach   object id, pin             -> fd, size, kind, flags | kStaleHandle
//   kAdopt    object id                  -> ok | kStaleHandle  (a forked child re-registers
//                                           a mapping it inherited; no fd travels)
//   kRelease  object id                  -> no reply
//   kPin      object id, ttl_ms          -> pin, broker fd in arg | kStaleHandle
//   kList                                -> payload: JSON text describing the session
//   kDropPins                            -> arg: how many pins were dropped. Drops the pins
//                                           whose sender process is dead (`shoal gc --pins`:
//                                           the user says no handle of theirs is in transit)
//   kHold     object id, pin             -> no reply: kAdopt without the answer. The sender
//                                           already maps the object (it took the broker's
//                                           memfd from a handle's hint); an unknown object is
//                                           ignored (counted in kList). Sent only when the
//                                           hold ring is full or absent; the broker drains
//                                           the ring before serving any message
//   kRef      object id (the source),    -> ok | kStaleHandle (this connection does not hold
//             target id (ref_target)          the source, or the target is gone). Adds one
//                                           counted edge source -> target: the target lives
//                                           while the source does
//   kUnref    object id, target id       -> no reply: removes one count of that edge (none
//                                           left: nothing happens); the target may be freed
//   kCollect                             -> arg: objects freed. Mark and sweep: frees every
//                                           object no holder or pin reaches along edges
//                                           (reference cycles; `shoal gc --cycles`)
//
// "broker fd" is the descriptor number under which the broker holds the object's memfd, for
// the hint in handles (shoal/handle.hpp). It is never 0-2 (the broker's standard streams are
// always open), so 0 means "not told" (a broker older than kHold).
// The kRegister and kAttach replies carry it in arg too (0 from a broker older than held
// handles), so that a process can write held handles (kHandleHeld: no pin) of the objects it
// maps without asking again (docs/design/segment.md, "Held handles").
//
// Invariants: magic and version are checked on every message; a peer that sends anything
// malformed is disconnected (its references are then dropped like any exiting process's).
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace shoal::layout {

inline constexpr uint32_t kWireMagic = 0x4B424853;  // "SHBK"
inline constexpr uint16_t kWireVersion = 1;
inline constexpr size_t kWireMaxPayload = 60 * 1024;  // one packet; kList pages beyond this

enum class Op : uint16_t {
  kHello = 1,
  kRegister = 2,
  kAttach = 3,
  kAdopt = 4,
  kRelease = 5,
  kPin = 6,
  kList = 7,
  kHold = 8,
  kDropPins = 9,
  kRef = 10,
  kUnref = 11,
  kCollect = 12,
};

// kHello reply flags: what this broker understands beyond version 1's first seven ops. (A
// broker drops a peer that sends an unknown op, so a client sends kHold only when told.)
inline constexpr uint32_t kHelloCanHold = 1u << 0;
// The broker mapped the hold ring that came with kHello and reads it (hold_ring_layout.hpp).
inline constexpr uint32_t kHelloHoldRing = 1u << 1;
// The broker understands kDropPins.
inline constexpr uint32_t kHelloDropPins = 1u << 2;
// The broker understands kRef, kUnref and kCollect (references between objects).
inline constexpr uint32_t kHelloRefs = 1u << 3;

struct WireMsg {
  uint32_t magic;         // kWireMagic
  uint16_t version;       // kWireVersion
  uint16_t op;            // Op
  uint32_t status;        // replies: shoal::Errc; requests: 0
  uint32_t kind;          // ObjectKind (register, attach reply)
  uint64_t object_hi;     // object id (or the session id in a kHello reply)
  uint64_t object_lo;
  uint64_t size;          // data bytes (register, attach reply)
  uint64_t pin;           // pin id (attach, adopt, hold requests; pin reply);
                          // kRef/kUnref: the target id's high half
  uint64_t arg;           // kHello: pid; kPin: ttl in ms; kList reply: more pages follow (0/1);
                          // kPin reply: the broker's fd for the object (the handle's hint);
                          // kRef/kUnref: the target id's low half; kCollect reply: objects freed
  uint32_t flags;         // handle flags (attach reply); kHelloCanHold (hello reply)
  uint32_t payload_size;  // bytes that follow this struct in the packet (<= kWireMaxPayload)
  char text[192];         // error replies: a NUL-terminated message for the user
};
static_assert(std::is_trivially_copyable_v<WireMsg>);
static_assert(sizeof(WireMsg) == 256, "wire layout is ABI: bump kWireVersion");

// kRef and kUnref carry the target's id in the two u64s no other field of theirs uses: its
// high half in `pin`, its low half in `arg` (the source is object_*, as in every request).
inline void set_ref_target(WireMsg* m, uint64_t hi, uint64_t lo) noexcept {
  m->pin = hi;
  m->arg = lo;
}
inline uint64_t ref_target_hi(const WireMsg& m) noexcept { return m.pin; }
inline uint64_t ref_target_lo(const WireMsg& m) noexcept { return m.arg; }

}  // namespace shoal::layout
