// fuzz/robust_mutex_fuzzer.cpp — a RobustMutex (src/sync/robust_mutex.hpp) whose shared word
// another process could have set to anything: try_lock, held_by_this_process, holder_pid and
// unlock never crash and never hang (try_lock's deadline has passed, so it checks the holder
// once and answers), and a lock they report taken is this process's until unlocked. Bytes 0-3
// are the state half of the pair, bytes 4-7 the owner tag.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "sync/robust_mutex.hpp"

namespace layout = shoal::layout;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  layout::RobustMutexWord w{};
  uint32_t v = 0;
  std::memcpy(&v, data, size < 4 ? size : 4);
  // The owner tag (start time bits) too: any value must be judged without a crash.
  uint32_t t = 0;
  if (size > 4) std::memcpy(&t, data + 4, size - 4 < 4 ? size - 4 : 4);
  w.store(v, t);
  shoal::sync::RobustMutex m(&w);
  (void)m.holder_pid();
  (void)m.held_by_this_process();
  auto r = m.try_lock();
  if (r.has_value()) {
    if (!m.held_by_this_process()) std::abort();
    m.unlock();
    if (w.pair.load() != 0) std::abort();  // nobody else can be waiting on a local word
  }
  return 0;
}
