// src/segment/named.cpp — named, persistent segments: plain files in named_dir() (see segment.hpp).
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "session/client.hpp"
#include "session/segment_header.hpp"
#include "layout/segment_layout.hpp"
#include "shoal/segment.hpp"
#include "shoal/system.hpp"

namespace shoal {
namespace {

using platform::UniqueFd;

// Names are file names in one directory: no '/', no leading '.', nothing a shell must quote.
Status check_name(const std::string& name) {
  if (name.empty() || name.size() > 200) {
    return {Errc::kInvalidArgument, "a segment name has 1 to 200 characters, got " +
                                        std::to_string(name.size())};
  }
  if (name[0] == '.' || name[0] == '-') {
    return {Errc::kInvalidArgument, "a segment name may not start with '.' or '-': '" + name + "'"};
  }
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.')) {
      return {Errc::kInvalidArgument, "a segment name uses letters, digits, '_', '-' and '.' "
                                      "only: '" + name + "'"};
    }
  }
  return {};
}

std::string path_of(const std::string& name, bool create) {
  check_name(name).throw_if_error();
  return named_dir(create).take() + "/" + name;
}

std::shared_ptr<detail::Mapping> map_named(const std::string& name, int fd, uint64_t total,
                                           bool writable) {
  void* base = platform::map_fd(fd, total, writable, false).take();
  Status st = validate_segment_header(base, total, Id128{});
  if (!st) {
    platform::unmap(base, total);
    throw_error(st.code(), "named segment '" + name + "': " + st.message());
  }
  auto m = std::make_shared<detail::Mapping>();
  m->base = static_cast<std::byte*>(base);
  m->total = total;
  m->kind = static_cast<ObjectKind>(reinterpret_cast<layout::SegmentHeader*>(base)->kind);
  m->read_only = !writable;
  m->name = name;
  Id128 id{reinterpret_cast<layout::SegmentHeader*>(base)->object_hi,
           reinterpret_cast<layout::SegmentHeader*>(base)->object_lo};
  m->object = id;
  return m;
}

}  // namespace

Segment Segment::create_named(const std::string& name, uint64_t size, ObjectKind kind) {
  const std::string path = path_of(name, true);
  if (size > layout::kMaxSegmentBytes) throw_error(Errc::kInvalidArgument, "segment size is absurd");
  const uint64_t total = size + layout::kSegmentHeaderSize;
  check_capacity(total).throw_if_error();
  MemoryInfo mi = memory_info();
  if (mi.dev_shm_total != 0 && total > mi.dev_shm_free && path.rfind("/dev/shm/", 0) == 0) {
    throw_error(Errc::kOutOfSpace,
                "cannot create named segment '" + name + "' of " + std::to_string(total) +
                    " bytes: /dev/shm has " + std::to_string(mi.dev_shm_free) +
                    " bytes free (Docker's default is 64 MB: run with --shm-size, or set "
                    "SHOAL_NAMED_DIR to a larger tmpfs)");
  }
  UniqueFd fd(::open(path.c_str(), O_CREAT | O_EXCL | O_RDWR | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd.valid()) {
    if (errno == EEXIST) {
      throw_error(Errc::kExists, "named segment '" + name + "' already exists (" + path +
                                     "); open it, or remove it with `shoal rm " + name + "`");
    }
    throw_error(Errc::kSystem, errno_message("cannot create " + path, errno));
  }
  auto fail = [&](Errc code, const std::string& msg) {
    ::unlink(path.c_str());  // never leave a half-made segment behind
    throw_error(code, msg);
  };
  if (::ftruncate(fd.get(), static_cast<off_t>(total)) != 0) {
    fail(Errc::kSystem, errno_message("ftruncate " + path, errno));
  }
  int rc;
  do {
    rc = ::fallocate(fd.get(), 0, 0, static_cast<off_t>(total));
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    if (errno == ENOSPC || errno == ENOMEM) {
      fail(Errc::kOutOfSpace, "no space for named segment '" + name + "' in " + path);
    }
    // Without a reservation a later page fault could SIGBUS: refuse rather than risk it.
    fail(Errc::kSystem, errno_message("cannot reserve pages for " + path +
                                          " (SHOAL_NAMED_DIR must be a filesystem with fallocate)",
                                      errno));
  }
  auto mapped = platform::map_fd(fd.get(), total, true, false);
  if (!mapped) fail(mapped.status().code(), mapped.status().message());
  detail::init_segment_header(static_cast<layout::SegmentHeader*>(mapped.value()),
                              Id128::random(), kind, total);
  platform::unmap(mapped.value(), total);
  return Segment(map_named(name, fd.get(), total, true));
}

Segment Segment::open_named(const std::string& name, bool writable) {
  const std::string path = path_of(name, false);
  // O_NONBLOCK: a FIFO put here would make a read-only open wait for a writer; the fstat below
  // refuses it (the descriptor is only mapped, never read, so the flag changes nothing else).
  UniqueFd fd(::open(path.c_str(),
                     (writable ? O_RDWR : O_RDONLY) | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (!fd.valid()) {
    if (errno == ENOENT) {
      throw_error(Errc::kNotFound, "no named segment '" + name + "' (looked in " + path +
                                       "); `shoal ls` lists the existing ones");
    }
    throw_error(Errc::kSystem, errno_message("cannot open " + path, errno));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw_error(Errc::kSystem, errno_message("fstat " + path, errno));
  if (!S_ISREG(st.st_mode) || st.st_uid != ::geteuid() || (st.st_mode & 077) != 0) {
    throw_error(Errc::kPermission, path + " is not a private regular file of this user; refusing it");
  }
  if (static_cast<uint64_t>(st.st_size) < layout::kSegmentHeaderSize) {
    throw_error(Errc::kCorrupt, "named segment '" + name + "' is truncated: " +
                                    std::to_string(st.st_size) + " bytes, less than its header");
  }
  return Segment(map_named(name, fd.get(), static_cast<uint64_t>(st.st_size), writable));
}

void Segment::remove_named(const std::string& name) {
  const std::string path = path_of(name, false);
  if (::unlink(path.c_str()) != 0) {
    if (errno == ENOENT) {
      throw_error(Errc::kNotFound, "no named segment '" + name + "' to remove (looked in " +
                                       path + ")");
    }
    throw_error(Errc::kSystem, errno_message("cannot remove " + path, errno));
  }
}

std::vector<NamedEntry> list_named() {
  std::vector<NamedEntry> out;
  auto dir = named_dir(false);
  if (!dir) return out;
  DIR* d = ::opendir(dir.value().c_str());
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n.empty() || n[0] == '.') continue;
    NamedEntry ne;
    ne.name = n;
    ne.path = dir.value() + "/" + n;
    // O_NONBLOCK and S_ISREG: `shoal ls` must not wait on a FIFO, nor read from a device.
    UniqueFd fd(::open(ne.path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
    struct stat st {};
    if (fd.valid() && ::fstat(fd.get(), &st) == 0 && S_ISREG(st.st_mode) &&
        static_cast<uint64_t>(st.st_size) >= layout::kSegmentHeaderSize) {
      layout::SegmentHeader h;
      if (::pread(fd.get(), static_cast<void*>(&h), sizeof h, 0) == static_cast<ssize_t>(sizeof h)) {
        // The validator reads only the 64 header bytes; the file's size stands for the mapping's.
        ne.valid = validate_segment_header(&h, static_cast<uint64_t>(st.st_size), Id128{}).is_ok();
        if (ne.valid) ne.size = h.size - layout::kSegmentHeaderSize;
      }
    }
    out.push_back(std::move(ne));
  }
  ::closedir(d);
  return out;
}

}  // namespace shoal
