#include "protocols/run.hpp"

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <set>

namespace relay {
namespace {

const run_limits limits{};

template <class T>
void expect_error(const result<T>& r, errc code, std::string_view mention = "",
                  std::string_view what = "") {
  ASSERT_FALSE(r) << "accepted: " << what;
  EXPECT_EQ(r.err().code, code) << what << " -> " << r.err().message;
  if (!mention.empty()) {
    EXPECT_NE(r.err().message.find(mention), std::string::npos)
        << what << ": message \"" << r.err().message << "\" should mention " << mention;
  }
}

// Shapes every JSON-object endpoint must refuse before looking at fields.
const std::vector<std::string> not_json_objects = {
    "",        // (parse_complete/parse_fail treat blank as "no body"; tested separately)
    "null",    "42",         "\"str\"",  "[]",        "[{}]",     "true",    "{",
    "}",       "{\"a\":}",   "{'a':1}",  "{\"a\":1,}", "{\"a\":1}x", "/*c*/{}", "\xef\xbb\xbf{}",
    "{\"a\":1}{\"b\":2}",
};

std::string deeply_nested(std::size_t depth) {
  return std::string(depth, '[') + std::string(depth, ']');
}

// ---- enums and ids ---------------------------------------------------------------------------

TEST(run, status_and_kind_names) {
  EXPECT_EQ(to_string(run_status::running), "running");
  EXPECT_EQ(to_string(run_status::completed), "completed");
  EXPECT_EQ(to_string(run_status::failed), "failed");
  EXPECT_EQ(to_string(run_status::cancelled), "cancelled");
  EXPECT_EQ(to_string(run_status::timed_out), "timed_out");
  EXPECT_EQ(to_string(run_kind::external), "external");
  EXPECT_EQ(to_string(run_kind::synthetic), "synthetic");
  EXPECT_FALSE(is_terminal(run_status::running));
  EXPECT_TRUE(is_terminal(run_status::completed));
  EXPECT_TRUE(is_terminal(run_status::timed_out));
}

TEST(run, new_run_id_is_22_url_safe_chars_and_unique) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    std::string id = new_run_id();
    EXPECT_EQ(id.size(), 22u);
    EXPECT_TRUE(valid_run_id(id)) << id;
    seen.insert(id);
  }
  EXPECT_EQ(seen.size(), 1000u);
}

TEST(run, valid_run_id) {
  EXPECT_TRUE(valid_run_id("a"));
  EXPECT_TRUE(valid_run_id("AZaz09_-"));
  EXPECT_TRUE(valid_run_id(std::string(64, 'x')));
  EXPECT_FALSE(valid_run_id(""));
  EXPECT_FALSE(valid_run_id(std::string(65, 'x')));
  for (std::string_view bad : {"a.b", "a/b", "a b", "a%20", "a+b", "a=b", "..", "caf\xc3\xa9", "a\n"}) {
    EXPECT_FALSE(valid_run_id(bad)) << bad;
  }
  EXPECT_FALSE(valid_run_id(std::string_view{"a\0b", 3}));
}

// ---- parse_create_run ------------------------------------------------------------------------

TEST(parse_create_run, minimal_external_gets_defaults) {
  auto r = parse_create_run(R"({"kind":"external"})", limits);
  ASSERT_TRUE(r) << r.err().message;
  EXPECT_EQ(r->kind, run_kind::external);
  EXPECT_EQ(r->input, "{}");
  EXPECT_EQ(r->idempotency_key, "");
  EXPECT_EQ(r->owner, "");
  EXPECT_EQ(r->inactivity_s, limits.default_inactivity_s);
  EXPECT_EQ(r->ttl_s, limits.default_ttl_s);
}

TEST(parse_create_run, defaults_come_from_the_limits) {
  run_limits l;
  l.default_inactivity_s = 7;
  l.default_ttl_s = 9;
  auto r = parse_create_run(R"({"kind":"external"})", l);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->inactivity_s, 7u);
  EXPECT_EQ(r->ttl_s, 9u);
}

TEST(parse_create_run, full_external_request) {
  auto r = parse_create_run(R"({
    "kind": "external",
    "input": { "prompt": "héllo", "n": [1, 2] },
    "idempotency_key": "k-1",
    "owner": "alice",
    "inactivity_s": 30,
    "ttl_s": 86400,
    "unknown_field": {"ignored": true}
  })", limits);
  ASSERT_TRUE(r) << r.err().message;
  EXPECT_EQ(r->input, R"({"prompt":"héllo","n":[1,2]})");  // compact
  EXPECT_EQ(r->idempotency_key, "k-1");
  EXPECT_EQ(r->owner, "alice");
  EXPECT_EQ(r->inactivity_s, 30u);
  EXPECT_EQ(r->ttl_s, 86400u);
}

TEST(parse_create_run, null_optional_fields_mean_absent) {
  auto r = parse_create_run(
      R"({"kind":"external","input":null,"idempotency_key":null,"owner":null,"inactivity_s":null,"ttl_s":null})",
      limits);
  ASSERT_TRUE(r) << r.err().message;
  EXPECT_EQ(r->input, "{}");
  EXPECT_EQ(r->inactivity_s, limits.default_inactivity_s);
}

TEST(parse_create_run, synthetic_defaults_and_values) {
  auto d = parse_create_run(R"({"kind":"synthetic"})", limits);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->kind, run_kind::synthetic);
  EXPECT_EQ(d->synthetic.count, 10u);
  EXPECT_EQ(d->synthetic.size, 32u);
  EXPECT_EQ(d->synthetic.interval_ms, 100u);

  auto r = parse_create_run(
      R"({"kind":"synthetic","input":{"count":1000000,"size":0,"interval_ms":60000}})", limits);
  ASSERT_TRUE(r) << r.err().message;
  EXPECT_EQ(r->synthetic.count, 1'000'000u);
  EXPECT_EQ(r->synthetic.size, 0u);
  EXPECT_EQ(r->synthetic.interval_ms, 60'000u);
  EXPECT_EQ(r->input, R"({"count":1000000,"size":0,"interval_ms":60000})");

  auto max_size = parse_create_run(R"({"kind":"synthetic","input":{"size":65536,"count":1}})", limits);
  ASSERT_TRUE(max_size);
  EXPECT_EQ(max_size->synthetic.size, 65536u);
  EXPECT_EQ(max_size->synthetic.count, 1u);
}

TEST(parse_create_run, synthetic_params_are_ignored_for_external_runs) {
  // An external run's input is opaque to the server: count may be anything there.
  auto r = parse_create_run(R"({"kind":"external","input":{"count":-5,"size":"big"}})", limits);
  ASSERT_TRUE(r) << r.err().message;
  EXPECT_EQ(r->input, R"({"count":-5,"size":"big"})");
}

TEST(parse_create_run, synthetic_params_out_of_range_or_wrong_type) {
  struct {
    const char* input;
    const char* field;
  } cases[] = {
      {R"({"count":0})", "input.count"},
      {R"({"count":1000001})", "input.count"},
      {R"({"count":-1})", "input.count"},
      {R"({"count":1.5})", "input.count"},
      {R"({"count":10.0})", "input.count"},
      {R"({"count":1e3})", "input.count"},
      {R"({"count":"10"})", "input.count"},
      {R"({"count":true})", "input.count"},
      {R"({"count":[10]})", "input.count"},
      {R"({"count":18446744073709551615})", "input.count"},
      {R"({"count":99999999999999999999999})", "input.count"},
      {R"({"count":-9223372036854775808})", "input.count"},
      {R"({"size":65537})", "input.size"},
      {R"({"size":-1})", "input.size"},
      {R"({"size":"32"})", "input.size"},
      {R"({"interval_ms":60001})", "input.interval_ms"},
      {R"({"interval_ms":-100})", "input.interval_ms"},
      {R"({"interval_ms":4294967296})", "input.interval_ms"},
      {R"({"interval_ms":{}})", "input.interval_ms"},
  };
  for (const auto& c : cases) {
    std::string body = std::string{R"({"kind":"synthetic","input":)"} + c.input + "}";
    expect_error(parse_create_run(body, limits), errc::bad_request, c.field, body);
  }
}

TEST(parse_create_run, synthetic_limits_are_configurable) {
  run_limits l;
  l.max_synthetic_count = 5;
  l.max_synthetic_size = 8;
  expect_error(parse_create_run(R"({"kind":"synthetic","input":{"count":6}})", l), errc::bad_request,
               "input.count");
  expect_error(parse_create_run(R"({"kind":"synthetic","input":{"size":9}})", l), errc::bad_request,
               "input.size");
  // Defaults are clamped to smaller maxima rather than refused.
  auto r = parse_create_run(R"({"kind":"synthetic"})", l);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->synthetic.count, 5u);
  EXPECT_EQ(r->synthetic.size, 8u);
}

TEST(parse_create_run, kind_is_required_and_checked) {
  expect_error(parse_create_run("{}", limits), errc::bad_request, "kind");
  expect_error(parse_create_run(R"({"input":{}})", limits), errc::bad_request, "kind");
  for (auto k : {R"("External")", R"("llm")", R"("")", "1", "null", "true", R"(["external"])",
                 R"({"v":"external"})"}) {
    std::string body = std::string{R"({"kind":)"} + k + "}";
    expect_error(parse_create_run(body, limits), errc::bad_request, "kind", body);
  }
}

TEST(parse_create_run, input_must_be_an_object) {
  for (auto in : {"[]", "1", R"("x")", "true", "[{}]"}) {
    std::string body = std::string{R"({"kind":"external","input":)"} + in + "}";
    expect_error(parse_create_run(body, limits), errc::bad_request, "input", body);
  }
}

TEST(parse_create_run, input_over_max_data_bytes_is_too_large) {
  std::string big = std::string(limits.max_data_bytes, 'x');
  std::string body = R"({"kind":"external","input":{"t":")" + big + R"("}})";
  expect_error(parse_create_run(body, limits), errc::too_large, "input");
  // Exactly at the limit is fine: {"t":"…"} is 8 bytes of framing.
  std::string fits = std::string(limits.max_data_bytes - 8, 'x');
  auto r = parse_create_run(R"({"kind":"external","input":{"t":")" + fits + R"("}})", limits);
  ASSERT_TRUE(r) << r.err().message;
  EXPECT_EQ(r->input.size(), limits.max_data_bytes);
}

TEST(parse_create_run, key_and_owner_are_bounded_strings) {
  std::string max_key(limits.max_key_bytes, 'k');
  auto ok = parse_create_run(R"({"kind":"external","idempotency_key":")" + max_key +
                                 R"(","owner":")" + max_key + R"("})",
                             limits);
  ASSERT_TRUE(ok) << ok.err().message;
  EXPECT_EQ(ok->idempotency_key, max_key);

  std::string long_key(limits.max_key_bytes + 1, 'k');
  for (std::string field : {"idempotency_key", "owner"}) {
    for (std::string value : {"\"" + long_key + "\"", std::string{R"("")"}, std::string{"1"},
                              std::string{"true"}, std::string{"[]"}, std::string{"{}"}}) {
      std::string body = R"({"kind":"external",")" + field + "\":" + value + "}";
      expect_error(parse_create_run(body, limits), errc::bad_request, field, body.substr(0, 60));
    }
  }
  // The bound is in bytes, not characters: 129 two-byte characters are 258 bytes.
  std::string wide;
  for (int i = 0; i < 129; ++i) wide += "\xc3\xa9";
  expect_error(parse_create_run(R"({"kind":"external","owner":")" + wide + R"("})", limits),
               errc::bad_request, "owner");
}

TEST(parse_create_run, inactivity_and_ttl_are_positive_and_bounded) {
  struct {
    std::string field;
    uint32_t max;
  } fields[] = {{"inactivity_s", limits.max_inactivity_s}, {"ttl_s", limits.max_ttl_s}};
  for (const auto& f : fields) {
    auto at_max = parse_create_run(
        R"({"kind":"external",")" + f.field + "\":" + std::to_string(f.max) + "}", limits);
    ASSERT_TRUE(at_max) << f.field;
    auto one = parse_create_run(R"({"kind":"external",")" + f.field + "\":1}", limits);
    ASSERT_TRUE(one) << f.field;
    for (std::string bad : {std::to_string(f.max + 1), std::string{"0"}, std::string{"-1"},
                            std::string{"1.5"}, std::string{R"("60")"}, std::string{"1e999"},
                            std::string{"99999999999999999999999999"}, std::string{"[]"}}) {
      std::string body = R"({"kind":"external",")" + f.field + "\":" + bad + "}";
      expect_error(parse_create_run(body, limits), errc::bad_request, f.field, body);
    }
  }
}

TEST(parse_create_run, non_object_and_malformed_bodies) {
  for (const auto& body : not_json_objects) {
    expect_error(parse_create_run(body, limits), errc::bad_request, "", body);
  }
  expect_error(parse_create_run("   ", limits), errc::bad_request);
}

TEST(parse_create_run, invalid_utf8_is_refused) {
  for (std::string bad : {std::string{"\xff"}, std::string{"\xc3"}, std::string{"\xc3\x28"},
                          std::string{"\xed\xa0\x80"},  // UTF-16 surrogate encoded as UTF-8
                          std::string{"\xc0\xaf"},      // overlong '/'
                          std::string{"\xf4\x90\x80\x80"}}) {  // beyond U+10FFFF
    expect_error(parse_create_run(R"({"kind":"external","owner":")" + bad + R"("})", limits),
                 errc::bad_request);
    expect_error(parse_create_run(R"({"kind":"external","input":{")" + bad + R"(":1}})", limits),
                 errc::bad_request);
  }
  // A lone surrogate escape is not a character either.
  expect_error(parse_create_run(R"({"kind":"external","owner":"\ud800"})", limits),
               errc::bad_request);
  // Valid multibyte text is fine.
  EXPECT_TRUE(parse_create_run(R"({"kind":"external","owner":"\u00e9\ud83d\ude00 ✓"})", limits));
}

TEST(parse_create_run, deeply_nested_json_is_refused_without_crashing) {
  expect_error(parse_create_run(deeply_nested(10000), limits), errc::bad_request);
  std::string body = R"({"kind":"external","input":{"x":)" + deeply_nested(10000) + "}}";
  expect_error(parse_create_run(body, limits), errc::bad_request);
  std::string objects;
  for (int i = 0; i < 5000; ++i) objects += R"({"a":)";
  objects += "1" + std::string(5000, '}');
  expect_error(parse_create_run(objects, limits), errc::bad_request);
  // Modest nesting is accepted.
  std::string modest = R"({"kind":"external","input":{"x":)" + deeply_nested(40) + "}}";
  EXPECT_TRUE(parse_create_run(modest, limits));
}

TEST(parse_create_run, numbers_beyond_double_range_are_refused) {
  // Boost.JSON would read 1e400 as infinity and print it as `Infinity`, which is not JSON.
  expect_error(parse_create_run(R"({"kind":"external","input":{"x":1e400}})", limits),
               errc::bad_request, "number");
  expect_error(parse_create_run(R"({"kind":"external","input":{"x":[-1e400]}})", limits),
               errc::bad_request, "number");
  // Huge integers that fit a double are kept (as doubles) in opaque input.
  auto r = parse_create_run(R"({"kind":"external","input":{"x":123456789012345678901234567890}})",
                            limits);
  ASSERT_TRUE(r);
  EXPECT_NO_THROW(boost::json::parse(r->input));
}

// ---- parse_events ----------------------------------------------------------------------------

TEST(parse_events, single_object) {
  auto r = parse_events(R"({"type":"delta","data":{"text":"hi", "n": 1}})", limits);
  ASSERT_TRUE(r) << r.err().message;
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ((*r)[0].type, "delta");
  EXPECT_EQ((*r)[0].data, R"({"text":"hi","n":1})");
}

TEST(parse_events, data_defaults_to_null_and_may_be_any_json) {
  auto r = parse_events(R"([
    {"type":"a"},
    {"type":"b","data":null},
    {"type":"c","data":"str"},
    {"type":"d","data":[1, 2.5, true]},
    {"type":"e","data":-7},
    {"type":"f","data":{}}
  ])", limits);
  ASSERT_TRUE(r) << r.err().message;
  ASSERT_EQ(r->size(), 6u);
  EXPECT_EQ((*r)[0].data, "null");
  EXPECT_EQ((*r)[1].data, "null");
  EXPECT_EQ((*r)[2].data, R"("str")");
  EXPECT_EQ((*r)[3].data, "[1,2.5E0,true]");
  EXPECT_EQ((*r)[4].data, "-7");
  EXPECT_EQ((*r)[5].data, "{}");
  EXPECT_EQ((*r)[5].type, "f");
}

TEST(parse_events, data_strings_are_reescaped_to_one_line) {
  auto r = parse_events("{\"type\":\"delta\",\"data\":\"a\\nb\\u2028\\\"q\\\"\\u0001\"}", limits);
  ASSERT_TRUE(r) << r.err().message;
  const std::string& d = (*r)[0].data;
  EXPECT_EQ(d.find('\n'), std::string::npos);
  EXPECT_EQ(boost::json::parse(d).as_string(), "a\nb\xe2\x80\xa8\"q\"\x01");
}

TEST(parse_events, array_bounds) {
  expect_error(parse_events("[]", limits), errc::bad_request, "empty");
  std::string many = "[";
  for (std::size_t i = 0; i <= limits.max_events_per_post; ++i) {
    many += (i ? "," : "");
    many += R"({"type":"d"})";
  }
  many += "]";
  expect_error(parse_events(many, limits), errc::too_large);
  std::string exactly = "[";
  for (std::size_t i = 0; i < limits.max_events_per_post; ++i) {
    exactly += (i ? "," : "");
    exactly += R"({"type":"d"})";
  }
  exactly += "]";
  auto r = parse_events(exactly, limits);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->size(), limits.max_events_per_post);
}

TEST(parse_events, type_is_required_valid_and_not_reserved) {
  for (auto body : {R"({})", R"({"data":1})", R"({"type":null})", R"({"type":1})",
                    R"({"type":["delta"]})", R"({"type":""})", R"({"type":"Delta"})",
                    R"({"type":"has space"})", R"({"type":"a\nb"})", R"({"type":"é"})"}) {
    expect_error(parse_events(body, limits), errc::bad_request, "type", body);
  }
  std::string long_type = R"({"type":")" + std::string(65, 'a') + R"("})";
  expect_error(parse_events(long_type, limits), errc::bad_request, "type");
  for (auto reserved : {"status", "complete", "error", "cancelled", "gap", "message"}) {
    std::string body = std::string{R"({"type":")"} + reserved + R"("})";
    expect_error(parse_events(body, limits), errc::bad_request, "reserved", body);
  }
}

TEST(parse_events, errors_name_the_array_element) {
  expect_error(parse_events(R"([{"type":"ok"},{"type":"gap"}])", limits), errc::bad_request,
               "events[1].type");
  expect_error(parse_events(R"([{"type":"ok"},{"type":"ok"},5])", limits), errc::bad_request,
               "events[2]");
  expect_error(parse_events(R"([{"type":"ok"},[]])", limits), errc::bad_request, "events[1]");
  expect_error(parse_events(R"([null])", limits), errc::bad_request, "events[0]");
}

TEST(parse_events, data_over_max_is_too_large) {
  std::string big = R"({"type":"delta","data":")" + std::string(limits.max_data_bytes, 'x') + R"("})";
  expect_error(parse_events(big, limits), errc::too_large, "data");
  // Exactly max_data_bytes of compact JSON (two quotes plus the text) is accepted.
  std::string fits = R"({"type":"delta","data":")" + std::string(limits.max_data_bytes - 2, 'x') + R"("})";
  auto r = parse_events(fits, limits);
  ASSERT_TRUE(r) << r.err().message;
  EXPECT_EQ((*r)[0].data.size(), limits.max_data_bytes);
  // The bound applies to the compact form: whitespace in the body does not count.
  std::string spaced = R"({"type":"delta","data":[)" + std::string(100000, ' ') + "1]}";
  EXPECT_TRUE(parse_events(spaced, limits));
  // And to the escaped form: 30000 control characters become 180000 bytes of \u00XX.
  std::string escapes = R"({"type":"delta","data":")";
  for (int i = 0; i < 30000; ++i) escapes += "\\u0001";
  escapes += R"("})";
  expect_error(parse_events(escapes, limits), errc::too_large);
  // One oversized element in an array fails the whole request.
  std::string arr = R"([{"type":"a"},)" + big + "]";
  expect_error(parse_events(arr, limits), errc::too_large, "events[1].data");
}

TEST(parse_events, non_object_and_malformed_bodies) {
  for (const auto& body : not_json_objects) {
    expect_error(parse_events(body, limits), errc::bad_request, "", body);
  }
  for (auto body : {"null", "1", R"("delta")", "true"}) {
    expect_error(parse_events(body, limits), errc::bad_request, "", body);
  }
}

TEST(parse_events, invalid_utf8_deep_nesting_and_huge_numbers) {
  expect_error(parse_events("{\"type\":\"d\",\"data\":\"\xff\xfe\"}", limits), errc::bad_request);
  expect_error(parse_events("{\"type\":\"d\",\"data\":\"\xed\xbf\xbf\"}", limits), errc::bad_request);
  expect_error(parse_events(R"({"type":"d","data":)" + deeply_nested(10000) + "}", limits),
               errc::bad_request);
  expect_error(parse_events(deeply_nested(10000), limits), errc::bad_request);
  expect_error(parse_events(R"({"type":"d","data":1e99999})", limits), errc::bad_request);
  auto r = parse_events(R"({"type":"d","data":[18446744073709551615,-9223372036854775808,1e308]})",
                        limits);
  ASSERT_TRUE(r) << r.err().message;
  EXPECT_EQ((*r)[0].data, "[18446744073709551615,-9223372036854775808,1E308]");
}

// ---- parse_complete / parse_fail -------------------------------------------------------------

TEST(parse_complete, empty_or_blank_body_is_null) {
  EXPECT_EQ(*parse_complete("", limits), "null");
  EXPECT_EQ(*parse_complete(" \r\n\t ", limits), "null");
}

TEST(parse_complete, data_is_compacted) {
  EXPECT_EQ(*parse_complete("{}", limits), "null");
  EXPECT_EQ(*parse_complete(R"({"data":null})", limits), "null");
  EXPECT_EQ(*parse_complete(R"({ "data" : { "tokens" : 12 } , "other": 1})", limits),
            R"({"tokens":12})");
  EXPECT_EQ(*parse_complete(R"({"data":"done"})", limits), R"("done")");
}

TEST(parse_complete, malformed_bodies) {
  for (const auto& body : not_json_objects) {
    if (body.empty()) continue;
    expect_error(parse_complete(body, limits), errc::bad_request, "", body);
  }
  expect_error(parse_complete(deeply_nested(10000), limits), errc::bad_request);
  expect_error(parse_complete(R"({"data":)" + deeply_nested(10000) + "}", limits), errc::bad_request);
  expect_error(parse_complete("{\"data\":\"\xc3\"}", limits), errc::bad_request);
  expect_error(parse_complete(R"({"data":-1e400})", limits), errc::bad_request);
  std::string big = R"({"data":")" + std::string(limits.max_data_bytes, 'x') + R"("})";
  expect_error(parse_complete(big, limits), errc::too_large);
}

TEST(parse_fail, empty_body_is_a_generic_failure) {
  EXPECT_EQ(*parse_fail("", limits), R"({"code":"failed"})");
  EXPECT_EQ(*parse_fail("\n", limits), R"({"code":"failed"})");
}

TEST(parse_fail, error_object_is_compacted) {
  EXPECT_EQ(*parse_fail(R"({"error": {"code": "upstream", "message": "model \"x\" down"}})", limits),
            R"({"code":"upstream","message":"model \"x\" down"})");
  EXPECT_EQ(*parse_fail(R"({"error":{}})", limits), "{}");
}

TEST(parse_fail, error_is_required_and_must_be_an_object) {
  expect_error(parse_fail("{}", limits), errc::bad_request, "error");
  expect_error(parse_fail(R"({"data":{}})", limits), errc::bad_request, "error");
  for (auto e : {"null", R"("boom")", "1", "[]", "true", R"([{"code":"x"}])"}) {
    std::string body = std::string{R"({"error":)"} + e + "}";
    expect_error(parse_fail(body, limits), errc::bad_request, "error", body);
  }
}

TEST(parse_fail, malformed_bodies) {
  for (const auto& body : not_json_objects) {
    if (body.empty()) continue;
    expect_error(parse_fail(body, limits), errc::bad_request, "", body);
  }
  expect_error(parse_fail(deeply_nested(10000), limits), errc::bad_request);
  expect_error(parse_fail("{\"error\":{\"m\":\"\x80\"}}", limits), errc::bad_request);
  std::string big = R"({"error":{"m":")" + std::string(limits.max_data_bytes, 'x') + R"("}})";
  expect_error(parse_fail(big, limits), errc::too_large);
}

// ---- encoders --------------------------------------------------------------------------------

TEST(run_json, run_info_running) {
  run_info info;
  info.id = "abc";
  info.owner = "alice";
  info.last_seq = 17;
  info.created_at = 1763769600123;
  EXPECT_EQ(run_info_json(info),
            R"({"id":"abc","kind":"external","status":"running","owner":"alice","last_seq":17,)"
            R"("created_at":1763769600123})");
}

TEST(run_json, run_info_ended_with_reason) {
  run_info info{"r1", run_kind::synthetic, run_status::timed_out, "bob", "inactivity",
                18446744073709551615ull, 1, 2};
  EXPECT_EQ(run_info_json(info),
            R"({"id":"r1","kind":"synthetic","status":"timed_out","owner":"bob",)"
            R"("last_seq":18446744073709551615,"created_at":1,"ended_at":2,"reason":"inactivity"})");
}

TEST(run_json, run_info_escapes_strings) {
  run_info info;
  info.id = "x";
  info.owner = "ev\"il\\\n\x01</script>";
  info.reason = "a\"b";
  info.status = run_status::failed;
  info.ended_at = 5;
  std::string j = run_info_json(info);
  EXPECT_NE(j.find(R"("owner":"ev\"il\\\n\u0001</script>")"), std::string::npos) << j;
  EXPECT_EQ(j.find('\n'), std::string::npos);
  auto v = boost::json::parse(j).as_object();
  EXPECT_EQ(v.at("owner").as_string(), info.owner);
  EXPECT_EQ(v.at("reason").as_string(), "a\"b");
  EXPECT_EQ(v.at("status").as_string(), "failed");
}

TEST(run_json, run_created) {
  run_info info;
  info.id = "Zm9vYmFy";
  info.created_at = 42;
  EXPECT_EQ(run_created_json(info),
            R"({"id":"Zm9vYmFy","status":"running","created_at":42,"events_url":"/v1/runs/Zm9vYmFy/events"})");
}

TEST(run_json, run_list) {
  EXPECT_EQ(run_list_json({}), R"({"runs":[]})");
  run_info a;
  a.id = "a";
  a.owner = "o";
  run_info b = a;
  b.id = "b";
  b.status = run_status::completed;
  b.ended_at = 9;
  EXPECT_EQ(run_list_json({a, b}),
            R"({"runs":[{"id":"a","kind":"external","status":"running","owner":"o","last_seq":0,"created_at":0},)"
            R"({"id":"b","kind":"external","status":"completed","owner":"o","last_seq":0,"created_at":0,"ended_at":9}]})");
}

}  // namespace
}  // namespace relay
