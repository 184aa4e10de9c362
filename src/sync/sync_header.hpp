// src/sync/sync_header.hpp — the decoder of a sync segment's header (src/layout/sync_layout.hpp),
// apart from the objects of include/shoal/sync.hpp so that the fuzz target
// (fuzz/sync_header_fuzzer.cpp) reaches it without a session.
#pragma once

#include <cstddef>
#include <cstdint>

#include "layout/sync_layout.hpp"
#include "shoal/error.hpp"

namespace shoal::sync {

/// The header of a sync segment's data area of `size` bytes, read once into a local copy and
/// checked (H1-H3 of sync_layout.hpp): kIncompatible for another version or reserved fields in
/// use, kCorrupt for anything else out of range, including `size` below kSyncSegmentBytes. Reads
/// only the first sizeof(SyncHeader) bytes; never crashes.
Result<layout::SyncHeader> parse_sync_header(const std::byte* data, uint64_t size) noexcept;

}  // namespace shoal::sync
