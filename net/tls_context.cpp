#include "net/tls_context.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <fstream>
#include <stdexcept>
#include <string>

namespace relay::net {

namespace ssl = boost::asio::ssl;

namespace {

// The most recent OpenSSL error as text (the reason a PEM file was refused).
std::string openssl_reason(const boost::system::error_code& ec) {
  std::string why = ec.message();
  if (auto code = ERR_peek_last_error(); code != 0) {
    char buf[256];
    ERR_error_string_n(code, buf, sizeof buf);
    why = buf;
  }
  ERR_clear_error();
  return why;
}

void require_readable(const char* key, const std::string& path) {
  if (path.empty()) throw std::runtime_error(std::string{key} + " is required when TLS is on");
  std::ifstream probe(path);
  if (!probe) throw std::runtime_error(std::string{key} + ": cannot read '" + path + "'");
}

}  // namespace

std::shared_ptr<ssl::context> load_tls_context(const server_settings& s) {
  require_readable("tls.cert_path", s.tls_cert_path);
  require_readable("tls.key_path", s.tls_key_path);
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  // TLS 1.2+ only; no compression (CRIME), no renegotiation initiated by clients.
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                   ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 |
                   ssl::context::no_compression | ssl::context::single_dh_use);
  SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
  SSL_CTX_set_options(ctx->native_handle(), SSL_OP_NO_RENEGOTIATION);
  // Idle connections give their record buffers back: most connections are idle streams.
  SSL_CTX_set_mode(ctx->native_handle(), SSL_MODE_RELEASE_BUFFERS);
  boost::system::error_code ec;
  ctx->use_certificate_chain_file(s.tls_cert_path, ec);
  if (ec)
    throw std::runtime_error("tls.cert_path: cannot load the PEM certificate chain '" +
                             s.tls_cert_path + "': " + openssl_reason(ec));
  ctx->use_private_key_file(s.tls_key_path, ssl::context::pem, ec);
  if (ec)
    throw std::runtime_error("tls.key_path: cannot load the PEM private key '" + s.tls_key_path +
                             "': " + openssl_reason(ec));
  if (SSL_CTX_check_private_key(ctx->native_handle()) != 1) {
    ERR_clear_error();
    throw std::runtime_error("tls.key_path: the private key '" + s.tls_key_path +
                             "' does not match the certificate '" + s.tls_cert_path + "'");
  }
  return ctx;
}

}  // namespace relay::net
