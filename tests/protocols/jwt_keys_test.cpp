// Key sets: RS256 beside HS256, kid rotation, alg/key confusion, the rooms claim, the key list
// option and the expiry arithmetic of live connections (protocols/jwt.hpp).

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include <string>

#include "protocols/jwt.hpp"

namespace relay {
namespace {

constexpr int64_t now = 1'763'769'600;

struct pem_pair {
  std::string private_pem;
  std::string public_pem;
};

// One RSA key pair per size for the whole binary (generation takes a while).
pem_pair make_rsa(unsigned bits) {
  EVP_PKEY* key = EVP_RSA_gen(bits);
  EXPECT_NE(key, nullptr);
  pem_pair out;
  BIO* priv = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(priv, key, nullptr, nullptr, 0, nullptr, nullptr);
  BUF_MEM* mem = nullptr;
  BIO_get_mem_ptr(priv, &mem);
  out.private_pem.assign(mem->data, mem->length);
  BIO* pub = BIO_new(BIO_s_mem());
  PEM_write_bio_PUBKEY(pub, key);
  BIO_get_mem_ptr(pub, &mem);
  out.public_pem.assign(mem->data, mem->length);
  BIO_free(priv);
  BIO_free(pub);
  EVP_PKEY_free(key);
  return out;
}

const pem_pair& rsa_a() {
  static const pem_pair k = make_rsa(2048);
  return k;
}
const pem_pair& rsa_b() {
  static const pem_pair k = make_rsa(2048);
  return k;
}

std::string hmac(std::string_view key, std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), md, &len);
  return std::string{reinterpret_cast<const char*>(md), len};
}

std::string hs_token(std::string_view header, std::string_view payload, std::string_view key) {
  std::string input = base64url_encode(header) + "." + base64url_encode(payload);
  return input + "." + base64url_encode(hmac(key, input));
}

std::string payload(std::string_view extra = "") {
  return std::string{R"({"sub":"alice","exp":)"} + std::to_string(now + 60) + std::string{extra} +
         "}";
}

claims alice() {
  claims c;
  c.sub = "alice";
  c.exp = now + 60;
  return c;
}

jwt_key hs(std::string kid, std::string secret) {
  auto k = jwt_key::hs256(std::move(kid), std::move(secret));
  EXPECT_TRUE(k);
  return std::move(*k);
}

jwt_key rs(std::string kid, const pem_pair& pair) {
  auto k = jwt_key::rs256_public_pem(std::move(kid), pair.public_pem);
  EXPECT_TRUE(k) << (k ? "" : k.err().message);
  return std::move(*k);
}

jwt_key_set set_of(std::vector<jwt_key> keys) { return jwt_key_set{std::move(keys)}; }

void expect_refused(const result<claims>& r, std::string_view message) {
  ASSERT_FALSE(r) << "accepted";
  EXPECT_EQ(r.err().code, errc::unauthorized);
  EXPECT_EQ(r.err().message, message);
}

// ---- RS256 -------------------------------------------------------------------------------------

TEST(jwt_rs256, signed_token_verifies_with_the_public_key) {
  auto token = sign_rs256(alice(), rsa_a().private_pem, now);
  ASSERT_TRUE(token) << token.err().message;
  auto c = verify_jwt(*token, set_of({rs("", rsa_a())}), now);
  ASSERT_TRUE(c) << c.err().message;
  EXPECT_EQ(c->sub, "alice");
  EXPECT_EQ(c->exp, now + 60);
}

TEST(jwt_rs256, another_keys_signature_is_refused) {
  auto token = sign_rs256(alice(), rsa_b().private_pem, now);
  ASSERT_TRUE(token);
  expect_refused(verify_jwt(*token, set_of({rs("", rsa_a())}), now), "bad signature");
}

TEST(jwt_rs256, tampered_payload_is_refused) {
  auto token = sign_rs256(alice(), rsa_a().private_pem, now);
  ASSERT_TRUE(token);
  auto parts = *token;
  auto dot1 = parts.find('.');
  auto dot2 = parts.find('.', dot1 + 1);
  auto forged =
      parts.substr(0, dot1 + 1) +
      base64url_encode(R"({"sub":"alice","role":"admin","exp":)" + std::to_string(now + 60) + "}") +
      parts.substr(dot2);
  expect_refused(verify_jwt(forged, set_of({rs("", rsa_a())}), now), "bad signature");
}

TEST(jwt_rs256, expiry_and_leeway_apply_as_for_hs256) {
  auto c = alice();
  c.exp = now - 5;
  auto token = sign_rs256(c, rsa_a().private_pem, now - 100);
  ASSERT_TRUE(token);
  expect_refused(verify_jwt(*token, set_of({rs("", rsa_a())}), now), "token expired");
  EXPECT_TRUE(verify_jwt(*token, set_of({rs("", rsa_a())}), now, 5));
}

TEST(jwt_rs256, pem_that_is_not_a_2048_bit_rsa_public_key_is_refused) {
  EXPECT_FALSE(jwt_key::rs256_public_pem("", "not a pem"));
  EXPECT_FALSE(jwt_key::rs256_public_pem("", ""));
  auto small = make_rsa(1024);
  auto k = jwt_key::rs256_public_pem("", small.public_pem);
  ASSERT_FALSE(k);
  EXPECT_NE(k.err().message.find("2048"), std::string::npos);
  // A private key where a public one belongs is not silently accepted as one.
  EXPECT_FALSE(jwt_key::rs256_public_pem("", rsa_a().private_pem));
  EXPECT_FALSE(jwt_key::hs256("", ""));
}

// The classic confusion attack: the attacker knows the RS256 public key (it is public) and signs
// an HS256 token with its PEM text as the HMAC secret, hoping the server feeds the key it holds
// to HMAC because the token says HS256.
TEST(jwt_rs256, hs256_token_signed_with_the_public_key_text_is_refused) {
  const auto& pem = rsa_a().public_pem;
  auto keys = set_of({rs("rs-1", rsa_a())});
  expect_refused(verify_jwt(hs_token(R"({"alg":"HS256"})", payload(), pem), keys, now),
                 "no key for this alg");
  expect_refused(verify_jwt(hs_token(R"({"alg":"HS256","kid":"rs-1"})", payload(), pem), keys, now),
                 "alg does not match the key");
  // Beside an HS256 key: still only that secret verifies HS256 tokens.
  keys.keys.push_back(hs("hs-1", "hs-secret"));
  expect_refused(verify_jwt(hs_token(R"({"alg":"HS256"})", payload(), pem), keys, now),
                 "bad signature");
}

TEST(jwt_rs256, rs256_header_on_an_hmac_key_is_refused) {
  auto keys = set_of({hs("hs-1", "hs-secret")});
  // An RS256 header with an HMAC signature by the right secret.
  expect_refused(verify_jwt(hs_token(R"({"alg":"RS256"})", payload(), "hs-secret"), keys, now),
                 "no key for this alg");
  expect_refused(
      verify_jwt(hs_token(R"({"alg":"RS256","kid":"hs-1"})", payload(), "hs-secret"), keys, now),
      "alg does not match the key");
}

TEST(jwt_rs256, alg_none_and_others_are_refused_by_the_key_set) {
  auto keys = set_of({hs("", "s"), rs("r", rsa_a())});
  for (std::string_view alg : {"none", "None", "HS512", "RS512", "ES256", "PS256", "hs256"}) {
    std::string token = base64url_encode(std::string{R"({"alg":")"} + std::string{alg} + "\"}") +
                        "." + base64url_encode(payload()) + ".";
    expect_refused(verify_jwt(token, keys, now), "unsupported alg");
  }
}

// ---- kid rotation ------------------------------------------------------------------------------

TEST(jwt_kid, two_keys_are_valid_at_once) {
  auto keys = set_of({hs("2026-11", "old-secret"), rs("2026-12", rsa_a())});
  auto old_token = sign_hs256(alice(), "old-secret", now, "2026-11");
  auto new_token = sign_rs256(alice(), rsa_a().private_pem, now, "2026-12");
  ASSERT_TRUE(new_token);
  EXPECT_TRUE(verify_jwt(old_token, keys, now));
  EXPECT_TRUE(verify_jwt(*new_token, keys, now));
  // Retiring the old key refuses its tokens.
  keys.keys.erase(keys.keys.begin());
  expect_refused(verify_jwt(old_token, keys, now), "unknown kid");
  EXPECT_TRUE(verify_jwt(*new_token, keys, now));
}

TEST(jwt_kid, the_kid_selects_the_only_key_tried) {
  auto keys = set_of({hs("a", "secret-a"), hs("b", "secret-b")});
  EXPECT_TRUE(verify_jwt(sign_hs256(alice(), "secret-b", now, "b"), keys, now));
  // Signed with b's secret but naming a: a's secret alone is tried.
  expect_refused(verify_jwt(sign_hs256(alice(), "secret-b", now, "a"), keys, now), "bad signature");
  expect_refused(verify_jwt(sign_hs256(alice(), "secret-a", now, "c"), keys, now), "unknown kid");
  expect_refused(
      verify_jwt(hs_token(R"({"alg":"HS256","kid":7})", payload(), "secret-a"), keys, now),
      "kid must be a non-empty string");
  expect_refused(
      verify_jwt(hs_token(R"({"alg":"HS256","kid":""})", payload(), "secret-a"), keys, now),
      "kid must be a non-empty string");
}

TEST(jwt_kid, a_token_without_kid_is_tried_with_every_key_of_its_alg) {
  auto keys = set_of({hs("", "default"), hs("b", "secret-b"), rs("r", rsa_a())});
  EXPECT_TRUE(verify_jwt(sign_hs256(alice(), "default", now), keys, now));
  EXPECT_TRUE(verify_jwt(sign_hs256(alice(), "secret-b", now), keys, now));
  auto rs_token = sign_rs256(alice(), rsa_a().private_pem, now);
  ASSERT_TRUE(rs_token);
  EXPECT_TRUE(verify_jwt(*rs_token, keys, now));
  expect_refused(verify_jwt(sign_hs256(alice(), "guess", now), keys, now), "bad signature");
  expect_refused(verify_jwt(sign_hs256(alice(), "default", now), jwt_key_set{}, now),
                 "no verification key configured");
}

// ---- the rooms claim ---------------------------------------------------------------------------

TEST(jwt_rooms, absent_claim_is_no_restriction_and_a_list_is_kept) {
  auto keys = set_of({hs("", "s")});
  auto none = verify_jwt(hs_token(R"({"alg":"HS256"})", payload(), "s"), keys, now);
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->rooms.has_value());
  auto some = verify_jwt(
      hs_token(R"({"alg":"HS256"})", payload(R"(,"rooms":["team-*","lobby"])"), "s"), keys, now);
  ASSERT_TRUE(some);
  ASSERT_TRUE(some->rooms.has_value());
  EXPECT_EQ(*some->rooms, (std::vector<std::string>{"team-*", "lobby"}));
  auto empty =
      verify_jwt(hs_token(R"({"alg":"HS256"})", payload(R"(,"rooms":[])"), "s"), keys, now);
  ASSERT_TRUE(empty);
  ASSERT_TRUE(empty->rooms.has_value());
  EXPECT_TRUE(empty->rooms->empty());
}

TEST(jwt_rooms, hostile_rooms_claims_are_refused) {
  auto keys = set_of({hs("", "s")});
  auto check = [&](std::string extra, std::string_view message) {
    expect_refused(verify_jwt(hs_token(R"({"alg":"HS256"})", payload(extra), "s"), keys, now),
                   message);
  };
  check(R"(,"rooms":"lobby")", "rooms must be an array of patterns");
  check(R"(,"rooms":[1])", "rooms must be an array of patterns");
  check(R"(,"rooms":[""])", "invalid rooms pattern");
  check(R"(,"rooms":["a b"])", "invalid rooms pattern");
  check(R"(,"rooms":["[ab]"])", "invalid rooms pattern");
  check(",\"rooms\":[\"" + std::string(max_room_pattern_bytes + 1, 'a') + "\"]",
        "invalid rooms pattern");
  std::string many = R"(,"rooms":[)";
  for (std::size_t i = 0; i <= max_room_patterns; ++i) many += (i ? ",\"a\"" : "\"a\"");
  many += "]";
  check(many, "too many rooms patterns");
}

TEST(jwt_rooms, signing_writes_the_rooms_claim) {
  auto c = alice();
  c.rooms = std::vector<std::string>{"x*"};
  auto v = verify_hs256(sign_hs256(c, "s", now), "s", now);
  ASSERT_TRUE(v);
  ASSERT_TRUE(v->rooms);
  EXPECT_EQ(v->rooms->front(), "x*");
}

// ---- the auth.jwt_keys option and expiry arithmetic -------------------------------------------

TEST(jwt_key_list, parses_entries_and_refuses_bad_ones) {
  auto empty = parse_jwt_key_list("  ");
  ASSERT_TRUE(empty);
  EXPECT_TRUE(empty->empty());
  auto two = parse_jwt_key_list(" 2026-12=RS256:/etc/relay/rs.pem , old=HS256:/etc/relay/hs.key");
  ASSERT_TRUE(two) << two.err().message;
  ASSERT_EQ(two->size(), 2u);
  EXPECT_EQ((*two)[0].kid, "2026-12");
  EXPECT_EQ((*two)[0].alg, jwt_alg::rs256);
  EXPECT_EQ((*two)[0].path, "/etc/relay/rs.pem");
  EXPECT_EQ((*two)[1].alg, jwt_alg::hs256);
  EXPECT_EQ((*two)[1].path, "/etc/relay/hs.key");
  for (std::string_view bad : {"k", "k=RS256", "=RS256:/p", "k=ES256:/p", "k=RS256:",
                               "k k=RS256:/p", "a=RS256:/p,a=HS256:/q", "a=RS256:/p,"}) {
    EXPECT_FALSE(parse_jwt_key_list(bad)) << bad;
  }
  std::string many;
  for (int i = 0; i < 16; ++i)
    many += (i ? "," : "") + std::string{"k"} + std::to_string(i) + "=HS256:/p";
  EXPECT_FALSE(parse_jwt_key_list(many));
}

TEST(jwt_expiry, ms_left_counts_to_the_end_of_exp_plus_leeway) {
  // Valid while now_s <= exp + leeway: the end is the first instant of the next second.
  EXPECT_EQ(token_ms_left(100, 0, 100'000), 1000);
  EXPECT_EQ(token_ms_left(100, 0, 100'999), 1);
  EXPECT_EQ(token_ms_left(100, 0, 101'000), 0);
  EXPECT_EQ(token_ms_left(100, 5, 101'000), 5000);
  EXPECT_LT(token_ms_left(100, 0, 200'000), 0);
  EXPECT_GT(token_ms_left(INT64_MAX, 3600, 0), int64_t{1} << 40);  // saturates, no overflow
  EXPECT_LT(token_ms_left(INT64_MIN, 0, INT64_MAX), 0);
}

}  // namespace
}  // namespace relay
