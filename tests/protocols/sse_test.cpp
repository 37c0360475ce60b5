#include "protocols/sse.hpp"

#include <gtest/gtest.h>

#include <algorithm>

#include "protocols/run.hpp"

namespace relay {
namespace {

TEST(sse, frame_has_id_event_and_one_data_line) {
  event e{17, "delta", R"({"text":"hi"})", 123};
  EXPECT_EQ(sse_frame(e),
            "id: 17\nevent: delta\ndata: {\"seq\":17,\"type\":\"delta\",\"data\":{\"text\":\"hi\"},"
            "\"ts\":123}\n\n");
}

TEST(sse, frame_ids_follow_seq) {
  EXPECT_EQ(sse_frame({1, "a", "null", 0}).rfind("id: 1\n", 0), 0u);
  EXPECT_EQ(sse_frame({18446744073709551615ull, "a", "null", 0}).rfind("id: 18446744073709551615\n", 0),
            0u);
}

TEST(sse, newline_inside_a_string_stays_escaped_so_the_frame_has_one_data_line) {
  // The producer sends a string with a real newline (JSON escape \n) and a CR; it goes through
  // the same validation as the HTTP path, which re-serialises compactly.
  auto events = parse_events(R"({"type":"delta","data":{"text":"line1\nline2\r\nline3"}})", {});
  ASSERT_TRUE(events) << events.err().message;
  event e{5, events->front().type, events->front().data, 9};
  std::string frame = sse_frame(e);

  // Exactly: id line, event line, data line, blank line terminator.
  EXPECT_EQ(std::count(frame.begin(), frame.end(), '\n'), 4);
  EXPECT_EQ(frame.find('\r'), std::string::npos);
  EXPECT_EQ(frame,
            "id: 5\nevent: delta\ndata: {\"seq\":5,\"type\":\"delta\",\"data\":{\"text\":"
            "\"line1\\nline2\\r\\nline3\"},\"ts\":9}\n\n");
}

TEST(sse, multi_line_pretty_printed_input_becomes_one_line) {
  auto events = parse_events("{\n  \"type\": \"delta\",\n  \"data\": {\n    \"a\": [1,\n 2]\n  }\n}", {});
  ASSERT_TRUE(events);
  std::string frame = sse_frame({1, "delta", events->front().data, 0});
  EXPECT_EQ(std::count(frame.begin(), frame.end(), '\n'), 4);
  EXPECT_NE(frame.find(R"("data":{"a":[1,2]})"), std::string::npos);
}

TEST(sse, gap_frame_has_no_id) {
  EXPECT_EQ(sse_gap_frame(5, 41), "event: gap\ndata: {\"from\":5,\"to\":41}\n\n");
  EXPECT_EQ(sse_gap_frame(1, 18446744073709551615ull),
            "event: gap\ndata: {\"from\":1,\"to\":18446744073709551615}\n\n");
}

TEST(sse, retry_and_heartbeat) {
  EXPECT_EQ(sse_retry(2000), "retry: 2000\n\n");
  EXPECT_EQ(sse_retry(0), "retry: 0\n\n");
  EXPECT_EQ(sse_heartbeat(), ": hb\n\n");
}

TEST(sse, parse_position_accepts_decimal_numbers) {
  EXPECT_EQ(*parse_position("0"), 0u);
  EXPECT_EQ(*parse_position("17"), 17u);
  EXPECT_EQ(*parse_position("007"), 7u);
  EXPECT_EQ(*parse_position("18446744073709551615"), 18446744073709551615ull);
}

TEST(sse, parse_position_trims_blanks) {
  EXPECT_EQ(*parse_position("  42"), 42u);
  EXPECT_EQ(*parse_position("42 \t"), 42u);
  EXPECT_EQ(*parse_position("\t 42  "), 42u);
}

TEST(sse, parse_position_rejects_overflow_and_length) {
  auto over = parse_position("18446744073709551616");  // UINT64_MAX + 1, still 20 digits
  ASSERT_FALSE(over);
  EXPECT_EQ(over.err().code, errc::bad_request);
  EXPECT_FALSE(parse_position("99999999999999999999"));
  EXPECT_FALSE(parse_position("000000000000000000001"));  // 21 digits, even though small
  EXPECT_FALSE(parse_position(std::string(1000, '9')));
}

TEST(sse, parse_position_rejects_junk) {
  for (std::string_view bad : {"", "   ", "\t", "-1", "+1", "1.0", "1e3", "0x10", "12abc", "abc",
                               "1 2", "٣", "1\n", "\n1"}) {
    auto r = parse_position(bad);
    EXPECT_FALSE(r) << '"' << bad << '"';
    if (!r) {
      EXPECT_EQ(r.err().code, errc::bad_request);
    }
  }
  EXPECT_FALSE(parse_position(std::string_view{"1\0", 2}));
}

}  // namespace
}  // namespace relay
