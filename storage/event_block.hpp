#pragma once
// Event blocks: how both backends store events (schema version 2). A group commit of a flood
// carries runs of consecutive events of one topic; storing each run as one row ("block") instead
// of one row per event costs one b-tree insert and one index entry per block, not per event — the
// difference between storage costing more CPU than ingest and costing a fraction of it (see
// bench/RESULTS.md, "Storage").
//
// A block holds the events first_seq..last_seq of one topic, every seq in between, at most
// max_block_events events and (unless one event is bigger) max_block_bytes of encoding. Its body
// is the events one after another, each as
//
//     <seq> SP <ts> SP <type> SP <byte length of data> LF <data>
//
// (decimal integers, ts may be negative). Text, so that SQL can write it too (the migration from
// version 1 builds one block per stored event) and a person can read it in a SQL shell.
//
// Pure: no I/O. The backends plan blocks from a batch (plan_blocks), drop what is already stored
// (uncovered), encode (encode_block) and decode on reads (next_block_event).

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "protocols/error.hpp"
#include "protocols/event.hpp"
#include "storage/store.hpp"

namespace relay::storage {

inline constexpr std::size_t max_block_events = 64;
inline constexpr std::size_t max_block_bytes = 64 * 1024;

/// Events [begin, end) of a batch's event list: one topic, seqs contiguous and ascending.
struct block_span {
  std::size_t begin = 0;
  std::size_t end = 0;
  std::size_t size() const noexcept { return end - begin; }
};

/// Cuts `events` into blocks, in order: a block ends where the topic changes, the seq is not the
/// previous one + 1, or a block limit is reached.
std::vector<block_span> plan_blocks(const std::vector<topic_event>& events);

/// A stored block's seq range, inclusive.
struct seq_range {
  uint64_t first = 0;
  uint64_t last = 0;
};

/// The parts of `span` whose seqs no range in `stored` covers (stored ranges may overlap each
/// other and the span in any way), in order. Retrying a batch thus inserts nothing twice.
std::vector<block_span> uncovered(const std::vector<topic_event>& events, block_span span,
                                  const std::vector<seq_range>& stored);

/// The body of the block made of events [span.begin, span.end).
std::string encode_block(const std::vector<topic_event>& events, block_span span);

/// The encoding of one event (what encode_block appends per event).
void append_block_event(std::string& out, const event& e);

/// Moves the events of a decoded `block` with seq > `last` to `out`, advancing `last`, until `out`
/// holds `limit`: false once it does (the block reader stops there). Blocks never overlap; the seq
/// check is a defence against a damaged store, not a need. Shared by the backends' events_after.
bool take_after(std::vector<event>& block, uint64_t& last, std::vector<event>& out,
                std::size_t limit);

/// The same backwards, for pages read newest first: moves the events of `block` with seq <
/// `lowest` to `newest_first`, newest first, lowering `lowest`, until it holds `limit`.
bool take_before(std::vector<event>& block, uint64_t& lowest, std::vector<event>& newest_first,
                 std::size_t limit);

/// Reads the next event of a block body into `out` and advances `body` past it: true when an event
/// was read, false at the end of the body, error (internal) when the body is not well-formed.
result<bool> next_block_event(std::string_view& body, event& out);

}  // namespace relay::storage
