#pragma once
// JWT (RFC 7519 / 7515) verification and signing: HS256 (OpenSSL HMAC) and RS256 (OpenSSL EVP,
// public keys from PEM), a key set selected by the header's `kid` for rotation.
// Pure: the clock is a parameter; key material is handed in as bytes (no file access).

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

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
  /// The optional `rooms` claim: glob patterns of the rooms this subject may use
  /// (protocols/room_access.hpp). nullopt: no restriction; an empty list: no room at all.
  std::optional<std::vector<std::string>> rooms;
};

/// Bounds on the `rooms` claim, so a hostile token cannot make every room check expensive.
inline constexpr std::size_t max_room_patterns = 32;
inline constexpr std::size_t max_room_pattern_bytes = 128;

enum class jwt_alg : uint8_t { hs256, rs256 };
std::string_view to_string(jwt_alg a) noexcept;

/// One verification key: an HMAC secret (HS256) or an RSA public key (RS256), with its `kid`
/// ("" for a key without one). A key only ever verifies its own algorithm: an RS256 public key is
/// never used as an HMAC secret, whatever a token's `alg` says.
class jwt_key {
 public:
  /// An HS256 secret; empty secrets are refused (anyone could guess them).
  static result<jwt_key> hs256(std::string kid, std::string secret);
  /// An RS256 public key from PEM text (SubjectPublicKeyInfo "PUBLIC KEY" or PKCS#1
  /// "RSA PUBLIC KEY"); at least 2048 bits. Errors are bad_request with the reason.
  static result<jwt_key> rs256_public_pem(std::string kid, std::string_view pem);

  const std::string& kid() const noexcept { return kid_; }
  jwt_alg alg() const noexcept { return alg_; }

  /// True when `signature` is this key's signature of `signing_input` (constant time for HS256).
  bool verify(std::string_view signing_input, std::string_view signature) const;

 private:
  struct rsa_key;
  std::string kid_;
  jwt_alg alg_ = jwt_alg::hs256;
  std::string secret_;                  // hs256
  std::shared_ptr<const rsa_key> rsa_;  // rs256 (immutable, shared by copies)
};

/// The keys a server accepts. A token with a `kid` header is verified with the key of that kid
/// only (unknown kid: refused); a token without one with every key of its `alg` (bounded by
/// max_keys), so tokens minted before kids were configured keep working during a rotation.
struct jwt_key_set {
  static constexpr std::size_t max_keys = 16;
  std::vector<jwt_key> keys;
};

/// One entry of the `auth.jwt_keys` option: a kid, its algorithm and the file holding the key (a
/// PEM public key for RS256, the secret's bytes for HS256).
struct jwt_key_ref {
  std::string kid;
  jwt_alg alg = jwt_alg::rs256;
  std::string path;
};

/// A kid this server configures and mints: [A-Za-z0-9._-]{1,64}.
bool valid_kid(std::string_view kid) noexcept;

/// Parses `kid=ALG:path` entries separated by commas (blanks around them ignored), e.g.
/// `2026-12=RS256:/etc/relay/rs-2026-12.pem, old=HS256:/etc/relay/hs-old.key`. kid:
/// [A-Za-z0-9._-]{1,64}, unique; ALG: HS256 or RS256; path: non-empty, no comma. Empty text: no
/// keys. Errors are bad_request naming the entry.
result<std::vector<jwt_key_ref>> parse_jwt_key_list(std::string_view text);

/// Verifies a compact JWS against a key set: header `alg` must be exactly "HS256" or "RS256" and
/// match the selected key's algorithm (so `none` and HS/RS confusion are refused), `sub` and `exp`
/// required, `nbf` honoured, `role` optional, `rooms` optional (an array of at most
/// max_room_patterns valid patterns). `now_s`, `leeway_s` in seconds. Every failure is
/// errc::unauthorized with a short reason; the token is bounded to 8 KiB.
result<claims> verify_jwt(std::string_view token, const jwt_key_set& keys, int64_t now_s,
                          int64_t leeway_s = 0);

/// Verifies a compact JWS: header `alg` must be exactly "HS256" (so `none` and others are refused),
/// signature compared in constant time, `sub` (non-empty string) and `exp` (number) required,
/// `nbf` honoured, `role` optional (default user). `now_s` and `leeway_s` in seconds.
/// Every failure is errc::unauthorized with a short reason; the token is bounded to 8 KiB.
result<claims> verify_hs256(std::string_view token, std::string_view secret, int64_t now_s,
                            int64_t leeway_s = 0);

/// Milliseconds from `now_ms` until a token with `exp` stops verifying (now > exp + leeway, in
/// whole seconds): <= 0 once expired. Live connections wait this long, then end.
int64_t token_ms_left(int64_t exp, int64_t leeway_s, int64_t now_ms) noexcept;

/// Signs `{"sub","role","exp","iat"[,"nbf"][,"rooms"]}` with HS256 (`kid` in the header unless
/// empty).
std::string sign_hs256(const claims& c, std::string_view secret, int64_t iat_s,
                       std::string_view kid = {});
/// The same with RS256 and an RSA private key in PEM. Errors are bad_request (unreadable key).
result<std::string> sign_rs256(const claims& c, std::string_view private_pem, int64_t iat_s,
                               std::string_view kid = {});

/// base64url without padding (RFC 4648 §5).
std::string base64url_encode(std::string_view bytes);
/// Accepts base64url without padding; rejects padding, other alphabets and impossible lengths.
result<std::string> base64url_decode(std::string_view text);

}  // namespace relay
