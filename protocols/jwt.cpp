#include "protocols/jwt.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <array>
#include <boost/json.hpp>
#include <climits>
#include <cmath>
#include <optional>
#include <stdexcept>

namespace relay {

namespace json = boost::json;

namespace {

constexpr std::size_t max_token_bytes = 8 * 1024;
constexpr std::size_t max_sub_bytes = 256;
// Header and claims are flat objects; a little nesting for custom claims is plenty.
constexpr std::size_t max_json_depth = 16;
constexpr std::size_t hs256_bytes = 32;

constexpr char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

// Maps a byte to its 6-bit value, or -1 for anything outside the base64url alphabet
// (so '=', '+', '/', whitespace and NUL are all refused).
constexpr std::array<int8_t, 256> make_b64url_table() {
  std::array<int8_t, 256> t{};
  for (auto& v : t) v = -1;
  for (int i = 0; i < 64; ++i) t[static_cast<unsigned char>(b64url_alphabet[i])] = static_cast<int8_t>(i);
  return t;
}
constexpr auto b64url_table = make_b64url_table();

error unauthorized(std::string message) { return {errc::unauthorized, std::move(message)}; }

/// HMAC-SHA256 of `data` under `secret`; false on an OpenSSL failure.
bool hmac_sha256(std::string_view secret, std::string_view data,
                 std::array<unsigned char, hs256_bytes>& out) {
  if (secret.size() > static_cast<std::size_t>(INT_MAX)) return false;
  unsigned int len = 0;
  // An empty string_view may hold a null pointer, and OpenSSL reads a null key as "no key given"
  // rather than "empty key", so always pass a real address.
  static const char empty_key = 0;
  const void* key = secret.empty() ? &empty_key : secret.data();
  const unsigned char* md =
      HMAC(EVP_sha256(), key, static_cast<int>(secret.size()),
           reinterpret_cast<const unsigned char*>(data.data()), data.size(), out.data(), &len);
  return md != nullptr && len == hs256_bytes;
}

/// Decodes one base64url JSON segment of the token into an object.
result<json::object> decode_json_segment(std::string_view segment, std::string_view what) {
  auto bytes = base64url_decode(segment);
  if (!bytes) return unauthorized(std::string{what} + " is not base64url");
  json::parse_options options;
  options.max_depth = max_json_depth;
  json::error_code ec;
  json::value v;
  try {
    v = json::parse(*bytes, ec, json::storage_ptr{}, options);
  } catch (const std::length_error&) {
    return unauthorized(std::string{what} + " is not valid JSON");
  }
  if (ec || !v.is_object()) return unauthorized(std::string{what} + " is not a JSON object");
  return std::move(v.get_object());
}

/// A NumericDate as whole seconds. Integers are taken as they are; a double only when it holds an
/// integral value inside int64 (some encoders write 1.7E9). Anything else is refused.
std::optional<int64_t> as_seconds(const json::value& v) {
  if (v.is_int64()) return v.get_int64();
  if (v.is_uint64()) {
    if (v.get_uint64() > static_cast<uint64_t>(INT64_MAX)) return std::nullopt;
    return static_cast<int64_t>(v.get_uint64());
  }
  if (v.is_double()) {
    double d = v.get_double();
    // 2^63 is exactly representable; the open upper bound keeps the cast defined.
    if (!std::isfinite(d) || d != std::trunc(d) || d < -9223372036854775808.0 ||
        d >= 9223372036854775808.0) {
      return std::nullopt;
    }
    return static_cast<int64_t>(d);
  }
  return std::nullopt;
}

// a + b clamped to int64's range: exp, nbf come from the token and may sit at the extremes.
int64_t saturating_add(int64_t a, int64_t b) noexcept {
  int64_t r = 0;
  if (__builtin_add_overflow(a, b, &r)) return b > 0 ? INT64_MAX : INT64_MIN;
  return r;
}

}  // namespace

std::string_view to_string(role r) noexcept {
  switch (r) {
    case role::user: return "user";
    case role::service: return "service";
    case role::admin: return "admin";
  }
  return "user";
}

result<role> parse_role(std::string_view text) {
  if (text == "user") return role::user;
  if (text == "service") return role::service;
  if (text == "admin") return role::admin;
  return {errc::bad_request, "role must be user, service or admin"};
}

std::string base64url_encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() * 4 + 2) / 3);
  std::size_t i = 0;
  auto byte = [&](std::size_t k) { return static_cast<uint32_t>(static_cast<unsigned char>(bytes[k])); };
  for (; i + 3 <= bytes.size(); i += 3) {
    uint32_t n = (byte(i) << 16) | (byte(i + 1) << 8) | byte(i + 2);
    out.push_back(b64url_alphabet[(n >> 18) & 63]);
    out.push_back(b64url_alphabet[(n >> 12) & 63]);
    out.push_back(b64url_alphabet[(n >> 6) & 63]);
    out.push_back(b64url_alphabet[n & 63]);
  }
  std::size_t rest = bytes.size() - i;
  if (rest == 1) {
    uint32_t n = byte(i) << 16;
    out.push_back(b64url_alphabet[(n >> 18) & 63]);
    out.push_back(b64url_alphabet[(n >> 12) & 63]);
  } else if (rest == 2) {
    uint32_t n = (byte(i) << 16) | (byte(i + 1) << 8);
    out.push_back(b64url_alphabet[(n >> 18) & 63]);
    out.push_back(b64url_alphabet[(n >> 12) & 63]);
    out.push_back(b64url_alphabet[(n >> 6) & 63]);
  }
  return out;
}

result<std::string> base64url_decode(std::string_view text) {
  // One leftover character would carry only 6 bits: no byte string encodes to that length.
  if (text.size() % 4 == 1) return {errc::bad_request, "invalid base64url length"};
  std::string out;
  out.reserve(text.size() / 4 * 3 + 2);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    int8_t v = b64url_table[static_cast<unsigned char>(c)];
    if (v < 0) return {errc::bad_request, "invalid base64url character"};
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  // The unused low bits of the last character must be zero, so every byte string has exactly one
  // encoding (otherwise a signature could be altered without changing its bytes).
  if (bits > 0 && (acc & ((1u << bits) - 1)) != 0) {
    return {errc::bad_request, "non-canonical base64url"};
  }
  return out;
}

result<claims> verify_hs256(std::string_view token, std::string_view secret, int64_t now_s,
                            int64_t leeway_s) {
  if (token.empty()) return unauthorized("empty token");
  if (token.size() > max_token_bytes) return unauthorized("token too long");
  // An empty secret would let anyone who guesses that mint tokens: treat it as unconfigured.
  if (secret.empty()) return unauthorized("no signing secret configured");
  if (leeway_s < 0) leeway_s = 0;

  std::size_t dot1 = token.find('.');
  std::size_t dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos) {
    return unauthorized("token must have three parts");
  }
  std::string_view header_b64 = token.substr(0, dot1);
  std::string_view payload_b64 = token.substr(dot1 + 1, dot2 - dot1 - 1);
  std::string_view signature_b64 = token.substr(dot2 + 1);

  // The header decides which algorithm is used; only HS256 is ever accepted, whatever the token
  // asks for, so `none` and algorithm-confusion tokens fail here.
  auto header = decode_json_segment(header_b64, "header");
  if (!header) return header.err();
  const json::value* alg = header->if_contains("alg");
  if (alg == nullptr || !alg->is_string() || alg->get_string() != "HS256") {
    return unauthorized("unsupported alg");
  }
  if (const json::value* typ = header->if_contains("typ"); typ != nullptr && !typ->is_string()) {
    return unauthorized("typ must be a string");
  }
  // RFC 7515 §4.1.11: extensions we do not understand must not be ignored.
  if (header->contains("crit")) return unauthorized("unsupported crit header");

  auto signature = base64url_decode(signature_b64);
  if (!signature || signature->size() != hs256_bytes) return unauthorized("bad signature");
  std::array<unsigned char, hs256_bytes> expected{};
  if (!hmac_sha256(secret, token.substr(0, dot2), expected)) return unauthorized("bad signature");
  if (CRYPTO_memcmp(expected.data(), signature->data(), hs256_bytes) != 0) {
    return unauthorized("bad signature");
  }

  // From here the payload is authentic, but its shape is still checked.
  auto payload = decode_json_segment(payload_b64, "payload");
  if (!payload) return payload.err();
  claims c;

  const json::value* sub = payload->if_contains("sub");
  if (sub == nullptr || !sub->is_string() || sub->get_string().empty()) {
    return unauthorized("sub is required");
  }
  if (sub->get_string().size() > max_sub_bytes) return unauthorized("sub too long");
  c.sub = std::string{sub->get_string().data(), sub->get_string().size()};

  const json::value* exp = payload->if_contains("exp");
  if (exp == nullptr) return unauthorized("exp is required");
  auto exp_s = as_seconds(*exp);
  if (!exp_s) return unauthorized("exp must be an integer");
  c.exp = *exp_s;
  if (now_s > saturating_add(c.exp, leeway_s)) return unauthorized("token expired");

  if (const json::value* nbf = payload->if_contains("nbf")) {
    auto nbf_s = as_seconds(*nbf);
    if (!nbf_s) return unauthorized("nbf must be an integer");
    c.nbf = *nbf_s;
    if (saturating_add(now_s, leeway_s) < c.nbf) return unauthorized("token not yet valid");
  }

  if (const json::value* r = payload->if_contains("role")) {
    if (!r->is_string()) return unauthorized("role must be a string");
    auto parsed = parse_role(std::string_view{r->get_string().data(), r->get_string().size()});
    if (!parsed) return unauthorized("unknown role");
    c.who = *parsed;
  }
  return c;
}

std::string sign_hs256(const claims& c, std::string_view secret, int64_t iat_s) {
  // Fixed header text: its base64url form is the same for every token we sign.
  static const std::string header_b64 = base64url_encode(R"({"alg":"HS256","typ":"JWT"})");
  json::object payload;
  payload["sub"] = c.sub;
  payload["role"] = to_string(c.who);
  payload["exp"] = c.exp;
  payload["iat"] = iat_s;
  if (c.nbf != 0) payload["nbf"] = c.nbf;
  std::string token = header_b64;
  token.push_back('.');
  token += base64url_encode(json::serialize(payload));
  std::array<unsigned char, hs256_bytes> mac{};
  if (!hmac_sha256(secret, token, mac)) throw std::runtime_error("HMAC-SHA256 failed");
  token.push_back('.');
  token += base64url_encode(std::string_view{reinterpret_cast<const char*>(mac.data()), mac.size()});
  return token;
}

}  // namespace relay
