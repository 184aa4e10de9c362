#include "platform/platform.hpp"

#include <fcntl.h>
#include <linux/memfd.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 0x0008U
#endif
#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif

namespace shoal::platform {

void UniqueFd::reset(int fd) noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

Result<UniqueFd> create_memfd(const char* debug_name, uint64_t size) noexcept {
  int fd = ::memfd_create(debug_name, MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_NOEXEC_SEAL);
  if (fd < 0 && errno == EINVAL) {  // kernels before 6.3 do not know MFD_NOEXEC_SEAL
    fd = ::memfd_create(debug_name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  }
  if (fd < 0) return {Errc::kSystem, errno_message("memfd_create", errno)};
  UniqueFd owned(fd);
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    return {Errc::kSystem, errno_message("ftruncate of a new segment", errno)};
  }
  // Reserve every page now: running out of memory must surface here, not as SIGBUS later.
  int rc;
  do {
    rc = ::fallocate(fd, 0, 0, static_cast<off_t>(size));
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    int err = errno;
    if (err == ENOSPC || err == ENOMEM) {
      return {Errc::kOutOfSpace,
              "could not reserve " + std::to_string(size) +
                  " bytes of shared memory (the kernel refused: " + std::strerror(err) +
                  "); free memory or share a smaller object"};
    }
    return {Errc::kSystem, errno_message("fallocate of a new segment", err)};
  }
  // No process, buggy or malicious, may shrink the segment under another's mapping.
  if (::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0) {
    return {Errc::kSystem, errno_message("sealing a new segment", errno)};
  }
  return owned;
}

namespace {

Status out_of_space(uint64_t size, int err) {
  return {Errc::kOutOfSpace, "could not reserve " + std::to_string(size) +
                                 " bytes of shared memory (the kernel refused: " +
                                 std::strerror(err) + "); free memory or share a smaller object"};
}

Status reserve_range(int fd, uint64_t off, uint64_t len, uint64_t size) {
  if (len == 0) return {};
  int rc;
  do {
    rc = ::fallocate(fd, 0, static_cast<off_t>(off), static_cast<off_t>(len));
  } while (rc != 0 && errno == EINTR);
  if (rc == 0) return {};
  if (errno == ENOSPC || errno == ENOMEM) return out_of_space(size, errno);
  return {Errc::kSystem, errno_message("fallocate of a new segment", errno)};
}

}  // namespace

Result<UniqueFd> create_memfd_filled(const char* debug_name, uint64_t size, const Piece* pieces,
                                     size_t n, bool seal_read_only) noexcept {
  int fd = ::memfd_create(debug_name, MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_NOEXEC_SEAL);
  if (fd < 0 && errno == EINVAL) fd = ::memfd_create(debug_name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return {Errc::kSystem, errno_message("memfd_create", errno)};
  UniqueFd owned(fd);
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    return {Errc::kSystem, errno_message("ftruncate of a new segment", errno)};
  }
  uint64_t covered = 0;  // every byte below this is written or reserved
  for (size_t i = 0; i < n; ++i) {
    const Piece& p = pieces[i];
    if (p.offset < covered || p.offset > size || p.size > size - p.offset) {
      return {Errc::kInvalidArgument, "segment pieces overlap or exceed the segment"};
    }
    Status st = reserve_range(fd, covered, p.offset - covered, size);
    if (!st) return st;
    const auto* src = static_cast<const char*>(p.data);
    uint64_t done = 0;
    while (done < p.size) {
      // Linux moves at most ~2 GiB per call; loop over partial writes.
      size_t chunk = static_cast<size_t>(std::min<uint64_t>(p.size - done, 1ULL << 30));
      ssize_t w = ::pwrite(fd, src + done, chunk, static_cast<off_t>(p.offset + done));
      if (w < 0) {
        if (errno == EINTR) continue;
        if (errno == ENOSPC || errno == ENOMEM) return out_of_space(size, errno);
        return {Errc::kSystem, errno_message("pwrite into a new segment", errno)};
      }
      done += static_cast<uint64_t>(w);
    }
    covered = p.offset + p.size;
  }
  Status st = reserve_range(fd, covered, size - covered, size);
  if (!st) return st;
  int seals = F_SEAL_SHRINK | F_SEAL_GROW | (seal_read_only ? F_SEAL_FUTURE_WRITE : 0);
  if (::fcntl(fd, F_ADD_SEALS, seals) != 0) {
    return {Errc::kSystem, errno_message("sealing a new segment", errno)};
  }
  return owned;
}

Status check_received_fd(int fd, uint64_t size, bool* read_only) noexcept {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return {Errc::kSystem, errno_message("fstat of a segment", errno)};
  if (!S_ISREG(st.st_mode)) return {Errc::kCorrupt, "the broker sent a descriptor that is not a segment"};
  if (static_cast<uint64_t>(st.st_size) != size) {
    return {Errc::kCorrupt, "segment size " + std::to_string(st.st_size) +
                                " differs from the " + std::to_string(size) + " bytes expected"};
  }
  int seals = ::fcntl(fd, F_GET_SEALS);
  if (seals < 0 || (seals & (F_SEAL_SHRINK | F_SEAL_GROW)) != (F_SEAL_SHRINK | F_SEAL_GROW)) {
    return {Errc::kCorrupt, "segment is not sealed against resizing; refusing to map it"};
  }
  *read_only = (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)) != 0;
  return {};
}

bool sealed_read_only(int fd) noexcept {
  const int seals = ::fcntl(fd, F_GET_SEALS);
  return seals >= 0 && (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)) != 0;
}

Status seal_read_only(int fd) noexcept {
  if (::fcntl(fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE) != 0) {
    return {Errc::kSystem, errno_message("sealing a segment read-only", errno)};
  }
  return {};
}

Result<void*> map_fd(int fd, uint64_t size, bool writable, bool populate) noexcept {
  int prot = PROT_READ | (writable ? PROT_WRITE : 0);
  int flags = MAP_SHARED | (populate ? MAP_POPULATE : 0);
  void* p = ::mmap(nullptr, size, prot, flags, fd, 0);
  if (p == MAP_FAILED) {
    int err = errno;
    if (err == ENOMEM) {
      return {Errc::kOutOfSpace, "no address space left to map " + std::to_string(size) +
                                     " bytes (check ulimit -v and vm.max_map_count)"};
    }
    return {Errc::kSystem, errno_message("mmap of a segment", err)};
  }
  return p;
}

void unmap(void* addr, uint64_t size) noexcept {
  if (addr != nullptr) ::munmap(addr, size);
}

void UniqueMapping::reset() noexcept {
  unmap(addr_, size_);
  addr_ = nullptr;
}

Status protect_read_only(void* addr, uint64_t size) noexcept {
  if (::mprotect(addr, size, PROT_READ) != 0) {
    return {Errc::kSystem, errno_message("mprotect of a segment", errno)};
  }
  return {};
}

bool process_alive(pid_t pid) noexcept {
  if (pid <= 0) return false;
  return ::kill(pid, 0) == 0 || errno == EPERM;
}

namespace {
bool no_such_process(pid_t pid) noexcept { return ::kill(pid, 0) != 0 && errno == ESRCH; }
}  // namespace

uint64_t process_start_time(pid_t pid) noexcept {
  if (pid <= 0) return 0;
  char path[32];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[1024];
  ssize_t n;
  do {
    n = ::read(fd, buf, sizeof buf - 1);
  } while (n < 0 && errno == EINTR);
  ::close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  // "pid (comm) S ...": fields after the last ')' are numbered from 3 (state); starttime is 22.
  char* cur = std::strrchr(buf, ')');
  if (cur == nullptr) return 0;
  ++cur;
  for (int field = 3; field < 22; ++field) {
    while (*cur == ' ') ++cur;
    while (*cur != ' ' && *cur != '\0') ++cur;
    if (*cur == '\0') return 0;
  }
  while (*cur == ' ') ++cur;
  char* end = nullptr;
  unsigned long long v = std::strtoull(cur, &end, 10);
  if (end == cur) return 0;
  return static_cast<uint64_t>(v);
}

bool process_exited(pid_t pid) noexcept {
  if (pid <= 0) return false;
  if (::kill(pid, 0) != 0) return errno == ESRCH;  // EPERM: another user's, running or not
  // We may signal it: running, or a zombie its parent has not reaped. Only /proc tells which.
  char path[32];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return no_such_process(pid);  // reaped meanwhile, or /proc hides it: ask again
  char buf[512];
  ssize_t n;
  do {
    n = ::read(fd, buf, sizeof buf - 1);
  } while (n < 0 && errno == EINTR);
  ::close(fd);
  if (n <= 0) return no_such_process(pid);  // ESRCH from read: it was reaped meanwhile
  buf[n] = '\0';
  // "pid (comm) S ppid ...": comm may hold spaces and ')', so the state follows the last ')'.
  // Fields after it, from 1: state, ppid, pgrp, session, tty_nr, tpgid, flags, minflt,
  // cminflt, majflt, cmajflt, utime, stime, cutime, cstime, priority, nice, num_threads (18th).
  char* cur = std::strrchr(buf, ')');
  if (cur == nullptr) return false;
  ++cur;
  long field[18] = {};
  char state = 0;
  for (int i = 0; i < 18; ++i) {
    while (*cur == ' ') ++cur;
    if (*cur == '\0') return false;
    if (i == 0) {
      state = *cur++;
      continue;
    }
    char* end = nullptr;
    field[i] = std::strtol(cur, &end, 10);
    if (end == cur) return false;
    cur = end;
  }
  if (state != 'Z' && state != 'X') return false;
  // A thread-group leader that exited while its other threads run is Z too: alive.
  return field[17] <= 1;
}

UniqueFd open_pidfd(pid_t pid) noexcept {
#ifdef SYS_pidfd_open
  return UniqueFd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
#else
  (void)pid;
  return UniqueFd();
#endif
}

int pidfd_getfd(int pidfd, int target_fd) noexcept {
#ifdef SYS_pidfd_getfd
  return static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd, target_fd, 0));
#else
  (void)pidfd;
  (void)target_fd;
  errno = ENOSYS;
  return -1;
#endif
}

uint64_t monotonic_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

Status send_packet(int sock, const void* head, size_t head_len, const void* body,
                   size_t body_len, int fd) noexcept {
  iovec iov[2];
  iov[0].iov_base = const_cast<void*>(head);
  iov[0].iov_len = head_len;
  iov[1].iov_base = const_cast<void*>(body);
  iov[1].iov_len = body != nullptr ? body_len : 0;
  msghdr mh{};
  mh.msg_iov = iov;
  mh.msg_iovlen = body != nullptr ? 2 : 1;
  alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int))];
  if (fd >= 0) {
    std::memset(ctrl, 0, sizeof ctrl);
    mh.msg_control = ctrl;
    mh.msg_controllen = sizeof ctrl;
    cmsghdr* c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  }
  for (;;) {
    ssize_t r = ::sendmsg(sock, &mh, MSG_NOSIGNAL);
    if (r >= 0) return {};
    if (errno == EINTR) continue;
    if (errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN) {
      return {Errc::kSessionGone, "the peer closed the connection"};
    }
    return {Errc::kSystem, errno_message("sendmsg", errno)};
  }
}

Result<size_t> recv_packet(int sock, void* head, size_t head_len, void* body, size_t body_cap,
                           int* fd, bool* fd_dropped, int timeout_ms) noexcept {
  *fd = -1;
  *fd_dropped = false;
  if (timeout_ms >= 0) {
    pollfd p{sock, POLLIN, 0};
    uint64_t deadline = monotonic_ns() + static_cast<uint64_t>(timeout_ms) * 1000000ULL;
    for (;;) {
      uint64_t now = monotonic_ns();
      int left = now >= deadline ? 0 : static_cast<int>((deadline - now) / 1000000ULL) + 1;
      int r = ::poll(&p, 1, left);
      if (r > 0) break;
      if (r == 0) return Status{Errc::kTimeout, "the peer did not answer in time"};
      if (errno != EINTR) return Status{Errc::kSystem, errno_message("poll", errno)};
    }
  }
  iovec iov[2];
  iov[0].iov_base = head;
  iov[0].iov_len = head_len;
  iov[1].iov_base = body;
  iov[1].iov_len = body != nullptr ? body_cap : 0;
  msghdr mh{};
  mh.msg_iov = iov;
  mh.msg_iovlen = body != nullptr ? 2 : 1;
  alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int) * 4)];
  mh.msg_control = ctrl;
  mh.msg_controllen = sizeof ctrl;
  ssize_t r;
  do {
    r = ::recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
  } while (r < 0 && errno == EINTR);
  if (r == 0) return Status{Errc::kSessionGone, "the peer closed the connection"};
  if (r < 0) {
    if (errno == ECONNRESET || errno == ENOTCONN) {
      return Status{Errc::kSessionGone, "the peer closed the connection"};
    }
    return Status{Errc::kSystem, errno_message("recvmsg", errno)};
  }
  // Collect any descriptors first, so that a malformed packet never leaks one: the first is
  // kept, any others are closed.
  int got_fd = -1;
  for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c != nullptr; c = CMSG_NXTHDR(&mh, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < n; ++i) {
        int f;
        std::memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof f);
        if (got_fd < 0) {
          got_fd = f;
        } else {
          ::close(f);
        }
      }
    }
  }
  UniqueFd owned(got_fd);
  if ((mh.msg_flags & MSG_TRUNC) != 0) return Status{Errc::kDecode, "a packet was truncated"};
  *fd_dropped = (mh.msg_flags & MSG_CTRUNC) != 0;
  *fd = owned.release();
  return static_cast<size_t>(r);
}

Status check_address_space(uint64_t size) noexcept {
  void* p = ::mmap(nullptr, static_cast<size_t>(size), PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p != MAP_FAILED) {
    ::munmap(p, static_cast<size_t>(size));
    return {};
  }
  const int err = errno;
  if (err != ENOMEM) return {};  // not a lack of room: the real mapping reports what it is
  struct rlimit rl {};
  std::string limit = "unknown";
  if (::getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
    limit = std::to_string(static_cast<unsigned long long>(rl.rlim_cur)) + " bytes";
  }
  return {Errc::kOutOfSpace,
          "cannot map " + std::to_string(size) +
              " bytes: this process's address space is full (RLIMIT_AS, ulimit -v: " + limit +
              "; or vm.max_map_count); raise the limit or share a smaller object. Nothing was "
              "reserved"};
}

mode_t current_umask() noexcept {
  const int fd = ::open("/proc/thread-self/status", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    char buf[4096];
    size_t len = 0;
    for (ssize_t r; len < sizeof buf - 1 && (r = ::read(fd, buf + len, sizeof buf - 1 - len)) != 0;) {
      if (r < 0) {
        if (errno == EINTR) continue;
        break;
      }
      len += static_cast<size_t>(r);
    }
    ::close(fd);
    buf[len] = '\0';
    if (const char* line = std::strstr(buf, "\nUmask:")) {
      char* end = nullptr;
      const unsigned long mask = std::strtoul(line + 7, &end, 8);
      if (end != line + 7 && mask <= 0777) return static_cast<mode_t>(mask);
    }
  }
  // No /proc (or a kernel before 4.7): reading the umask means setting it for a moment.
  const mode_t mask = ::umask(077);
  ::umask(mask);
  return mask;
}

}  // namespace shoal::platform
