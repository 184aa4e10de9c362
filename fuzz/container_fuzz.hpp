// fuzz/container_fuzz.hpp — what the container fuzz targets (dict_fuzzer.cpp, list_fuzzer.cpp)
// share: the 64 KiB buffer a target builds a valid container in, read through BufferMem (the
// `Mem` of containers/item_core.hpp: every reference checked against the buffer), and the
// patching of that container by the rest of the input.
#pragma once

#include <cstddef>
#include <cstdint>

#include "shoal/error.hpp"

namespace shoal::fuzz {

inline constexpr uint64_t kBytes = 64 * 1024;

struct BufferMem {
  std::byte* base;
  std::byte* at(uint64_t ref, uint64_t len) const {
    if (ref == 0 || ref > kBytes || len > kBytes - ref) {
      throw_error(Errc::kCorrupt, "fuzz: outside the buffer");
    }
    return base + ref;
  }
};

/// Patches the built container: each 3-byte record of the input after the `used` bytes the
/// builder consumed XORs one byte of the buffer (16-bit offset, 8-bit value).
inline void patch(std::byte* buf, const uint8_t* data, size_t size, uint64_t used) {
  for (size_t i = used; i + 3 <= size; i += 3) {
    const uint64_t off = (uint64_t{data[i]} | uint64_t{data[i + 1]} << 8) % kBytes;
    buf[off] ^= static_cast<std::byte>(data[i + 2]);
  }
}

}  // namespace shoal::fuzz
