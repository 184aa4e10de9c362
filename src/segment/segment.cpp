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
  return Segment(detail::Client::instance().create(size, opts.kind, opts.populate));
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
  if (!m_) throw_error(Errc::kInvalidArgument, "segment is closed");
  if (!m_->name.empty()) {
    throw_error(Errc::kInvalidArgument, "named segment '" + m_->name +
                                            "' has no session handle: open it by name");
  }
  if (m_->session.is_zero()) {
    throw_error(Errc::kSessionGone, "this segment's session is gone; it cannot be shared again");
  }
  Handle h;
  h.session = m_->session;
  h.object = m_->object;
  h.size = size();
  h.kind = static_cast<uint32_t>(m_->kind);
  h.flags = m_->read_only ? kHandleReadOnly : 0;
  h.pin = pin ? detail::Client::instance().pin(*m_, &h) : 0;  // with the hint, if any
  return h;
}

std::string Segment::handle(bool pin) const { return raw_handle(pin).encode(); }

}  // namespace shoal
