#include "net/audit_log.hpp"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/spdlog.h>

#include <boost/json/serialize.hpp>
#include <boost/json/string.hpp>
#include <chrono>

namespace relay::net {

namespace {

int64_t current_minute() {
  using namespace std::chrono;
  return duration_cast<minutes>(steady_clock::now().time_since_epoch()).count();
}

void append_json_string(std::string& out, std::string_view text) {
  out += boost::json::serialize(boost::json::string{text});
}

}  // namespace

audit_log::audit_log(const std::string& path, unsigned auth_failures_per_min)
    : threshold_(auth_failures_per_min == 0 ? 1 : auth_failures_per_min) {
  if (path.empty()) return;
  try {
    auto sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(path);
    // Not registered with spdlog: one per server, and tests run several servers per process.
    logger_ = std::make_shared<spdlog::logger>("audit", std::move(sink));
  } catch (const spdlog::spdlog_ex& e) {
    throw std::runtime_error("audit.path " + path + ": " + e.what());
  }
  // The line is a JSON object: the pattern opens it with the timestamp, record() closes it.
  logger_->set_pattern(R"({"ts":"%Y-%m-%dT%H:%M:%S.%eZ",%v)", spdlog::pattern_time_type::utc);
  logger_->set_level(spdlog::level::info);
  logger_->flush_on(spdlog::level::info);  // an audit line is on disk before the answer goes out
}

audit_log::~audit_log() = default;

namespace {

template <class Fields>
std::string audit_line(std::string_view event, const Fields& fields) {
  std::string line = "\"event\":";
  append_json_string(line, event);
  for (const auto& [key, value] : fields) {
    line += ',';
    append_json_string(line, key);
    line += ':';
    append_json_string(line, value);
  }
  line += '}';
  return line;
}

}  // namespace

void audit_log::record(std::string_view event, std::initializer_list<field> fields) {
  if (logger_) logger_->info(audit_line(event, fields));
}

void audit_log::record(std::string_view event, const owned_fields& fields) {
  if (logger_) logger_->info(audit_line(event, fields));
}

void audit_log::auth_failure(std::string_view ip, std::string_view reason) {
  if (!logger_) return;
  const auto minute = current_minute();
  uint32_t count = 0;
  {
    std::lock_guard lock{mu_};
    auto it = failures_.find(std::string{ip});
    if (it == failures_.end()) {
      if (failures_.size() >= max_tracked_ips) {
        std::erase_if(failures_, [minute](const auto& kv) { return kv.second.minute != minute; });
        if (failures_.size() >= max_tracked_ips) failures_.clear();  // a flood of addresses
      }
      it = failures_.emplace(std::string{ip}, window{minute, 0}).first;
    }
    if (it->second.minute != minute) it->second = window{minute, 0};
    count = ++it->second.count;
  }
  if (count != threshold_) return;  // one line per IP per minute, when the threshold is reached
  record(
      "auth.failures",
      {{"ip", ip}, {"count", std::to_string(count)}, {"window_s", "60"}, {"last_reason", reason}});
}

bool audit_log::first_append(std::string_view sub, std::string_view run) {
  if (!logger_) return false;
  std::string key{sub};
  key += '\n';  // run ids never hold a newline: the pair splits one way only
  key += run;
  std::lock_guard lock{mu_};
  if (appends_.size() >= max_tracked_appends && !appends_.contains(key)) appends_.clear();
  return appends_.insert(std::move(key)).second;
}

std::string_view peer_ip(std::string_view peer) noexcept {
  // http_session writes address + ":" + port, IPv6 addresses unbracketed ("::1:5000").
  const auto colon = peer.rfind(':');
  return colon == std::string_view::npos ? peer : peer.substr(0, colon);
}

}  // namespace relay::net
