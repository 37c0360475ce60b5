#include "protocols/event.hpp"

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <cstdint>
#include <limits>

namespace relay {
namespace {

TEST(event, valid_event_type_accepts_the_contract_alphabet) {
  EXPECT_TRUE(valid_event_type("delta"));
  EXPECT_TRUE(valid_event_type("a"));
  EXPECT_TRUE(valid_event_type("tool.call_2-b"));
  EXPECT_TRUE(valid_event_type("0123456789"));
  EXPECT_TRUE(valid_event_type(std::string(64, 'x')));
}

TEST(event, valid_event_type_rejects_everything_else) {
  EXPECT_FALSE(valid_event_type(""));
  EXPECT_FALSE(valid_event_type(std::string(65, 'x')));
  EXPECT_FALSE(valid_event_type("Delta"));
  EXPECT_FALSE(valid_event_type("has space"));
  EXPECT_FALSE(valid_event_type("quote\""));
  EXPECT_FALSE(valid_event_type("new\nline"));
  EXPECT_FALSE(valid_event_type("colon:x"));
  EXPECT_FALSE(valid_event_type(std::string_view{"nul\0x", 5}));
  EXPECT_FALSE(valid_event_type("caf\xc3\xa9"));
}

TEST(event, reserved_types_are_the_contract_list) {
  for (auto t : {"status", "complete", "error", "cancelled", "gap", "message"}) {
    EXPECT_TRUE(reserved_event_type(t)) << t;
  }
  EXPECT_FALSE(reserved_event_type("delta"));
  EXPECT_FALSE(reserved_event_type("completed"));
  EXPECT_FALSE(reserved_event_type("Error"));
  EXPECT_FALSE(reserved_event_type(""));
}

TEST(event, event_json_has_the_exact_wire_shape) {
  event e{17, "delta", R"({"text":"hi"})", 123};
  EXPECT_EQ(event_json(e), R"({"seq":17,"type":"delta","data":{"text":"hi"},"ts":123})");
}

TEST(event, event_json_splices_data_verbatim) {
  event e{1, "x", R"([1,"a\nb",{"k":null}])", 0};
  EXPECT_EQ(event_json(e), R"({"seq":1,"type":"x","data":[1,"a\nb",{"k":null}],"ts":0})");
}

TEST(event, default_data_is_null) {
  event e;
  e.seq = 2;
  e.type = "status";
  EXPECT_EQ(event_json(e), R"({"seq":2,"type":"status","data":null,"ts":0})");
}

TEST(event, empty_data_is_written_as_null_so_the_json_stays_valid) {
  event e{3, "x", "", 5};
  std::string j = event_json(e);
  EXPECT_EQ(j, R"({"seq":3,"type":"x","data":null,"ts":5})");
  EXPECT_NO_THROW(boost::json::parse(j));
}

TEST(event, extreme_numbers) {
  event e{std::numeric_limits<uint64_t>::max(), "x", "0", std::numeric_limits<int64_t>::min()};
  EXPECT_EQ(event_json(e),
            R"({"seq":18446744073709551615,"type":"x","data":0,"ts":-9223372036854775808})");
}

TEST(event, append_event_json_appends_after_existing_content) {
  std::string out = "prefix:";
  append_event_json(out, {1, "a", "true", 2});
  append_event_json(out, {2, "b", "false", 3});
  EXPECT_EQ(out, R"(prefix:{"seq":1,"type":"a","data":true,"ts":2}{"seq":2,"type":"b","data":false,"ts":3})");
}

TEST(event, append_event_json_does_not_reallocate_when_capacity_suffices) {
  std::string out;
  out.reserve(4096);
  const char* before = out.data();
  append_event_json(out, {99, "delta", R"({"t":"abc"})", 1763769600123});
  EXPECT_EQ(out.data(), before);
}

TEST(event, event_json_parses_back_to_the_same_fields) {
  event e{42, "tool.result", R"({"ok":true,"n":[1,2,3]})", 1763769600123};
  auto v = boost::json::parse(event_json(e)).as_object();
  EXPECT_EQ(v.at("seq").to_number<uint64_t>(), 42u);
  EXPECT_EQ(v.at("type").as_string(), "tool.result");
  EXPECT_EQ(boost::json::serialize(v.at("data")), e.data);
  EXPECT_EQ(v.at("ts").to_number<int64_t>(), 1763769600123);
}

TEST(event, now_ms_is_a_plausible_wall_clock) {
  int64_t t = now_ms();
  EXPECT_GT(t, 1'700'000'000'000);  // after November 2023
  EXPECT_LT(t, 4'102'444'800'000);  // before 2100
  EXPECT_LE(t, now_ms());
}

}  // namespace
}  // namespace relay
