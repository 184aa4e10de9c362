#include "shoal/segment.hpp"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "session/client.hpp"
#include "session/segment_header.hpp"
#include "layout/segment_layout.hpp"

namespace shoal {

Segment Segment::create(uint64_t size, Options opts) {
  return Segment(detail::Client::instance().create(size, opts.kind, opts.populate, opts.session));
}

Segment Segment::create_from(uint64_t size, ObjectKind kind,
                             std::span<const std::pair<uint64_t, std::span<const std::byte>>> parts,
                             bool seal) {
  std::vector<platform::Piece> pieces;
  pieces.reserve(parts.size());
  for (const auto& [offset, bytes] : parts) {
    if (!bytes.empty()) pieces.push_back({offset, bytes.data(), bytes.size()});
  }
  return Segment(
      detail::Client::instance().create_filled(size, kind, pieces.data(), pieces.size(), seal));
}

Segment Segment::attach(std::string_view handle) {
  Handle h = Handle::decode(handle).take();
  return attach(h);
}

Segment Segment::attach(const Handle& handle) {
  return Segment(detail::Client::instance().attach(handle));
}

std::optional<Segment> Segment::try_attach_now(const Handle& handle) {
  if (auto m = detail::Client::instance().attach(handle, /*may_wait=*/false)) {
    return Segment(std::move(m));
  }
  return std::nullopt;
}

std::byte* Segment::data() const noexcept {
  return m_ ? m_->base + layout::kSegmentHeaderSize : nullptr;
}

uint64_t Segment::size() const noexcept {
  return m_ ? m_->total - layout::kSegmentHeaderSize : 0;
}

Id128 Segment::id() const noexcept { return m_ ? m_->object : Id128{}; }
Id128 Segment::session() const noexcept { return m_ ? m_->session : Id128{}; }
ObjectKind Segment::kind() const noexcept { return m_ ? m_->kind : ObjectKind::kBytes; }
bool Segment::read_only() const noexcept { return m_ && m_->read_only; }
std::span<const std::byte> Segment::head_copy() const noexcept {
  if (!m_ || m_->head_len <= layout::kSegmentHeaderSize) return {};
  return {m_->head.data() + layout::kSegmentHeaderSize, m_->head_len - layout::kSegmentHeaderSize};
}

const std::string& Segment::name() const noexcept {
  static const std::string kEmpty;
  return m_ ? m_->name : kEmpty;
}

void Segment::seal() {
  if (!m_) throw_error(Errc::kInvalidArgument, "segment is closed");
  if (!m_->name.empty()) throw_error(Errc::kInvalidArgument, "named segments cannot be sealed");
  detail::Client::instance().seal(*m_);
}

void Segment::add_reference(const Segment& target) const {
  if (!m_ || !target.m_) throw_error(Errc::kInvalidArgument, "segment is closed");
  detail::Client::instance().add_reference(*m_, *target.m_);
}

void Segment::drop_reference(const Id128& target) const {
  if (!m_) throw_error(Errc::kInvalidArgument, "segment is closed");
  detail::Client::instance().drop_reference(*m_, target);
}

Handle Segment::raw_handle(bool pin) const {
  return raw_handle(pin ? HandleMode::kPinned : HandleMode::kBare);
}

std::string Segment::handle(bool pin) const { return raw_handle(pin).encode(); }

namespace {
[[noreturn]] void no_session_handle(const detail::Mapping* m) {
  if (m == nullptr) throw_error(Errc::kInvalidArgument, "segment is closed");
  if (!m->name.empty()) {
    throw_error(Errc::kInvalidArgument, "named segment '" + m->name +
                                            "' has no session handle: open it by name");
  }
  throw_error(Errc::kSessionGone, "this segment's session is gone; it cannot be shared again");
}
bool has_session_handle(const detail::Mapping* m) noexcept {
  return m != nullptr && m->name.empty() && !m->session.is_zero();
}
}  // namespace

Handle Segment::raw_handle(HandleMode mode) const {
  if (!has_session_handle(m_.get())) no_session_handle(m_.get());
  if (mode == HandleMode::kSend) mode = held() ? HandleMode::kHeld : HandleMode::kPinned;
  Handle h;
  h.session = m_->session;
  h.object = m_->object;
  h.size = size();
  h.kind = static_cast<uint32_t>(m_->kind);
  h.flags = m_->read_only ? kHandleReadOnly : 0;
  switch (mode) {
    case HandleMode::kPinned:
      h.pin = detail::Client::instance().pin(*m_, &h);  // with the hint, if any
      break;
    case HandleMode::kHeld:
      // No pin, no round trip: the hint stays right while the object lives, and the sender's
      // hold keeps it living (docs/design/segment.md, "Held handles").
      h.flags |= kHandleHeld;
      h.hint_pid = m_->hint_pid;
      h.hint_fd = m_->hint_pid != 0 ? m_->hint_fd : 0;
      break;
    case HandleMode::kBare:
    case HandleMode::kSend:
      break;
  }
  return h;
}

std::string Segment::handle(HandleMode mode) const {
  if (mode == HandleMode::kSend) mode = held() ? HandleMode::kHeld : HandleMode::kPinned;
  if (mode != HandleMode::kHeld || !has_session_handle(m_.get())) return raw_handle(mode).encode();
  // Made once per mapping: the text of a held handle never changes, except its read-only flag
  // when the creator seals the segment after the first one was made.
  std::lock_guard<std::mutex> g(m_->held_mu);
  if (m_->held_text.empty() || m_->held_text_ro != m_->read_only) {
    m_->held_text_ro = m_->read_only;
    m_->held_text = raw_handle(mode).encode();
  }
  return m_->held_text;
}

Segment::Hold& Segment::Hold::operator=(Hold&& o) noexcept {
  if (this != &o) {
    release();
    m_ = std::move(o.m_);
  }
  return *this;
}

void Segment::Hold::release() noexcept {
  if (!m_) return;
  m_->send_holds.fetch_sub(1, std::memory_order_acq_rel);
  m_.reset();  // may be the last reference: releases the object as a Segment would
}

Segment::Hold Segment::hold() const {
  if (!has_session_handle(m_.get())) no_session_handle(m_.get());
  Hold h;
  m_->send_holds.fetch_add(1, std::memory_order_acq_rel);
  h.m_ = m_;
  return h;
}

bool Segment::held() const noexcept {
  return m_ && m_->send_holds.load(std::memory_order_acquire) != 0;
}

}  // namespace shoal
