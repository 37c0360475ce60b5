#include "protocols/metrics.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace relay {
namespace {

TEST(metrics, empty_input_renders_nothing) { EXPECT_EQ(render_prometheus({}), ""); }

TEST(metrics, single_counter) {
  std::vector<metric_sample> s{{"relay_events_in_total", "Events accepted.", "counter", 42, ""}};
  EXPECT_EQ(render_prometheus(s),
            "# HELP relay_events_in_total Events accepted.\n"
            "# TYPE relay_events_in_total counter\n"
            "relay_events_in_total 42\n");
}

TEST(metrics, labelled_samples_share_one_header_even_when_interleaved) {
  std::vector<metric_sample> s{
      {"relay_connections", "Open connections.", "gauge", 3, R"(kind="sse")"},
      {"relay_events_out_total", "Events sent.", "counter", 10, ""},
      {"relay_connections", "Open connections.", "gauge", 5, R"(kind="ws")"},
  };
  EXPECT_EQ(render_prometheus(s),
            "# HELP relay_connections Open connections.\n"
            "# TYPE relay_connections gauge\n"
            "relay_connections{kind=\"sse\"} 3\n"
            "relay_connections{kind=\"ws\"} 5\n"
            "# HELP relay_events_out_total Events sent.\n"
            "# TYPE relay_events_out_total counter\n"
            "relay_events_out_total 10\n");
}

TEST(metrics, values_print_as_integers_when_integral) {
  std::vector<metric_sample> s{
      {"a", "h", "gauge", 0, ""},
      {"b", "h", "gauge", -7, ""},
      {"c", "h", "gauge", 1e15, ""},
      {"d", "h", "gauge", 0.25, ""},
      {"e", "h", "gauge", -1.5, ""},
      {"f", "h", "gauge", 1e300, ""},
      {"g", "h", "gauge", -0.0, ""},
  };
  std::string out = render_prometheus(s);
  EXPECT_NE(out.find("\na 0\n"), std::string::npos) << out;
  EXPECT_NE(out.find("\nb -7\n"), std::string::npos) << out;
  EXPECT_NE(out.find("\nc 1000000000000000\n"), std::string::npos) << out;
  EXPECT_NE(out.find("\nd 0.25\n"), std::string::npos) << out;
  EXPECT_NE(out.find("\ne -1.5\n"), std::string::npos) << out;
  EXPECT_NE(out.find("\nf 1e+300\n"), std::string::npos) << out;
  EXPECT_NE(out.find("\ng 0\n"), std::string::npos) << out;
}

TEST(metrics, special_values_use_prometheus_spelling) {
  std::vector<metric_sample> s{
      {"n", "h", "gauge", std::numeric_limits<double>::quiet_NaN(), ""},
      {"p", "h", "gauge", std::numeric_limits<double>::infinity(), ""},
      {"m", "h", "gauge", -std::numeric_limits<double>::infinity(), ""},
  };
  std::string out = render_prometheus(s);
  EXPECT_NE(out.find("\nn NaN\n"), std::string::npos) << out;
  EXPECT_NE(out.find("\np +Inf\n"), std::string::npos) << out;
  EXPECT_NE(out.find("\nm -Inf\n"), std::string::npos) << out;
}

TEST(metrics, help_is_escaped_and_missing_type_is_untyped) {
  std::vector<metric_sample> s{{"x", "line1\nback\\slash", "", 1, ""}};
  EXPECT_EQ(render_prometheus(s),
            "# HELP x line1\\nback\\\\slash\n"
            "# TYPE x untyped\n"
            "x 1\n");
}

TEST(metrics, empty_help_omits_the_help_line) {
  std::vector<metric_sample> s{{"x", "", "counter", 1, ""}};
  EXPECT_EQ(render_prometheus(s), "# TYPE x counter\nx 1\n");
}

TEST(metrics, every_line_is_terminated_and_headers_appear_once_per_name) {
  std::vector<metric_sample> s;
  for (int i = 0; i < 50; ++i) {
    s.push_back({i % 2 ? "odd" : "even", "h", "counter", static_cast<double>(i),
                 "i=\"" + std::to_string(i) + "\""});
  }
  std::string out = render_prometheus(s);
  ASSERT_FALSE(out.empty());
  EXPECT_EQ(out.back(), '\n');
  auto count = [&](std::string_view needle) {
    std::size_t n = 0;
    for (std::size_t p = out.find(needle); p != std::string::npos; p = out.find(needle, p + 1)) ++n;
    return n;
  };
  EXPECT_EQ(count("# TYPE even counter\n"), 1u);
  EXPECT_EQ(count("# TYPE odd counter\n"), 1u);
  EXPECT_EQ(count("\neven{"), 25u);
  EXPECT_EQ(count("\nodd{"), 25u);
  // All "even" samples come before the "odd" header (grouped, first-appearance order).
  EXPECT_LT(out.rfind("even{"), out.find("# HELP odd"));
}

}  // namespace
}  // namespace relay
