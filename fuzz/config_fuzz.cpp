// libFuzzer target for configuration parsing (build: fuzz/README.md): config file text and
// command lines. Every input is accepted or refused with a message; an accepted file renders back
// (`relay config`) to text that parses to the same configuration, and every option reads back.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "app/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const std::string_view input{reinterpret_cast<const char*>(data), size};
  if (auto cfg = relay::parse_config_text(input, "fuzz.conf")) {
    const std::string rendered = relay::render_config_file(*cfg);
    auto again = relay::parse_config_text(rendered, "rendered");
    if (!again) __builtin_trap();
    if (relay::render_config_file(*again) != rendered) __builtin_trap();
    for (auto key : relay::option_keys())
      if (!relay::get_option(*cfg, key)) __builtin_trap();
  } else if (cfg.err().message.empty()) {
    __builtin_trap();
  }
  // The same bytes as a command line: arguments split at NUL bytes.
  std::vector<std::string_view> args;
  std::size_t from = 0;
  for (std::size_t i = 0; i <= input.size(); ++i) {
    if (i == input.size() || input[i] == '\0') {
      args.push_back(input.substr(from, i - from));
      from = i + 1;
    }
  }
  if (auto cl = relay::parse_command_line(args)) {
    auto resolved = relay::resolve_config(*cl, [](const std::string& path) {
      return relay::result<std::string>{relay::errc::not_found, "no file " + path};
    });
    if (!resolved && resolved.err().message.empty()) __builtin_trap();
  } else if (cl.err().message.empty()) {
    __builtin_trap();
  }
  return 0;
}
