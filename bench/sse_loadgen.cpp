// sse_loadgen — SSE fan-out load generator for Relay (loopback only).
//
// One process, two threads:
//   * the subscriber thread: an epoll loop (level-triggered, non-blocking sockets) that opens N SSE
//     connections `GET /v1/runs/{id}/events?access_token=...`, decodes chunked bodies if the server
//     uses them, parses SSE frames incrementally (frames and lines may be split across reads),
//     checks per connection that seqs arrive strictly +1 (lost / duplicated), and records the
//     latency of every delivery (receive time − the producer's CLOCK_MONOTONIC stamp in the event's
//     data) into a log-linear histogram;
//   * the main thread: the producer, an HTTP/1.1 keep-alive client with the service token that
//   creates
//     the run, posts events (flood: E events in arrays of B; rate: R events/s, one per POST),
//     completes the run, and samples the server's CPU (/proc/PID/stat) and RSS (/proc/PID/status).
//     POSTs are pipelined on the one connection (--inflight, default 16 flood / 64 rate) so the
//     producer's rate is not capped by the server's answer latency; the POST → 202 latency is
//     reported separately. Around the window it also reads the server's /metrics (writes, frames
//     out → frames per write) and /proc/stat (how busy every CPU was, to see interference from
//     other processes).
//
// Modes: flood, rate, idle (C idle connections → server RSS per connection), resume (the resume
// storm: rate mode, and --drop-after S seconds into it every stream is closed at once and reopened
// at once with Last-Event-ID = the id of the last frame it had; reported: how long until every
// client had the seq that was published when they dropped, reconnect failures, lost, duplicates),
// churn (short runs: --subs lanes, each for --duration s creates a run, subscribes once, posts
// --events events and the completion pipelined on its keep-alive connection, and reads the stream
// to its end; reported: runs/s, create → stream ended per run, delivery latency, lost, duplicates,
// server CPU per delivery and per run).
// --peer nchan|nodehub (bench/peers/, bench/run-peers-bench) measures the same against a peer:
// subscribers `GET /sub/CH` (Accept: text/event-stream), the producer `POST /pub?id=CH` with one
// event per POST whose JSON carries the seq (the peers' SSE ids are not seqs: Nchan's look like
// `time:tag`), so the strict +1 check reads the seq from the data; `complete` is a message too,
// after which the subscriber closes the stream itself. Relay's behaviour and output are unchanged.
// Every phase has a deadline and a watchdog (SIGALRM) ends the process after --max-seconds.
// Output: human-readable lines, then one `RESULT key=value ...` line for scripts.
// The producer, /proc sampling, histogram and HTTP client are shared with ws_loadgen
// (loadgen_common.hpp).

#include <sys/epoll.h>

#include <atomic>
#include <thread>

#include "loadgen_common.hpp"

namespace {

using namespace loadgen;

// ---------------------------------------------------------------------------------------------
// options

struct Options : CommonOptions {
  double drop_after = -1;  // resume: seconds into the rate; < 0: duration / 3
  Options() { mode = "flood"; }
};

void usage() {
  std::fprintf(
      stderr,
      "usage: sse_loadgen --port N [options]\n"
      "  --host H                127.0.0.1 or localhost only (default 127.0.0.1)\n"
      "  --mode flood|rate|idle|resume|churn  (default flood)\n"
      "  --subs N                SSE subscribers (flood/rate; default 1000)\n"
      "  --events E              events to post in flood mode (default 2000)\n"
      "  --batch B               events per POST in flood mode (default 16; 1 = single object)\n"
      "  --rate R --duration S   rate mode: R events/s for S seconds, one per POST\n"
      "  --connections C         idle mode: idle SSE connections (default 10000)\n"
      "  --drop-after S          resume mode: seconds into the rate before every stream drops and\n"
      "                          reconnects with Last-Event-ID (default duration / 3)\n"
      "  --event-bytes N         target size of the server's event JSON (default 200)\n"
      "  --user-token T --service-token T   tokens (else minted with --relay-bin)\n"
      "  --relay-bin PATH        `PATH token --sub .. --role ..` mints tokens\n"
      "  --relay-arg ARG         extra argument for the token command (repeatable, e.g. "
      "--config=..)\n"
      "  --owner NAME            run owner / user token subject (default bench-user)\n"
      "  --server-pid PID        sample server CPU and RSS from /proc\n"
      "  --connect-concurrency K connections being set up at once (default 256)\n"
      "  --inflight K            POSTs in flight on the producer's connection (pipelined;\n"
      "                          default 16 for flood, 64 for rate; 1 = wait for each 202)\n"
      "  --inactivity-s S        inactivity_s for the created run (default: server's)\n"
      "  --connect-timeout S --produce-timeout S --drain-timeout S --complete-timeout S\n"
      "  --idle-settle S         idle mode: wait before the RSS sample (default 1)\n"
      "  --max-seconds S         watchdog for the whole process (default 240)\n"
      "  --label TEXT            label printed in the RESULT line\n"
      "  --peer relay|nchan|nodehub  the server under test (default relay; peers: bench/peers/)\n"
      "  --channel NAME          peers: the channel (default bench-<start time>)\n"
      "  --quiet                 no progress lines on stderr\n");
}

Options parse_args(int argc, char** argv) {
  Options o;
  parse_options(argc, argv, o, usage, [&o](const std::string& a, auto& v) {
    if (a != "--drop-after") return false;
    o.drop_after = std::atof(v().c_str());
    return true;
  });
  if (o.drop_after < 0) o.drop_after = o.duration / 3;
  if (o.mode != "flood" && o.mode != "rate" && o.mode != "idle" && o.mode != "resume" &&
      o.mode != "churn")
    die("unknown --mode %s", o.mode.c_str());
  if (o.subs < 1 || o.connections < 1 || o.events < 1 || o.batch < 1 || o.rate <= 0 ||
      o.duration <= 0)
    die("counts, rate and duration must be positive");
  if (o.peer == "socketio") die("--peer socketio is a WebSocket peer: use ws_loadgen");
  return o;
}

// ---------------------------------------------------------------------------------------------
// SSE subscribers (the epoll thread)

enum : uint8_t { kIdle, kConnecting, kSending, kHeaders, kStreaming, kDone, kFailed };
enum : uint8_t { evNone, evDelta, evComplete, evError, evCancelled, evGap, evStatus, evOther };

struct Dechunk {
  uint8_t st = 0;  // 0 size line, 1 data, 2 CRLF after data, 3 end
  uint64_t remain = 0;
  std::string line;
};

struct Conn {
  int fd = -1;
  uint8_t state = kIdle;
  bool chunked = false;
  bool established = false;
  bool got_complete = false;
  bool reached = false;  // last_seq >= target
  // current frame
  bool f_has_id = false, f_has_t = false;
  bool f_has_seq = false;                        // peers: the seq read from the data
  bool close_now = false;                        // peers: the stream saw `complete`; we close it
  bool reconnecting = false, caught_up = false;  // resume: dropped and reopened; has the drop seq
  uint8_t f_event = evNone;
  uint64_t f_id = 0, f_seq = 0;
  uint64_t f_t = 0;
  uint64_t last_seq = 0;
  uint64_t deliveries = 0;
  uint64_t dups = 0, lost = 0, gaps = 0, errors = 0;
  size_t req_off = 0;
  std::string hdr;   // response header accumulation
  std::string line;  // partial SSE line
  Dechunk dc;
  std::string f_id_raw, last_id;  // resume: the frame's id as sent (Nchan's are `time:tag`)
  std::string req;                // resume: the reopening request, with Last-Event-ID
};

struct Shared {
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> target{UINT64_MAX};  // the seq every subscriber must reach
  std::atomic<int> established{0};
  std::atomic<int> failed_setup{0};
  std::atomic<int> closed_early{0};
  std::atomic<int> completed{0};  // saw `complete`
  std::atomic<int> closed_after_complete{0};
  std::atomic<int> reached{0};
  std::atomic<uint64_t> all_reached_ns{0};
  std::atomic<uint64_t> deliveries{0};
  std::atomic<uint64_t> bytes{0};
  std::atomic<uint64_t> reads{0};
  // resume
  std::atomic<long> sent{0};            // events the producer has posted so far
  std::atomic<uint64_t> drop_at_ns{0};  // set by main: when every stream drops
  std::atomic<uint64_t> drop_ns{0}, drop_seq{0};
  std::atomic<int> dropped{0}, reconnected{0}, reconnect_failed{0}, caught_up{0};
};

class Subscribers {
 public:
  Subscribers(int port, Shared& sh, int n, int concurrency, std::string request, bool peer,
              bool resume)
      : conns(size_t(n)),
        port_(port),
        sh_(sh),
        concurrency_(concurrency),
        req_(std::move(request)),
        peer_(peer),
        resume_(resume) {}

  void run() {
    start(256 * 1024);
    while (!sh_.stop.load(std::memory_order_relaxed)) step(10);
    finish();
  }

  // run() in pieces, for a caller that interleaves other work in the same thread (churn).
  void start(size_t read_buf_bytes) {
    ep_ = epoll_create1(EPOLL_CLOEXEC);
    if (ep_ < 0) die("epoll_create1: %s", std::strerror(errno));
    buf_store_.resize(read_buf_bytes);
    buf_ = buf_store_.data();
    buf_cap_ = buf_store_.size();
    evs_.resize(1024);
  }
  void step(int timeout_ms) {
    while (pending_ < concurrency_ && next_ < conns.size()) open_(uint32_t(next_++));
    int k = epoll_wait(ep_, evs_.data(), int(evs_.size()), timeout_ms);
    if (k < 0 && errno != EINTR) die("epoll_wait: %s", std::strerror(errno));
    for (int j = 0; j < k; ++j) on_event_(evs_[size_t(j)].data.u32, evs_[size_t(j)].events);
    check_target_();
    if (resume_ && !dropped_) maybe_drop_();
  }
  int epoll_fd() const { return ep_; }
  void finish() {
    for (auto& c : conns)
      if (c.fd >= 0) {
        ::close(c.fd);
        c.fd = -1;
      }
    ::close(ep_);
    ep_ = -1;
  }

  std::vector<Conn> conns;
  Histogram hist;
  Histogram catchup_hist;                   // resume: drop → the client has the drop seq
  std::map<std::string, int> setup_errors;  // reason → count
  std::string first_http_error;
  uint64_t frames = 0, heartbeats = 0, no_retry = 0;
  uint64_t frame_bytes_sum = 0;  // bytes of delta frames (approx: data line length + framing)

 private:
  int port_;
  Shared& sh_;
  int concurrency_;
  std::string req_;
  bool peer_;
  bool resume_;
  std::vector<char> buf_store_;
  std::vector<epoll_event> evs_;
  bool dropped_ = false;
  uint64_t drop_ns_ = 0, drop_seq_ = 0;
  int ep_ = -1;
  size_t next_ = 0;
  int pending_ = 0;
  char* buf_ = nullptr;
  size_t buf_cap_ = 0;
  uint64_t now_ = 0;
  uint64_t target_ = UINT64_MAX;
  int closed_unreached_ = 0;

  void setup_fail_(Conn& c, const std::string& why) {
    if (c.reconnecting) {  // resume: the reopened stream failed; it is not a setup failure
      setup_errors["reconnect: " + why]++;
      if (c.fd >= 0) ::close(c.fd);
      c.fd = -1;
      c.state = kFailed;
      sh_.reconnect_failed.fetch_add(1, std::memory_order_relaxed);
      if (!c.reached) ++closed_unreached_;
      return;
    }
    setup_errors[why]++;
    if (c.fd >= 0) ::close(c.fd);
    c.fd = -1;
    c.state = kFailed;
    --pending_;
    sh_.failed_setup.fetch_add(1, std::memory_order_relaxed);
  }

  void open_(uint32_t i) {
    Conn& c = conns[i];
    if (!c.reconnecting) ++pending_;
    c.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c.fd < 0) return setup_fail_(c, std::string("socket: ") + std::strerror(errno));
    sockaddr_in a = loopback_addr(port_);
    int r = ::connect(c.fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    if (r != 0 && errno != EINPROGRESS)
      return setup_fail_(c, std::string("connect: ") + std::strerror(errno));
    c.state = kConnecting;
    epoll_event ev{};
    ev.events = EPOLLOUT;
    ev.data.u32 = i;
    if (epoll_ctl(ep_, EPOLL_CTL_ADD, c.fd, &ev) != 0)
      return setup_fail_(c, std::string("epoll_ctl: ") + std::strerror(errno));
  }

  void on_event_(uint32_t i, uint32_t evs) {
    Conn& c = conns[i];
    if (c.fd < 0) return;
    if (c.state == kConnecting) {
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) return setup_fail_(c, std::string("connect: ") + std::strerror(err));
      if (!(evs & EPOLLOUT)) return setup_fail_(c, "connect: hangup");
      c.state = kSending;
    }
    if (c.state == kSending) {
      const std::string& rq = c.req.empty() ? req_ : c.req;
      while (c.req_off < rq.size()) {
        ssize_t n = ::send(c.fd, rq.data() + c.req_off, rq.size() - c.req_off, MSG_NOSIGNAL);
        if (n > 0) {
          c.req_off += size_t(n);
          continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        return setup_fail_(c, std::string("send: ") + std::strerror(errno));
      }
      c.state = kHeaders;
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u32 = i;
      epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev);
      return;
    }
    if (c.state == kHeaders || c.state == kStreaming) read_once_(c);
  }

  void read_once_(Conn& c) {
    ssize_t n = ::recv(c.fd, buf_, buf_cap_, 0);
    if (n > 0) {
      now_ = mono_ns();
      sh_.bytes.fetch_add(uint64_t(n), std::memory_order_relaxed);
      sh_.reads.fetch_add(1, std::memory_order_relaxed);
      consume_(c, buf_, size_t(n));
      if (c.close_now && c.fd >= 0) on_eof_(c, "closed by us after complete");
      return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    on_eof_(c, n == 0 ? "closed by server" : std::strerror(errno));
  }

  void on_eof_(Conn& c, const char* why) {
    if (c.state == kHeaders || !c.established) {
      if (c.state == kHeaders) return setup_fail_(c, std::string("before response: ") + why);
      return setup_fail_(c, std::string("before retry line: ") + why);
    }
    ::close(c.fd);
    c.fd = -1;
    if (c.got_complete) {
      c.state = kDone;
      sh_.closed_after_complete.fetch_add(1, std::memory_order_relaxed);
    } else {
      c.state = kFailed;
      sh_.closed_early.fetch_add(1, std::memory_order_relaxed);
    }
    if (!c.reached) ++closed_unreached_;
  }

  void consume_(Conn& c, const char* p, size_t n) {
    if (c.state == kHeaders) {
      c.hdr.append(p, n);
      size_t he = c.hdr.find("\r\n\r\n");
      if (he == std::string::npos) {
        if (c.hdr.size() > 16384) setup_fail_(c, "response header too large");
        return;
      }
      int status =
          c.hdr.compare(0, 5, "HTTP/") == 0 && c.hdr.size() > 12 ? std::atoi(c.hdr.c_str() + 9) : 0;
      if (status != 200) {
        if (first_http_error.empty())
          first_http_error = "HTTP " + std::to_string(status) + ": " + c.hdr.substr(he + 4, 300);
        return setup_fail_(c, "HTTP " + std::to_string(status));
      }
      std::string l = lower(c.hdr.substr(0, he));
      c.chunked = l.find("transfer-encoding: chunked") != std::string::npos ||
                  l.find("transfer-encoding:chunked") != std::string::npos;
      c.state = kStreaming;
      if (peer_) establish_(c);  // Nchan sends no retry: line; the 200 means subscribed
      if (c.reconnecting) {
        sh_.reconnected.fetch_add(1, std::memory_order_relaxed);
        check_caught_(c);
      }
      std::string rest = c.hdr.substr(he + 4);
      std::string().swap(c.hdr);
      if (!rest.empty()) body_(c, rest.data(), rest.size());
      return;
    }
    body_(c, p, n);
  }

  void body_(Conn& c, const char* p, size_t n) {
    if (!c.chunked) return sse_feed_(c, p, n);
    const char* end = p + n;
    Dechunk& d = c.dc;
    while (p < end) {
      switch (d.st) {
        case 0: {
          const char* nl = static_cast<const char*>(std::memchr(p, '\n', size_t(end - p)));
          if (!nl) {
            d.line.append(p, size_t(end - p));
            return;
          }
          d.line.append(p, size_t(nl - p));
          p = nl + 1;
          uint64_t sz = std::strtoull(d.line.c_str(), nullptr, 16);
          d.line.clear();
          if (sz == 0) {
            d.st = 3;
          } else {
            d.remain = sz;
            d.st = 1;
          }
          break;
        }
        case 1: {
          size_t take = size_t(std::min<uint64_t>(d.remain, uint64_t(end - p)));
          sse_feed_(c, p, take);
          p += take;
          d.remain -= take;
          if (d.remain == 0) d.st = 2;
          break;
        }
        case 2: {
          const char* nl = static_cast<const char*>(std::memchr(p, '\n', size_t(end - p)));
          if (!nl) return;  // the CR of the CRLF; the LF comes next
          p = nl + 1;
          d.st = 0;
          break;
        }
        default:
          return;
      }
    }
  }

  void sse_feed_(Conn& c, const char* p, size_t n) {
    const char* end = p + n;
    if (!c.line.empty()) {
      const char* nl = static_cast<const char*>(std::memchr(p, '\n', n));
      if (!nl) {
        c.line.append(p, n);
        return;
      }
      c.line.append(p, size_t(nl - p));
      line_(c, c.line.data(), c.line.size());
      c.line.clear();
      p = nl + 1;
    }
    while (p < end) {
      const char* nl = static_cast<const char*>(std::memchr(p, '\n', size_t(end - p)));
      if (!nl) {
        c.line.assign(p, size_t(end - p));
        return;
      }
      line_(c, p, size_t(nl - p));
      p = nl + 1;
    }
  }

  void establish_(Conn& c) {
    if (c.established) return;
    c.established = true;
    --pending_;
    sh_.established.fetch_add(1, std::memory_order_relaxed);
  }

  void line_(Conn& c, const char* p, size_t len) {
    if (len > 0 && p[len - 1] == '\r') --len;
    if (len == 0) return dispatch_(c);
    if (p[0] == ':') {
      ++heartbeats;
      return;
    }
    const char* colon = static_cast<const char*>(std::memchr(p, ':', len));
    std::string_view field(p, colon ? size_t(colon - p) : len);
    std::string_view value;
    if (colon) {
      const char* v = colon + 1;
      if (v < p + len && *v == ' ') ++v;
      value = std::string_view(v, size_t(p + len - v));
    }
    if (field == "data") {
      frame_bytes_sum += len + 1;
      if (peer_) peer_data_(c, value);
      // latency stamp: the first "t": in the event JSON is the producer's (keys:
      // seq,type,data{t,p},ts)
      size_t tp = value.find("\"t\":");
      if (tp != std::string_view::npos) {
        const char* q = value.data() + tp + 4;
        const char* e = value.data() + value.size();
        while (q < e && *q == ' ') ++q;
        uint64_t t = 0;
        bool any = false;
        while (q < e && *q >= '0' && *q <= '9') {
          t = t * 10 + uint64_t(*q - '0');
          ++q;
          any = true;
        }
        if (any) {
          c.f_t = t;
          c.f_has_t = true;
        }
      }
    } else if (field == "id") {
      frame_bytes_sum += len + 1;
      if (resume_) c.f_id_raw.assign(value);
      uint64_t v = 0;
      bool any = false;
      for (char ch : value) {
        if (ch < '0' || ch > '9') {
          any = false;
          break;
        }
        v = v * 10 + uint64_t(ch - '0');
        any = true;
      }
      if (any) {
        c.f_id = v;
        c.f_has_id = true;
      }
    } else if (field == "event") {
      frame_bytes_sum += len + 1;
      if (value == "delta")
        c.f_event = evDelta;
      else if (value == "complete")
        c.f_event = evComplete;
      else if (value == "error")
        c.f_event = evError;
      else if (value == "cancelled")
        c.f_event = evCancelled;
      else if (value == "gap")
        c.f_event = evGap;
      else if (value == "status")
        c.f_event = evStatus;
      else
        c.f_event = evOther;
    } else if (field == "retry") {
      establish_(c);
    }
  }

  // Peers: the seq is the first field of the event JSON the producer posted; a message without one
  // is the producer's {"type":"complete"}.
  void peer_data_(Conn& c, std::string_view value) {
    static constexpr std::string_view kSeq = "{\"seq\":";
    if (value.substr(0, kSeq.size()) == kSeq) {
      uint64_t v = 0;
      size_t p = kSeq.size();
      for (; p < value.size() && value[p] >= '0' && value[p] <= '9'; ++p)
        v = v * 10 + uint64_t(value[p] - '0');
      c.f_seq = v;
      c.f_has_seq = p > kSeq.size();
      if (c.f_event == evNone) c.f_event = evDelta;
    } else if (value.find("\"type\":\"complete\"") != std::string_view::npos) {
      c.f_event = evComplete;
    }
  }

  void dispatch_(Conn& c) {
    if (!c.f_has_id && c.f_event == evNone && !c.f_has_t)
      return;  // empty frame (e.g. after retry:)
    ++frames;
    if (!c.established) {  // a server that sends no retry: line; count it but go on
      ++no_retry;
      establish_(c);
    }
    bool dup = false;
    if (peer_ ? c.f_has_seq : c.f_has_id) {
      uint64_t s = peer_ ? c.f_seq : c.f_id;
      if (s <= c.last_seq) {
        dup = true;
        ++c.dups;
      } else {
        if (s != c.last_seq + 1) c.lost += s - c.last_seq - 1;
        c.last_seq = s;
      }
    }
    if (resume_) {
      if (!c.f_id_raw.empty()) c.last_id.swap(c.f_id_raw);
      c.f_id_raw.clear();
      check_caught_(c);
    }
    switch (c.f_event) {
      case evDelta:
      case evNone:
        if (!dup && c.f_has_t) {
          ++c.deliveries;
          sh_.deliveries.fetch_add(1, std::memory_order_relaxed);
          hist.record(now_ > c.f_t ? now_ - c.f_t : 0);
        }
        break;
      case evComplete:
        if (!c.got_complete) {
          c.got_complete = true;
          sh_.completed.fetch_add(1, std::memory_order_relaxed);
        }
        if (peer_) c.close_now = true;  // a peer keeps the stream open: we end it
        break;
      case evGap:
        ++c.gaps;
        break;
      case evError:
      case evCancelled:
        ++c.errors;
        break;
      default:
        break;
    }
    if (!c.reached && c.last_seq >= target_) {
      c.reached = true;
      sh_.reached.fetch_add(1, std::memory_order_relaxed);
    }
    c.f_has_id = c.f_has_t = c.f_has_seq = false;
    c.f_event = evNone;
  }

  // Resume: a reopened stream has caught up once it has the seq published when it dropped.
  void check_caught_(Conn& c) {
    if (!c.reconnecting || c.caught_up || c.state != kStreaming || c.last_seq < drop_seq_) return;
    c.caught_up = true;
    catchup_hist.record(now_ > drop_ns_ ? now_ - drop_ns_ : 0);
    sh_.caught_up.fetch_add(1, std::memory_order_relaxed);
  }

  // Resume: at drop_at_ns every open stream is closed and reopened at once with Last-Event-ID.
  void maybe_drop_() {
    uint64_t at = sh_.drop_at_ns.load(std::memory_order_relaxed);
    if (at == 0 || mono_ns() < at) return;
    dropped_ = true;
    drop_ns_ = mono_ns();
    drop_seq_ = uint64_t(sh_.sent.load());
    sh_.drop_seq.store(drop_seq_);
    sh_.drop_ns.store(drop_ns_);
    int n = 0;
    for (uint32_t i = 0; i < conns.size(); ++i) {
      Conn& c = conns[i];
      if (c.state != kStreaming || c.fd < 0) continue;
      ::close(c.fd);
      c.fd = -1;
      ++n;
      c.reconnecting = true;
      c.chunked = false;
      c.req_off = 0;
      std::string().swap(c.hdr);
      c.line.clear();
      c.dc = Dechunk{};
      c.f_has_id = c.f_has_t = c.f_has_seq = false;
      c.f_event = evNone;
      c.f_id_raw.clear();
      // The request without its final CRLF, plus Last-Event-ID (none yet: from the start).
      c.req = req_.substr(0, req_.size() - 2);
      if (!c.last_id.empty()) c.req += "Last-Event-ID: " + c.last_id + "\r\n";
      c.req += "\r\n";
      open_(i);
    }
    sh_.dropped.store(n);
  }

  void check_target_() {
    uint64_t t = sh_.target.load(std::memory_order_relaxed);
    if (t != target_) {
      target_ = t;
      for (auto& c : conns)
        if (c.established && !c.reached && c.last_seq >= t) {
          c.reached = true;
          sh_.reached.fetch_add(1, std::memory_order_relaxed);
        }
    }
    if (target_ != UINT64_MAX && sh_.all_reached_ns.load(std::memory_order_relaxed) == 0) {
      int est = sh_.established.load(std::memory_order_relaxed);
      int reached = sh_.reached.load(std::memory_order_relaxed);
      if (reached + closed_unreached_ >= est) sh_.all_reached_ns.store(now_ ? now_ : mono_ns());
    }
  }
};

// ---------------------------------------------------------------------------------------------
// churn: many short runs, one subscriber each

struct ChurnLane {
  uint64_t runs = 0, failed = 0, deliveries = 0, lost = 0, dups = 0;
  Histogram run_hist;  // create → the stream ended after `complete`, ns
  Histogram hist;      // deliveries: receive − the producer's stamp, ns
  std::map<std::string, int> errors;
};

// One lane: runs back to back until the deadline. The subscriber is this thread's own Subscribers
// engine (one connection per run), waited on together with the producer's connection.
void churn_lane(const Options& o, int lane, uint64_t deadline, ChurnLane& L) {
  const bool peer = o.is_peer();
  const long E = o.events;
  int fixed = 50 + digits(uint64_t(E)) + 13 + digits(mono_ns() + 3600ull * 1000000000ull);
  const std::string pad(size_t(std::max(0, o.event_bytes - fixed)), 'x');
  HttpClient http(o.port);
  HttpResponse resp;
  std::string err, body;
  for (uint64_t k = 0; mono_ns() < deadline; ++k) {
    const uint64_t t0 = mono_ns(), run_deadline = t0 + 10000000000ull;
    auto fail = [&](const std::string& what) {
      ++L.failed;
      L.errors[what]++;
      http.close();
    };
    // 1. create
    std::string id;
    if (peer && o.peer == "nodehub") {
      if (!http.request("POST", "/runs", "", "{}", resp, 10, err) || resp.status != 201) {
        fail("create: " + (err.empty() ? "HTTP " + std::to_string(resp.status) : err));
        continue;
      }
      id = json_str(resp.body, "id");
    } else if (peer) {  // Nchan: a channel exists on first use
      id = o.channel + "-" + std::to_string(lane) + "-" + std::to_string(k);
    } else {
      std::string create = "{\"kind\":\"external\",\"owner\":\"" + o.owner + "\"}";
      if (!http.request("POST", "/v1/runs", o.service_token, create, resp, 10, err) ||
          (resp.status != 201 && resp.status != 200)) {
        fail("create: " + (err.empty() ? "HTTP " + std::to_string(resp.status) : err));
        continue;
      }
      id = json_str(resp.body, "id");
    }
    if (id.empty()) {
      fail("create: no id");
      continue;
    }
    // 2. subscribe
    std::string req =
        (peer ? "GET /sub/" + id : "GET /v1/runs/" + id + "/events?access_token=" + o.user_token) +
        " HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(o.port) +
        "\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n";
    Shared sh;
    Subscribers sub(o.port, sh, 1, 1, req, peer, false);
    sub.start(16384);
    while (sh.established.load() + sh.failed_setup.load() < 1 && mono_ns() < run_deadline)
      sub.step(5);
    if (sh.established.load() < 1) {
      sub.finish();
      fail(sub.first_http_error.empty() ? "subscribe failed" : sub.first_http_error.substr(0, 40));
      continue;
    }
    // 3. the events and the completion, pipelined
    if (!http.ensure_connected(run_deadline, err)) {
      sub.finish();
      fail("producer connect: " + err);
      continue;
    }
    const std::string path = peer ? "/pub?id=" + id : "/v1/runs/" + id + "/events";
    const std::string& token = peer ? std::string() : o.service_token;
    for (long j = 1; j <= E; ++j) {
      body = peer ? "{\"seq\":" + std::to_string(j) + "," : std::string("{");
      body += "\"type\":\"delta\",\"data\":{\"t\":";
      body += std::to_string(mono_ns());
      body += ",\"p\":\"";
      body += pad;
      body += peer ? "\"},\"ts\":" + std::to_string(int64_t(time(nullptr)) * 1000) + "}" : "\"}}";
      http.queue(http.build("POST", path, token, body));
    }
    if (peer)
      http.queue(http.build("POST", path, "", "{\"type\":\"complete\"}"));
    else
      http.queue(http.build("POST", "/v1/runs/" + id + "/complete", token, "{}"));
    long answers = 0;
    std::string bad;
    while (answers < E + 1 && bad.empty() && mono_ns() < run_deadline) {
      if (http.want_write() && !http.flush(err)) {
        bad = err;
        break;
      }
      pollfd ps[2] = {{http.fd(), short(POLLIN | (http.want_write() ? POLLOUT : 0)), 0},
                      {sub.epoll_fd(), POLLIN, 0}};
      if (poll(ps, 2, 5) < 0 && errno != EINTR) bad = std::string("poll: ") + std::strerror(errno);
      if (ps[1].revents) sub.step(0);
      if (!(ps[0].revents & (POLLIN | POLLERR | POLLHUP))) continue;
      bool alive = http.fill(err);
      int rr;
      while ((rr = http.next_response(resp, err)) > 0) {
        ++answers;
        if (resp.status < 200 || resp.status > 299)
          bad = "POST: HTTP " + std::to_string(resp.status);
      }
      if (rr < 0) bad = err;
      if (!alive && answers < E + 1) bad = err;
    }
    // 4. the stream's end (relay closes it after `complete`; for a peer the engine closes it)
    while (bad.empty() && sh.closed_after_complete.load() + sh.closed_early.load() < 1 &&
           mono_ns() < run_deadline)
      sub.step(5);
    const Conn& c = sub.conns[0];
    L.lost += c.lost + (c.last_seq < uint64_t(E) ? uint64_t(E) - c.last_seq : 0);
    L.dups += c.dups;
    L.deliveries += c.deliveries;
    L.hist.merge(sub.hist);
    sub.finish();
    if (!bad.empty()) {
      fail(bad.substr(0, 60));
    } else if (!c.got_complete || sh.closed_after_complete.load() < 1) {
      fail(c.got_complete ? "stream not ended after complete" : "no complete");
    } else {
      ++L.runs;
      L.run_hist.record(mono_ns() - t0);
    }
  }
}

int run_churn(const Options& o) {
  const bool peer = o.is_peer();
  const int lanes = o.subs;
  const int metrics_port = peer ? 0 : o.port;
  ProcSample srv_start = sample_proc(o.server_pid);
  if (o.server_pid > 0 && !srv_start.ok) die("cannot read /proc/%d", int(o.server_pid));
  std::vector<ChurnLane> L(static_cast<size_t>(lanes));
  WindowSample ws0 = sample_window_begin(metrics_port, o.server_pid);
  const uint64_t w0 = mono_ns(), deadline = w0 + uint64_t(o.duration * 1e9);
  std::vector<std::thread> threads;
  for (int i = 0; i < lanes; ++i)
    threads.emplace_back([&, i] { churn_lane(o, i, deadline, L[size_t(i)]); });
  for (auto& t : threads) t.join();
  const uint64_t w1 = mono_ns();
  WindowSample ws1 = sample_window_end(metrics_port, o.server_pid);
  ChurnLane all;
  for (auto& l : L) {
    all.runs += l.runs;
    all.failed += l.failed;
    all.deliveries += l.deliveries;
    all.lost += l.lost;
    all.dups += l.dups;
    all.run_hist.merge(l.run_hist);
    all.hist.merge(l.hist);
    for (auto& [k, v] : l.errors) all.errors[k] += v;
  }
  const double window_s = double(w1 - w0) / 1e9;
  WindowFigures wf = window_figures(ws0, ws1);
  const double srv_per =
      wf.server_ok && all.deliveries ? wf.srv_cpu_us / double(all.deliveries) : 0;
  const double srv_per_run = wf.server_ok && all.runs ? wf.srv_cpu_us / double(all.runs) : 0;
  const Histogram &h = all.hist, &rh = all.run_hist;
  std::printf("mode=churn lanes=%d events per run=%ld for %.1f s (%s)\n", lanes, o.events,
              o.duration, o.peer.c_str());
  std::printf("runs: %" PRIu64 " completed, %" PRIu64 " failed in %.3f s → %.0f runs/s\n", all.runs,
              all.failed, window_s, double(all.runs) / window_s);
  for (auto& [why, cnt] : all.errors) std::printf("  run failure: %s ×%d\n", why.c_str(), cnt);
  std::printf("run (create → stream ended) ms: p50 %.2f  p99 %.2f  max %.2f\n",
              double(rh.quantile(0.5)) / 1e6, double(rh.quantile(0.99)) / 1e6,
              double(rh.max) / 1e6);
  std::printf("deliveries %" PRIu64 " → %.0f/s; latency µs: p50 %s  p99 %s  max %s\n",
              all.deliveries, double(all.deliveries) / window_s,
              fmt_us(double(h.quantile(0.5))).c_str(), fmt_us(double(h.quantile(0.99))).c_str(),
              fmt_us(double(h.max)).c_str());
  std::printf("integrity: lost %" PRIu64 ", duplicates %" PRIu64 "\n", all.lost, all.dups);
  std::printf("loadgen CPU: %.0f µs (%.0f%% of one CPU)\n", wf.lg_cpu_us,
              WindowFigures::pct(wf.lg_cpu_us, window_s));
  if (wf.server_ok)
    std::printf(
        "server CPU: %.0f µs (%.0f%% of one CPU) → %.3f µs per delivery, %.1f µs per run; "
        "RSS %" PRIu64 " → %" PRIu64 " KiB\n",
        wf.srv_cpu_us, WindowFigures::pct(wf.srv_cpu_us, window_s), srv_per, srv_per_run,
        srv_start.rss_kb, ws1.server.rss_kb);
  std::printf("machine (all processes): %s\n", wf.cpus_report.c_str());
  std::printf(
      "RESULT label=%s mode=churn lanes=%d events_per_run=%ld window_s=%.3f runs=%" PRIu64
      " failed_runs=%" PRIu64 " runs_per_s=%.0f deliveries=%" PRIu64
      " dps=%.0f p50_us=%.1f p99_us=%.1f max_us=%.1f run_p50_ms=%.2f run_p99_ms=%.2f"
      " run_max_ms=%.2f lost=%" PRIu64 " dup=%" PRIu64
      " lg_cpu_us=%.0f lg_cpu_pct=%.0f srv_cpu_us=%.0f srv_cpu_pct=%.0f srv_us_per_delivery=%.3f"
      " srv_us_per_run=%.1f rss_before_kb=%" PRIu64 " rss_after_kb=%" PRIu64 " cpus_busy_pct=%s\n",
      (o.label.empty() ? std::string("churn") : o.label).c_str(), lanes, o.events, window_s,
      all.runs, all.failed, double(all.runs) / window_s, all.deliveries,
      double(all.deliveries) / window_s, double(h.quantile(0.5)) / 1000.0,
      double(h.quantile(0.99)) / 1000.0, double(h.max) / 1000.0, double(rh.quantile(0.5)) / 1e6,
      double(rh.quantile(0.99)) / 1e6, double(rh.max) / 1e6, all.lost, all.dups, wf.lg_cpu_us,
      WindowFigures::pct(wf.lg_cpu_us, window_s), wf.srv_cpu_us,
      WindowFigures::pct(wf.srv_cpu_us, window_s), srv_per, srv_per_run, srv_start.rss_kb,
      ws1.server.rss_kb, wf.cpus_busy_list.c_str());
  return all.runs == 0 || all.failed || all.lost || all.dups ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  g_t0 = mono_ns();
  g_prog = "sse_loadgen";
  Options o = parse_args(argc, argv);
  signal(SIGPIPE, SIG_IGN);
  signal(SIGALRM, on_alarm);
  alarm(unsigned(std::ceil(o.max_seconds)));
  ensure_nofile((o.mode == "idle" ? o.connections : o.subs) + 64);
  if (!o.is_peer()) ensure_tokens(o);  // peers take no tokens
  if (o.mode == "churn") return run_churn(o);

  HttpClient http(o.port);
  const bool peer = o.is_peer();
  // Relay: create the run (as the service, on behalf of the subscribers' user). Peers: a channel.
  std::string run_id = peer ? o.channel : create_run(http, o);
  logf("%s %s %s (%s mode)", peer ? "channel" : "run", run_id.c_str(),
       peer ? ("on " + o.peer).c_str() : "created", o.mode.c_str());
  const std::string pub_path = "/pub?id=" + o.channel;
  // Peers have no /metrics: port 0 skips the scrape around the window.
  const int metrics_port = peer ? 0 : o.port;
  auto complete = [&] {
    return peer ? peer_complete(http, pub_path) : complete_run(http, o, run_id);
  };

  const bool idle = o.mode == "idle";
  const int n = idle ? o.connections : o.subs;
  std::string req = (peer ? "GET /sub/" + o.channel
                          : "GET /v1/runs/" + run_id + "/events?access_token=" + o.user_token) +
                    " HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(o.port) +
                    "\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n";

  ProcSample srv_start = sample_proc(o.server_pid);
  if (o.server_pid > 0 && !srv_start.ok) die("cannot read /proc/%d", int(o.server_pid));
  uint64_t tcp_pages_start = tcp_mem_pages();

  Shared sh;
  const bool resume = o.mode == "resume";
  Subscribers subs(o.port, sh, n, o.connect_concurrency, req, peer, resume);
  uint64_t t_conn0 = mono_ns();
  std::thread sub_thread([&] { subs.run(); });
  auto stop_subs = [&] {
    sh.stop.store(true);
    if (sub_thread.joinable()) sub_thread.join();
  };

  bool all_up = wait_until([&] { return sh.established.load() + sh.failed_setup.load() >= n; },
                           o.connect_timeout, 5);
  double setup_s = secs_since(t_conn0);
  int est = sh.established.load();
  logf("%d/%d subscribers established in %.2f s (%d failed%s)", est, n, setup_s,
       sh.failed_setup.load(), all_up ? "" : ", connect deadline hit");
  ProcSample srv_up = sample_proc(o.server_pid);

  std::string label = o.label.empty() ? o.mode : o.label;
  int rc = 0;

  if (idle) {
    if (est > 0) sleep_ms(unsigned(o.idle_settle * 1000));
    ProcSample srv_idle = sample_proc(o.server_pid);
    uint64_t tcp_pages_idle = tcp_mem_pages();
    // Complete the run so that the server closes every stream, then wait (bounded).
    bool completed_ok = complete();
    wait_until(
        [&] {
          return sh.closed_after_complete.load() + sh.closed_early.load() >= sh.established.load();
        },
        o.complete_timeout, 5);
    int saw_complete = sh.completed.load();
    stop_subs();
    est = sh.established.load();
    double delta_b =
        srv_idle.ok ? (double(srv_idle.rss_kb) - double(srv_start.rss_kb)) * 1024.0 : 0;
    double per_conn = est > 0 ? delta_b / est : 0;
    double tcp_per_conn =
        est > 0 ? (double(tcp_pages_idle) - double(tcp_pages_start)) * 4096.0 / est : 0;
    std::printf("mode=idle connections=%d established=%d failed=%d setup=%.2fs\n", n, est,
                sh.failed_setup.load(), setup_s);
    for (auto& [why, cnt] : subs.setup_errors)
      std::printf("  setup error: %s ×%d\n", why.c_str(), cnt);
    if (!subs.first_http_error.empty())
      std::printf("  first HTTP error: %s\n", subs.first_http_error.c_str());
    if (srv_idle.ok) {
      std::printf("server RSS: before %" PRIu64 " KiB, with %d idle SSE connections %" PRIu64
                  " KiB → %.0f bytes (%.2f KiB) per connection; threads %" PRIu64 "\n",
                  srv_start.rss_kb, est, srv_idle.rss_kb, per_conn, per_conn / 1024.0,
                  srv_idle.threads);
      std::printf("server CPU while connecting: %.0f µs (%.1f µs per connection)\n",
                  ticks_to_us(srv_up.utime_ticks + srv_up.stime_ticks - srv_start.utime_ticks -
                              srv_start.stime_ticks),
                  est ? ticks_to_us(srv_up.utime_ticks + srv_up.stime_ticks -
                                    srv_start.utime_ticks - srv_start.stime_ticks) /
                            est
                      : 0.0);
    }
    std::printf(
        "kernel TCP memory (both ends, /proc/net/sockstat): %.0f bytes per connection (not in "
        "RSS)\n",
        tcp_per_conn);
    std::printf(
        "after complete: %d saw complete, %d closed by server after complete, %d closed early\n",
        saw_complete, sh.closed_after_complete.load(), sh.closed_early.load());
    std::printf(
        "RESULT label=%s mode=idle connections=%d established=%d failed=%d setup_s=%.2f "
        "rss_before_kb=%" PRIu64 " rss_after_kb=%" PRIu64
        " bytes_per_conn=%.0f tcp_kernel_bytes_per_conn=%.0f saw_complete=%d\n",
        label.c_str(), n, est, sh.failed_setup.load(), setup_s, srv_start.rss_kb, srv_idle.rss_kb,
        per_conn, tcp_per_conn, saw_complete);
    if (est != n || !completed_ok) rc = 1;
    return rc;
  }

  if (est == 0) {
    stop_subs();
    std::printf("no subscriber could be established\n");
    for (auto& [why, cnt] : subs.setup_errors)
      std::printf("  setup error: %s ×%d\n", why.c_str(), cnt);
    if (!subs.first_http_error.empty())
      std::printf("  first HTTP error: %s\n", subs.first_http_error.c_str());
    std::printf("RESULT label=%s mode=%s subs=%d established=0 error=no_subscribers\n",
                label.c_str(), o.mode.c_str(), n);
    return 1;
  }

  // ---- produce ----
  const bool rate = o.mode == "rate" || resume;  // resume: rate mode with the storm in it
  ProduceSpec spec;
  spec.events_path = peer ? pub_path : "/v1/runs/" + run_id + "/events";
  spec.token = peer ? std::string() : o.service_token;
  spec.peer = peer;
  spec.rate = rate;
  spec.total = rate ? long(std::llround(o.rate * o.duration)) : o.events;
  spec.batch = rate || peer ? 1 : o.batch;  // a peer's POST is one message
  spec.rate_per_s = o.rate;
  spec.event_bytes = o.event_bytes;
  spec.inflight = size_t(o.inflight > 0 ? o.inflight : (rate ? 64 : 16));
  spec.timeout_s = o.produce_timeout;
  if (resume) spec.progress = &sh.sent;
  const int batch = spec.batch;
  const size_t inflight = spec.inflight;

  WindowSample ws0 = sample_window_begin(metrics_port, o.server_pid);
  if (resume) sh.drop_at_ns.store(mono_ns() + uint64_t(o.drop_after * 1e9));
  ProduceResult pr = produce_events(http, spec);
  const uint64_t w0 = pr.t_start, w_prod_end = pr.t_end;
  const uint64_t last_seq = pr.last_seq;
  const long sent = pr.sent;

  // ---- drain: wait until every open subscriber reached last_seq ----
  bool drained = false;
  if (sent > 0 && last_seq > 0) {
    sh.target.store(last_seq);
    drained = wait_until([&] { return sh.all_reached_ns.load() != 0; }, o.drain_timeout, 1);
  }
  uint64_t w1 = drained ? sh.all_reached_ns.load() : mono_ns();
  WindowSample ws1 = sample_window_end(metrics_port, o.server_pid);
  uint64_t deliveries_window = sh.deliveries.load();
  logf("drain %s after %.3f s", drained ? "complete" : "DEADLINE HIT",
       double(mono_ns() - w0) / 1e9);

  // ---- complete and wait for every subscriber to see it ----
  bool completed_ok = complete();
  bool all_complete = wait_until(
      [&] {
        return sh.closed_after_complete.load() + sh.closed_early.load() >= sh.established.load();
      },
      o.complete_timeout, 5);
  stop_subs();

  // ---- results ----
  est = sh.established.load();
  uint64_t lost = 0, dups = 0, gaps = 0, errors = 0, min_d = UINT64_MAX, max_d = 0;
  for (auto& c : subs.conns) {
    if (!c.established) continue;
    dups += c.dups;
    gaps += c.gaps;
    errors += c.errors;
    uint64_t tail = c.last_seq < last_seq ? last_seq - c.last_seq : 0;
    lost += c.lost + tail;
    min_d = std::min(min_d, c.deliveries);
    max_d = std::max(max_d, c.deliveries);
  }
  if (min_d == UINT64_MAX) min_d = 0;
  const Histogram& h = subs.hist;
  double window_s = double(w1 - w0) / 1e9;
  uint64_t deliveries = sh.deliveries.load();
  uint64_t expected = uint64_t(est) * uint64_t(sent);
  double dps = window_s > 0 ? double(deliveries_window) / window_s : 0;
  WindowFigures wf = window_figures(ws0, ws1);
  double lg_user = wf.lg_user_us, lg_sys = wf.lg_sys_us, lg_cpu = wf.lg_cpu_us;
  double srv_user = wf.srv_user_us, srv_sys = wf.srv_sys_us, srv_cpu = wf.srv_cpu_us;
  double srv_per = wf.server_ok && deliveries_window ? srv_cpu / double(deliveries_window) : 0;
  const ProcSample& srv1 = ws1.server;
  const Histogram& ack_hist = pr.ack_hist;
  uint64_t reads = sh.reads.load(), bytes = sh.bytes.load();
  double frame_avg = subs.frames ? double(bytes) / double(subs.frames) : 0;

  std::printf("mode=%s subs=%d events=%ld batch=%d%s event_json≈%dB (pad %d) sse_frame≈%.0fB\n",
              o.mode.c_str(), n, sent, batch,
              rate ? (" rate=" + std::to_string(int(o.rate)) + "/s").c_str() : "", o.event_bytes,
              pr.padlen, frame_avg);
  std::printf("setup: %d/%d subscribers established in %.2f s (%d failed)\n", est, n, setup_s,
              sh.failed_setup.load());
  for (auto& [why, cnt] : subs.setup_errors)
    std::printf("  setup error: %s ×%d\n", why.c_str(), cnt);
  if (!subs.first_http_error.empty())
    std::printf("  first HTTP error: %s\n", subs.first_http_error.c_str());
  if (!pr.first_post_error.empty())
    std::printf("  producer error: %s\n", pr.first_post_error.c_str());
  if (pr.timeout) std::printf("  producer deadline hit after %ld events\n", sent);
  std::printf(
      "producer: %ld events in %ld POSTs (≤ %zu in flight) in %.3f s (%.0f events/s)%s\n", sent,
      pr.posts, inflight, double(w_prod_end - w0) / 1e9,
      double(sent) / std::max(1e-9, double(w_prod_end - w0) / 1e9),
      rate ? (", max behind schedule " + fmt_us(double(pr.max_behind_ns)) + " µs").c_str() : "");
  std::printf("POST → 202 µs: p50 %s  p99 %s  max %s  (n=%" PRIu64 ")\n",
              fmt_us(double(ack_hist.quantile(0.5))).c_str(),
              fmt_us(double(ack_hist.quantile(0.99))).c_str(), fmt_us(double(ack_hist.max)).c_str(),
              ack_hist.n);
  std::printf("window: %.3f s (first POST → last subscriber has last_seq%s); deliveries %" PRIu64
              " of %" PRIu64 " expected → %.0f deliveries/s; per connection min %" PRIu64
              " max %" PRIu64 "\n",
              window_s, drained ? "" : ", DRAIN DEADLINE HIT", deliveries_window, expected, dps,
              min_d, max_d);
  std::printf("latency µs: p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  mean %s  (n=%" PRIu64 ")\n",
              fmt_us(double(h.quantile(0.5))).c_str(), fmt_us(double(h.quantile(0.9))).c_str(),
              fmt_us(double(h.quantile(0.99))).c_str(), fmt_us(double(h.quantile(0.999))).c_str(),
              fmt_us(double(h.max)).c_str(), fmt_us(h.mean()).c_str(), h.n);
  // Resume: the storm's own figures (only in that mode: the other modes' output is unchanged).
  std::string resume_keys;
  if (resume) {
    const Histogram& ch = subs.catchup_hist;
    int dropped = sh.dropped.load(), caught = sh.caught_up.load();
    std::printf("resume storm: %d streams dropped at once %.3f s into the rate at seq %" PRIu64
                "; reopened %d (%d failed); caught up %d/%d; drop → has that seq ms: p50 %.1f "
                "p99 %.1f max %.1f%s\n",
                dropped, sh.drop_ns.load() ? double(sh.drop_ns.load() - w0) / 1e9 : 0.0,
                sh.drop_seq.load(), sh.reconnected.load(), sh.reconnect_failed.load(), caught,
                dropped, double(ch.quantile(0.5)) / 1e6, double(ch.quantile(0.99)) / 1e6,
                double(ch.max) / 1e6, caught < dropped ? " (NOT ALL CAUGHT UP)" : "");
    char buf[320];
    std::snprintf(buf, sizeof buf,
                  " dropped=%d drop_seq=%" PRIu64
                  " reconnected=%d reconnect_failed=%d caught_up=%d"
                  " catchup_p50_ms=%.1f catchup_p99_ms=%.1f catchup_max_ms=%.1f",
                  dropped, sh.drop_seq.load(), sh.reconnected.load(), sh.reconnect_failed.load(),
                  caught, double(ch.quantile(0.5)) / 1e6, double(ch.quantile(0.99)) / 1e6,
                  double(ch.max) / 1e6);
    resume_keys = buf;
    if (dropped == 0 || caught < dropped || sh.reconnect_failed.load()) rc = 1;
  }
  std::printf("integrity: lost %" PRIu64 ", duplicates %" PRIu64 ", gaps %" PRIu64
              ", error/cancel events %" PRIu64 ", closed early %d, saw complete %d/%d%s\n",
              lost, dups, gaps, errors, sh.closed_early.load(), sh.completed.load(), est,
              all_complete ? "" : " (complete deadline hit)");
  std::printf("reads: %" PRIu64 " (%.0f bytes/read, %.2f frames/read)\n", reads,
              reads ? double(bytes) / double(reads) : 0.0,
              reads ? double(subs.frames) / double(reads) : 0.0);
  std::printf(
      "loadgen CPU in window: user %.0f + sys %.0f = %.0f µs (%.0f%% of one CPU; %.3f "
      "µs/delivery)\n",
      lg_user, lg_sys, lg_cpu, window_s > 0 ? lg_cpu / (window_s * 1e4) : 0.0,
      deliveries_window ? lg_cpu / double(deliveries_window) : 0.0);
  if (wf.server_ok) {
    std::printf(
        "server CPU in window: user %.0f + sys %.0f = %.0f µs (%.0f%% of one CPU) → %.3f µs per "
        "delivered event\n",
        srv_user, srv_sys, srv_cpu, window_s > 0 ? srv_cpu / (window_s * 1e4) : 0.0, srv_per);
    std::printf("server RSS: before %" PRIu64 " KiB, subscribed %" PRIu64 " KiB, after %" PRIu64
                " KiB; threads %" PRIu64 "\n",
                srv_start.rss_kb, srv_up.rss_kb, srv1.rss_kb, srv1.threads);
  }
  if (wf.server_ok)
    std::printf("server threads in window (run time, schedstat): %s\n", wf.threads_report.c_str());
  std::printf("machine in window (all processes): %s\n", wf.cpus_report.c_str());
  // The server's own counters (if /metrics has them): how many frames each write carried.
  double srv_writes = wf.srv_writes, srv_frames = wf.srv_frames;
  if (srv_writes >= 0) {
    std::printf("server /metrics in window: %.0f writes, %.0f frames out → %.2f frames per write\n",
                srv_writes, srv_frames, srv_writes > 0 ? srv_frames / srv_writes : 0.0);
  }
  std::printf(
      "RESULT label=%s mode=%s subs=%d established=%d events=%ld batch=%d rate=%.0f window_s=%.3f "
      "deliveries=%" PRIu64 " expected=%" PRIu64
      " dps=%.0f p50_us=%.1f p99_us=%.1f max_us=%.1f lost=%" PRIu64 " dup=%" PRIu64 " gaps=%" PRIu64
      " closed_early=%d saw_complete=%d lg_cpu_us=%.0f lg_cpu_pct=%.0f srv_cpu_us=%.0f "
      "srv_cpu_pct=%.0f"
      " srv_us_per_delivery=%.3f rss_before_kb=%" PRIu64 " rss_after_kb=%" PRIu64
      " drained=%d inflight=%zu"
      " ack_p50_us=%.1f ack_p99_us=%.1f behind_max_us=%.1f produced_per_s=%.0f "
      "srv_frames_per_write=%.2f"
      " cpus_busy_pct=%s%s\n",
      label.c_str(), o.mode.c_str(), n, est, sent, batch, rate ? o.rate : 0.0, window_s,
      deliveries_window, expected, dps, double(h.quantile(0.5)) / 1000.0,
      double(h.quantile(0.99)) / 1000.0, double(h.max) / 1000.0, lost, dups, gaps,
      sh.closed_early.load(), sh.completed.load(), lg_cpu,
      window_s > 0 ? lg_cpu / (window_s * 1e4) : 0.0, srv_cpu,
      window_s > 0 ? srv_cpu / (window_s * 1e4) : 0.0, srv_per, srv_start.rss_kb, srv1.rss_kb,
      drained ? 1 : 0, inflight, double(ack_hist.quantile(0.5)) / 1000.0,
      double(ack_hist.quantile(0.99)) / 1000.0, double(pr.max_behind_ns) / 1000.0,
      double(sent) / std::max(1e-9, double(w_prod_end - w0) / 1e9),
      srv_writes > 0 ? srv_frames / srv_writes : 0.0, wf.cpus_busy_list.c_str(),
      resume_keys.c_str());
  (void)deliveries;
  if (est != n || lost || dups || pr.post_errors || pr.timeout || !drained || !completed_ok ||
      !all_complete || sh.completed.load() != est)
    rc = 1;
  return rc;
}
