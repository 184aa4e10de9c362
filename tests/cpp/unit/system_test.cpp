#include "shoal/system.hpp"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "test_support.hpp"

namespace shoal {
namespace {

TEST(ParseBytes, AcceptsPlainAndSuffixedCounts) {
  EXPECT_EQ(parse_bytes("1073741824"), 1073741824ULL);
  EXPECT_EQ(parse_bytes("512M"), 512ULL << 20);
  EXPECT_EQ(parse_bytes("4GiB"), 4ULL << 30);
  EXPECT_EQ(parse_bytes("1.5g"), 3ULL << 29);
  EXPECT_FALSE(parse_bytes(""));
  EXPECT_FALSE(parse_bytes("lots"));
  EXPECT_FALSE(parse_bytes("12Q"));
}

TEST(Capacity, MoreThanMemAvailableIsOutOfSpaceSayingWhatToDo) {
  MemoryInfo mi = memory_info();
  ASSERT_GT(mi.mem_available, 0u);
  Status st = check_capacity(mi.mem_available * 2);
  EXPECT_EQ(st.code(), Errc::kOutOfSpace);
  EXPECT_NE(st.message().find("MemAvailable"), std::string::npos) << st.message();
  EXPECT_TRUE(check_capacity(1 << 20).is_ok());
}

TEST(Capacity, ShoalMaxBytesLimitsTheSession) {
  ::setenv("SHOAL_MAX_BYTES", "8M", 1);
  EXPECT_TRUE(check_capacity(4 << 20, 0).is_ok());
  Status st = check_capacity(4 << 20, 6 << 20);
  EXPECT_EQ(st.code(), Errc::kOutOfSpace);
  EXPECT_NE(st.message().find("SHOAL_MAX_BYTES"), std::string::npos);
  ::setenv("SHOAL_MAX_BYTES", "bogus", 1);
  EXPECT_EQ(check_capacity(1).code(), Errc::kInvalidArgument);
  ::unsetenv("SHOAL_MAX_BYTES");
}

TEST(RuntimeDir, IsCreatedPrivateAndRefusedWhenOthersCanEnter) {
  test::ScopedRuntimeDir rd;
  std::string sub = rd.path() + "/nested";
  ::setenv("SHOAL_RUNTIME_DIR", sub.c_str(), 1);
  auto d = runtime_dir(true);
  ASSERT_TRUE(d) << d.status().message();
  struct stat st {};
  ASSERT_EQ(::stat(sub.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ::chmod(sub.c_str(), 0755);
  auto again = runtime_dir(false);
  EXPECT_EQ(again.status().code(), Errc::kPermission);
  EXPECT_NE(again.status().message().find("chmod 700"), std::string::npos);
  ::rmdir(sub.c_str());
  ::setenv("SHOAL_RUNTIME_DIR", rd.path().c_str(), 1);
}

TEST(RuntimeDir, TooLongForASocketPathIsRefused) {
  std::string longdir = "/tmp/" + std::string(90, 'x');
  ::setenv("SHOAL_RUNTIME_DIR", longdir.c_str(), 1);
  auto d = runtime_dir(false);
  EXPECT_EQ(d.status().code(), Errc::kInvalidArgument);
  ::unsetenv("SHOAL_RUNTIME_DIR");
}

TEST(Memfd, IsSupportedHere) { EXPECT_TRUE(memfd_supported()); }

}  // namespace
}  // namespace shoal
