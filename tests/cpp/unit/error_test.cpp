// tests/cpp/unit/error_test.cpp — the error vocabulary is closed and complete: every Errc up to
// the kCount end marker has a name and throws its own exception class carrying that code.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "shoal/error.hpp"

namespace shoal {
namespace {

TEST(Errc, EveryCodeHasANameAndThrowsAnErrorCarryingIt) {
  std::set<std::string> names;
  for (int i = 1; i < static_cast<int>(Errc::kCount); ++i) {
    const auto code = static_cast<Errc>(i);
    const std::string name(errc_name(code));
    EXPECT_NE(name, "unknown") << "code " << i;
    EXPECT_TRUE(names.insert(name).second) << "two codes named " << name;
    try {
      throw_error(code, "message " + std::to_string(i));
      ADD_FAILURE() << "throw_error returned for code " << i;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), code);
      EXPECT_EQ(std::string(e.what()), "message " + std::to_string(i));
    }
  }
  EXPECT_EQ(errc_name(Errc::kCount), "unknown");
}

TEST(Errc, ALockTimeoutIsATimeout) {
  try {
    throw_error(Errc::kLockTimeout, "waited");
  } catch (const ShoalTimeoutError& e) {
    EXPECT_EQ(e.code(), Errc::kLockTimeout);
    EXPECT_NE(dynamic_cast<const LockTimeoutError*>(&e), nullptr);
  }
  EXPECT_THROW(throw_error(Errc::kTimeout, "broker"), ShoalTimeoutError);
  try {
    throw_error(Errc::kTimeout, "broker");
  } catch (const Error& e) {
    EXPECT_EQ(dynamic_cast<const LockTimeoutError*>(&e), nullptr);  // generic, not a lock's
  }
}

}  // namespace
}  // namespace shoal
