#include "protocols/http_api.hpp"

#include <gtest/gtest.h>

namespace relay {
namespace {

constexpr std::string_view id = "AbC_d-9";

route expect_route(std::string_view method, std::string_view target) {
  auto r = match_route(method, target);
  EXPECT_TRUE(r) << method << ' ' << target << ": " << (r ? "" : r.err().message);
  return r ? *r : route{};
}

void expect_not_found(std::string_view method, std::string_view target) {
  auto r = match_route(method, target);
  ASSERT_FALSE(r) << method << ' ' << target;
  EXPECT_EQ(r.err().code, errc::not_found) << method << ' ' << target;
  EXPECT_FALSE(is_method_not_allowed(r.err()));
}

void expect_method_not_allowed(std::string_view method, std::string_view target) {
  auto r = match_route(method, target);
  ASSERT_FALSE(r) << method << ' ' << target;
  EXPECT_EQ(r.err().code, errc::bad_request);
  EXPECT_EQ(r.err().message, "method not allowed");
  EXPECT_TRUE(is_method_not_allowed(r.err())) << method << ' ' << target;
}

// ---- routing ---------------------------------------------------------------------------------

TEST(http_api, routes_every_endpoint) {
  EXPECT_EQ(expect_route("GET", "/health").what, endpoint::health);
  EXPECT_EQ(expect_route("GET", "/metrics").what, endpoint::metrics);
  EXPECT_EQ(expect_route("POST", "/v1/runs").what, endpoint::runs_create);
  EXPECT_EQ(expect_route("GET", "/v1/runs").what, endpoint::runs_list);

  struct {
    const char* method;
    std::string target;
    endpoint what;
  } run_routes[] = {
      {"GET", "/v1/runs/" + std::string{id}, endpoint::run_get},
      {"POST", "/v1/runs/" + std::string{id} + "/events", endpoint::run_append},
      {"GET", "/v1/runs/" + std::string{id} + "/events", endpoint::run_stream},
      {"POST", "/v1/runs/" + std::string{id} + "/complete", endpoint::run_complete},
      {"POST", "/v1/runs/" + std::string{id} + "/fail", endpoint::run_fail},
      {"POST", "/v1/runs/" + std::string{id} + "/cancel", endpoint::run_cancel},
  };
  for (const auto& rr : run_routes) {
    route r = expect_route(rr.method, rr.target);
    EXPECT_EQ(r.what, rr.what) << rr.target;
    EXPECT_EQ(r.id, id) << rr.target;
  }
}

TEST(http_api, routes_ignore_the_query_string) {
  EXPECT_EQ(expect_route("GET", "/v1/runs?status=active").what, endpoint::runs_list);
  route r = expect_route("GET", "/v1/runs/abc/events?after=17&access_token=x.y.z");
  EXPECT_EQ(r.what, endpoint::run_stream);
  EXPECT_EQ(r.id, "abc");
  EXPECT_EQ(expect_route("GET", "/health?").what, endpoint::health);
}

TEST(http_api, non_run_routes_have_no_id) {
  EXPECT_EQ(expect_route("GET", "/health").id, "");
  EXPECT_EQ(expect_route("POST", "/v1/runs").id, "");
}

TEST(http_api, wrong_method_on_a_known_path_is_method_not_allowed) {
  expect_method_not_allowed("POST", "/health");
  expect_method_not_allowed("DELETE", "/metrics");
  expect_method_not_allowed("PUT", "/v1/runs");
  expect_method_not_allowed("DELETE", "/v1/runs");
  expect_method_not_allowed("POST", "/v1/runs/abc");
  expect_method_not_allowed("DELETE", "/v1/runs/abc");
  expect_method_not_allowed("PUT", "/v1/runs/abc/events");
  expect_method_not_allowed("GET", "/v1/runs/abc/complete");
  expect_method_not_allowed("GET", "/v1/runs/abc/fail");
  expect_method_not_allowed("GET", "/v1/runs/abc/cancel");
  expect_method_not_allowed("HEAD", "/health");
  expect_method_not_allowed("get", "/health");  // methods are case-sensitive
  expect_method_not_allowed("", "/health");
}

TEST(http_api, unknown_paths_are_not_found) {
  for (auto t : {"", "/", "health", "*", "http://example.com/health", "/healthz", "/Health",
                 "/v1", "/v2/runs", "/v1/run", "/v1/runs/abc/events/1", "/v1/runs/abc/stream",
                 "/v1/runs/abc/x/y/z", "/a/b/c/d/e/f/g", "//health", "/v1//runs",
                 "/v1/runs//events", "?x=/health", "/v1/rooms", "/v1/rooms/lobby",
                 "/v1/rooms/lobby/x", "/v1/rooms/lobby/messages/1", "/v1/room/lobby/messages",
                 "/v1/rooms//messages", "/v1/ws/x", "/ws", "/v1/WS"}) {
    expect_not_found("GET", t);
    expect_not_found("POST", t);
  }
}

TEST(http_api, trailing_slash_is_not_found) {
  expect_not_found("GET", "/health/");
  expect_not_found("GET", "/metrics/");
  expect_not_found("POST", "/v1/runs/");
  expect_not_found("GET", "/v1/runs/abc/");
  expect_not_found("GET", "/v1/runs/abc/events/");
  expect_not_found("POST", "/v1/runs/abc/complete/");
  expect_not_found("GET", "/v1/runs/abc/events/?after=1");
}

TEST(http_api, bad_run_ids_are_not_found_whatever_the_method) {
  std::string too_long(65, 'a');
  for (std::string bad_id : {std::string{"a.b"}, std::string{"a%2Fb"}, std::string{"a b"},
                             std::string{"caf\xc3\xa9"}, std::string{".."}, too_long,
                             std::string{"a+b"}, std::string{"~"}}) {
    expect_not_found("GET", "/v1/runs/" + bad_id);
    expect_not_found("POST", "/v1/runs/" + bad_id + "/events");
    expect_not_found("DELETE", "/v1/runs/" + bad_id + "/cancel");
  }
  EXPECT_EQ(expect_route("GET", "/v1/runs/" + std::string(64, 'a')).id, std::string(64, 'a'));
}

TEST(http_api, routes_room_endpoints) {
  struct {
    const char* method;
    std::string target;
    endpoint what;
  } room_routes[] = {
      {"POST", "/v1/rooms/lobby/messages", endpoint::room_post_message},
      {"GET", "/v1/rooms/lobby/messages?before_seq=9&limit=50", endpoint::room_history},
      {"GET", "/v1/rooms/lobby/events?after=3", endpoint::room_stream},
      {"GET", "/v1/rooms/lobby/presence", endpoint::room_presence},
  };
  for (const auto& rr : room_routes) {
    route r = expect_route(rr.method, rr.target);
    EXPECT_EQ(r.what, rr.what) << rr.target;
    EXPECT_EQ(r.id, "lobby") << rr.target;
  }
  route r = expect_route("GET", "/v1/rooms/org:acme.general_1-x/events");
  EXPECT_EQ(r.what, endpoint::room_stream);
  EXPECT_EQ(r.id, "org:acme.general_1-x");
  EXPECT_EQ(expect_route("GET", "/v1/rooms/" + std::string(128, 'r') + "/presence").id,
            std::string(128, 'r'));
}

TEST(http_api, routes_the_websocket_upgrade) {
  route r = expect_route("GET", "/v1/ws");
  EXPECT_EQ(r.what, endpoint::websocket);
  EXPECT_EQ(r.id, "");
  EXPECT_EQ(expect_route("GET", "/v1/ws?access_token=a.b.c").what, endpoint::websocket);
  expect_method_not_allowed("POST", "/v1/ws");
  expect_not_found("GET", "/v1/ws/");
}

TEST(http_api, wrong_method_on_room_paths_is_method_not_allowed) {
  expect_method_not_allowed("DELETE", "/v1/rooms/lobby/messages");
  expect_method_not_allowed("PUT", "/v1/rooms/lobby/messages");
  expect_method_not_allowed("POST", "/v1/rooms/lobby/events");
  expect_method_not_allowed("POST", "/v1/rooms/lobby/presence");
}

TEST(http_api, bad_room_ids_are_not_found_whatever_the_method) {
  for (std::string bad_id :
       {std::string{"a%2Fb"}, std::string{"a b"}, std::string{"caf\xc3\xa9"}, std::string(129, 'a'),
        std::string{"a+b"}, std::string{"~"}, std::string{"a\"b"}}) {
    expect_not_found("POST", "/v1/rooms/" + bad_id + "/messages");
    expect_not_found("GET", "/v1/rooms/" + bad_id + "/events");
    expect_not_found("DELETE", "/v1/rooms/" + bad_id + "/presence");
  }
}

TEST(http_api, oversized_target_is_bad_request) {
  std::string target = "/v1/runs?pad=" + std::string(8 * 1024, 'x');
  auto r = match_route("GET", target);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.err().code, errc::bad_request);
  EXPECT_FALSE(is_method_not_allowed(r.err()));
  std::string just_fits = "/v1/runs?pad=" + std::string(8 * 1024 - 13, 'x');
  ASSERT_EQ(just_fits.size(), 8u * 1024);
  EXPECT_TRUE(match_route("GET", just_fits));
}

TEST(http_api, is_method_not_allowed_only_matches_that_error) {
  EXPECT_TRUE(is_method_not_allowed({errc::bad_request, "method not allowed"}));
  EXPECT_FALSE(is_method_not_allowed({errc::not_found, "method not allowed"}));
  EXPECT_FALSE(is_method_not_allowed({errc::bad_request, "kind is required"}));
}

// ---- target parts ----------------------------------------------------------------------------

TEST(http_api, target_path_stops_at_the_query) {
  EXPECT_EQ(target_path("/v1/runs?status=active"), "/v1/runs");
  EXPECT_EQ(target_path("/v1/runs"), "/v1/runs");
  EXPECT_EQ(target_path("/x?a?b"), "/x");
  EXPECT_EQ(target_path("?q"), "");
  EXPECT_EQ(target_path(""), "");
}

TEST(http_api, query_param_finds_values) {
  std::string_view t = "/v1/runs/x/events?after=17&access_token=a.b.c&flag&empty=";
  EXPECT_EQ(query_param(t, "after"), "17");
  EXPECT_EQ(query_param(t, "access_token"), "a.b.c");
  EXPECT_EQ(query_param(t, "flag"), "");
  EXPECT_EQ(query_param(t, "empty"), "");
  EXPECT_EQ(query_param(t, "missing"), std::nullopt);
  EXPECT_EQ(query_param(t, "afte"), std::nullopt);
  EXPECT_EQ(query_param(t, "after=17"), std::nullopt);
  EXPECT_EQ(query_param("/v1/runs", "after"), std::nullopt);
  EXPECT_EQ(query_param("/v1/runs?", "after"), std::nullopt);
  EXPECT_EQ(query_param("/v1/runs?&&after=3&&", "after"), "3");
}

TEST(http_api, query_param_first_occurrence_wins) {
  EXPECT_EQ(query_param("/x?a=1&a=2", "a"), "1");
  EXPECT_EQ(query_param("/x?a=&a=2", "a"), "");
}

TEST(http_api, query_param_percent_decodes) {
  EXPECT_EQ(query_param("/x?q=hello+world", "q"), "hello world");
  EXPECT_EQ(query_param("/x?q=a%20b%2Bc%2bd", "q"), "a b+c+d");
  EXPECT_EQ(query_param("/x?q=%E2%82%AC", "q"), "\xe2\x82\xac");
  EXPECT_EQ(query_param("/x?q=%3D%26", "q"), "=&");
  EXPECT_EQ(query_param("/x?q=a=b", "q"), "a=b");
  EXPECT_EQ(query_param("/x?access%5Ftoken=t", "access_token"), "t");  // names decode too
  EXPECT_EQ(query_param("/x?q=%00", "q"), std::string(1, '\0'));
}

TEST(http_api, query_param_malformed_escape_is_nullopt) {
  EXPECT_EQ(query_param("/x?q=%", "q"), std::nullopt);
  EXPECT_EQ(query_param("/x?q=%2", "q"), std::nullopt);
  EXPECT_EQ(query_param("/x?q=%zz", "q"), std::nullopt);
  EXPECT_EQ(query_param("/x?q=%g0", "q"), std::nullopt);
  EXPECT_EQ(query_param("/x?q=ab%", "q"), std::nullopt);
  EXPECT_EQ(query_param("/x?q=%-1", "q"), std::nullopt);
  // The first occurrence wins even when it is malformed: no falling through to a later one.
  EXPECT_EQ(query_param("/x?q=%&q=ok", "q"), std::nullopt);
  // A malformed *other* parameter does not spoil ours.
  EXPECT_EQ(query_param("/x?bad=%zz&q=ok", "q"), "ok");
  EXPECT_EQ(query_param("/x?%zz=1&q=ok", "q"), "ok");
}

// ---- bearer tokens ---------------------------------------------------------------------------

TEST(http_api, bearer_token_extracts_the_token) {
  EXPECT_EQ(bearer_token("Bearer abc.def.ghi"), "abc.def.ghi");
  EXPECT_EQ(bearer_token("bearer abc"), "abc");
  EXPECT_EQ(bearer_token("BEARER abc"), "abc");
  EXPECT_EQ(bearer_token("BeArEr abc"), "abc");
  EXPECT_EQ(bearer_token("  Bearer    abc  "), "abc");
  EXPECT_EQ(bearer_token("Bearer\tabc\t"), "abc");
}

TEST(http_api, bearer_token_refuses_other_shapes) {
  for (std::string_view h : {"", " ", "Bearer", "Bearer ", "Bearer    ", "Bearerabc", "Basic abc",
                             "Token abc", "abc", "Bearer a b", "Bear abc", "Bearer: abc"}) {
    EXPECT_EQ(bearer_token(h), std::nullopt) << '"' << h << '"';
  }
}

TEST(http_api, bearer_token_points_into_the_header) {
  std::string header = "Bearer tok";
  auto t = bearer_token(header);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->data(), header.data() + 7);
}

}  // namespace
}  // namespace relay
