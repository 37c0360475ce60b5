// libFuzzer target for JWT verification (build: fuzz/README.md). Every input must be refused or
// accepted without a crash; an accepted token must satisfy the claims' bounds. The key set holds
// an HS256 secret with and without a kid and an RS256 public key, so kid selection, the alg/key
// match and both signature paths all see hostile input. Inputs are tried as given and re-signed
// with the HS256 secret (so the payload parser is reached, not only the signature check).

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "protocols/jwt.hpp"
#include "protocols/room_access.hpp"

namespace {

constexpr int64_t now = 1'763'769'600;
constexpr std::string_view secret = "fuzz-secret";

relay::jwt_key_set make_keys() {
  relay::jwt_key_set set;
  set.keys.push_back(*relay::jwt_key::hs256("", std::string{secret}));
  set.keys.push_back(*relay::jwt_key::hs256("k2", "second-secret"));
  EVP_PKEY* pkey = EVP_RSA_gen(2048);
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PUBKEY(bio, pkey);
  BUF_MEM* mem = nullptr;
  BIO_get_mem_ptr(bio, &mem);
  auto rs = relay::jwt_key::rs256_public_pem("rs", std::string_view{mem->data, mem->length});
  if (rs) set.keys.push_back(std::move(*rs));
  BIO_free(bio);
  EVP_PKEY_free(pkey);
  return set;
}

void check(const relay::result<relay::claims>& r) {
  if (!r) {
    if (r.err().code != relay::errc::unauthorized || r.err().message.empty()) __builtin_trap();
    return;
  }
  if (r->sub.empty() || r->sub.size() > 256) __builtin_trap();
  if (now > r->exp + 5) __builtin_trap();
  if (r->rooms) {
    if (r->rooms->size() > relay::max_room_patterns) __builtin_trap();
    for (const auto& p : *r->rooms) {
      if (!relay::valid_room_pattern(p)) __builtin_trap();
      (void)relay::glob_match(p, "room-1");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  static const relay::jwt_key_set keys = make_keys();
  const std::string_view text{reinterpret_cast<const char*>(data), size};
  check(relay::verify_jwt(text, keys, now, 5));

  // The input as the JSON header and payload of a correctly signed token: "<header>\n<payload>".
  const auto nl = text.find('\n');
  if (nl != std::string_view::npos) {
    std::string input = relay::base64url_encode(text.substr(0, nl)) + "." +
                        relay::base64url_encode(text.substr(nl + 1));
    // Signed by hand: sign_hs256 writes its own JSON.
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
         reinterpret_cast<const unsigned char*>(input.data()), input.size(), md, &len);
    input += '.';
    input += relay::base64url_encode(std::string_view{reinterpret_cast<const char*>(md), len});
    check(relay::verify_jwt(input, keys, now, 5));
  }
  return 0;
}
