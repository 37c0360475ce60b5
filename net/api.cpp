#include "net/api.hpp"

#include <spdlog/spdlog.h>

#include <boost/beast/core/string.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <limits>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "net/audited.hpp"
#include "net/beast.hpp"
#include "net/http_session.hpp"
#include "net/server_state.hpp"
#include "protocols/http_api.hpp"
#include "protocols/jwt.hpp"
#include "protocols/metrics.hpp"
#include "protocols/room.hpp"
#include "protocols/room_access.hpp"
#include "protocols/run.hpp"
#include "protocols/sse.hpp"
#include "protocols/ws_frame.hpp"

namespace relay::net {

namespace {

using session_ptr = std::shared_ptr<http_session>;

int64_t now_s() {
  using namespace std::chrono;
  return duration_cast<seconds>(system_clock::now().time_since_epoch()).count();
}

// The methods a known path accepts, for the Allow header of a 405.
std::string allowed_methods(std::string_view target) {
  std::string allow;
  for (std::string_view m : {"GET", "POST"}) {
    if (match_route(m, target)) {
      if (!allow.empty()) allow += ", ";
      allow += m;
    }
  }
  return allow;
}

// Prefixes a relative events_url with server.public_url, when one is configured.
std::string absolute_events_url(std::string body, const std::string& public_url) {
  if (public_url.empty()) return body;
  boost::system::error_code ec;
  auto v = boost::json::parse(body, ec);
  if (ec || !v.is_object()) return body;
  auto& obj = v.as_object();
  auto* url = obj.if_contains("events_url");
  if (!url || !url->is_string()) return body;
  const std::string_view rel{url->as_string().data(), url->as_string().size()};
  if (!rel.starts_with('/')) return body;
  std::string_view base = public_url;
  while (!base.empty() && base.back() == '/') base.remove_suffix(1);
  std::string full{base};
  full += rel;
  *url = full;
  return boost::json::serialize(v);
}

// A node callback that formats the answer on the session's thread, holding the session strongly
// until then (node callbacks run on a CAF thread: the session is never touched there).
template <class T, class Format>
callback<T> answer_on(const session_ptr& s, Format format) {
  return [s, format = std::move(format)](result<T> r) mutable {
    s->post_reply([format = std::move(format), r = std::move(r)]() mutable -> response {
      if (!r) return error_response(r.err());
      return format(std::move(r.value()));
    });
  };
}

// The answer to a rate refusal from server_state::take (429 with Retry-After, or 413).
response refusal_response(std::pair<error, int64_t>&& r) {
  if (r.first.code == errc::rate_limited)
    return rate_limited_response(std::move(r.first.message), r.second);
  return error_response(r.first);
}

}  // namespace

void api::refuse_input(const error& e, const caller& who, const session_ptr& s) {
  if (e.code == errc::too_large) state_.refusals().refuse(refusal::data_too_large, who.sub);
  s->reply(error_response(e));
}

void api::handle(request&& req, const session_ptr& s) {
  const std::string_view target = req.target();
  auto r = match_route(req.method_string(), target);
  if (!r) {
    if (is_method_not_allowed(r.err()))
      return s->reply(method_not_allowed(allowed_methods(target)));
    if (admin_action(req, s)) return;
    return s->reply(error_response(r.err()));
  }
  switch (r->what) {
    case endpoint::health:
      return s->reply(health());
    case endpoint::metrics:
      return s->reply(metrics());
    case endpoint::websocket:
      return upgrade(req, s);
    default:
      break;
  }
  auto c = token_claims(req, &s->tokens());
  if (!c) {
    auth_failed(s->peer(), c.err());
    return s->reply(error_response(c.err()));
  }
  const bool room_endpoint =
      r->what == endpoint::room_post_message || r->what == endpoint::room_stream ||
      r->what == endpoint::room_presence || r->what == endpoint::room_history;
  if (room_endpoint && !room_allowed(c->rooms, r->id)) {
    state_.counters().auth_forbidden.fetch_add(1, std::memory_order_relaxed);
    return s->reply(
        error_response(errc::forbidden, "the token's rooms claim does not include this room"));
  }
  const auto expires_at_s = c->exp;
  const caller who{std::move(c->sub), c->who};
  switch (r->what) {
    case endpoint::runs_create:
      return create_run(req, who, s);
    case endpoint::runs_list:
      return list_runs(req, who, s);
    case endpoint::run_get:
      return state_.node().get_run(who, std::move(r->id), answer_on<run_info>(s, [](run_info info) {
                                     return json_response(http::status::ok, run_info_json(info));
                                   }));
    case endpoint::run_append:
      return append(req, who, std::move(r->id), s);
    case endpoint::run_stream:
      return stream(req, who, "run:" + r->id, false, expires_at_s, s);
    case endpoint::run_complete:
      return finish(req, who, std::move(r->id), finish_kind::complete, s);
    case endpoint::run_fail:
      return finish(req, who, std::move(r->id), finish_kind::fail, s);
    case endpoint::run_cancel:
      return finish(req, who, std::move(r->id), finish_kind::cancel, s);
    case endpoint::room_post_message:
      return post_message(req, who, std::move(r->id), s);
    case endpoint::room_stream:
      return stream(req, who, "room:" + r->id, true, expires_at_s, s);
    case endpoint::room_presence:
      return presence(who, std::move(r->id), s);
    case endpoint::room_history:
      return history(req, who, std::move(r->id), s);
    case endpoint::health:
    case endpoint::metrics:
    case endpoint::websocket:
      break;
  }
  s->reply(error_response(errc::not_found, "no such endpoint"));
}

bool api::admin_action(const request& req, const session_ptr& s) {
  const auto& actions = state_.admin_actions();
  if (actions.empty() || req.method() != http::verb::post) return false;
  std::string_view path = req.target();
  path = path.substr(0, path.find('?'));
  constexpr std::string_view prefix = "/v1/admin/";
  if (!path.starts_with(prefix)) return false;
  path.remove_prefix(prefix.size());
  const auto slash = path.find('/');
  if (slash == std::string_view::npos) return false;
  auto it = actions.find(path.substr(0, slash));
  if (it == actions.end()) return false;
  auto who = authenticate(req);
  const std::string target{req.target()};
  if (!who) {
    auth_failed(s->peer(), who.err());
    s->reply(error_response(who.err()));
  } else if (who->who != role::admin) {
    state_.counters().auth_forbidden.fetch_add(1, std::memory_order_relaxed);
    state_.audit().record("admin.denied", {{"sub", who->sub},
                                           {"role", to_string(who->who)},
                                           {"path", target},
                                           {"ip", peer_ip(s->peer())}});
    s->reply(error_response(errc::forbidden, "admin role required"));
  } else {
    spdlog::warn("admin action {} by sub={}", target, who->sub);
    // Audited with its outcome (the action's HTTP status), before the answer goes out.
    audit_log::owned_fields fields{
        {"sub", who->sub}, {"path", target}, {"ip", std::string{peer_ip(s->peer())}}};
    it->second(std::string{path.substr(slash + 1)},
               [s, &audit = state_.audit(), fields = std::move(fields)](unsigned status,
                                                                        std::string body) mutable {
                 fields.emplace_back("status", std::to_string(status));
                 audit.record("admin.action", fields);
                 s->post_reply([status, body = std::move(body)]() mutable {
                   return json_response(static_cast<http::status>(status), std::move(body));
                 });
               });
  }
  return true;
}

result<caller> api::authenticate(const request& req) const {
  auto c = token_claims(req);
  if (!c) return c.err();
  return caller{std::move(c->sub), c->who};
}

result<claims> api::token_claims(const request& req, token_cache* cache) const {
  // The header's token is a view into the request (no copy per request); only the query
  // parameter needs decoding into a string of its own.
  std::string_view token;
  std::optional<std::string> decoded;
  if (auto it = req.find(http::field::authorization); it != req.end())
    if (auto t = bearer_token(it->value())) token = *t;
  if (token.empty()) {
    decoded = query_param(req.target(), "access_token");
    if (decoded) token = *decoded;
  }
  if (token.empty()) return error{errc::unauthorized, "missing bearer token"};
  const auto leeway_s = state_.settings().jwt_leeway_s;
  const auto now = now_s();
  // exp + leeway, without overflow (exp comes from the token and may sit at INT64_MAX).
  auto fresh = [&](const claims& c) {
    return c.exp > std::numeric_limits<int64_t>::max() - leeway_s || now <= c.exp + leeway_s;
  };
  if (cache && !cache->token.empty() && cache->token == token && fresh(cache->verified))
    return cache->verified;
  auto c = verify_jwt(token, state_.jwt_keys(), now, leeway_s);
  state_.counters().token_verifications.fetch_add(1, std::memory_order_relaxed);
  if (cache && c) {
    cache->token.assign(token);
    cache->verified = *c;
  }
  return c;
}

result<claims> api::verify_token(std::string_view token) const {
  state_.counters().token_verifications.fetch_add(1, std::memory_order_relaxed);
  return verify_jwt(token, state_.jwt_keys(), now_s(), state_.settings().jwt_leeway_s);
}

void api::auth_failed(std::string_view peer, const error& why) const {
  state_.counters().auth_failures.fetch_add(1, std::memory_order_relaxed);
  state_.audit().auth_failure(peer_ip(peer), why.message);
}

namespace {

/// True when the comma-separated header value lists `token` (case-insensitive).
bool lists_token(std::string_view value, std::string_view token) {
  while (!value.empty()) {
    auto comma = value.find(',');
    auto item = value.substr(0, comma);
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    if (beast::iequals(item, token)) return true;
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
  return false;
}

}  // namespace

void api::upgrade(const request& req, const session_ptr& s) {
  // The upgrade is checked before the token so that a plain GET learns what the endpoint is.
  if (!lists_token(req[http::field::upgrade], "websocket") ||
      !lists_token(req[http::field::connection], "upgrade"))
    return s->reply(error_response(errc::bad_request,
                                   "GET /v1/ws expects a WebSocket upgrade (Upgrade: websocket)"));
  if (req[http::field::sec_websocket_version] != "13") {
    auto res = error_response(errc::bad_request, "unsupported Sec-WebSocket-Version (use 13)");
    res.result(http::status::upgrade_required);
    res.set(http::field::sec_websocket_version, "13");
    return s->reply(std::move(res));
  }
  const auto key = req[http::field::sec_websocket_key];
  if (!ws::valid_client_key(key))
    return s->reply(error_response(errc::bad_request, "invalid Sec-WebSocket-Key"));
  auto c = token_claims(req);
  if (!c) {
    auth_failed(s->peer(), c.err());
    return s->reply(error_response(c.err()));
  }
  s->start_websocket(ws_request{caller{std::move(c->sub), c->who}, c->exp, ws::accept_key(key),
                                std::move(c->rooms)});
}

response api::health() const {
  const auto storage = state_.node().storage();
  boost::json::object body;
  body["status"] = storage.ok ? "ok" : "degraded";
  body["node"] = state_.node().name();
  body["uptime_s"] = state_.uptime_s();
  body["storage"] = storage.ok ? "ok" : "unavailable";
  body["storage_backend"] = storage.backend;
  body["storage_pending_events"] = storage.pending_events;
  // 503 while storage fails: a load balancer stops sending producers here.
  return json_response(storage.ok ? http::status::ok : http::status::service_unavailable,
                       boost::json::serialize(body));
}

response api::metrics() const {
  std::vector<metric_sample> samples;
  state_.node().collect_metrics(samples);
  state_.counters().append_to(samples);  // relaxed atomics: nobody waits for a scrape
  state_.refusals().append_to(samples);
  response res{http::status::ok, 11};
  res.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
  res.body() = render_prometheus(samples);
  return res;
}

void api::create_run(const request& req, const caller& who, const session_ptr& s) {
  auto parsed = parse_create_run(req.body(), state_.node().limits());
  if (!parsed) return refuse_input(parsed.err(), who, s);
  const bool on_behalf = !parsed->owner.empty() && parsed->owner != who.sub;
  if (on_behalf && !at_least(who.who, role::service))
    return s->reply(error_response(errc::forbidden, "only a service may set owner"));
  if (auto r = state_.take(state_.rate_runs(), refusal::rate_runs, who.sub, 1))
    return s->reply(refusal_response(std::move(*r)));
  const auto owner = parsed->owner.empty() ? who.sub : parsed->owner;
  auto answer = answer_on<create_run_reply>(
      s, [public_url = state_.settings().public_url](create_run_reply reply) {
        auto res = json_response(reply.created ? http::status::created : http::status::ok,
                                 absolute_events_url(run_created_json(reply.info), public_url));
        res.set(http::field::location, "/v1/runs/" + reply.info.id);
        return res;
      });
  if (on_behalf)
    answer = audited(state_.audit(), "run.create",
                     {{"sub", who.sub},
                      {"role", std::string{to_string(who.who)}},
                      {"owner", owner},
                      {"ip", std::string{peer_ip(s->peer())}}},
                     std::move(answer));
  // runs.max_active_per_user is the shard's (it knows which runs are active): counted here.
  state_.node().create_run(who, std::move(*parsed),
                           [refused = &state_.refusals(), owner,
                            answer = std::move(answer)](result<create_run_reply> r) mutable {
                             // (the session, held by `answer`, keeps the server state alive)
                             if (!r && r.err().code == errc::rate_limited)
                               refused->refuse(refusal::active_runs, owner);
                             answer(std::move(r));
                           });
}

void api::list_runs(const request& req, const caller& who, const session_ptr& s) {
  bool active_only = false;
  if (auto status = query_param(req.target(), "status")) {
    if (*status != "active")
      return s->reply(error_response(errc::bad_request, "status must be \"active\""));
    active_only = true;
  }
  state_.node().list_runs(who, active_only,
                          answer_on<std::vector<run_info>>(s, [](std::vector<run_info> runs) {
                            return json_response(http::status::ok, run_list_json(runs));
                          }));
}

void api::append(const request& req, const caller& who, std::string id, const session_ptr& s) {
  auto events = parse_events(req.body(), state_.node().limits());
  if (!events) return refuse_input(events.err(), who, s);
  // All the POST's events or none: a refused batch appends nothing.
  if (auto r = state_.take(state_.rate_events(), refusal::rate_events, who.sub,
                           static_cast<double>(events->size())))
    return s->reply(refusal_response(std::move(*r)));
  auto done = answer_on<uint64_t>(s, [](uint64_t last_seq) {
    return json_response(http::status::accepted, "{\"last_seq\":" + std::to_string(last_seq) + "}");
  });
  // The first append of a service (or admin) to this run that reaches the run is audited.
  if (at_least(who.who, role::service) && state_.audit().first_append(who.sub, id))
    done =
        audited(state_.audit(), "run.append", producer_fields(who, id, s->peer()), std::move(done));
  state_.node().append(who, std::move(id), std::move(*events), std::move(done));
}

void api::finish(const request& req, const caller& who, std::string id, finish_kind how,
                 const session_ptr& s) {
  const auto& limits = state_.node().limits();
  std::string data = "null";
  if (how == finish_kind::complete || how == finish_kind::fail) {
    auto parsed = how == finish_kind::complete ? parse_complete(req.body(), limits)
                                               : parse_fail(req.body(), limits);
    if (!parsed) return refuse_input(parsed.err(), who, s);
    data = std::move(*parsed);
  }
  auto done = answer_on<run_info>(
      s, [](run_info info) { return json_response(http::status::ok, run_info_json(info)); });
  if (at_least(who.who, role::service)) {
    const auto* event = how == finish_kind::complete ? "run.complete"
                        : how == finish_kind::fail   ? "run.fail"
                                                     : "run.cancel";
    done = audited(state_.audit(), event, producer_fields(who, id, s->peer()), std::move(done));
  }
  state_.node().finish(who, std::move(id), how, std::move(data), std::move(done));
}

void api::stream(const request& req, const caller& who, std::string topic, bool default_from_now,
                 int64_t expires_at_s, const session_ptr& s) {
  uint64_t after = 0;
  bool from_now = default_from_now;
  if (auto it = req.find("Last-Event-ID"); it != req.end()) {
    auto pos = parse_position(it->value());
    if (!pos) return s->reply(error_response(pos.err()));
    after = *pos;
    from_now = false;
  } else if (auto a = query_param(req.target(), "after")) {
    auto pos = parse_position(*a);
    if (!pos) return s->reply(error_response(pos.err()));
    after = *pos;
    from_now = false;
  }
  s->start_stream(stream_request{who, std::move(topic), after, from_now, req.version(),
                                 req.keep_alive(), expires_at_s});
}

void api::post_message(const request& req, const caller& who, std::string room,
                       const session_ptr& s) {
  room_limits limits;
  limits.max_data_bytes = state_.node().limits().max_data_bytes;
  auto msg = parse_room_message(req.body(), limits);
  if (!msg) return refuse_input(msg.err(), who, s);
  if (auto r = state_.take(state_.rate_messages(), refusal::rate_messages, who.sub, 1))
    return s->reply(refusal_response(std::move(*r)));
  state_.node().post_message(who, std::move(room), std::move(*msg),
                             answer_on<room_post_reply>(s, [](room_post_reply r) {
                               std::string body = "{\"message_id\":\"";
                               body += r.message_id;  // base64url: nothing to escape
                               body += "\",\"seq\":";
                               body += std::to_string(r.seq);
                               body += '}';
                               return json_response(http::status::accepted, std::move(body));
                             }));
}

void api::history(const request& req, const caller& who, std::string room, const session_ptr& s) {
  uint64_t before_seq = 0;
  uint32_t limit = default_history_limit;
  if (auto b = query_param(req.target(), "before_seq")) {
    auto pos = parse_position(*b);
    if (!pos) return s->reply(error_response(errc::bad_request, "before_seq must be a seq"));
    before_seq = *pos;
  }
  if (auto l = query_param(req.target(), "limit")) {
    auto n = parse_position(*l);
    if (!n || *n == 0)
      return s->reply(error_response(errc::bad_request, "limit must be 1 or more"));
    limit = static_cast<uint32_t>(std::min<uint64_t>(*n, max_history_limit));
  }
  state_.node().room_history(who, std::move(room), before_seq, limit,
                             answer_on<std::vector<event>>(s, [limit](std::vector<event> page) {
                               // {"messages":[event...],"before_seq":N|null}: before_seq asks for
                               // the page before this one; null when this page reached the start.
                               std::string body = R"({"messages":[)";
                               for (std::size_t i = 0; i < page.size(); ++i) {
                                 if (i > 0) body += ',';
                                 append_event_json(body, page[i]);
                               }
                               body += R"(],"before_seq":)";
                               const bool more =
                                   page.size() == limit && !page.empty() && page.front().seq > 1;
                               body += more ? std::to_string(page.front().seq) : "null";
                               body += '}';
                               return json_response(http::status::ok, std::move(body));
                             }));
}

void api::presence(const caller& who, std::string room, const session_ptr& s) {
  state_.node().room_presence(
      who, std::move(room),
      answer_on<std::vector<presence_member>>(s, [](std::vector<presence_member> members) {
        std::vector<std::pair<std::string, unsigned>> rows;
        rows.reserve(members.size());
        for (auto& m : members) rows.emplace_back(std::move(m.user), m.sessions);
        return json_response(http::status::ok, presence_json(rows));
      }));
}

}  // namespace relay::net
