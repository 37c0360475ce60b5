#pragma once
// Short names for the Asio/Beast namespaces used throughout net/ (as Beast's examples spell them,
// except `net`, which is this folder's own namespace here).

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/error.hpp>

namespace relay::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
using tcp = asio::ip::tcp;

}  // namespace relay::net
