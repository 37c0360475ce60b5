// The actor tests' main: CAF's test engine (for the deterministic coordinator of caf/test/dsl.hpp)
// without its own main, and GoogleTest driving the tests.
#define CAF_TEST_NO_MAIN
#include <gtest/gtest.h>

#include <caf/test/unit_test_impl.hpp>

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
