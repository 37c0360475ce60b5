#include "net/jwt_keys.hpp"

#include <fstream>
#include <sstream>
#include <stdexcept>

namespace relay::net {

namespace {

std::string read_key_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("auth.jwt_keys: cannot read " + path);
  std::ostringstream text;
  text << in.rdbuf();
  auto bytes = text.str();
  if (bytes.size() > 64 * 1024)
    throw std::runtime_error("auth.jwt_keys: " + path + " is too large");
  return bytes;
}

}  // namespace

std::shared_ptr<const jwt_key_set> load_jwt_keys(const server_settings& settings) {
  auto set = std::make_shared<jwt_key_set>();
  if (settings.jwt_secret_enabled && !settings.jwt_secret.empty()) {
    auto k = jwt_key::hs256({}, settings.jwt_secret);
    if (k) set->keys.push_back(std::move(*k));
  }
  auto refs = parse_jwt_key_list(settings.jwt_keys);
  if (!refs) throw std::runtime_error("auth.jwt_keys: " + refs.err().message);
  for (auto& ref : *refs) {
    auto bytes = read_key_file(ref.path);
    result<jwt_key> k = error{errc::internal, ""};
    if (ref.alg == jwt_alg::rs256) {
      k = jwt_key::rs256_public_pem(ref.kid, bytes);
    } else {
      // A secret file written by `echo` or an editor ends in a newline that is not part of it.
      while (!bytes.empty() && (bytes.back() == '\n' || bytes.back() == '\r')) bytes.pop_back();
      k = jwt_key::hs256(ref.kid, std::move(bytes));
    }
    if (!k) throw std::runtime_error("auth.jwt_keys: " + ref.path + ": " + k.err().message);
    set->keys.push_back(std::move(*k));
  }
  if (set->keys.empty())
    throw std::runtime_error("no token verification key: set auth.jwt_secret or auth.jwt_keys");
  return set;
}

}  // namespace relay::net
