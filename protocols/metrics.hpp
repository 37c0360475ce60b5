#pragma once
// Prometheus text exposition (version 0.0.4). Each layer appends its samples; net/ renders them.

#include <string>
#include <string_view>
#include <vector>

namespace relay {

struct metric_sample {
  std::string name;    // e.g. relay_events_in_total
  std::string help;
  std::string type;    // counter | gauge
  double value = 0;
  std::string labels;  // preformatted, e.g. `topic_kind="run"`; empty for none
};

/// `# HELP`/`# TYPE` once per name, then `name{labels} value` lines.
std::string render_prometheus(const std::vector<metric_sample>& samples);

}  // namespace relay
