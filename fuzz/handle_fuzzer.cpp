// fuzz/handle_fuzzer.cpp — Handle::decode on arbitrary bytes: never crashes, and whatever it
// accepts re-encodes to exactly the input (one spelling per handle, with or without the
// optional hint after the first 133 bytes; corpus/handle has hinted seeds).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "shoal/handle.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto h = shoal::Handle::decode(text);
  if (h && h.value().encode() != text) std::abort();
  // A hinted handle's first 133 bytes are the same handle without its hint.
  if (h && h.value().has_hint()) {
    auto bare = shoal::Handle::decode(text.substr(0, shoal::kHandleTextSize));
    if (!bare || bare.value().has_hint() || bare.value().object != h.value().object ||
        bare.value().pin != h.value().pin) {
      std::abort();
    }
  }
  return 0;
}
