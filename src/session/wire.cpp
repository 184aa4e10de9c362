#include "session/wire.hpp"

#include <algorithm>
#include <cstring>

#include "platform/platform.hpp"

namespace shoal::wire {

layout::WireMsg make_msg(layout::Op op) noexcept {
  layout::WireMsg m;
  std::memset(&m, 0, sizeof m);
  m.magic = layout::kWireMagic;
  m.version = layout::kWireVersion;
  m.op = static_cast<uint16_t>(op);
  return m;
}

void set_text(layout::WireMsg* msg, const std::string& text) noexcept {
  size_t n = std::min(text.size(), sizeof msg->text - 1);
  std::memcpy(msg->text, text.data(), n);
  msg->text[n] = '\0';
}

namespace {

// The platform speaks of "the peer"; a reader of these errors knows the peer as the broker.
Status about_broker(const Status& st, const char* what) {
  if (st.code() == Errc::kSessionGone) {
    return {Errc::kSessionGone, "the session broker closed the connection"};
  }
  if (st.code() == Errc::kTimeout) return {Errc::kTimeout, "the session broker did not answer in time"};
  return {st.code(), std::string(what) + ": " + st.message()};
}

}  // namespace

Status send_msg(int sock, const layout::WireMsg& msg, const void* payload, int fd) noexcept {
  Status st = platform::send_packet(sock, &msg, sizeof msg, payload,
                                    payload != nullptr ? msg.payload_size : 0, fd);
  if (!st) return about_broker(st, "sending to the session broker");
  return {};
}

Status recv_msg(int sock, layout::WireMsg* msg, int* fd, void* payload, size_t payload_cap,
                int timeout_ms) noexcept {
  bool fd_dropped = false;
  auto got = platform::recv_packet(sock, msg, sizeof *msg, payload, payload_cap, fd, &fd_dropped,
                                   timeout_ms);
  if (!got) return about_broker(got.status(), "receiving from the session broker");
  platform::UniqueFd owned(*fd);  // closed unless the message proves well formed
  *fd = -1;
  const size_t r = got.value();
  if (r < sizeof *msg || msg->magic != layout::kWireMagic) {
    return {Errc::kDecode, "a broker message is malformed (" + std::to_string(r) + " bytes)"};
  }
  if (msg->version != layout::kWireVersion) {
    return {Errc::kIncompatible, "the peer speaks broker protocol version " +
                                     std::to_string(msg->version) + ", this build speaks " +
                                     std::to_string(layout::kWireVersion)};
  }
  if (msg->payload_size != r - sizeof *msg) {
    return {Errc::kDecode, "a broker message declares " + std::to_string(msg->payload_size) +
                               " payload bytes but carries " + std::to_string(r - sizeof *msg)};
  }
  msg->text[sizeof msg->text - 1] = '\0';
  if (fd_dropped) {
    return {Errc::kOutOfSpace, "a file descriptor sent to this process was dropped: it has no "
                               "descriptors left (raise `ulimit -n`)"};
  }
  *fd = owned.release();
  return {};
}

std::string socket_path(const std::string& dir, const Id128& session) {
  return dir + "/" + session.hex() + ".sock";
}

std::string lock_path(const std::string& dir, const Id128& session) {
  return dir + "/" + session.hex() + ".lock";
}

}  // namespace shoal::wire
