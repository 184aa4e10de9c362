// src/session/segment_header.hpp — writing and checking the header every object starts with
// (layout/segment_layout.hpp). The session writes it when it creates an object and checks it on
// every attach, before any other byte of the object is read.
#pragma once

#include <cstdint>

#include "layout/segment_layout.hpp"
#include "shoal/error.hpp"
#include "shoal/handle.hpp"

namespace shoal {

namespace detail {

/// Writes every field of a new segment's header and publishes it (state = ready, release
/// order). Every kind of new segment, anonymous or named, starts this way.
void init_segment_header(layout::SegmentHeader* h, const Id128& object, ObjectKind kind,
                         uint64_t total) noexcept;

}  // namespace detail

/// Validates the first bytes of a segment (a local copy is taken first): magic, version,
/// fingerprint, sizes, kind. `expect_object` may be zero to skip the id check. Used on every
/// attach and by fuzz/segment_header_fuzzer.cpp; never crashes on any input. (Also declared in
/// the public shoal/segment.hpp.)
Status validate_segment_header(const void* base, uint64_t mapped_size, Id128 expect_object) noexcept;

}  // namespace shoal
