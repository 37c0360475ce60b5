#pragma once
// Audit lines written with their outcome: a node callback wrapped so that, once the node has
// answered, the line goes to the audit log with `result` ("ok" or the error code) before the
// answer goes on to the client.

#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "actors/node.hpp"
#include "net/audit_log.hpp"

namespace relay::net {

/// The fields of a service's (or admin's) action on a run: `sub`, `role`, `run` and the `ip` of
/// `peer` ("address:port").
inline audit_log::owned_fields producer_fields(const caller& who, std::string_view run,
                                               std::string_view peer) {
  return {{"sub", who.sub},
          {"role", std::string{to_string(who.who)}},
          {"run", std::string{run}},
          {"ip", std::string{peer_ip(peer)}}};
}

/// `event` with `fields`, `result` and (for a created run) `run`, written when `next` is called.
/// Off (`next` as is) when the audit log is. The log must outlive the callback: it is the
/// server's, and the callback holds its session, which holds the server's state.
template <class T>
callback<T> audited(audit_log& audit, std::string event, audit_log::owned_fields fields,
                    callback<T> next) {
  if (!audit.enabled()) return next;
  return [&audit, event = std::move(event), fields = std::move(fields),
          next = std::move(next)](result<T> r) mutable {
    if constexpr (std::is_same_v<T, create_run_reply>) {
      if (r) fields.emplace_back("run", r->info.id);
    }
    fields.emplace_back("result", r ? std::string{"ok"} : std::string{to_string(r.err().code)});
    audit.record(event, fields);
    next(std::move(r));
  };
}

}  // namespace relay::net
