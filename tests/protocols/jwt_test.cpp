#include "protocols/jwt.hpp"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <string>

namespace relay {
namespace {

constexpr std::string_view secret = "test-secret-0123456789";
constexpr int64_t now = 1'763'769'600;

// Builds a token by hand so tests control every byte of header and payload.
std::string hmac(std::string_view key, std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), md, &len);
  return std::string{reinterpret_cast<const char*>(md), len};
}

std::string make_token(std::string_view header_json, std::string_view payload_json,
                       std::string_view key = secret) {
  std::string signing_input = base64url_encode(header_json) + "." + base64url_encode(payload_json);
  return signing_input + "." + base64url_encode(hmac(key, signing_input));
}

constexpr std::string_view hs256_header = R"({"alg":"HS256","typ":"JWT"})";

std::string payload(std::string_view extra = "") {
  return std::string{R"({"sub":"alice","exp":)"} + std::to_string(now + 60) +
         std::string{extra} + "}";
}

void expect_unauthorized(const result<claims>& r, std::string_view why = "") {
  ASSERT_FALSE(r) << "token accepted but should not be" << (why.empty() ? "" : ": ") << why;
  EXPECT_EQ(r.err().code, errc::unauthorized) << r.err().message;
  EXPECT_FALSE(r.err().message.empty());
}

// ---- base64url -----------------------------------------------------------------------------

TEST(base64url, encodes_rfc4648_vectors_without_padding) {
  EXPECT_EQ(base64url_encode(""), "");
  EXPECT_EQ(base64url_encode("f"), "Zg");
  EXPECT_EQ(base64url_encode("fo"), "Zm8");
  EXPECT_EQ(base64url_encode("foo"), "Zm9v");
  EXPECT_EQ(base64url_encode("foob"), "Zm9vYg");
  EXPECT_EQ(base64url_encode("fooba"), "Zm9vYmE");
  EXPECT_EQ(base64url_encode("foobar"), "Zm9vYmFy");
  // Bytes that use the URL-safe characters instead of '+' and '/'.
  EXPECT_EQ(base64url_encode("\xfb\xff\xbf"), "-_-_");
}

TEST(base64url, round_trips_every_byte_value_and_length) {
  std::string all;
  for (int i = 0; i < 256; ++i) all.push_back(static_cast<char>(i));
  for (std::size_t n = 0; n <= all.size(); ++n) {
    std::string_view in{all.data(), n};
    auto back = base64url_decode(base64url_encode(in));
    ASSERT_TRUE(back) << n;
    EXPECT_EQ(*back, in);
  }
}

TEST(base64url, rejects_padding_other_alphabets_and_bad_lengths) {
  EXPECT_FALSE(base64url_decode("Zg=="));
  EXPECT_FALSE(base64url_decode("Zm8="));
  EXPECT_FALSE(base64url_decode("+/+/"));
  EXPECT_FALSE(base64url_decode("ab/c"));
  EXPECT_FALSE(base64url_decode("ab+c"));
  EXPECT_FALSE(base64url_decode("Z"));       // 1 mod 4: impossible length
  EXPECT_FALSE(base64url_decode("Zm9vY"));   // 5 chars
  EXPECT_FALSE(base64url_decode("Zm 9v"));
  EXPECT_FALSE(base64url_decode("Zm9v\n"));
  EXPECT_FALSE(base64url_decode(std::string_view{"Zm\0v", 4}));
  EXPECT_FALSE(base64url_decode("Zh"));      // non-zero trailing bits ("Zg" is canonical)
  EXPECT_TRUE(base64url_decode(""));
}

// ---- roles -----------------------------------------------------------------------------------

TEST(role, parse_and_print) {
  EXPECT_EQ(*parse_role("user"), role::user);
  EXPECT_EQ(*parse_role("service"), role::service);
  EXPECT_EQ(*parse_role("admin"), role::admin);
  EXPECT_FALSE(parse_role("Admin"));
  EXPECT_FALSE(parse_role(""));
  EXPECT_FALSE(parse_role("root"));
  EXPECT_EQ(to_string(role::user), "user");
  EXPECT_EQ(to_string(role::service), "service");
  EXPECT_EQ(to_string(role::admin), "admin");
  EXPECT_TRUE(at_least(role::admin, role::service));
  EXPECT_TRUE(at_least(role::service, role::user));
  EXPECT_TRUE(at_least(role::user, role::user));
  EXPECT_FALSE(at_least(role::user, role::service));
  EXPECT_FALSE(at_least(role::service, role::admin));
}

// ---- verify: accepted tokens -----------------------------------------------------------------

TEST(jwt, valid_token_is_accepted_with_default_role) {
  auto r = verify_hs256(make_token(hs256_header, payload()), secret, now);
  ASSERT_TRUE(r) << r.err().message;
  EXPECT_EQ(r->sub, "alice");
  EXPECT_EQ(r->who, role::user);
  EXPECT_EQ(r->exp, now + 60);
  EXPECT_EQ(r->nbf, 0);
}

TEST(jwt, header_without_typ_is_accepted) {
  EXPECT_TRUE(verify_hs256(make_token(R"({"alg":"HS256"})", payload()), secret, now));
}

TEST(jwt, role_service_and_admin_are_parsed) {
  auto s = verify_hs256(make_token(hs256_header, payload(R"(,"role":"service")")), secret, now);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->who, role::service);
  auto a = verify_hs256(make_token(hs256_header, payload(R"(,"role":"admin")")), secret, now);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->who, role::admin);
  auto u = verify_hs256(make_token(hs256_header, payload(R"(,"role":"user")")), secret, now);
  ASSERT_TRUE(u);
  EXPECT_EQ(u->who, role::user);
}

TEST(jwt, unknown_claims_are_ignored) {
  EXPECT_TRUE(verify_hs256(
      make_token(hs256_header, payload(R"(,"iss":"x","aud":["a"],"ctx":{"k":[1,2]})")), secret,
      now));
}

TEST(jwt, integral_double_exp_is_accepted) {
  auto r = verify_hs256(make_token(hs256_header, R"({"sub":"a","exp":1.8E9})"), secret, now);
  ASSERT_TRUE(r) << r.err().message;
  EXPECT_EQ(r->exp, 1'800'000'000);
}

// ---- verify: time ----------------------------------------------------------------------------

TEST(jwt, expired_token_is_refused) {
  std::string p = R"({"sub":"alice","exp":)" + std::to_string(now - 1) + "}";
  expect_unauthorized(verify_hs256(make_token(hs256_header, p), secret, now));
}

TEST(jwt, exp_equal_to_now_is_still_valid) {
  std::string p = R"({"sub":"alice","exp":)" + std::to_string(now) + "}";
  EXPECT_TRUE(verify_hs256(make_token(hs256_header, p), secret, now));
}

TEST(jwt, leeway_extends_exp) {
  std::string p = R"({"sub":"alice","exp":)" + std::to_string(now - 30) + "}";
  std::string token = make_token(hs256_header, p);
  expect_unauthorized(verify_hs256(token, secret, now, 0));
  expect_unauthorized(verify_hs256(token, secret, now, 29));
  EXPECT_TRUE(verify_hs256(token, secret, now, 30));
  EXPECT_TRUE(verify_hs256(token, secret, now, 60));
}

TEST(jwt, not_yet_valid_token_is_refused) {
  std::string token = make_token(hs256_header, payload(R"(,"nbf":)" + std::to_string(now + 10)));
  expect_unauthorized(verify_hs256(token, secret, now));
  expect_unauthorized(verify_hs256(token, secret, now, 9));
  auto r = verify_hs256(token, secret, now, 10);  // leeway covers the clock skew
  ASSERT_TRUE(r);
  EXPECT_EQ(r->nbf, now + 10);
  EXPECT_TRUE(verify_hs256(token, secret, now + 10));
}

TEST(jwt, nbf_in_the_past_is_fine) {
  auto r = verify_hs256(make_token(hs256_header, payload(R"(,"nbf":)" + std::to_string(now - 5))),
                        secret, now);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->nbf, now - 5);
}

TEST(jwt, extreme_exp_does_not_overflow) {
  // exp at INT64_MAX plus a leeway must not wrap around into "expired long ago".
  EXPECT_TRUE(verify_hs256(make_token(hs256_header, R"({"sub":"a","exp":9223372036854775807})"),
                           secret, now, 100));
  // exp at INT64_MIN minus nothing: simply expired.
  expect_unauthorized(verify_hs256(
      make_token(hs256_header, R"({"sub":"a","exp":-9223372036854775808})"), secret, now, 100));
  // Beyond int64: refused as malformed rather than clamped.
  expect_unauthorized(verify_hs256(
      make_token(hs256_header, R"({"sub":"a","exp":18446744073709551615})"), secret, now));
  expect_unauthorized(
      verify_hs256(make_token(hs256_header, R"({"sub":"a","exp":1e400})"), secret, now));
}

// ---- verify: signature -----------------------------------------------------------------------

TEST(jwt, flipped_signature_byte_is_refused) {
  std::string token = make_token(hs256_header, payload());
  std::size_t dot = token.rfind('.');
  std::string sig = *base64url_decode(token.substr(dot + 1));
  for (std::size_t i : {std::size_t{0}, sig.size() / 2, sig.size() - 1}) {
    std::string bad_sig = sig;
    bad_sig[i] = static_cast<char>(bad_sig[i] ^ 0x01);
    std::string bad = token.substr(0, dot + 1) + base64url_encode(bad_sig);
    expect_unauthorized(verify_hs256(bad, secret, now), "flipped byte");
  }
}

TEST(jwt, tampered_payload_is_refused) {
  std::string token = make_token(hs256_header, payload());
  std::size_t dot1 = token.find('.');
  std::size_t dot2 = token.rfind('.');
  std::string forged = token.substr(0, dot1 + 1) +
                       base64url_encode(payload(R"(,"role":"admin")")) + token.substr(dot2);
  expect_unauthorized(verify_hs256(forged, secret, now));
}

TEST(jwt, truncated_or_extended_signature_is_refused) {
  std::string token = make_token(hs256_header, payload());
  std::size_t dot = token.rfind('.');
  std::string sig = *base64url_decode(token.substr(dot + 1));
  expect_unauthorized(
      verify_hs256(token.substr(0, dot + 1) + base64url_encode(sig.substr(0, 31)), secret, now));
  expect_unauthorized(verify_hs256(token.substr(0, dot + 1) + base64url_encode(sig + "x"), secret, now));
  expect_unauthorized(verify_hs256(token.substr(0, dot + 1), secret, now));  // empty signature
}

TEST(jwt, wrong_secret_is_refused) {
  expect_unauthorized(verify_hs256(make_token(hs256_header, payload(), "other"), secret, now));
  expect_unauthorized(verify_hs256(make_token(hs256_header, payload()), "other", now));
}

TEST(jwt, empty_secret_is_refused_even_for_a_matching_token) {
  expect_unauthorized(verify_hs256(make_token(hs256_header, payload(), ""), "", now));
}

// ---- verify: algorithm -----------------------------------------------------------------------

TEST(jwt, alg_none_is_refused) {
  // The classic attack: alg none and an empty signature.
  std::string none = base64url_encode(R"({"alg":"none","typ":"JWT"})") + "." +
                     base64url_encode(payload()) + ".";
  expect_unauthorized(verify_hs256(none, secret, now), "alg none, empty signature");
  // alg none but with a valid HS256 MAC over it: still refused, alg must be HS256.
  expect_unauthorized(verify_hs256(make_token(R"({"alg":"none"})", payload()), secret, now));
  expect_unauthorized(verify_hs256(make_token(R"({"alg":"None"})", payload()), secret, now));
}

TEST(jwt, other_algorithms_are_refused) {
  for (auto header : {R"({"alg":"HS512","typ":"JWT"})", R"({"alg":"RS256"})", R"({"alg":"hs256"})",
                      R"({"alg":"HS256 "})", R"({"alg":["HS256"]})", R"({"alg":null})",
                      R"({"typ":"JWT"})", R"({})", R"({"alg":"HS256","crit":["exp"]})",
                      R"({"alg":"HS256","typ":1})"}) {
    expect_unauthorized(verify_hs256(make_token(header, payload()), secret, now), header);
  }
}

TEST(jwt, header_must_be_a_json_object) {
  for (auto header : {R"("HS256")", R"([{"alg":"HS256"}])", "null", "not json", "",
                      R"({"alg":"HS256")"}) {
    expect_unauthorized(verify_hs256(make_token(header, payload()), secret, now), header);
  }
}

// ---- verify: structure -----------------------------------------------------------------------

TEST(jwt, wrong_number_of_parts_is_refused) {
  std::string token = make_token(hs256_header, payload());
  std::size_t dot2 = token.rfind('.');
  expect_unauthorized(verify_hs256(token.substr(0, dot2), secret, now), "two parts");
  expect_unauthorized(verify_hs256(token + ".", secret, now), "four parts, last empty");
  expect_unauthorized(verify_hs256(token + ".e30", secret, now), "four parts");
  expect_unauthorized(verify_hs256("abc", secret, now), "one part");
  expect_unauthorized(verify_hs256("", secret, now), "empty");
  expect_unauthorized(verify_hs256("..", secret, now), "empty parts");
}

TEST(jwt, malformed_base64_in_any_part_is_refused) {
  std::string token = make_token(hs256_header, payload());
  std::size_t dot1 = token.find('.');
  std::size_t dot2 = token.rfind('.');
  std::string h = token.substr(0, dot1);
  std::string p = token.substr(dot1 + 1, dot2 - dot1 - 1);
  std::string s = token.substr(dot2 + 1);
  // Signature with standard-alphabet characters or padding.
  std::string std_sig = s;
  std::replace(std_sig.begin(), std_sig.end(), '-', '+');
  std::replace(std_sig.begin(), std_sig.end(), '_', '/');
  if (std_sig == s) std_sig[0] = '+';
  expect_unauthorized(verify_hs256(h + "." + p + "." + std_sig, secret, now), "+/ in signature");
  expect_unauthorized(verify_hs256(h + "." + p + "." + s + "=", secret, now), "padding");
  expect_unauthorized(verify_hs256(h + "=." + p + "." + s, secret, now), "padded header");
  expect_unauthorized(verify_hs256(h + "." + p + "==." + s, secret, now), "padded payload");
  expect_unauthorized(verify_hs256(h + "." + p + "." + s + "A", secret, now), "bad length");
  expect_unauthorized(verify_hs256(h + "A." + p + "." + s, secret, now), "bad header length");
  expect_unauthorized(verify_hs256(h + "." + p + "." + s.substr(1), secret, now), "short sig");
  expect_unauthorized(verify_hs256(h + "." + p + ". " + s, secret, now), "space");
}

TEST(jwt, oversized_token_is_refused_before_any_work) {
  std::string big = make_token(hs256_header, R"({"sub":"a","exp":9999999999,"pad":")" +
                                                 std::string(9000, 'x') + "\"}");
  expect_unauthorized(verify_hs256(big, secret, now));
}

TEST(jwt, deeply_nested_payload_is_refused) {
  std::string nested = R"({"sub":"a","exp":9999999999,"x":)" + std::string(2000, '[') +
                       std::string(2000, ']') + "}";
  expect_unauthorized(verify_hs256(make_token(hs256_header, nested), secret, now));
}

// ---- verify: claims --------------------------------------------------------------------------

TEST(jwt, missing_or_bad_sub_is_refused) {
  std::string exp = std::to_string(now + 60);
  expect_unauthorized(verify_hs256(make_token(hs256_header, R"({"exp":)" + exp + "}"), secret, now),
                      "missing sub");
  expect_unauthorized(
      verify_hs256(make_token(hs256_header, R"({"sub":"","exp":)" + exp + "}"), secret, now),
      "empty sub");
  expect_unauthorized(
      verify_hs256(make_token(hs256_header, R"({"sub":42,"exp":)" + exp + "}"), secret, now),
      "numeric sub");
  expect_unauthorized(
      verify_hs256(make_token(hs256_header, R"({"sub":null,"exp":)" + exp + "}"), secret, now),
      "null sub");
  std::string long_sub = R"({"sub":")" + std::string(257, 'a') + R"(","exp":)" + exp + "}";
  expect_unauthorized(verify_hs256(make_token(hs256_header, long_sub), secret, now), "long sub");
  std::string max_sub = R"({"sub":")" + std::string(256, 'a') + R"(","exp":)" + exp + "}";
  EXPECT_TRUE(verify_hs256(make_token(hs256_header, max_sub), secret, now));
}

TEST(jwt, missing_or_non_numeric_exp_is_refused) {
  expect_unauthorized(verify_hs256(make_token(hs256_header, R"({"sub":"a"})"), secret, now),
                      "missing exp");
  for (auto exp : {R"("9999999999")", "null", "true", "[9999999999]", "{}", "9999999999.5"}) {
    std::string p = std::string{R"({"sub":"a","exp":)"} + exp + "}";
    expect_unauthorized(verify_hs256(make_token(hs256_header, p), secret, now), exp);
  }
}

TEST(jwt, non_numeric_nbf_is_refused) {
  expect_unauthorized(
      verify_hs256(make_token(hs256_header, payload(R"(,"nbf":"0")")), secret, now));
}

TEST(jwt, wrong_role_is_refused) {
  for (auto r : {R"("root")", R"("Admin")", R"("")", "1", "null", R"(["admin"])"}) {
    expect_unauthorized(
        verify_hs256(make_token(hs256_header, payload(std::string{R"(,"role":)"} + r)), secret, now),
        r);
  }
}

TEST(jwt, payload_must_be_a_json_object) {
  for (auto p : {"[]", R"("alice")", "42", "", "{", "{\"sub\":\"\xff\",\"exp\":9999999999}"}) {
    expect_unauthorized(verify_hs256(make_token(hs256_header, p), secret, now), p);
  }
}

// ---- signing ---------------------------------------------------------------------------------

TEST(jwt, sign_then_verify_round_trips) {
  claims c;
  c.sub = "svc-worker \"7\"";
  c.who = role::service;
  c.exp = now + 3600;
  std::string token = sign_hs256(c, secret, now);
  auto r = verify_hs256(token, secret, now);
  ASSERT_TRUE(r) << r.err().message;
  EXPECT_EQ(r->sub, c.sub);
  EXPECT_EQ(r->who, role::service);
  EXPECT_EQ(r->exp, c.exp);
  EXPECT_EQ(r->nbf, 0);
  expect_unauthorized(verify_hs256(token, "another-secret", now));
  expect_unauthorized(verify_hs256(token, secret, now + 3601));
}

TEST(jwt, sign_writes_the_standard_header_and_claims) {
  claims c{"bob", role::admin, now + 10, now + 5, std::nullopt};
  std::string token = sign_hs256(c, secret, now);
  std::size_t dot1 = token.find('.');
  std::size_t dot2 = token.rfind('.');
  EXPECT_EQ(*base64url_decode(token.substr(0, dot1)), R"({"alg":"HS256","typ":"JWT"})");
  EXPECT_EQ(*base64url_decode(token.substr(dot1 + 1, dot2 - dot1 - 1)),
            R"({"sub":"bob","role":"admin","exp":)" + std::to_string(now + 10) +
                R"(,"iat":)" + std::to_string(now) + R"(,"nbf":)" + std::to_string(now + 5) + "}");
  // The signature is the HMAC an independent implementation computes.
  EXPECT_EQ(*base64url_decode(token.substr(dot2 + 1)), hmac(secret, token.substr(0, dot2)));

  expect_unauthorized(verify_hs256(token, secret, now));  // nbf in the future
  auto r = verify_hs256(token, secret, now + 5);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->who, role::admin);
  EXPECT_EQ(r->nbf, now + 5);
}

TEST(jwt, rfc7515_appendix_a1_token_is_verified) {
  // RFC 7515 A.1: the HS256 example (its exp, 1300819380, is long past, so "now" is set before it).
  const std::string key_b64 =
      "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
  std::string key = *base64url_decode(key_b64);
  const std::string token =
      "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9."
      "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ."
      "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
  // It has no `sub`, so our policy refuses it — but only after the signature matched, which the
  // reason shows.
  auto r = verify_hs256(token, key, 1300819000);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.err().message, "sub is required");
  auto wrong = verify_hs256(token, "not the key", 1300819000);
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.err().message, "bad signature");
}

}  // namespace
}  // namespace relay
