#pragma once
// The server's TLS configuration (tls.cert_path, tls.key_path): one OpenSSL context shared by
// every TLS connection, TLS 1.2 and later only.

#include <boost/asio/ssl/context.hpp>
#include <memory>

#include "net/server.hpp"

namespace relay::net {

/// Loads the PEM certificate chain and private key named by the settings. Throws
/// std::runtime_error naming the setting and file that could not be read or do not match, so a
/// bad file stops start-up with a clear message.
std::shared_ptr<boost::asio::ssl::context> load_tls_context(const server_settings& s);

}  // namespace relay::net
