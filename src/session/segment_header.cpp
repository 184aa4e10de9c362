#include "session/segment_header.hpp"

#include <cstddef>
#include <cstring>
#include <string>

namespace shoal {
namespace detail {

void init_segment_header(layout::SegmentHeader* h, const Id128& object, ObjectKind kind,
                         uint64_t total) noexcept {
  h->magic = layout::kSegmentMagic;
  h->format_version = layout::kSegmentFormatVersion;
  h->layout_fingerprint = layout::kLayoutFingerprint;
  h->kind = static_cast<uint32_t>(kind);
  h->size = total;
  h->header_size = layout::kSegmentHeaderSize;
  h->object_hi = object.hi;
  h->object_lo = object.lo;
  h->reserved = 0;
  // Pairs with the acquire load in validate_segment_header: every field above is visible to a
  // process that sees kSegmentReady.
  h->state.store(layout::kSegmentReady, std::memory_order_release);
}

}  // namespace detail

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
