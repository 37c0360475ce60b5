#pragma once
// JWT HS256 (RFC 7519 / 7515) verification and signing with OpenSSL's HMAC.
// Pure: the clock is a parameter.

#include <cstdint>
#include <string>
#include <string_view>

#include "protocols/error.hpp"

namespace relay {

enum class role : uint8_t { user, service, admin };

std::string_view to_string(role r) noexcept;
/// "user" | "service" | "admin"; anything else is an error.
result<role> parse_role(std::string_view text);

/// Rank check: admin ⊇ service ⊇ user.
inline bool at_least(role have, role need) noexcept {
  return static_cast<int>(have) >= static_cast<int>(need);
}

struct claims {
  std::string sub;
  role who = role::user;
  int64_t exp = 0;  // seconds since epoch
  int64_t nbf = 0;  // 0: absent
};

/// Verifies a compact JWS: header `alg` must be exactly "HS256" (so `none` and others are refused),
/// signature compared in constant time, `sub` (non-empty string) and `exp` (number) required,
/// `nbf` honoured, `role` optional (default user). `now_s` and `leeway_s` in seconds.
/// Every failure is errc::unauthorized with a short reason; the token is bounded to 8 KiB.
result<claims> verify_hs256(std::string_view token, std::string_view secret, int64_t now_s,
                            int64_t leeway_s = 0);

/// Signs `{"sub","role","exp","iat"[,"nbf"]}` with HS256.
std::string sign_hs256(const claims& c, std::string_view secret, int64_t iat_s);

/// base64url without padding (RFC 4648 §5).
std::string base64url_encode(std::string_view bytes);
/// Accepts base64url without padding; rejects padding, other alphabets and impossible lengths.
result<std::string> base64url_decode(std::string_view text);

}  // namespace relay
