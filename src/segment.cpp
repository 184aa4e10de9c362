#include "shoal/segment.hpp"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "client.hpp"
#include "layout/segment_layout.hpp"

namespace shoal {

Segment Segment::create(uint64_t size, Options opts) {
  return Segment(detail::Client::instance().create(size, opts));
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

Status validate_segment_header(const void* base, uint64_t mapped_size, Id128 expect_object) noexcept {
  using namespace layout;
  if (base == nullptr || mapped_size < kSegmentHeaderSize) {
    return {Errc::kCorrupt, "segment of " + std::to_string(mapped_size) +
                                " bytes is smaller than its 64-byte header"};
  }
  // Copy once, then check and use only the copy: another process may be writing the original.
  SegmentHeader h;
  std::memcpy(static_cast<void*>(&h), base, sizeof h);
  // `base` may be any address (a fuzzer's buffer, Python bytes): the state word is loaded with
  // acquire order (pairing with the creator's release store of kSegmentReady) only where it is
  // aligned, as in every real mapping; otherwise it is taken from the copy. (An attacher also
  // gets the fd only through the broker's socket, after the creator registered it, so the
  // kernel orders the creator's writes before our reads in any case.)
  uint32_t state;
  const auto* state_at = static_cast<const unsigned char*>(base) + offsetof(SegmentHeader, state);
  if (reinterpret_cast<uintptr_t>(state_at) % alignof(uint32_t) == 0) {
    state = __atomic_load_n(reinterpret_cast<const uint32_t*>(state_at), __ATOMIC_ACQUIRE);
  } else {
    state = h.state.load(std::memory_order_relaxed);
  }
  if (h.magic != kSegmentMagic) {
    return {Errc::kIncompatible, "not a shoal segment: bad magic at offset 0"};
  }
  if (h.format_version != kSegmentFormatVersion) {
    return {Errc::kIncompatible, "segment has format version " + std::to_string(h.format_version) +
                                     ", this build reads " + std::to_string(kSegmentFormatVersion)};
  }
  if (h.layout_fingerprint != kLayoutFingerprint) {
    return {Errc::kIncompatible, "segment was written by a build with another layout "
                                 "(pointer width, cache line or byte order differ)"};
  }
  if (state != kSegmentReady) {
    return {Errc::kCorrupt, "segment header at offset 16 is not ready (state " +
                                std::to_string(state) + "): its creator died while making it"};
  }
  if (h.reserved != 0) {
    return {Errc::kIncompatible, "segment uses reserved bits at offset 56: made by a newer shoal"};
  }
  if (h.header_size != kSegmentHeaderSize || h.size < h.header_size) {
    return {Errc::kCorrupt, "segment header_size " + std::to_string(h.header_size) +
                                " at offset 32 is invalid"};
  }
  if (h.size != mapped_size) {
    return {Errc::kCorrupt, "segment header says " + std::to_string(h.size) +
                                " bytes at offset 24, the mapping has " + std::to_string(mapped_size)};
  }
  if (!kind_known(h.kind)) {
    return {Errc::kIncompatible, "segment kind " + std::to_string(h.kind) +
                                     " at offset 20 is unknown to this build (it knows " +
                                     known_kind_names() + "): made by a newer shoal"};
  }
  if (h.object_hi == 0 && h.object_lo == 0) {
    return {Errc::kCorrupt, "segment has a zero object id at offset 40"};
  }
  if (!expect_object.is_zero() && (h.object_hi != expect_object.hi || h.object_lo != expect_object.lo)) {
    return {Errc::kCorrupt, "segment at offset 40 names another object than its handle"};
  }
  return {};
}

}  // namespace shoal
