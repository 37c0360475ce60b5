#pragma once
// The behaviour every storage backend must have (storage/store.hpp), as one value-parameterised
// GoogleTest suite: the tests live in store_conformance_test.cpp, and each backend's test file
// instantiates them with a factory that makes a fresh, empty, migrated store per test.

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>

#include "storage/store.hpp"

namespace relay::storage::test {

/// Makes a fresh, empty store with its migrations applied (each call: a new database or schema).
struct store_factory {
  std::string name;  // the backend, for test names
  std::function<std::unique_ptr<store>()> make;
};

inline std::ostream& operator<<(std::ostream& os, const store_factory& f) { return os << f.name; }

/// The end of a factory: `db` migrated and handed to `owner` (a store that owns where the database
/// lives and forwards to it); null, after a test failure, when it cannot be opened or migrated.
template <class Owner>
std::unique_ptr<store> adopt_migrated(std::unique_ptr<Owner> owner,
                                      result<std::unique_ptr<store>> db) {
  if (!db) {
    ADD_FAILURE() << db.err().message;
    return nullptr;
  }
  if (auto v = (*db)->migrate(); !v) {
    ADD_FAILURE() << v.err().message;
    return nullptr;
  }
  owner->adopt(std::move(*db));
  return owner;
}

class store_conformance : public ::testing::TestWithParam<store_factory> {
 protected:
  void SetUp() override {
    db_ = GetParam().make();
    ASSERT_TRUE(db_) << "the " << GetParam().name << " factory made no store";
  }
  store& db() { return *db_; }

 private:
  std::unique_ptr<store> db_;
};

}  // namespace relay::storage::test
