// python/bindings/nesting.cpp — the bound on nesting for every recursive walk of the bindings.
//
// freeze, thaw and key hashing recurse in C, once per level of the tree; the views' __repr__,
// __eq__ and __hash__ recurse through Python. Python's recursion limit protects the C stack only
// while it is left near its default: after `sys.setrecursionlimit(10**6)` a tree 25,000 levels
// deep overflowed the 8 MiB stack and the process died with SIGSEGV. So each level also checks
// the C stack itself and raises RecursionError while enough of it is left to raise, unwind and
// report (kept free below: `reserve`). The depth this allows therefore depends on the thread's
// stack size and on the walk (measured: docs/design/frozen.md, "Nesting").
#include <pthread.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "bindings.hpp"

namespace shoal::py {
namespace {

// The lowest address this thread's stack may reach before a walk refuses to go deeper; 0 until
// first asked, 1 when the stack's bounds are unknown (then only Python's limit applies).
thread_local uintptr_t t_stack_floor = 0;

uintptr_t stack_floor() noexcept {
  if (t_stack_floor != 0) return t_stack_floor;
  uintptr_t floor = 1;
  pthread_attr_t attr;
  if (pthread_getattr_np(pthread_self(), &attr) == 0) {
    void* addr = nullptr;
    size_t size = 0;
    if (pthread_attr_getstack(&attr, &addr, &size) == 0 && size > 0) {
      // What must stay free below the deepest check: one level's frames (a few KiB), a leaf's
      // own repr or unpickling, and raising and formatting the RecursionError. An eighth of the
      // stack (1 MiB of the usual 8), at least 256 KiB or half of a small thread stack.
      const size_t reserve = std::max(size / 8, std::min(size / 2, size_t{256} << 10));
      floor = reinterpret_cast<uintptr_t>(addr) + reserve;
    }
    pthread_attr_destroy(&attr);
  }
  t_stack_floor = floor;
  return floor;
}

}  // namespace

bool stack_exhausted() noexcept {
  // The frame address, not a local's: under ASan's fake stacks a local may live on the heap.
  const auto here = reinterpret_cast<uintptr_t>(__builtin_frame_address(0));
  return here < stack_floor();
}

int check_stack(const char* where) noexcept {
  if (!stack_exhausted()) [[likely]] return 0;
  PyErr_Format(PyExc_RecursionError,
               "shoal: nesting too deep%s: the C stack is nearly used up (whatever "
               "sys.setrecursionlimit() allows); flatten the data or run this in a thread with a "
               "bigger stack (threading.stack_size())",
               where);
  return -1;
}

int enter_nested(const char* where) noexcept {
  if (Py_EnterRecursiveCall(where) != 0) return -1;
  if (check_stack(where) != 0) {
    Py_LeaveRecursiveCall();
    return -1;
  }
  return 0;
}

void leave_nested() noexcept { Py_LeaveRecursiveCall(); }

}  // namespace shoal::py
