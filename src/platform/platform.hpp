// src/platform/platform.hpp — every OS call shoal makes, behind small Status-returning helpers.
// Linux only for now. Nothing here throws; nothing here knows about sessions or handles.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "shoal/error.hpp"

namespace shoal::platform {

/// A file descriptor that closes itself.
class UniqueFd {
 public:
  UniqueFd() noexcept = default;
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) reset(o.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }
  int get() const noexcept { return fd_; }
  bool valid() const noexcept { return fd_ >= 0; }
  int release() noexcept {
    int f = fd_;
    fd_ = -1;
    return f;
  }
  void reset(int fd = -1) noexcept;

 private:
  int fd_ = -1;
};

/// A mapping that unmaps itself (munmap of `size` bytes at `addr`).
class UniqueMapping {
 public:
  UniqueMapping() noexcept = default;
  UniqueMapping(void* addr, uint64_t size) noexcept : addr_(addr), size_(size) {}
  UniqueMapping(UniqueMapping&& o) noexcept : addr_(o.addr_), size_(o.size_) { o.addr_ = nullptr; }
  UniqueMapping& operator=(UniqueMapping&& o) noexcept {
    if (this != &o) {
      reset();
      addr_ = o.addr_;
      size_ = o.size_;
      o.addr_ = nullptr;
    }
    return *this;
  }
  UniqueMapping(const UniqueMapping&) = delete;
  UniqueMapping& operator=(const UniqueMapping&) = delete;
  ~UniqueMapping() { reset(); }
  void* get() const noexcept { return addr_; }
  void reset() noexcept;

 private:
  void* addr_ = nullptr;
  uint64_t size_ = 0;
};

// ---- segments ----------------------------------------------------------------------------

/// memfd_create(MFD_CLOEXEC|MFD_ALLOW_SEALING[|MFD_NOEXEC_SEAL]) sized to `size` bytes, with
/// every page reserved (fallocate) and sealed against shrink and grow, so no later access can
/// SIGBUS. PRECONDITION: capacity was checked (check_capacity).
Result<UniqueFd> create_memfd(const char* debug_name, uint64_t size) noexcept;

/// Bytes to place at `offset` of a new segment.
struct Piece {
  uint64_t offset;
  const void* data;
  uint64_t size;
};

/// Like create_memfd, but the content is written with pwrite (the kernel allocates and fills
/// each page in one pass: no page faults, no zeroing first) and only the holes between pieces
/// are reserved with fallocate. With `seal_read_only`, F_SEAL_FUTURE_WRITE is added too.
/// PRECONDITION: pieces are sorted, do not overlap and lie inside [0, size).
Result<UniqueFd> create_memfd_filled(const char* debug_name, uint64_t size, const Piece* pieces,
                                     size_t n, bool seal_read_only) noexcept;

/// Validates a descriptor received from a broker: a regular file of exactly `size` bytes, sealed
/// against shrink and grow. Sets *read_only when it is sealed against writing.
Status check_received_fd(int fd, uint64_t size, bool* read_only) noexcept;

/// Whether the memfd is sealed against writing (F_SEAL_WRITE or F_SEAL_FUTURE_WRITE); false
/// when its seals cannot be read.
bool sealed_read_only(int fd) noexcept;

/// Seals the memfd against any new writable mapping (F_SEAL_FUTURE_WRITE); existing mappings
/// keep their protection, so the caller mprotects its own mapping read-only as well.
Status seal_read_only(int fd) noexcept;

/// Whether this process's address space has room to map `size` more bytes (RLIMIT_AS, the
/// ulimit -v of the shell), found by reserving that much address space (PROT_NONE, nothing
/// committed) and giving it back. Run before a segment reserves its pages, so that a mapping
/// that cannot be made fails before any memory is taken. kOutOfSpace with the limit, or ok.
Status check_address_space(uint64_t size) noexcept;

/// mmap(MAP_SHARED) of the whole file; PROT_READ only when !writable.
Result<void*> map_fd(int fd, uint64_t size, bool writable, bool populate) noexcept;
void unmap(void* addr, uint64_t size) noexcept;
Status protect_read_only(void* addr, uint64_t size) noexcept;

// ---- files --------------------------------------------------------------------------------

/// The calling thread's umask, read without changing it: the "Umask:" line of
/// /proc/thread-self/status (Linux 4.7+). Without it, umask(2) is set to 077 and restored; a
/// thread creating a file in between gets a file too private, never too open.
mode_t current_umask() noexcept;

// ---- processes ---------------------------------------------------------------------------

/// True if a process with this pid exists (signal 0; EPERM counts as alive).
bool process_alive(pid_t pid) noexcept;

/// True only when the process `pid` has certainly ended: no such pid (ESRCH), or a zombie not
/// yet reaped whose threads have all exited (/proc/<pid>/stat: state Z or X, num_threads 1; a
/// process whose main thread alone has exited is also Z, but counts its live threads). A
/// process of another user (EPERM) or one /proc cannot describe counts as running. For lock
/// holders: a SIGKILLed holder stays a zombie until its parent reaps it, and is dead.
bool process_exited(pid_t pid) noexcept;

/// The start time of process `pid` (field 22 of /proc/<pid>/stat: clock ticks after boot),
/// or 0 when /proc cannot describe it (no such pid, reaped meanwhile, hidden). Two processes
/// that held one pid at different times have different start times unless both started in
/// the same tick: what a lock word stores beside a pid so that a reused pid is not mistaken
/// for the holder it replaced. A zombie keeps its start time.
uint64_t process_start_time(pid_t pid) noexcept;

/// A pidfd for `pid` (pidfd_open(2)), or an invalid fd (kernel before 5.3, or a sandbox that
/// forbids it).
UniqueFd open_pidfd(pid_t pid) noexcept;

/// A copy of descriptor `target_fd` of the process behind `pidfd` (pidfd_getfd(2), Linux 5.6:
/// one system call, no path walk through /proc, and no open() of whatever the number names).
/// -1 with errno set on failure; EPERM where ptrace rules (Yama) forbid it.
int pidfd_getfd(int pidfd, int target_fd) noexcept;

/// Monotonic clock in nanoseconds.
uint64_t monotonic_ns() noexcept;

/// One round of a spin-wait: the CPU's pause hint (x86 `pause`, Arm `yield`), which lets a
/// sibling hyperthread run and saves power while a waiter polls a word another core will change.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

// ---- sockets ----------------------------------------------------------------------------

/// Sends one SEQPACKET packet: `head`, then `body` (when not null), and `fd` as SCM_RIGHTS when
/// fd >= 0. kSessionGone when the peer has closed the connection.
Status send_packet(int sock, const void* head, size_t head_len, const void* body = nullptr,
                   size_t body_len = 0, int fd = -1) noexcept;

/// Receives one packet into `head` and then `body` (up to body_cap; body may be null) and returns
/// its length. kSessionGone on EOF or reset, kTimeout after `timeout_ms` (< 0: wait forever),
/// kDecode when the packet was longer than head_len + body_cap. A received descriptor is stored
/// in *fd (else -1; extra ones are closed); *fd_dropped is set when the kernel dropped one
/// because this process is out of descriptors.
Result<size_t> recv_packet(int sock, void* head, size_t head_len, void* body, size_t body_cap,
                           int* fd, bool* fd_dropped, int timeout_ms) noexcept;

}  // namespace shoal::platform
