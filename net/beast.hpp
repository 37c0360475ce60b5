#pragma once
// Short names for the Asio/Beast namespaces used throughout net/ (as Beast's examples spell them,
// except `net`, which is this folder's own namespace here).

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/error.hpp>

namespace relay::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
using tcp = asio::ip::tcp;

/// The errors a session expects when a connection ends (the peer left, or we closed or cancelled):
/// not worth a log line. Sessions' fail() logs the rest.
inline bool expected_disconnect(const beast::error_code& ec) noexcept {
  return ec == asio::error::operation_aborted || ec == asio::error::eof ||
         ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
         ec == asio::error::not_connected || ec == asio::error::bad_descriptor;
}

}  // namespace relay::net
