// fuzz/handle_fuzzer.cpp — Handle::decode on arbitrary bytes: never crashes, and whatever it
// accepts re-encodes to exactly the input (one spelling per handle).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "shoal/handle.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto h = shoal::Handle::decode(text);
  if (h && h.value().encode() != text) std::abort();
  return 0;
}
