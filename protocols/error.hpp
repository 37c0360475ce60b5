#pragma once
// The contract's error codes (PROTOCOL.md "Errors") and a small result type for parse paths.
// Pure: no I/O, no actors. Every layer reports failures as `relay::error`.

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace relay {

/// The error codes of the wire contract. Order is stable (it crosses actor boundaries as uint8).
enum class errc : uint8_t {
  bad_request,
  unauthorized,
  forbidden,
  not_found,
  conflict,
  too_large,
  rate_limited,
  unavailable,
  internal,
};

/// The contract's spelling of a code, e.g. "not_found".
std::string_view to_string(errc code) noexcept;

/// The HTTP status that carries a code: 400, 401, 403, 404, 409, 413, 429, 503, 500.
unsigned http_status(errc code) noexcept;

struct error {
  errc code = errc::internal;
  std::string message;
};

/// `{"error":{"code":"...","message":"..."}}` — the body of every non-2xx HTTP answer.
std::string error_body(const error& e);

/// A value or an error. Deliberately small: C++20 has no std::expected.
template <class T>
class result {
 public:
  result(T value) : v_(std::in_place_index<0>, std::move(value)) {}
  result(error e) : v_(std::in_place_index<1>, std::move(e)) {}
  result(errc code, std::string message)
      : v_(std::in_place_index<1>, error{code, std::move(message)}) {}

  explicit operator bool() const noexcept { return v_.index() == 0; }
  bool ok() const noexcept { return v_.index() == 0; }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  const relay::error& err() const { return std::get<1>(v_); }

 private:
  std::variant<T, relay::error> v_;
};

}  // namespace relay
