// src/layout/segment_layout.hpp — the first 64 bytes of every shoal segment.
//
// A segment is one memfd (anonymous) or one file (named), mapped by every process that uses the
// object, each at its own address: nothing in a segment is a raw pointer. Design note:
// docs/design/segment.md.
//
//   0                64                                         size
//   +----------------+------------------------------------------+
//   | SegmentHeader  | data (data_size = size - header_size)    |
//   +----------------+------------------------------------------+
//
// Compatibility: a process uses a segment only if magic, format_version and layout_fingerprint
// all match (validate_segment_header, before any other read). The fingerprint encodes pointer
// width, cache-line size and byte order, so two builds that disagree on layout refuse to share
// instead of corrupting.
//
// Invariants (validate_segment_header checks all of them on a local copy of the header, so a
// concurrent writer cannot change a field between check and use):
//   I1  magic == kSegmentMagic, format_version == kSegmentFormatVersion,
//       layout_fingerprint == kLayoutFingerprint, reserved == 0
//   I2  header_size == kSegmentHeaderSize and header_size <= size
//   I3  size == the size of the mapping (the memfd's st_size, sealed against shrink and grow)
//   I4  state == kSegmentReady implies every field has been initialised (a fresh segment is
//       zero-filled, so state reads 0, "not ready", until the creator publishes it)
//   I5  object_id is non-zero, chosen at random by the creator, and equals the id the handle
//       names (the broker registers the fd under that id)
//   I6  kind is a known ObjectKind
// Who writes: the creator writes every field once, before it registers the fd with the broker
// (so before any other process can see the segment), then stores state = kSegmentReady with
// release order. No field changes afterwards; readers need no lock.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace shoal::layout {

inline constexpr uint64_t kSegmentMagic = 0x474553'4C414F4853ULL;  // "SHOALSEG" little-endian
inline constexpr uint32_t kSegmentFormatVersion = 1;
inline constexpr uint32_t kSegmentInitialising = 0;  // what a fresh, zero-filled segment reads
inline constexpr uint32_t kSegmentReady = 2;
inline constexpr uint64_t kSegmentHeaderSize = 64;
/// No segment's data area may exceed this (2**56 bytes, beyond any machine): a larger size in a
/// request, a handle or a broker's answer is refused as absurd before any arithmetic on it, so
/// `size + kSegmentHeaderSize` and an element count times its item size never overflow.
inline constexpr uint64_t kMaxSegmentBytes = uint64_t{1} << 56;
inline constexpr size_t kCacheLine = 64;

// sizeof(void*) | cache line | endianness probe. A big-endian reader sees a different value.
inline constexpr uint32_t kLayoutFingerprint =
    (static_cast<uint32_t>(sizeof(void*)) << 24) | (static_cast<uint32_t>(kCacheLine) << 8) | 0x5A;

struct alignas(kCacheLine) SegmentHeader {
  uint64_t magic;                // kSegmentMagic: ASCII "SHOALSEG"; a byte-swapped read is detectable
  uint32_t format_version;       // kSegmentFormatVersion; bump on ANY change in src/layout/
  uint32_t layout_fingerprint;   // kLayoutFingerprint
  std::atomic<uint32_t> state;   // kSegmentInitialising -> kSegmentReady, written once by the creator
  uint32_t kind;                 // shoal::ObjectKind of the payload
  uint64_t size;                 // total bytes of the segment, header included; immutable
  uint64_t header_size;          // offset of the data area; kSegmentHeaderSize in v1
  uint64_t object_hi;            // object id (I5); immutable
  uint64_t object_lo;
  uint64_t reserved;             // must be zero; lets v1 readers reject v2 extensions
};
static_assert(std::is_standard_layout_v<SegmentHeader>);
static_assert(sizeof(SegmentHeader) == kSegmentHeaderSize, "layout is ABI: bump the version");
static_assert(offsetof(SegmentHeader, size) == 24, "layout is ABI: bump kSegmentFormatVersion");
static_assert(offsetof(SegmentHeader, reserved) == 56, "layout is ABI: bump kSegmentFormatVersion");
static_assert(std::atomic<uint32_t>::is_always_lock_free,
              "atomics in shared memory must be lock-free, or they are per-process");

}  // namespace shoal::layout
