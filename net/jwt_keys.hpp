#pragma once
// Start-up: the verification keys of the server from its settings — auth.jwt_secret (HS256,
// no kid, unless auth.jwt_secret_enabled = 0) and the files named by auth.jwt_keys.

#include <memory>

#include "net/server.hpp"
#include "protocols/jwt.hpp"

namespace relay::net {

/// Reads the key files. Throws std::runtime_error naming the entry when a file cannot be read or
/// holds no valid key, or when no key is left at all.
std::shared_ptr<const jwt_key_set> load_jwt_keys(const server_settings& settings);

}  // namespace relay::net
