#include "protocols/jwt.hpp"

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include <array>
#include <boost/json.hpp>
#include <climits>
#include <cmath>
#include <optional>
#include <stdexcept>

#include "protocols/room_access.hpp"

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
  for (int i = 0; i < 64; ++i)
    t[static_cast<unsigned char>(b64url_alphabet[i])] = static_cast<int8_t>(i);
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
    case role::user:
      return "user";
    case role::service:
      return "service";
    case role::admin:
      return "admin";
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
  auto byte = [&](std::size_t k) {
    return static_cast<uint32_t>(static_cast<unsigned char>(bytes[k]));
  };
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

std::string_view to_string(jwt_alg a) noexcept { return a == jwt_alg::rs256 ? "RS256" : "HS256"; }

// ---- keys --------------------------------------------------------------------------------------

struct jwt_key::rsa_key {
  EVP_PKEY* pkey = nullptr;
  std::size_t signature_bytes = 0;  // the modulus size: every RS256 signature has exactly this
  ~rsa_key() { EVP_PKEY_free(pkey); }
};

result<jwt_key> jwt_key::hs256(std::string kid, std::string secret) {
  if (secret.empty()) return error{errc::bad_request, "an HS256 secret must not be empty"};
  jwt_key k;
  k.kid_ = std::move(kid);
  k.alg_ = jwt_alg::hs256;
  k.secret_ = std::move(secret);
  return k;
}

result<jwt_key> jwt_key::rs256_public_pem(std::string kid, std::string_view pem) {
  if (pem.size() > 64 * 1024) return error{errc::bad_request, "PEM too large"};
  auto key = std::make_shared<rsa_key>();
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  if (bio == nullptr) return error{errc::bad_request, "out of memory"};
  key->pkey = PEM_read_bio_PUBKEY(bio, nullptr, nullptr, nullptr);
  if (key->pkey == nullptr) {
    // PKCS#1 "BEGIN RSA PUBLIC KEY" (what `openssl rsa -RSAPublicKey_out` writes).
    BIO_free(bio);
    bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
    if (bio == nullptr) return error{errc::bad_request, "out of memory"};
    OSSL_DECODER_CTX* dctx = OSSL_DECODER_CTX_new_for_pkey(
        &key->pkey, "PEM", "type-specific", "RSA", EVP_PKEY_PUBLIC_KEY, nullptr, nullptr);
    if (dctx != nullptr) {
      if (OSSL_DECODER_from_bio(dctx, bio) != 1) key->pkey = nullptr;
      OSSL_DECODER_CTX_free(dctx);
    }
  }
  BIO_free(bio);
  ERR_clear_error();
  if (key->pkey == nullptr) return error{errc::bad_request, "not a PEM public key"};
  if (EVP_PKEY_get_base_id(key->pkey) != EVP_PKEY_RSA)
    return error{errc::bad_request, "RS256 needs an RSA public key"};
  if (EVP_PKEY_get_bits(key->pkey) < 2048)
    return error{errc::bad_request, "RSA keys shorter than 2048 bits are refused"};
  key->signature_bytes = static_cast<std::size_t>(EVP_PKEY_get_size(key->pkey));
  jwt_key k;
  k.kid_ = std::move(kid);
  k.alg_ = jwt_alg::rs256;
  k.rsa_ = std::move(key);
  return k;
}

bool jwt_key::verify(std::string_view signing_input, std::string_view signature) const {
  if (alg_ == jwt_alg::hs256) {
    if (secret_.empty() || signature.size() != hs256_bytes) return false;
    std::array<unsigned char, hs256_bytes> expected{};
    if (!hmac_sha256(secret_, signing_input, expected)) return false;
    return CRYPTO_memcmp(expected.data(), signature.data(), hs256_bytes) == 0;
  }
  if (!rsa_ || signature.size() != rsa_->signature_bytes) return false;
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  if (ctx == nullptr) return false;
  // RSASSA-PKCS1-v1_5 with SHA-256 (RFC 7518 §3.3), the padding EVP uses by default for RSA.
  bool ok = EVP_DigestVerifyInit(ctx, nullptr, EVP_sha256(), nullptr, rsa_->pkey) == 1 &&
            EVP_DigestVerify(ctx, reinterpret_cast<const unsigned char*>(signature.data()),
                             signature.size(),
                             reinterpret_cast<const unsigned char*>(signing_input.data()),
                             signing_input.size()) == 1;
  EVP_MD_CTX_free(ctx);
  ERR_clear_error();
  return ok;
}

bool valid_kid(std::string_view kid) noexcept {
  if (kid.empty() || kid.size() > 64) return false;
  return std::all_of(kid.begin(), kid.end(), [](char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '.' || ch == '_' || ch == '-';
  });
}

result<std::vector<jwt_key_ref>> parse_jwt_key_list(std::string_view text) {
  std::vector<jwt_key_ref> out;
  auto trim = [](std::string_view v) {
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
    return v;
  };
  auto fail = [](std::string_view entry, std::string_view why) {
    std::string message = "'";
    message.append(entry).append("': ").append(why);
    return error{errc::bad_request, std::move(message)};
  };
  if (trim(text).empty()) return out;
  while (true) {
    const auto comma = text.find(',');
    const auto entry = trim(text.substr(0, comma));
    const auto eq = entry.find('=');
    const auto colon = entry.find(':', eq == std::string_view::npos ? 0 : eq);
    if (eq == std::string_view::npos || colon == std::string_view::npos)
      return fail(entry, "expected kid=HS256:path or kid=RS256:path");
    jwt_key_ref ref;
    ref.kid = std::string{trim(entry.substr(0, eq))};
    const auto alg = trim(entry.substr(eq + 1, colon - eq - 1));
    ref.path = std::string{trim(entry.substr(colon + 1))};
    if (ref.kid.empty() || ref.kid.size() > 64)
      return fail(entry, "kid must be 1 to 64 characters");
    if (!valid_kid(ref.kid))
      return fail(entry, "kid may only contain letters, digits, '.', '_' and '-'");
    if (alg == "HS256")
      ref.alg = jwt_alg::hs256;
    else if (alg == "RS256")
      ref.alg = jwt_alg::rs256;
    else
      return fail(entry, "the algorithm must be HS256 or RS256");
    if (ref.path.empty()) return fail(entry, "the key file path is missing");
    for (const auto& other : out)
      if (other.kid == ref.kid) return fail(entry, "duplicate kid");
    out.push_back(std::move(ref));
    if (out.size() >= jwt_key_set::max_keys) return fail(entry, "too many keys (at most 15)");
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return out;
}

// ---- verification ------------------------------------------------------------------------------

namespace {

/// The claims of an authentic payload, checked for shape and time.
result<claims> read_claims(const json::object& payload, int64_t now_s, int64_t leeway_s) {
  claims c;
  const json::value* sub = payload.if_contains("sub");
  if (sub == nullptr || !sub->is_string() || sub->get_string().empty()) {
    return unauthorized("sub is required");
  }
  if (sub->get_string().size() > max_sub_bytes) return unauthorized("sub too long");
  c.sub = std::string{sub->get_string().data(), sub->get_string().size()};

  const json::value* exp = payload.if_contains("exp");
  if (exp == nullptr) return unauthorized("exp is required");
  auto exp_s = as_seconds(*exp);
  if (!exp_s) return unauthorized("exp must be an integer");
  c.exp = *exp_s;
  if (now_s > saturating_add(c.exp, leeway_s)) return unauthorized("token expired");

  if (const json::value* nbf = payload.if_contains("nbf")) {
    auto nbf_s = as_seconds(*nbf);
    if (!nbf_s) return unauthorized("nbf must be an integer");
    c.nbf = *nbf_s;
    if (saturating_add(now_s, leeway_s) < c.nbf) return unauthorized("token not yet valid");
  }

  if (const json::value* r = payload.if_contains("role")) {
    if (!r->is_string()) return unauthorized("role must be a string");
    auto parsed = parse_role(std::string_view{r->get_string().data(), r->get_string().size()});
    if (!parsed) return unauthorized("unknown role");
    c.who = *parsed;
  }

  if (const json::value* rooms = payload.if_contains("rooms")) {
    if (!rooms->is_array()) return unauthorized("rooms must be an array of patterns");
    const auto& list = rooms->get_array();
    if (list.size() > max_room_patterns) return unauthorized("too many rooms patterns");
    std::vector<std::string> patterns;
    patterns.reserve(list.size());
    for (const auto& p : list) {
      if (!p.is_string()) return unauthorized("rooms must be an array of patterns");
      std::string_view text{p.get_string().data(), p.get_string().size()};
      if (!valid_room_pattern(text)) return unauthorized("invalid rooms pattern");
      patterns.emplace_back(text);
    }
    c.rooms = std::move(patterns);
  }
  return c;
}

}  // namespace

result<claims> verify_jwt(std::string_view token, const jwt_key_set& keys, int64_t now_s,
                          int64_t leeway_s) {
  if (token.empty()) return unauthorized("empty token");
  if (token.size() > max_token_bytes) return unauthorized("token too long");
  if (keys.keys.empty()) return unauthorized("no verification key configured");
  if (leeway_s < 0) leeway_s = 0;

  std::size_t dot1 = token.find('.');
  std::size_t dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos) {
    return unauthorized("token must have three parts");
  }
  std::string_view header_b64 = token.substr(0, dot1);
  std::string_view payload_b64 = token.substr(dot1 + 1, dot2 - dot1 - 1);
  std::string_view signature_b64 = token.substr(dot2 + 1);

  // Only HS256 and RS256 exist here, so `none` and every other alg fail at once. The header's
  // alg never chooses how a key is used: it must equal the algorithm of the key it selects.
  auto header = decode_json_segment(header_b64, "header");
  if (!header) return header.err();
  const json::value* alg_v = header->if_contains("alg");
  if (alg_v == nullptr || !alg_v->is_string()) return unauthorized("unsupported alg");
  jwt_alg alg{};
  if (alg_v->get_string() == "HS256")
    alg = jwt_alg::hs256;
  else if (alg_v->get_string() == "RS256")
    alg = jwt_alg::rs256;
  else
    return unauthorized("unsupported alg");
  if (const json::value* typ = header->if_contains("typ"); typ != nullptr && !typ->is_string()) {
    return unauthorized("typ must be a string");
  }
  // RFC 7515 §4.1.11: extensions we do not understand must not be ignored.
  if (header->contains("crit")) return unauthorized("unsupported crit header");
  const json::value* kid_v = header->if_contains("kid");
  if (kid_v != nullptr &&
      (!kid_v->is_string() || kid_v->get_string().empty() || kid_v->get_string().size() > 256)) {
    return unauthorized("kid must be a non-empty string");
  }

  auto signature = base64url_decode(signature_b64);
  if (!signature) return unauthorized("bad signature");
  const std::string_view signing_input = token.substr(0, dot2);
  bool verified = false;
  if (kid_v != nullptr) {
    std::string_view kid{kid_v->get_string().data(), kid_v->get_string().size()};
    const jwt_key* key = nullptr;
    for (const auto& k : keys.keys)
      if (k.kid() == kid) key = &k;
    if (key == nullptr) return unauthorized("unknown kid");
    if (key->alg() != alg) return unauthorized("alg does not match the key");
    verified = key->verify(signing_input, *signature);
  } else {
    std::size_t tried = 0;
    for (const auto& k : keys.keys) {
      if (k.alg() != alg) continue;
      if (++tried > jwt_key_set::max_keys) break;
      if (k.verify(signing_input, *signature)) {
        verified = true;
        break;
      }
    }
    if (tried == 0) return unauthorized("no key for this alg");
  }
  if (!verified) return unauthorized("bad signature");

  // From here the payload is authentic, but its shape is still checked.
  auto payload = decode_json_segment(payload_b64, "payload");
  if (!payload) return payload.err();
  return read_claims(*payload, now_s, leeway_s);
}

result<claims> verify_hs256(std::string_view token, std::string_view secret, int64_t now_s,
                            int64_t leeway_s) {
  // An empty secret would let anyone who guesses that mint tokens: treat it as unconfigured.
  if (token.empty()) return unauthorized("empty token");
  if (token.size() > max_token_bytes) return unauthorized("token too long");
  auto key = jwt_key::hs256({}, std::string{secret});
  if (!key) return unauthorized("no signing secret configured");
  jwt_key_set set;
  set.keys.push_back(std::move(*key));
  return verify_jwt(token, set, now_s, leeway_s);
}

int64_t token_ms_left(int64_t exp, int64_t leeway_s, int64_t now_ms) noexcept {
  if (leeway_s < 0) leeway_s = 0;
  // The first instant of second exp + leeway + 1, saturated: exp comes from the token.
  const int64_t end_s = saturating_add(saturating_add(exp, leeway_s), 1);
  int64_t end_ms = 0;
  if (__builtin_mul_overflow(end_s, int64_t{1000}, &end_ms))
    end_ms = end_s > 0 ? INT64_MAX : INT64_MIN;
  int64_t left = 0;
  if (__builtin_sub_overflow(end_ms, now_ms, &left)) left = end_ms > 0 ? INT64_MAX : INT64_MIN;
  return left;
}

// ---- signing -----------------------------------------------------------------------------------

namespace {

std::string signing_input(const claims& c, std::string_view alg, std::string_view kid,
                          int64_t iat_s) {
  json::object header;
  header["alg"] = alg;
  header["typ"] = "JWT";
  if (!kid.empty()) header["kid"] = kid;
  json::object payload;
  payload["sub"] = c.sub;
  payload["role"] = to_string(c.who);
  payload["exp"] = c.exp;
  payload["iat"] = iat_s;
  if (c.nbf != 0) payload["nbf"] = c.nbf;
  if (c.rooms) {
    json::array rooms;
    for (const auto& p : *c.rooms) rooms.emplace_back(p);
    payload["rooms"] = std::move(rooms);
  }
  std::string token = base64url_encode(json::serialize(header));
  token.push_back('.');
  token += base64url_encode(json::serialize(payload));
  return token;
}

}  // namespace

std::string sign_hs256(const claims& c, std::string_view secret, int64_t iat_s,
                       std::string_view kid) {
  std::string token = signing_input(c, "HS256", kid, iat_s);
  std::array<unsigned char, hs256_bytes> mac{};
  if (!hmac_sha256(secret, token, mac)) throw std::runtime_error("HMAC-SHA256 failed");
  token.push_back('.');
  token +=
      base64url_encode(std::string_view{reinterpret_cast<const char*>(mac.data()), mac.size()});
  return token;
}

result<std::string> sign_rs256(const claims& c, std::string_view private_pem, int64_t iat_s,
                               std::string_view kid) {
  BIO* bio = BIO_new_mem_buf(private_pem.data(), static_cast<int>(private_pem.size()));
  if (bio == nullptr) return error{errc::bad_request, "out of memory"};
  EVP_PKEY* pkey = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (pkey == nullptr || EVP_PKEY_get_base_id(pkey) != EVP_PKEY_RSA) {
    EVP_PKEY_free(pkey);
    ERR_clear_error();
    return error{errc::bad_request, "not a PEM RSA private key"};
  }
  std::string token = signing_input(c, "RS256", kid, iat_s);
  std::string sig(static_cast<std::size_t>(EVP_PKEY_get_size(pkey)), '\0');
  std::size_t len = sig.size();
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  bool ok = ctx != nullptr && EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr, pkey) == 1 &&
            EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &len,
                           reinterpret_cast<const unsigned char*>(token.data()), token.size()) == 1;
  EVP_MD_CTX_free(ctx);
  EVP_PKEY_free(pkey);
  ERR_clear_error();
  if (!ok) return error{errc::bad_request, "RS256 signing failed"};
  sig.resize(len);
  token.push_back('.');
  token += base64url_encode(sig);
  return token;
}

}  // namespace relay
