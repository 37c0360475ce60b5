// CAF 0.17's deserializer for std::vector<enum> (instantiated by add_message_type<finish_kind>)
// trips a -Wmaybe-uninitialized false positive in g++ 12 -O2; the value is always read first.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

// Registration of the actor layer's message types, and the mapping of CAF errors to the contract.

#include "actors/messages.hpp"

#include <caf/actor_system_config.hpp>
#include <caf/sec.hpp>

#include "actors/counters.hpp"
#include "actors/replay_ring.hpp"

namespace relay {

relay::error from_caf_error(const caf::error& e) {
  if (e.category() == error_category) {
    std::string message;
    if (e.context().match_elements<std::string>()) message = e.context().get_as<std::string>(0);
    // make_error stores errc + 1 (0 is CAF's "no error").
    auto code = e.code() >= 1 && e.code() - 1 <= static_cast<int>(errc::internal)
                    ? static_cast<errc>(e.code() - 1)
                    : errc::internal;
    return {code, std::move(message)};
  }
  if (e.category() == caf::atom("system")) {
    switch (static_cast<caf::sec>(e.code())) {
      case caf::sec::request_timeout:
        return {errc::unavailable, "the request timed out"};
      case caf::sec::request_receiver_down:
        // Only known topics are ever asked (unknown ids are answered by the shard): this one
        // restarted after a crash or passivated while the request waited in its mailbox. The
        // request was not carried out; a retry reaches the new incarnation.
        return {errc::unavailable, "the topic restarted while the request was in flight; retry"};
      default:
        break;
    }
  }
  return {errc::internal, "internal error"};
}

replay_reply make_replay_reply(const replay_ring& ring, uint64_t after, bool from_now,
                               caf::actor topic, node_counters& counters) {
  replay_reply reply;
  reply.topic_actor = std::move(topic);
  reply.last_seq = ring.last_seq();
  if (from_now) return reply;
  auto r = ring.after(after);
  reply.gap = r.gap;
  reply.gap_from = r.gap_from;
  reply.gap_to = r.gap_to;
  reply.events = std::move(r.events);
  if (r.gap)
    node_counters::add(counters.gaps);
  else if (!reply.events.empty())
    node_counters::add(counters.replay_hits);
  return reply;
}

void register_message_types(caf::actor_system_config& cfg) {
  cfg.add_message_type<event>("relay.event");
  cfg.add_message_type<std::vector<event>>("relay.event_list");
  cfg.add_message_type<event_input>("relay.event_input");
  cfg.add_message_type<std::vector<event_input>>("relay.event_input_list");
  cfg.add_message_type<caller>("relay.caller");
  cfg.add_message_type<create_run_request>("relay.create_run_request");
  cfg.add_message_type<run_info>("relay.run_info");
  cfg.add_message_type<std::vector<run_info>>("relay.run_info_list");
  cfg.add_message_type<create_run_reply>("relay.create_run_reply");
  cfg.add_message_type<topic_events>("relay.topic_events");
  cfg.add_message_type<replay_reply>("relay.replay_reply");
  cfg.add_message_type<storage::run_row>("relay.run_row");
  cfg.add_message_type<stored_tail>("relay.stored_tail");
  cfg.add_message_type<std::vector<storage::run_row>>("relay.run_row_list");
  cfg.add_message_type<finish_kind>("relay.finish_kind");
  cfg.add_message_type<room_message_input>("relay.room_message_input");
  cfg.add_message_type<room_post_reply>("relay.room_post_reply");
  cfg.add_message_type<presence_member>("relay.presence_member");
  cfg.add_message_type<std::vector<presence_member>>("relay.presence_member_list");
  cfg.add_message_type<room_presence>("relay.room_presence");
  cfg.add_error_category(error_category,
                         [](uint8_t code, caf::atom_value, const caf::message& ctx) {
                           std::string out = "relay::";
                           out += code >= 1 && code - 1 <= static_cast<int>(errc::internal)
                                      ? to_string(static_cast<errc>(code - 1))
                                      : "internal";
                           if (ctx.match_elements<std::string>())
                             out += ": " + ctx.get_as<std::string>(0);
                           return out;
                         });
}

}  // namespace relay
