// src/session/wire.hpp — one broker message on the wire (layout/protocol_layout.hpp), framed
// over the platform's SEQPACKET packets, and the paths of a session's files.
//
// Shared by the client (session/client.cpp) and the broker (broker/broker.cpp): both ends build,
// send and check messages here, so the two cannot disagree on framing.
#pragma once

#include <cstddef>
#include <string>

#include "layout/protocol_layout.hpp"
#include "shoal/error.hpp"
#include "shoal/handle.hpp"

namespace shoal::wire {

/// A zeroed message with magic, version and op set.
layout::WireMsg make_msg(layout::Op op) noexcept;

/// Writes `text` into msg.text, truncated and NUL-terminated.
void set_text(layout::WireMsg* msg, const std::string& text) noexcept;

/// Sends one WireMsg (+ msg.payload_size bytes of payload when payload is not null, + an fd
/// when fd >= 0) as one packet.
Status send_msg(int sock, const layout::WireMsg& msg, const void* payload = nullptr,
                int fd = -1) noexcept;

/// Receives one message. kSessionGone on EOF/reset (the peer is gone), kTimeout after
/// `timeout_ms` (< 0: wait forever), kDecode on a malformed message, kIncompatible on another
/// protocol version, kOutOfSpace when the message arrived intact but the kernel dropped its
/// descriptor (this process is out of descriptors; *msg is valid then). A received fd is stored
/// in *fd (else -1); payload bytes (up to payload_cap) in payload. On success msg.text is
/// NUL-terminated and msg.payload_size is the number of payload bytes received.
Status recv_msg(int sock, layout::WireMsg* msg, int* fd, void* payload, size_t payload_cap,
                int timeout_ms) noexcept;

/// "<runtime dir>/<session hex>.sock" and ".lock".
std::string socket_path(const std::string& dir, const Id128& session);
std::string lock_path(const std::string& dir, const Id128& session);

}  // namespace shoal::wire
