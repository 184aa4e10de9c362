// fuzz/heap_fuzzer.cpp — the heap's allocator (src/memory/heap_core.cpp) on a heap another
// process could have written anything into. A valid heap is built first (a root and one more
// extent, with used and free blocks of many sizes), then the input patches its bytes: each
// 4-byte record is (extent: 1 bit, offset: 23 bits, value: 8 bits). validate_heap_header,
// check, recovery, allocate, free and payload must then never read or write outside the two
// buffers (ASan sees to that) and never loop forever; what they answer is free.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "memory/heap_core.hpp"

namespace layout = shoal::layout;
using shoal::memory::HeapCore;

namespace {

constexpr uint64_t kRootBytes = 32 * 1024;
constexpr uint64_t kExtentBytes = 16 * 1024;

struct Image final : shoal::memory::ExtentSource {
  std::unique_ptr<std::byte[]> root{new std::byte[kRootBytes]()};
  std::unique_ptr<std::byte[]> ext{new std::byte[kExtentBytes]()};
  std::byte* extent(uint32_t i, uint64_t* bytes) noexcept override {
    if (i == 0) {
      *bytes = kRootBytes;
      return root.get();
    }
    if (i == 1) {
      *bytes = kExtentBytes;
      return ext.get();
    }
    return nullptr;  // extents 2.. cannot be mapped, as when the broker has forgotten them
  }
};

// The same valid heap every time: blocks of several sizes, every third one freed.
std::vector<uint64_t> build(Image& im, HeapCore& core) {
  auto* h = reinterpret_cast<layout::HeapHeader*>(im.root.get());
  shoal::memory::format_heap_root(h, kRootBytes);
  auto* e = layout::heap_extents(h);
  if (!core.init_extent_locked(0).is_ok()) std::abort();
  std::vector<uint64_t> refs;
  for (int i = 0; i < 60; ++i) {
    uint64_t need = 0;
    auto r = core.allocate_locked(static_cast<uint64_t>(8 + (i * 97) % 700), 0, &need);
    if (!r.has_value()) std::abort();
    if (r.value() == 0) {
      if (h->extent_count != 1) break;
      e[1].bytes = kExtentBytes;
      e[1].used = 0;
      h->extent_count = 2;
      if (!core.init_extent_locked(1).is_ok()) std::abort();
      continue;
    }
    refs.push_back(r.value());
  }
  for (size_t i = 0; i < refs.size(); i += 3) {
    if (!core.free_locked(refs[i]).is_ok()) std::abort();
  }
  if (!core.check(nullptr).is_ok()) std::abort();
  return refs;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The valid heap is built once; each run works on a copy of it.
  static Image pristine;
  static const std::vector<uint64_t> refs = [] {
    HeapCore c(reinterpret_cast<layout::HeapHeader*>(pristine.root.get()), &pristine);
    return build(pristine, c);
  }();
  Image im;
  std::memcpy(im.root.get(), pristine.root.get(), kRootBytes);
  std::memcpy(im.ext.get(), pristine.ext.get(), kExtentBytes);
  auto* h = reinterpret_cast<layout::HeapHeader*>(im.root.get());
  HeapCore core(h, &im);
  for (size_t i = 0; i + 4 <= size; i += 4) {
    uint32_t rec = 0;
    std::memcpy(&rec, data + i, 4);
    const bool second = (rec >> 31) != 0;
    const uint64_t off = (rec >> 8) & 0x7FFFFF;
    const auto v = static_cast<std::byte>(rec & 0xFF);
    if (second) {
      im.ext[off % kExtentBytes] = v;
    } else {
      im.root[off % kRootBytes] = v;
    }
  }
  (void)shoal::memory::validate_heap_header(h, kRootBytes);
  (void)core.check(nullptr);
  for (uint64_t r : refs) {
    if (core.payload(r, 16) != nullptr) std::memset(core.payload(r, 16), 0x5A, 16);
  }
  // The allocator on the damaged heap: each call either works or says why.
  for (int i = 0; i < 8; ++i) {
    uint64_t need = 0;
    auto r = core.allocate_locked(static_cast<uint64_t>(16 + i * 300), 0, &need);
    if (r.has_value() && r.value() != 0) (void)core.free_locked(r.value());
  }
  for (size_t i = 1; i < refs.size(); i += 3) (void)core.free_locked(refs[i]);
  // Recovery, then the allocator again: after a recovery that succeeds, check must pass.
  if (core.recover_locked(true, nullptr).is_ok()) {
    if (!core.check(nullptr).is_ok()) std::abort();
    uint64_t need = 0;
    auto r = core.allocate_locked(100, 0, &need);
    if (r.has_value() && r.value() != 0) (void)core.free_locked(r.value());
  }
  return 0;
}
