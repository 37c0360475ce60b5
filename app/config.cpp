#include "app/config.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <limits>
#include <map>
#include <type_traits>

#include "protocols/cors.hpp"
#include "protocols/room_access.hpp"

namespace relay {

namespace {

using setter = std::function<std::optional<std::string>(app_config&, std::string_view)>;
using getter = std::function<std::string(const app_config&)>;

/// One row of the option table: everything the file, the command line, --help and the
/// documented config file need to know about a key.
struct option {
  std::string_view key;   // "section.name"
  std::string_view help;  // one line: what it is and why
  std::string range;      // shown by --help ("0..65535", "trace|debug|…"); empty: any text
  bool quoted;            // text: written "quoted" in the documented config file
  setter set;
  getter get;
};

std::optional<uint64_t> parse_unsigned(std::string_view text) {
  uint64_t value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc{} || ptr != end) return std::nullopt;
  return value;
}

/// An unsigned integer field in [lo, hi]. `field` is a generic lambda returning a reference into
/// the config, so the same accessor serves the setter and the (const) getter.
template <class Field>
option number(std::string_view key, Field field, uint64_t lo, uint64_t hi, std::string_view help) {
  using T = std::remove_reference_t<decltype(field(std::declval<app_config&>()))>;
  static_assert(std::is_unsigned_v<T> || std::is_same_v<T, int64_t>);
  return {key,
          help,
          fmt::format("{}..{}", lo, hi),
          false,
          [field, lo, hi](app_config& c, std::string_view text) -> std::optional<std::string> {
            auto value = parse_unsigned(text);
            if (!value) return fmt::format("'{}' is not a whole number", text);
            if (*value < lo || *value > hi)
              return fmt::format("{} is out of range {}..{}", *value, lo, hi);
            field(c) = static_cast<T>(*value);
            return std::nullopt;
          },
          [field](const app_config& c) { return std::to_string(field(c)); }};
}

using text_check = std::optional<std::string> (*)(std::string_view);

template <class Field>
option text(std::string_view key, Field field, text_check check, std::string range,
            std::string_view help) {
  return {key,
          help,
          std::move(range),
          true,
          [field, check](app_config& c, std::string_view value) -> std::optional<std::string> {
            if (auto why = check(value)) return why;
            field(c) = std::string(value);
            return std::nullopt;
          },
          [field](const app_config& c) { return field(c); }};
}

std::optional<std::string> non_empty(std::string_view v) {
  if (v.empty()) return "must not be empty";
  return std::nullopt;
}

std::optional<std::string> jwt_key_list(std::string_view v) {
  auto refs = parse_jwt_key_list(v);
  if (!refs) return refs.err().message;
  return std::nullopt;
}

std::optional<std::string> host_name(std::string_view v) {
  if (v.empty()) return "must not be empty";
  if (v.find_first_of(" \t") != std::string_view::npos) return "must not contain spaces";
  return std::nullopt;
}

std::optional<std::string> url_base(std::string_view v) {
  if (v.empty()) return std::nullopt;
  if (!v.starts_with("http://") && !v.starts_with("https://"))
    return "must start with http:// or https://";
  if (v.ends_with('/')) return "must not end with '/' (paths are appended to it)";
  return std::nullopt;
}

std::optional<std::string> node_name(std::string_view v) {
  if (v.empty() || v.size() > 64) return "must be 1 to 64 characters";
  for (char ch : v) {
    bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-';
    if (!ok) return "may only contain letters, digits, '.', '_' and '-'";
  }
  return std::nullopt;
}

std::optional<std::string> any_text(std::string_view) { return std::nullopt; }

std::optional<std::string> optional_host(std::string_view v) {
  return v.empty() ? std::nullopt : host_name(v);
}

std::optional<std::string> cors_origins(std::string_view v) {
  auto list = parse_cors_origins(v);
  if (!list) return list.err().message;
  return std::nullopt;
}

constexpr std::array<std::string_view, 5> log_levels = {"trace", "debug", "info", "warn", "error"};

std::optional<std::string> log_level(std::string_view v) {
  for (auto level : log_levels)
    if (v == level) return std::nullopt;
  return "must be one of trace, debug, info, warn, error";
}

std::optional<std::string> storage_backend(std::string_view v) {
  if (v == "sqlite" || v == "postgres") return std::nullopt;
  return "must be sqlite or postgres";
}

/// storage.durability: an enum, written as its name.
option durability_option(std::string_view help) {
  return {"storage.durability",
          help,
          "none|batched|sync",
          true,
          [](app_config& c, std::string_view v) -> std::optional<std::string> {
            for (auto d : {durability::none, durability::batched, durability::sync})
              if (v == to_string(d)) {
                c.node.storage.mode = d;
                return std::nullopt;
              }
            return "must be one of none, batched, sync";
          },
          [](const app_config& c) { return std::string{to_string(c.node.storage.mode)}; }};
}

constexpr uint64_t kib = 1024;
constexpr uint64_t mib = 1024 * kib;
constexpr uint64_t gib = 1024 * mib;
constexpr uint64_t day_s = 86400;
constexpr uint64_t year_s = 365 * day_s;

#define RELAY_FIELD(path) \
  [](auto& c) -> auto& { return c.path; }

/// THE option table. Order is the order of --help and of the documented config file.
const std::vector<option>& options() {
  static const std::vector<option> table = {
      // server
      text("server.host", RELAY_FIELD(server.host), host_name, "",
           "Listen address: loopback keeps a dev server private; 0.0.0.0 serves every interface."),
      number("server.port", RELAY_FIELD(server.port), 0, 65535,
             "TCP port; 0 picks a free one (the `relay listening` line prints the bound port)."),
      number("server.io_threads", RELAY_FIELD(server.io_threads), 1, 256,
             "Asio threads moving bytes (one io_context each, every session pinned to one)."),
      text("server.public_url", RELAY_FIELD(server.public_url), url_base, "",
           "Absolute base of events_url in create answers, e.g. https://relay.example.com; "
           "empty: relative."),
      // auth
      text("auth.jwt_secret", RELAY_FIELD(server.jwt_secret), non_empty, "",
           "HS256 secret of bearer tokens. The default is public: set your own off loopback."),
      number("auth.leeway_s", RELAY_FIELD(server.jwt_leeway_s), 0, 3600,
             "Seconds of clock skew tolerated on a token's exp and nbf (and live connections)."),
      text("auth.jwt_keys", RELAY_FIELD(server.jwt_keys), jwt_key_list, "kid=HS256|RS256:path,...",
           "More verification keys, selected by a token's kid: RS256 public keys (PEM files) "
           "and HS256 secrets (files); two at once for rotation."),
      number("auth.jwt_secret_enabled", RELAY_FIELD(server.jwt_secret_enabled), 0, 1,
             "1: auth.jwt_secret verifies HS256 tokens; 0: only auth.jwt_keys do."),
      // limits
      number("limits.body_bytes", RELAY_FIELD(server.body_limit), 1, gib,
             "Largest HTTP request body (413 past it), so no request buffers without bound."),
      number("limits.header_bytes", RELAY_FIELD(server.header_limit), kib, mib,
             "Largest request head (request line and headers)."),
      number("limits.header_timeout_s", RELAY_FIELD(server.header_timeout_s), 1, 3600,
             "Seconds a client has to send a whole request, so stalled clients free their slot."),
      number("limits.idle_timeout_s", RELAY_FIELD(server.idle_timeout_s), 1, day_s,
             "Seconds an idle keep-alive connection stays open."),
      number("limits.max_connections", RELAY_FIELD(server.max_connections), 1, 10'000'000,
             "Open connections at most; past it new ones get 503, so memory stays bounded."),
      number("limits.max_connections_per_ip", RELAY_FIELD(server.max_connections_per_ip), 0,
             10'000'000,
             "Open connections per client address; past it 429 at once. 0 = off (behind a proxy "
             "every client has its address)."),
      number("limits.shun_s", RELAY_FIELD(server.shun_s), 0, day_s,
             "Seconds a client that ignores its 429s is first shunned: the kernel drops its "
             "connection attempts (a socket filter; Linux). 0 = off."),
      number("limits.shun_after", RELAY_FIELD(server.shun_after), 1, 10'000'000,
             "Refusals at accept (rate.connections_*, max_connections_per_ip) of one address "
             "within about 10 s that shun it."),
      number("limits.shun_max_s", RELAY_FIELD(server.shun_max_s), 0, day_s,
             "Longest shun: an address shunned again within its probation (as long as its last "
             "shun) is shunned twice as long, up to this."),
      number("limits.ipv6_prefix", RELAY_FIELD(server.ipv6_prefix), 16, 128,
             "Leading bits of an IPv6 address that name one client for the per-address limits "
             "and the shun (a subscriber gets a /64); 128: every address on its own."),
      number("limits.body_timeout_s", RELAY_FIELD(server.body_timeout_s), 1, 3600,
             "Seconds a client has to send a request body once its head is in (no trickling)."),
      // sse
      number("sse.outbound_limit_bytes", RELAY_FIELD(server.sse_outbound_limit), 4 * kib, gib,
             "Bytes queued per client at most; past it the client is closed as a slow consumer."),
      number("sse.retry_ms", RELAY_FIELD(server.sse_retry_ms), 0, 3'600'000,
             "The `retry:` sent first: how long an EventSource waits before it reconnects."),
      number("sse.heartbeat_s", RELAY_FIELD(server.sse_heartbeat_s), 1, 3600,
             "Seconds of silence before a `: hb` comment, so proxies keep idle streams open."),
      number("sse.write_delay_ms", RELAY_FIELD(server.sse_write_delay_ms), 0, 1000,
             "Coalesce a client's writes this long: fewer syscalls at high fan-out; 0 = off."),
      // ws
      number("ws.max_message_bytes", RELAY_FIELD(server.ws_max_message), 256, 16 * mib,
             "Largest client WebSocket message; past it the connection is closed with 1009."),
      number("ws.max_subscriptions", RELAY_FIELD(server.ws_max_subscriptions), 1, 100'000,
             "Topics (runs and rooms) one connection may follow; past it subscribe answers error."),
      number("ws.max_rooms", RELAY_FIELD(server.ws_max_rooms), 1, 100'000,
             "Rooms one connection may join; past it join answers error too_large."),
      number("ws.heartbeat_ms", RELAY_FIELD(server.ws_heartbeat_ms), 100, 3'600'000,
             "Interval of the server's ping frames (announced in `hello`)."),
      number("ws.timeout_ms", RELAY_FIELD(server.ws_timeout_ms), 200, 7'200'000,
             "A peer that sends nothing (not even a pong) this long is closed."),
      number("ws.outbound_limit_bytes", RELAY_FIELD(server.ws_outbound_limit), 4 * kib, gib,
             "Bytes queued per connection at most; past it the client is closed with 4001."),
      // http
      text("http.cors_origins", RELAY_FIELD(server.cors_origins), cors_origins, "",
           "Origins whose pages may call the API (CORS), e.g. \"https://app.example "
           "http://localhost:3000\", or *; empty: no CORS headers. Also the WebSocket allow-list."),
      number("http.cors_max_age_s", RELAY_FIELD(server.cors_max_age_s), 0, day_s,
             "Seconds a browser may cache a preflight answer (Access-Control-Max-Age)."),
      // tls
      text("tls.cert_path", RELAY_FIELD(server.tls_cert_path), any_text, "",
           "PEM certificate chain of the HTTPS/WSS listener; empty: no TLS listener."),
      text("tls.key_path", RELAY_FIELD(server.tls_key_path), any_text, "",
           "PEM private key of tls.cert_path."),
      text("tls.host", RELAY_FIELD(server.tls_host), optional_host, "",
           "Listen address of the TLS listener; empty: server.host (e.g. TLS on 0.0.0.0, plain "
           "on loopback)."),
      number("tls.port", RELAY_FIELD(server.tls_port), 0, 65535,
             "TLS port beside the plain server.port (same host and API); 0 picks a free one."),
      number("tls.handshake_timeout_s", RELAY_FIELD(server.tls_handshake_timeout_s), 1, 3600,
             "Seconds a client has to finish the TLS handshake, so stalled ones free their slot."),
      number("tls.hsts_max_age_s", RELAY_FIELD(server.hsts_max_age_s), 0, 2 * year_s,
             "Strict-Transport-Security max-age sent on TLS answers; 0: no HSTS header."),
      // node
      text("node.name", RELAY_FIELD(node.name), node_name, "[A-Za-z0-9._-]{1,64}",
           "This node's name in /health, in logs and, later, in the cluster."),
      number("node.scheduler_threads", RELAY_FIELD(node.scheduler_threads), 0, 256,
             "CAF scheduler threads running the actors; 0 = one per core."),
      number("node.scheduler_poll", RELAY_FIELD(node.scheduler_poll), 0, 100'000,
             "Polls for work an idle scheduler thread makes before it sleeps: N in a spin, then N "
             "50 us apart. 0 sleeps at once and spares the CPU under steady load (CAF: 100, 500)."),
      // runs
      number("runs.ring_capacity", RELAY_FIELD(node.ring_capacity), 1, 10'000'000,
             "Events a run keeps for replay; a client resuming from before them gets a `gap`."),
      number("runs.inactivity_s", RELAY_FIELD(node.limits.default_inactivity_s), 1, year_s,
             "Default seconds without a producer event before a run times out (per-run override)."),
      number("runs.max_inactivity_s", RELAY_FIELD(node.limits.max_inactivity_s), 1, year_s,
             "Largest inactivity_s a create request may ask for."),
      number("runs.ttl_s", RELAY_FIELD(node.limits.default_ttl_s), 0, year_s,
             "Default seconds a finished run stays replayable before it is passivated."),
      number("runs.max_ttl_s", RELAY_FIELD(node.limits.max_ttl_s), 0, year_s,
             "Largest ttl_s a create request may ask for."),
      number("runs.max_data_bytes", RELAY_FIELD(node.limits.max_data_bytes), 1, 64 * mib,
             "Largest event `data` (and run `input`) as JSON text; 413 past it."),
      number("runs.max_events_per_post", RELAY_FIELD(node.limits.max_events_per_post), 1, 1'000'000,
             "Events one POST /v1/runs/{id}/events may carry."),
      number("runs.max_active_per_user", RELAY_FIELD(node.limits.max_active_per_user), 0,
             10'000'000,
             "Running runs one owner may have at once; past it create gets 429. 0 = off."),
      number("runs.max_key_bytes", RELAY_FIELD(node.limits.max_key_bytes), 1, 4096,
             "Longest idempotency_key or owner in a create request."),
      number("runs.max_synthetic_count", RELAY_FIELD(node.limits.max_synthetic_count), 1,
             std::numeric_limits<uint32_t>::max(), "Largest input.count of a synthetic run."),
      number("runs.max_synthetic_size", RELAY_FIELD(node.limits.max_synthetic_size), 1, 64 * mib,
             "Largest input.size (payload bytes per delta) of a synthetic run."),
      number("runs.synthetic_batch", RELAY_FIELD(node.synthetic_batch), 1, 100'000,
             "Events a synthetic run emits per tick at interval_ms 0, so it never hogs a thread."),
      // rooms
      number("rooms.idle_s", RELAY_FIELD(node.room_idle_s), 1, year_s,
             "A room with no members and no subscribers passivates after this many idle seconds."),
      number("rooms.dedup_window", RELAY_FIELD(node.room_dedup_window), 1, 10'000'000,
             "(user, client_msg_id) pairs a room remembers, so a retried send is not doubled."),
      // storage
      text("storage.backend", RELAY_FIELD(node.storage.backend), storage_backend, "sqlite|postgres",
           "Where events and runs are kept: sqlite (one file) or postgres."),
      text("storage.path", RELAY_FIELD(node.storage.path), non_empty, "",
           "The SQLite database file (its directory is created); relative to the working dir."),
      text(
          "storage.postgres", RELAY_FIELD(node.storage.postgres),
          [](std::string_view) { return std::optional<std::string>{}; }, "",
          "libpq connection string for storage.backend = postgres (e.g. host=... dbname=...)."),
      durability_option("none: memory only; batched: group commits (acks may precede them by "
                        "flush_ms); sync: acks wait for the commit."),
      number("storage.flush_ms", RELAY_FIELD(node.storage.flush_ms), 1, 60'000,
             "Group commit window: events are written at most this long after they arrive."),
      number("storage.flush_events", RELAY_FIELD(node.storage.flush_events), 1, 1'000'000,
             "... or as soon as this many are waiting, whichever comes first."),
      number("storage.max_pending_events", RELAY_FIELD(node.storage.max_pending_events), 1,
             100'000'000,
             "Uncommitted events at most (storage slow or down); past it producers get 503."),
      number("storage.backpressure_events", RELAY_FIELD(node.storage.backpressure_events), 0,
             100'000'000,
             "Uncommitted events past which a producer's ack waits for the commit (batched), "
             "slowing producers to what storage takes; 0 = never wait."),
      number("storage.retention_events_s", RELAY_FIELD(node.storage.retention_events_s), 0,
             100 * year_s, "Events older than this many seconds are deleted; 0 keeps them."),
      number("storage.retention_runs_s", RELAY_FIELD(node.storage.retention_runs_s), 0,
             100 * year_s,
             "Runs that ended longer ago are deleted with their events; 0 keeps them."),
      number("storage.retention_interval_s", RELAY_FIELD(node.storage.retention_interval_s), 1,
             day_s, "How often retention runs (when either age is set)."),
      // supervisor
      number(
          "supervisor.restart_max", RELAY_FIELD(node.restart_max), 0, 1000,
          "Restarts of a crashed run or room per window; past them a run ends failed (crashed)."),
      number("supervisor.restart_window_s", RELAY_FIELD(node.restart_window_s), 1, day_s,
             "The window of supervisor.restart_max, in seconds."),
      // rate
      number("rate.connections_per_s", RELAY_FIELD(server.rate_connections.per_s), 0, 10'000'000,
             "Connection attempts per client address and second (token bucket); 429 past it. "
             "0 = off."),
      number("rate.connections_burst", RELAY_FIELD(server.rate_connections.burst), 1, 10'000'000,
             "... and at once (the bucket's depth)."),
      number("rate.runs_per_s", RELAY_FIELD(server.rate_runs.per_s), 0, 10'000'000,
             "Runs one user (token sub) may create per second; 429 past it. 0 = off."),
      number("rate.runs_burst", RELAY_FIELD(server.rate_runs.burst), 1, 10'000'000,
             "... and at once."),
      number("rate.events_per_s", RELAY_FIELD(server.rate_events.per_s), 0, 100'000'000,
             "Producer events one user may append per second (counted in events, not requests; "
             "a refused POST appends none). 0 = off."),
      number("rate.events_burst", RELAY_FIELD(server.rate_events.burst), 1, 100'000'000,
             "... and at once (a POST of more events than this is refused with 413)."),
      number("rate.messages_per_s", RELAY_FIELD(server.rate_messages.per_s), 0, 10'000'000,
             "Room messages one user may send per second (HTTP and WebSocket). 0 = off."),
      number("rate.messages_burst", RELAY_FIELD(server.rate_messages.burst), 1, 10'000'000,
             "... and at once."),
      number("rate.max_keys", RELAY_FIELD(server.rate_max_keys), 16, 100'000'000,
             "Buckets kept per kind at most (users or addresses); past it refilled ones, then the "
             "least recently used, are forgotten, so memory stays bounded."),
      // audit
      text(
          "audit.path", RELAY_FIELD(server.audit_path),
          [](std::string_view) { return std::optional<std::string>{}; }, "",
          "Audit log file (JSON lines: privileged actions, repeated auth failures); empty = off."),
      number("audit.auth_failures_per_min", RELAY_FIELD(server.audit_failures_per_min), 1,
             1'000'000, "Auth failures of one IP in a minute that make one audit line."),
      // log
      text("log.level", RELAY_FIELD(log_level), log_level, "trace|debug|info|warn|error",
           "Least severe level logged."),
      text("log.format", RELAY_FIELD(log_format), non_empty, "",
           "spdlog pattern of a log line (%v: the message, %l: the level)."),
  };
  return table;
}

#undef RELAY_FIELD

/// Options that bound another one: the first may not exceed the second.
constexpr std::array<std::pair<std::string_view, std::string_view>, 2> bounded_by = {{
    {"runs.inactivity_s", "runs.max_inactivity_s"},
    {"runs.ttl_s", "runs.max_ttl_s"},
}};

/// One line of text per section in the documented config file.
constexpr std::array<std::pair<std::string_view, std::string_view>, 15> sections = {{
    {"server", "Where Relay listens."},
    {"auth", "Bearer JWT (HS256, RS256) verification; mint HS256 tokens with `relay token`."},
    {"limits", "Bounds on HTTP connections and requests: past them a request is refused."},
    {"sse", "Server-Sent Events streams."},
    {"ws", "WebSocket connections at /v1/ws."},
    {"http", "What browsers are told: CORS allow-list (security headers are always sent)."},
    {"tls", "Optional HTTPS/WSS listener beside the plain one (TLS 1.2+)."},
    {"node", "This process in the actor system."},
    {"runs", "Streamed runs: replay ring, timers, and the bounds of create requests."},
    {"rooms", "Chat rooms: passivation and send deduplication."},
    {"storage",
     "Durable storage of runs and events (SQLite by default, PostgreSQL for a cluster)."},
    {"supervisor", "Restart budget of crashed run and room actors (as OTP supervisors have)."},
    {"rate",
     "Token buckets: per client address (connections) and per user (runs, events, messages); "
     "past them 429 with Retry-After, or an `error` op rate_limited on a WebSocket."},
    {"audit", "The audit log: a file of its own, one JSON object per line."},
    {"log", "Logging: one console logger on stderr."},
}};

const option* find_option(std::string_view key) {
  for (const auto& opt : options())
    if (opt.key == key) return &opt;
  return nullptr;
}

std::string_view section_of(std::string_view key) { return key.substr(0, key.find('.')); }
std::string_view name_in_section(std::string_view key) { return key.substr(key.find('.') + 1); }

std::string_view trim(std::string_view s) {
  auto first = s.find_first_not_of(" \t\r");
  if (first == std::string_view::npos) return {};
  auto last = s.find_last_not_of(" \t\r");
  return s.substr(first, last - first + 1);
}

std::string quote(std::string_view v) {
  std::string out = "\"";
  for (char ch : v) {
    if (ch == '"' || ch == '\\') out += '\\';
    out += ch;
  }
  out += '"';
  return out;
}

/// The value part of a config line: "quoted" (with \" and \\) or bare; a `#` comment may follow
/// (after a bare value only when preceded by whitespace, so `a#b` stays one value).
result<std::string> parse_value(std::string_view raw) {
  if (raw.starts_with('"')) {
    std::string out;
    size_t i = 1;
    for (; i < raw.size() && raw[i] != '"'; ++i) {
      if (raw[i] == '\\') {
        if (i + 1 >= raw.size() || (raw[i + 1] != '"' && raw[i + 1] != '\\'))
          return error{errc::bad_request, "only \\\" and \\\\ may be escaped in a quoted value"};
        ++i;
      }
      out += raw[i];
    }
    if (i >= raw.size()) return error{errc::bad_request, "unterminated quoted value"};
    auto rest = trim(raw.substr(i + 1));
    if (!rest.empty() && rest[0] != '#')
      return error{errc::bad_request, "unexpected text after the quoted value"};
    return out;
  }
  for (size_t i = 1; i < raw.size(); ++i)
    if (raw[i] == '#' && (raw[i - 1] == ' ' || raw[i - 1] == '\t'))
      return std::string(trim(raw.substr(0, i)));
  if (raw.starts_with('#')) return std::string();
  return std::string(raw);
}

/// Applies settings in order, remembering where each key was last set so that the cross-checks
/// can name a file line too.
class loader {
 public:
  app_config cfg;

  std::optional<std::string> apply(std::string_view key, std::string_view value,
                                   std::string where) {
    const option* opt = find_option(key);
    if (!opt) return fmt::format("{}: unknown key '{}'", where, key);
    if (auto why = opt->set(cfg, value)) return fmt::format("{}: {}: {}", where, key, *why);
    where_[std::string(key)] = std::move(where);
    return std::nullopt;
  }

  std::optional<std::string> apply_text(std::string_view text, std::string_view origin) {
    std::string section;
    size_t line_no = 0;
    while (!text.empty()) {
      auto nl = text.find('\n');
      auto line = trim(text.substr(0, nl));
      text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
      ++line_no;
      auto where = fmt::format("{}:{}", origin, line_no);
      if (line.empty() || line[0] == '#') continue;
      if (line[0] == '[') {
        if (line.back() != ']') return fmt::format("{}: a section header is [name]", where);
        section = std::string(trim(line.substr(1, line.size() - 2)));
        if (section.empty()) return fmt::format("{}: empty section name", where);
        continue;
      }
      auto eq = line.find('=');
      if (eq == std::string_view::npos)
        return fmt::format("{}: expected `key = value`, got '{}'", where, line);
      auto name = trim(line.substr(0, eq));
      if (name.empty()) return fmt::format("{}: missing key before '='", where);
      auto key = section.empty() ? std::string(name) : section + "." + std::string(name);
      auto value = parse_value(trim(line.substr(eq + 1)));
      if (!value) return fmt::format("{}: {}: {}", where, key, value.err().message);
      if (auto why = apply(key, *value, where)) return why;
    }
    return std::nullopt;
  }

  std::optional<std::string> check() const {
    for (auto [small, big] : bounded_by) {
      auto s = std::stoull(find_option(small)->get(cfg));
      auto b = std::stoull(find_option(big)->get(cfg));
      if (s > b)
        return fmt::format("{}: {} = {} exceeds {} = {} ({})", where(small), small, s, big, b,
                           where(big));
    }
    if (!cfg.server.jwt_secret_enabled && cfg.server.jwt_keys.empty())
      return fmt::format("{}: auth.jwt_secret_enabled = 0 leaves no key: set auth.jwt_keys",
                         where("auth.jwt_secret_enabled"));
    return std::nullopt;
  }

 private:
  std::string where(std::string_view key) const {
    auto it = where_.find(key);
    return it == where_.end() ? "built-in default" : it->second;
  }

  std::map<std::string, std::string, std::less<>> where_;
};

result<uint64_t> positive_seconds(std::string_view arg, std::string_view text) {
  auto v = parse_unsigned(text);
  if (!v || *v == 0 || *v > 10 * year_s)
    return error{errc::bad_request, fmt::format("{}: '{}' is not a number of seconds (1..{})", arg,
                                                text, 10 * year_s)};
  return *v;
}

constexpr std::array<std::pair<std::string_view, command>, 5> commands = {{
    {"serve", command::serve},
    {"token", command::token},
    {"config", command::config},
    {"help", command::help},
    {"version", command::version},
}};

/// `relay token --rooms "support-*,team.a"`: comma-separated room patterns (blanks around them
/// ignored); "" is the empty list (a token that may use no room).
result<std::vector<std::string>> parse_rooms_arg(std::string_view text) {
  std::vector<std::string> out;
  while (!text.empty()) {
    const auto comma = text.find(',');
    auto item = text.substr(0, comma);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (!valid_room_pattern(item))
      return error{errc::bad_request, fmt::format("--rooms: '{}' is not a room pattern", item)};
    out.emplace_back(item);
    if (out.size() > max_room_patterns)
      return error{errc::bad_request,
                   fmt::format("--rooms: at most {} patterns", max_room_patterns)};
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return out;
}

}  // namespace

result<command_line> parse_command_line(const std::vector<std::string_view>& args) {
  command_line cl;
  size_t i = 0;
  auto fail = [](std::string message) { return error{errc::bad_request, std::move(message)}; };
  if (!args.empty() && !args[0].starts_with('-')) {
    auto it = std::find_if(commands.begin(), commands.end(),
                           [&](const auto& c) { return c.first == args[0]; });
    if (it == commands.end())
      return fail(fmt::format("unknown command '{}' (serve, token, config)", args[0]));
    cl.cmd = it->second;
    ++i;
  }
  bool have_role = false;
  for (; i < args.size(); ++i) {
    auto arg = args[i];
    if (arg == "--help" || arg == "-h") {
      cl.cmd = command::help;
      return cl;
    }
    if (arg == "--version") {
      cl.cmd = command::version;
      return cl;
    }
    if (!arg.starts_with("--") || arg.size() == 2)
      return fail(fmt::format("unexpected argument '{}'", arg));
    auto name = arg.substr(2);
    std::string_view value;
    if (auto eq = name.find('='); eq != std::string_view::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      return fail(fmt::format("--{} needs a value", name));
    }

    bool token_arg = name == "sub" || name == "role" || name == "ttl" || name == "kid" ||
                     name == "key" || name == "rooms";
    if (token_arg && cl.cmd != command::token)
      return fail(fmt::format("--{} is an option of `relay token`", name));
    if (name == "config") {
      cl.config_path = std::string(value);
    } else if (name == "host" || name == "port") {
      cl.settings.emplace_back(fmt::format("server.{}", name), std::string(value));
    } else if (name == "sub") {
      if (value.empty()) return fail("--sub must not be empty");
      cl.token.sub = std::string(value);
    } else if (name == "role") {
      auto r = parse_role(value);
      if (!r) return fail(fmt::format("--role: '{}' is not user, service or admin", value));
      cl.token.who = *r;
      have_role = true;
    } else if (name == "ttl") {
      auto ttl = positive_seconds("--ttl", value);
      if (!ttl) return ttl.err();
      cl.token.ttl_s = static_cast<int64_t>(*ttl);
    } else if (name == "kid") {
      if (!valid_kid(value))
        return fail(fmt::format("--kid: '{}' is not 1 to 64 of A-Z a-z 0-9 . _ -", value));
      cl.token.kid = std::string(value);
    } else if (name == "key") {
      if (value.empty()) return fail("--key needs the path of an RSA private key (PEM)");
      cl.token.key_path = std::string(value);
    } else if (name == "rooms") {
      auto rooms = parse_rooms_arg(value);
      if (!rooms) return rooms.err();
      cl.token.rooms = std::move(*rooms);
    } else if (find_option(name)) {
      cl.settings.emplace_back(std::string(name), std::string(value));
    } else {
      return fail(fmt::format("unknown option --{} (see relay --help)", name));
    }
  }
  if (cl.cmd == command::token && (cl.token.sub.empty() || !have_role))
    return fail("relay token needs --sub NAME and --role user|service|admin");
  return cl;
}

result<app_config> parse_config_text(std::string_view text, std::string_view origin) {
  loader l;
  if (auto why = l.apply_text(text, origin)) return error{errc::bad_request, *why};
  if (auto why = l.check()) return error{errc::bad_request, *why};
  return std::move(l.cfg);
}

result<app_config> resolve_config(const command_line& cl, const file_reader& read) {
  loader l;
  auto path = cl.config_path.value_or(std::string(default_config_path));
  auto text = read(path);
  if (text) {
    if (auto why = l.apply_text(*text, path)) return error{errc::bad_request, *why};
  } else if (cl.config_path || text.err().code != errc::not_found) {
    return error{errc::bad_request, fmt::format("config file {}: {}", path, text.err().message)};
  }
  for (const auto& [key, value] : cl.settings)
    if (auto why = l.apply(key, value, fmt::format("command line --{}", key)))
      return error{errc::bad_request, *why};
  if (auto why = l.check()) return error{errc::bad_request, *why};
  return std::move(l.cfg);
}

std::optional<std::string> set_option(app_config& cfg, std::string_view key,
                                      std::string_view value) {
  const option* opt = find_option(key);
  if (!opt) return fmt::format("unknown key '{}'", key);
  return opt->set(cfg, value);
}

std::optional<std::string> get_option(const app_config& cfg, std::string_view key) {
  const option* opt = find_option(key);
  if (!opt) return std::nullopt;
  return opt->get(cfg);
}

std::vector<std::string_view> option_keys() {
  std::vector<std::string_view> keys;
  for (const auto& opt : options()) keys.push_back(opt.key);
  return keys;
}

std::string help_text() {
  const app_config defaults;
  std::string out = fmt::format(
      "relay {} — realtime backend: streamed runs over SSE with resume.\n"
      "\n"
      "Usage:\n"
      "  relay [serve] [options]     run the server until SIGTERM or SIGINT\n"
      "  relay token --sub NAME --role user|service|admin [--ttl SECONDS] [--kid KID]\n"
      "              [--rooms 'PATTERN,...'] [--key PRIVATE.pem] [options]\n"
      "                              print a JWT (default ttl 3600): HS256 with auth.jwt_secret,\n"
      "                              or RS256 with the RSA private key of --key\n"
      "  relay config [options]      print the effective configuration as a config file\n"
      "  relay --version | --help\n"
      "\n"
      "Options: every key of the config file, as --key=value or --key value; the command line\n"
      "overrides the file. Each is shown with its default.\n"
      "  --config PATH\n"
      "      Config file (default: {} if it exists, else built-in defaults).\n"
      "  --host HOST, --port PORT\n"
      "      Short for --server.host, --server.port.\n",
      relay_version, default_config_path);
  std::string_view section;
  for (const auto& opt : options()) {
    if (section_of(opt.key) != section) {
      section = section_of(opt.key);
      out += '\n';
    }
    out += fmt::format("  --{}={}\n      {}", opt.key, opt.get(defaults), opt.help);
    if (!opt.range.empty()) out += fmt::format(" ({})", opt.range);
    out += '\n';
  }
  return out;
}

std::string render_config_file(const app_config& cfg) {
  const app_config defaults;
  std::string out =
      "# Relay configuration: every option with its default and what it is for.\n"
      "# Generated by `relay config` from the option table in app/config.cpp (a unit test keeps\n"
      "# this file equal to it); `relay config --key=value` prints it with your changes.\n"
      "#\n"
      "# Format: `key = value` lines, `#` comments, values may be \"quoted\". A `[section]` line\n"
      "# prefixes the keys below it: `[server]` then `port = 8080` means `server.port = 8080`.\n"
      "# Every key can be overridden on the command line as --key=value (--server.port=9000),\n"
      "# and the command line wins over this file. `relay --help` lists the same options.\n";
  std::string_view section;
  for (const auto& opt : options()) {
    if (section_of(opt.key) != section) {
      section = section_of(opt.key);
      out += '\n';
      for (auto [name, about] : sections)
        if (name == section) out += fmt::format("# {}\n", about);
      out += fmt::format("[{}]\n", section);
    } else {
      out += '\n';
    }
    auto value = opt.get(cfg);
    auto fallback = opt.get(defaults);
    auto shown = [&](const std::string& v) { return opt.quoted ? quote(v) : v; };
    out += fmt::format("# {}", opt.help);
    if (value != fallback) out += fmt::format(" (default: {})", shown(fallback));
    out += fmt::format("\n{} = {}", name_in_section(opt.key), shown(value));
    if (!opt.range.empty()) out += fmt::format("  # {}", opt.range);
    out += '\n';
  }
  return out;
}

bool is_loopback_host(std::string_view host) noexcept {
  return host == "localhost" || host == "::1" || host == "[::1]" || host.starts_with("127.");
}

std::optional<std::string> insecure_secret_warning(const app_config& cfg) {
  if (cfg.server.jwt_secret != development_secret || !cfg.server.jwt_secret_enabled)
    return std::nullopt;
  // The TLS listener (tls.cert_path set) may face the network while the plain one does not.
  const bool tls_on = !cfg.server.tls_cert_path.empty();
  const auto& tls_host = cfg.server.tls_host.empty() ? cfg.server.host : cfg.server.tls_host;
  const auto& exposed = !is_loopback_host(cfg.server.host) ? cfg.server.host : tls_host;
  if (is_loopback_host(cfg.server.host) && (!tls_on || is_loopback_host(tls_host)))
    return std::nullopt;
  return fmt::format(
      "INSECURE: auth.jwt_secret is the public development secret while listening on {} (not "
      "loopback): anyone can mint tokens. Set auth.jwt_secret in the config file or with "
      "--auth.jwt_secret.",
      exposed);
}

}  // namespace relay
