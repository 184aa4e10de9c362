#include "test_support.hpp"

#include "layout/heap_layout.hpp"
#include "session/client.hpp"
#include "shoal/session.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

namespace shoal::test {
namespace {

std::map<std::string, ChildCase>& cases() {
  static std::map<std::string, ChildCase> m;
  return m;
}

std::string g_self_exe;

}  // namespace

bool register_child_case(const char* name, ChildCase fn) {
  cases()[name] = fn;
  return true;
}

ScopedRuntimeDir::ScopedRuntimeDir() {
  char tmpl[] = "/tmp/shoalt-XXXXXX";
  const char* p = ::mkdtemp(tmpl);
  if (p == nullptr) std::abort();
  path_ = p;
  ::setenv("SHOAL_RUNTIME_DIR", path_.c_str(), 1);
  ::unsetenv("SHOAL_SESSION");
  detail::Client::instance().reset_for_testing();
}

std::vector<std::string> ScopedRuntimeDir::entries() const {
  std::vector<std::string> out;
  if (DIR* d = ::opendir(path_.c_str())) {
    while (dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n != "." && n != "..") out.push_back(n);
    }
    ::closedir(d);
  }
  return out;
}

ScopedRuntimeDir::~ScopedRuntimeDir() {
  detail::Client::instance().reset_for_testing();
  for (const auto& n : entries()) ::unlink((path_ + "/" + n).c_str());
  ::rmdir(path_.c_str());
}

ChildProcess::ChildProcess(std::function<int()> fn) {
  std::fflush(nullptr);
  pid_ = ::fork();
  if (pid_ == 0) {
    int rc = 99;
    try {
      rc = fn();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child: %s\n", e.what());
    }
    ::_exit(rc);
  }
}

ChildProcess::ChildProcess(const std::string& case_name, const std::string& arg) {
  std::string flag = "--shoal-child=" + case_name;
  std::fflush(nullptr);
  pid_ = ::fork();
  if (pid_ == 0) {
    ::execl(g_self_exe.c_str(), g_self_exe.c_str(), flag.c_str(), arg.c_str(),
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0 && !reaped_) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
}

void ChildProcess::kill(int sig) { ::kill(pid_, sig); }

int ChildProcess::wait(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      reaped_ = true;
      if (WIFEXITED(status)) return WEXITSTATUS(status);
      if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
      return -1;
    }
    if (std::chrono::steady_clock::now() > deadline) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

pid_t broker_pid(const std::string& dir, const std::string& session_hex) {
  std::ifstream f(dir + "/" + session_hex + ".lock");
  long pid = -1;
  if (!(f >> pid)) return -1;
  return static_cast<pid_t>(pid);
}

HandlePipe::HandlePipe() {
  int fds[2];
  if (::pipe(fds) != 0) std::abort();
  rd = fds[0];
  wr = fds[1];
}
HandlePipe::~HandlePipe() {
  ::close(rd);
  ::close(wr);
}
void HandlePipe::send(const std::string& s) {
  std::string line = s + "\n";
  if (::write(wr, line.data(), line.size()) != static_cast<ssize_t>(line.size())) std::abort();
}
std::string HandlePipe::receive(std::chrono::milliseconds timeout) {
  std::string out;
  pollfd p{rd, POLLIN, 0};
  while (out.empty() || out.back() != '\n') {
    if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return "";
    char c;
    if (::read(rd, &c, 1) != 1) return "";
    out.push_back(c);
  }
  out.pop_back();
  return out;
}

void fill(Segment& s, uint8_t seed) {
  auto* p = reinterpret_cast<uint8_t*>(s.data());
  for (uint64_t i = 0; i < s.size(); ++i) p[i] = static_cast<uint8_t>(i * 31 + seed);
}

bool check(const Segment& s, uint8_t seed) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  for (uint64_t i = 0; i < s.size(); ++i) {
    if (p[i] != static_cast<uint8_t>(i * 31 + seed)) return false;
  }
  return true;
}

std::string describe(const Id128& session) {
  auto r = detail::Client::instance().describe(session);
  return r ? r.value() : "";
}

std::string heap_object_handles(const Heap& heap) {
  auto* hh = reinterpret_cast<layout::HeapHeader*>(heap.root_segment().data());
  std::ostringstream o;
  o << heap.handle(false);
  for (uint32_t i = 1; i < heap.extent_count(); ++i) {
    const layout::ExtentEntry& e = layout::heap_extents(hh)[i];
    Handle x;
    x.session = heap.root_segment().session();
    x.object = Id128{e.object_hi, e.object_lo};
    x.size = e.bytes;
    x.kind = static_cast<uint32_t>(ObjectKind::kExtent);
    o << ' ' << x.encode();
  }
  return o.str();
}

int objects_still_listed(const std::string& handles) {
  std::vector<Id128> ids;
  std::istringstream in(handles);
  for (std::string h; in >> h;) ids.push_back(Handle::decode(h).take().object);
  int n = 0;
  for (const SessionEntry& e : list_sessions()) {
    for (const Id128& id : ids) {
      if (e.describe_json.find(id.hex()) != std::string::npos) ++n;
    }
  }
  return n;
}

void expect_freed_after_kill(ChildProcess& child, const std::string& handles) {
  std::vector<std::string> each;
  std::istringstream in(handles);
  for (std::string h; in >> h;) each.push_back(h);
  ASSERT_GE(each.size(), 3u);  // the root and at least two extents
  child.kill(SIGKILL);
  child.wait();
  // Attaching to find out would hold the objects: the broker's list says.
  EXPECT_TRUE(wait_until([&] { return objects_still_listed(handles) == 0; }))
      << objects_still_listed(handles) << " still listed";
  for (const std::string& hs : each) EXPECT_THROW(Segment::attach(hs), StaleHandleError);
}

}  // namespace shoal::test

// Our own main: a re-executed child runs its case instead of the test suite.
int main(int argc, char** argv) {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n > 0) shoal::test::g_self_exe.assign(buf, static_cast<size_t>(n));
  if (argc >= 2 && std::strncmp(argv[1], "--shoal-child=", 14) == 0) {
    auto& m = shoal::test::cases();
    auto it = m.find(argv[1] + 14);
    if (it == m.end()) return 98;
    try {
      return it->second(argc >= 3 ? argv[2] : "");
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child case %s: %s\n", argv[1] + 14, e.what());
      return 99;
    }
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
