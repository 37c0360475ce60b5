#include "protocols/event.hpp"

#include <array>
#include <charconv>
#include <chrono>

#include "protocols/json_text.hpp"

namespace relay {

namespace {

constexpr std::size_t max_type_bytes = 64;

}  // namespace

bool valid_event_type(std::string_view type) noexcept {
  if (type.empty() || type.size() > max_type_bytes) return false;
  for (char c : type) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
    if (!ok) return false;
  }
  return true;
}

bool reserved_event_type(std::string_view type) noexcept {
  return type == "status" || type == "complete" || type == "error" || type == "cancelled" ||
         type == "gap" || type == "message";
}

// Hot path: called once per event per wire format. `type` was validated on the way in
// ([a-z0-9_.-]) and `data` is already compact JSON, so both are spliced without escaping.
void append_event_json(std::string& out, const event& e) {
  std::string_view data = e.data.empty() ? std::string_view{"null"} : std::string_view{e.data};
  // One reservation for the whole object: 40 bytes of punctuation and keys plus two numbers.
  out.reserve(out.size() + 40 + 2 * 20 + e.type.size() + data.size());
  out.append(R"({"seq":)");
  append_number(out, e.seq);
  out.append(R"(,"type":")");
  out.append(e.type);
  out.append(R"(","data":)");
  out.append(data);
  out.append(R"(,"ts":)");
  append_number(out, e.ts);
  out.push_back('}');
}

std::string event_json(const event& e) {
  std::string out;
  append_event_json(out, e);
  return out;
}

int64_t now_ms() noexcept {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

}  // namespace relay
