#include "protocols/metrics.hpp"

#include <array>
#include <charconv>
#include <cmath>
#include <unordered_map>

namespace relay {

namespace {

// HELP text escapes backslash and newline (exposition format 0.0.4).
void append_help(std::string& out, std::string_view help) {
  for (char c : help) {
    if (c == '\\') out.append("\\\\");
    else if (c == '\n') out.append("\\n");
    else out.push_back(c);
  }
}

// Integral values print as integers ("42", not "42.0" or "4.2e+01"), others in the shortest form
// that round-trips; the special values use Prometheus' spelling.
void append_value(std::string& out, double v) {
  if (std::isnan(v)) {
    out.append("NaN");
    return;
  }
  if (std::isinf(v)) {
    out.append(v > 0 ? "+Inf" : "-Inf");
    return;
  }
  std::array<char, 32> buf;
  std::to_chars_result r;
  if (v == std::trunc(v) && v >= -9223372036854775808.0 && v < 9223372036854775808.0) {
    r = std::to_chars(buf.data(), buf.data() + buf.size(), static_cast<int64_t>(v));
  } else {
    r = std::to_chars(buf.data(), buf.data() + buf.size(), v);
  }
  out.append(buf.data(), static_cast<std::size_t>(r.ptr - buf.data()));
}

}  // namespace

std::string render_prometheus(const std::vector<metric_sample>& samples) {
  // Group samples by name in order of first appearance: the format wants each family's
  // HELP/TYPE once, followed by all of its samples, even if callers appended them interleaved.
  std::vector<std::vector<const metric_sample*>> families;
  std::unordered_map<std::string_view, std::size_t> index;
  for (const auto& s : samples) {
    auto [it, inserted] = index.try_emplace(s.name, families.size());
    if (inserted) families.emplace_back();
    families[it->second].push_back(&s);
  }

  std::string out;
  out.reserve(samples.size() * 96);
  for (const auto& family : families) {
    const metric_sample& first = *family.front();
    if (!first.help.empty()) {
      out.append("# HELP ").append(first.name).push_back(' ');
      append_help(out, first.help);
      out.push_back('\n');
    }
    out.append("# TYPE ").append(first.name).push_back(' ');
    out.append(first.type.empty() ? std::string_view{"untyped"} : std::string_view{first.type});
    out.push_back('\n');
    for (const metric_sample* s : family) {
      out.append(s->name);
      if (!s->labels.empty()) out.append("{").append(s->labels).push_back('}');
      out.push_back(' ');
      append_value(out, s->value);
      out.push_back('\n');
    }
  }
  return out;
}

}  // namespace relay
