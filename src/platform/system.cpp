#include "shoal/system.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "platform/platform.hpp"

namespace shoal {
namespace {

std::optional<uint64_t> read_u64_file(const std::string& path) {
  std::ifstream f(path);
  std::string s;
  if (!(f >> s) || s == "max") return std::nullopt;
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (errno != 0 || end == s.c_str() || *end != '\0') return std::nullopt;
  return static_cast<uint64_t>(v);
}

std::string gib(uint64_t b) {
  char buf[64];
  if (b >= (1ULL << 30)) {
    std::snprintf(buf, sizeof buf, "%.2f GiB", static_cast<double>(b) / (1ULL << 30));
  } else {
    std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(b) / (1ULL << 20));
  }
  return buf;
}

// Kernel figures change while we look; keep this many bytes out of reach so that shoal is never
// the one that pushes the machine into reclaim storms or the OOM killer.
constexpr uint64_t kSafetyMargin = 64ULL << 20;
constexpr uint64_t kSmallRequest = 1ULL << 20;

// `env` names the variable that chooses `dir`, for the message that tells the user what to do.
Status check_dir(const std::string& dir, bool create, const char* env) {
  if (create) {
    // mkdir -p, each new component 0700.
    for (size_t i = 1; i <= dir.size(); ++i) {
      if (i == dir.size() || dir[i] == '/') {
        std::string part = dir.substr(0, i);
        if (::mkdir(part.c_str(), 0700) != 0 && errno != EEXIST) {
          return {Errc::kPermission, errno_message("cannot create the directory " + part, errno)};
        }
      }
    }
  }
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) {
    if (errno == ENOENT) return {Errc::kNotFound, "the directory " + dir + " does not exist"};
    return {Errc::kPermission, errno_message("cannot inspect " + dir, errno)};
  }
  if (!S_ISDIR(st.st_mode)) return {Errc::kPermission, dir + " is not a directory"};
  if (st.st_uid != ::geteuid()) {
    return {Errc::kPermission, "the directory " + dir + " belongs to uid " +
                                   std::to_string(st.st_uid) + ", not to this user (uid " +
                                   std::to_string(::geteuid()) +
                                   "); set " + env + " to a directory of your own"};
  }
  if ((st.st_mode & 077) != 0) {
    if (create && ::chmod(dir.c_str(), 0700) == 0) return {};
    return {Errc::kPermission, "the directory " + dir +
                                   " is accessible to other users; run `chmod 700 " + dir + "`"};
  }
  return {};
}

}  // namespace

uint64_t MemoryInfo::headroom() const noexcept {
  uint64_t h = mem_available > kSafetyMargin ? mem_available - kSafetyMargin : 0;
  if (cgroup_limit) {
    uint64_t cur = cgroup_current.value_or(0);
    uint64_t room = *cgroup_limit > cur + kSafetyMargin ? *cgroup_limit - cur - kSafetyMargin : 0;
    h = std::min(h, room);
  }
  return h;
}

MemoryInfo memory_info() noexcept {
  MemoryInfo mi;
  try {
    std::ifstream f("/proc/meminfo");
    std::string key;
    uint64_t val;
    std::string unit;
    while (f >> key >> val) {
      std::getline(f, unit);
      if (key == "MemAvailable:") mi.mem_available = val * 1024;
    }
    // cgroup v2: "0::/path". Walk from our cgroup up to the root; the tightest headroom wins.
    std::ifstream cg("/proc/self/cgroup");
    std::string line;
    while (std::getline(cg, line)) {
      if (line.rfind("0::", 0) != 0) continue;
      std::string rel = line.substr(3);
      std::optional<uint64_t> best_room;
      for (;;) {
        std::string base = "/sys/fs/cgroup" + (rel == "/" ? std::string() : rel);
        auto lim = read_u64_file(base + "/memory.max");
        if (lim) {
          auto cur = read_u64_file(base + "/memory.current");
          uint64_t room = *lim > cur.value_or(0) ? *lim - cur.value_or(0) : 0;
          if (!best_room || room < *best_room) {
            best_room = room;
            mi.cgroup_limit = lim;
            mi.cgroup_current = cur;
          }
        }
        if (rel == "/" || rel.empty()) break;
        size_t slash = rel.find_last_of('/');
        rel = slash == 0 ? "/" : rel.substr(0, slash);
      }
    }
    if (const char* mb = std::getenv("SHOAL_MAX_BYTES"); mb != nullptr && *mb != '\0') {
      mi.max_bytes = parse_bytes(mb);
    }
    struct statvfs sv {};
    if (::statvfs("/dev/shm", &sv) == 0) {
      mi.dev_shm_total = static_cast<uint64_t>(sv.f_blocks) * sv.f_frsize;
      mi.dev_shm_free = static_cast<uint64_t>(sv.f_bavail) * sv.f_frsize;
    }
  } catch (...) {
    // Best effort: a figure we cannot read stays empty.
  }
  return mi;
}

Status check_capacity(uint64_t bytes, uint64_t session_bytes) noexcept {
  try {
    if (const char* mb = std::getenv("SHOAL_MAX_BYTES"); mb != nullptr && *mb != '\0') {
      auto max = parse_bytes(mb);
      if (!max) {
        return {Errc::kInvalidArgument, std::string("SHOAL_MAX_BYTES='") + mb +
                                            "' is not a byte count (examples: 1073741824, 512M, 4GiB)"};
      }
      if (bytes > *max || session_bytes > *max - bytes) {
        return {Errc::kOutOfSpace,
                "cannot reserve " + gib(bytes) + " of shared memory: SHOAL_MAX_BYTES is " +
                    gib(*max) + " and this session already holds " + gib(session_bytes) +
                    "; raise SHOAL_MAX_BYTES or release objects first"};
      }
    }
    // Small requests skip the kernel figures (reading them costs more than creating a small
    // segment): a failed small fallocate still surfaces as kOutOfSpace at creation, and one
    // such request risks no more than any 1 MiB malloc does.
    if (bytes < kSmallRequest) return {};
    // The mapping is made after the pages are reserved: a process whose address space cannot
    // hold it (a lowered RLIMIT_AS) must be refused before it reserves them.
    if (Status st = platform::check_address_space(bytes); !st) return st;
    MemoryInfo mi = memory_info();
    uint64_t avail = mi.mem_available > kSafetyMargin ? mi.mem_available - kSafetyMargin : 0;
    if (bytes > avail) {
      return {Errc::kOutOfSpace,
              "cannot reserve " + gib(bytes) + " of shared memory: only " + gib(mi.mem_available) +
                  " is available (MemAvailable); free memory, share a smaller object, or "
                  "shoal.save() it to a file and shoal.load() it (the page cache can evict a file)"};
    }
    if (mi.cgroup_limit) {
      uint64_t cur = mi.cgroup_current.value_or(0);
      uint64_t room = *mi.cgroup_limit > cur + kSafetyMargin ? *mi.cgroup_limit - cur - kSafetyMargin : 0;
      if (bytes > room) {
        return {Errc::kOutOfSpace,
                "cannot reserve " + gib(bytes) + " of shared memory: the cgroup memory limit is " +
                    gib(*mi.cgroup_limit) + " and " + gib(cur) +
                    " is in use; raise the container's memory limit or share a smaller object"};
      }
    }
    return {};
  } catch (const std::bad_alloc&) {
    return {Errc::kOutOfSpace, "out of memory while checking capacity"};
  }
}

bool memfd_supported() noexcept {
  int fd = ::memfd_create("shoal-probe", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

Result<std::string> runtime_dir(bool create) noexcept {
  try {
    std::string dir;
    if (const char* d = std::getenv("SHOAL_RUNTIME_DIR"); d != nullptr && *d != '\0') {
      dir = d;
    } else if (const char* x = std::getenv("XDG_RUNTIME_DIR"); x != nullptr && *x != '\0') {
      dir = std::string(x) + "/shoal";
    } else {
      dir = "/tmp/shoal-" + std::to_string(::geteuid());
    }
    while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
    if (dir.empty() || dir[0] != '/') {
      return {Errc::kInvalidArgument, "the runtime directory must be an absolute path, got '" + dir + "'"};
    }
    // sockaddr_un holds 108 bytes: "<dir>/<32 hex>.sock" must fit.
    if (dir.size() + 1 + 32 + 5 >= 108) {
      return {Errc::kInvalidArgument, "the runtime directory path '" + dir +
                                          "' is too long for a Unix socket (at most 69 bytes); "
                                          "set SHOAL_RUNTIME_DIR to a shorter path"};
    }
    Status st = check_dir(dir, create, "SHOAL_RUNTIME_DIR");
    if (!st) return st;
    return dir;
  } catch (const std::bad_alloc&) {
    return {Errc::kSystem, "out of memory"};
  }
}

Result<std::string> named_dir(bool create) noexcept {
  try {
    std::string dir;
    if (const char* d = std::getenv("SHOAL_NAMED_DIR"); d != nullptr && *d != '\0') {
      dir = d;
    } else {
      dir = "/dev/shm/shoal-" + std::to_string(::geteuid());
    }
    while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
    Status st = check_dir(dir, create, "SHOAL_NAMED_DIR");
    if (!st) return st;
    return dir;
  } catch (const std::bad_alloc&) {
    return {Errc::kSystem, "out of memory"};
  }
}

std::optional<uint64_t> parse_bytes(const std::string& text) noexcept {
  try {
    size_t i = 0;
    while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) ++i;
    if (i == 0) return std::nullopt;
    double num = std::stod(text.substr(0, i));
    std::string unit = text.substr(i);
    while (!unit.empty() && unit.front() == ' ') unit.erase(0, 1);
    for (auto& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    double mult = 1;
    if (unit.empty() || unit == "B") {
      mult = 1;
    } else if (unit == "K" || unit == "KB" || unit == "KIB") {
      mult = 1024.0;
    } else if (unit == "M" || unit == "MB" || unit == "MIB") {
      mult = 1024.0 * 1024;
    } else if (unit == "G" || unit == "GB" || unit == "GIB") {
      mult = 1024.0 * 1024 * 1024;
    } else if (unit == "T" || unit == "TB" || unit == "TIB") {
      mult = 1024.0 * 1024 * 1024 * 1024;
    } else {
      return std::nullopt;
    }
    double v = num * mult;
    if (!std::isfinite(v) || v < 0 || v > 1.8e19) return std::nullopt;
    return static_cast<uint64_t>(v);
  } catch (...) {
    return std::nullopt;
  }
}

}  // namespace shoal
