// fuzz/frozen_fuzzer.cpp — a frozen image from arbitrary bytes: Image::open, validate, then
// every read a binding makes (iteration, lookups, the raw probe, ndarray views). Only
// shoal::Error and std::out_of_range may come out; anything else, a crash, an ASan report or a
// hang (libFuzzer's -timeout) is a bug. An image that validate() accepts must also read back
// without any error at all.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "shoal/frozen.hpp"

namespace fz = shoal::frozen;

namespace {

uint64_t g_budget = 0;  // reads left for this input: bounds the walk over a shared DAG

void walk(const fz::Value& v, int depth) {
  if (depth > 64 || g_budget == 0) return;
  --g_budget;
  switch (v.type()) {
    case fz::Type::kNone: (void)v.is_none(); break;
    case fz::Type::kBool: (void)v.as_bool(); (void)v.as_int(); break;
    case fz::Type::kInt: (void)v.as_int(); (void)fz::hash_of(v); break;
    case fz::Type::kBigInt: (void)v.bigint_bytes(); (void)fz::hash_of(v); break;
    case fz::Type::kFloat: (void)v.as_float(); (void)fz::hash_of(v); break;
    case fz::Type::kStr: {
      auto s = v.as_str();
      volatile char sink = s.empty() ? 0 : s.back();  // touch the last byte
      (void)sink;
      (void)v.str_flags();
      (void)fz::hash_of(v);
      break;
    }
    case fz::Type::kBytes:
    case fz::Type::kPickle: {
      auto b = v.as_bytes();
      volatile std::byte sink = b.empty() ? std::byte{0} : b.back();
      (void)sink;
      break;
    }
    case fz::Type::kNdarray: {
      const fz::NdView nd = v.as_ndarray();
      if (nd.nbytes) {
        volatile std::byte sink = nd.data[nd.nbytes - 1];
        (void)sink;
      }
      break;
    }
    case fz::Type::kList:
    case fz::Type::kTuple: {
      const uint64_t n = v.size();
      for (uint64_t i = 0; i < n && i < 256; ++i) walk(v[i], depth + 1);
      break;
    }
    case fz::Type::kDict:
    case fz::Type::kSet:
    case fz::Type::kFrozenSet: {
      (void)v.find(int64_t{1});
      (void)v.find(int64_t{1} << 62);
      (void)v.find(1.5);
      (void)v.find("a");
      (void)v.find_bytes({});
      const uint64_t n = v.size();
      for (uint64_t i = 0; i < n && i < 256; ++i) {
        const fz::Value k = v.key_at(i);
        walk(k, depth + 1);
        (void)v.probe(v.hash_at(i), [&](const fz::Value& x) { return fz::keys_equal(x, k); });
        if (v.type() == fz::Type::kDict) walk(v.value_at(i), depth + 1);
      }
      break;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // An exact-size heap copy, so ASan flags any read past the image.
  std::vector<std::byte> buf(reinterpret_cast<const std::byte*>(data),
                             reinterpret_cast<const std::byte*>(data) + size);
  auto r = fz::Image::open(size ? buf.data() : nullptr, size);
  if (!r) return 0;
  const fz::Image image = r.value();
  bool valid = true;
  try {
    image.validate(64, 100000);
  } catch (const shoal::Error&) {
    valid = false;
  }
  g_budget = 20000;
  try {
    walk(image.root(), 0);
  } catch (const shoal::Error& e) {
    if (valid) {  // validate() accepted what a reader then refused
      std::fprintf(stderr, "valid image, failed read: %s\n", e.what());
      std::abort();
    }
  } catch (const std::out_of_range& e) {
    if (valid) {
      std::fprintf(stderr, "valid image, failed read: %s\n", e.what());
      std::abort();
    }
  }
  return 0;
}
