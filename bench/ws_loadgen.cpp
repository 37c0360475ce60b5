// ws_loadgen — WebSocket load generator for Relay's `GET /v1/ws` (loopback only).
//
// One process, two threads:
//   * the connection thread: an epoll loop (level-triggered, non-blocking sockets) that owns every
//     WebSocket connection: connect, upgrade (`GET /v1/ws?access_token=...`, Sec-WebSocket-Accept
//     checked), server frames parsed incrementally (frames may be split across reads), masked
//     client frames out (RFC 6455: ops, pongs for the server's pings, the close handshake). Per
//     connection it checks that the seqs of its topic arrive strictly +1 once subscribed (lost /
//     duplicated) and records the latency of every delivery (receive time − the sender's
//     CLOCK_MONOTONIC stamp in the event's data) into a log-linear histogram. In chat mode it is
//     the senders too;
//   * the main thread: the run producer (HTTP, shared with sse_loadgen: loadgen_common.hpp), the
//     phases and their deadlines, and the samples around the measured window (server CPU and RSS
//     from /proc, the server's /metrics, our own CPU, every CPU's busy share).
//
// Modes:
//   chat   --rooms R × --members M connections; member i joins room i mod R, then sends
//          --msg-rate messages/s for --duration s (the sends of all members evenly interleaved),
//          each `{"op":"send","room",..,"text":<--text-bytes>,"data":{"t":stamp,"s":i}}`. Every
//          member of the room (the sender too) must receive every message: deliveries = sends × M.
//   flood  one run fanned out to --subs subscribers (`subscribe` run:<id> after 0): --events events
//          of ≈ --event-bytes in POSTs of --batch, as fast as the server takes them.
//   rate   the same at --rate events/s (one per POST) for --duration s: the latency figure.
//   idle   --connections idle connections after `hello` (with --idle-rooms K > 0 each joins one of
//          K rooms first) → server RSS per connection.
// Every mode ends with the close handshake from our side (1000), whose answers are counted.
// --peer socketio (chat and idle; bench/peers/socketio_server.mjs, bench/run-peers-bench) speaks
// Engine.IO v4 / Socket.IO v5 over the same WebSocket code instead of Relay's ops:
// `GET /socket.io/?EIO=4&transport=websocket`, the server's `0{..}` open answered `40`, `40{..}` is
// the hello, join is `420["join",room]` (ack `430[{"last_seq"}]`), a send `421["send",{room,text,
// data}]` (ack `431[{"seq"}]`), deliveries `42["message",{"room","seq",..,"data":{"t"}}]`, pings
// `2` answered `3`. The seqs, stamps and the measurement are the same as against Relay.
// --peer nchan (idle only): WebSocket subscribers of Nchan's `GET /sub/CH`, established at the 101.
// Every phase has a deadline and a watchdog (SIGALRM) ends the process after --max-seconds. Output:
// human-readable lines, then one `RESULT key=value ...` line for scripts (the keys of sse_loadgen
// where the figure is the same).

#include <openssl/evp.h>
#include <sys/epoll.h>

#include <atomic>
#include <random>
#include <thread>

#include "loadgen_common.hpp"
#include "protocols/jwt.hpp"

namespace {

using namespace loadgen;

// ---------------------------------------------------------------------------------------------
// options

struct Options : CommonOptions {
  int rooms = 100;
  int members = 10;
  double msg_rate = 1.0;   // chat: messages per second per member
  int text_bytes = 64;     // chat: `text` of each message
  int idle_rooms = 0;      // idle: 0 = connected only; K = each connection joins one of K rooms
  int source_addrs = 1;    // local addresses 127.0.0.1.. to spread connections over
  std::string jwt_secret;  // chat/idle: sign one token per connection (sub bench-u<i>)
  Options() {
    mode = "flood";
    duration = 5;
  }
};

void usage() {
  std::fprintf(
      stderr,
      "usage: ws_loadgen --port N [options]\n"
      "  --host H                127.0.0.1 or localhost only (default 127.0.0.1)\n"
      "  --mode chat|flood|rate|idle  (default flood)\n"
      "  --rooms R --members M   chat: R rooms × M members (default 100 × 10)\n"
      "  --msg-rate X            chat: messages per second per member (default 1)\n"
      "  --duration S            chat and rate: seconds of sending (default 5)\n"
      "  --text-bytes N          chat: length of each message's text (default 64)\n"
      "  --subs N                flood/rate: WebSocket subscribers of the run (default 1000)\n"
      "  --events E --batch B    flood: E events in POSTs of B (default 2000, 16)\n"
      "  --rate R                rate: R events/s, one per POST (default 1000)\n"
      "  --connections C         idle: idle connections (default 10000)\n"
      "  --idle-rooms K          idle: each connection joins one of K rooms (default 0: none)\n"
      "  --event-bytes N         flood/rate: target size of the server's event JSON (default 200)\n"
      "  --source-addrs K        spread connections over local addresses 127.0.0.1..K (default 1)\n"
      "  --user-token T --service-token T   tokens (else minted with --relay-bin)\n"
      "  --jwt-secret S          chat/idle: sign a token per connection (users bench-u<i>);\n"
      "                          without it every connection uses --user-token\n"
      "  --relay-bin PATH        `PATH token --sub .. --role ..` mints tokens\n"
      "  --relay-arg ARG         extra argument for the token command (repeatable)\n"
      "  --owner NAME            run owner / user token subject (default bench-user)\n"
      "  --server-pid PID        sample server CPU and RSS from /proc\n"
      "  --connect-concurrency K connections being set up at once (default 256)\n"
      "  --inflight K            POSTs in flight on the producer's connection (default 16 flood, "
      "64 rate)\n"
      "  --inactivity-s S        inactivity_s for the created run (default: server's)\n"
      "  --connect-timeout S --produce-timeout S --drain-timeout S --complete-timeout S\n"
      "                          (complete-timeout also bounds the close handshake)\n"
      "  --idle-settle S         idle: wait before the RSS sample (default 1)\n"
      "  --max-seconds S         watchdog for the whole process (default 240)\n"
      "  --label TEXT            label printed in the RESULT line\n"
      "  --peer relay|socketio|nchan  the server under test (default relay; socketio: chat and\n"
      "                          idle; nchan: idle WebSocket subscribers of --channel)\n"
      "  --channel NAME          nchan: the channel (default bench-<start time>)\n"
      "  --quiet                 no progress lines on stderr\n");
}

Options parse_args(int argc, char** argv) {
  Options o;
  parse_options(argc, argv, o, usage, [&o](const std::string& a, auto& v) {
    if (a == "--rooms")
      o.rooms = std::atoi(v().c_str());
    else if (a == "--members")
      o.members = std::atoi(v().c_str());
    else if (a == "--msg-rate")
      o.msg_rate = std::atof(v().c_str());
    else if (a == "--text-bytes")
      o.text_bytes = std::atoi(v().c_str());
    else if (a == "--idle-rooms")
      o.idle_rooms = std::atoi(v().c_str());
    else if (a == "--source-addrs")
      o.source_addrs = std::atoi(v().c_str());
    else if (a == "--jwt-secret")
      o.jwt_secret = v();
    else
      return false;
    return true;
  });
  if (o.mode != "chat" && o.mode != "flood" && o.mode != "rate" && o.mode != "idle")
    die("unknown --mode %s", o.mode.c_str());
  if (o.subs < 1 || o.connections < 1 || o.events < 1 || o.batch < 1 || o.rate <= 0 ||
      o.duration <= 0 || o.rooms < 1 || o.members < 1 || o.msg_rate <= 0 || o.text_bytes < 1 ||
      o.idle_rooms < 0)
    die("counts, rates and durations must be positive");
  if (o.source_addrs < 1 || o.source_addrs > 250) die("--source-addrs must be 1..250");
  if (o.peer == "nodehub") die("--peer nodehub is an SSE peer: use sse_loadgen");
  if (o.peer == "nchan" && (o.mode != "idle" || o.idle_rooms > 0))
    die("--peer nchan runs the idle mode only (no rooms)");
  if (o.peer == "socketio" && o.mode != "chat" && o.mode != "idle")
    die("--peer socketio runs the chat and idle modes only");
  return o;
}

// ---------------------------------------------------------------------------------------------
// RFC 6455 client side

std::string base64(const unsigned char* p, size_t n) {
  std::string out(4 * ((n + 2) / 3) + 1, '\0');
  int len = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), p, int(n));
  out.resize(size_t(len));
  return out;
}

// Sec-WebSocket-Accept for a key, computed here (not with the server's code) so the check is
// independent.
std::string expected_accept(std::string_view key) {
  std::string s(key);
  s += "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(s.data(), s.size(), md, &len, EVP_sha1(), nullptr) != 1)
    die("EVP_Digest(sha1) failed");
  return base64(md, len);
}

struct Rng {  // xorshift64*: mask keys and handshake keys need no cryptographic quality here
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed ? seed : 0x9E3779B97F4A7C15ull) {}
  uint64_t next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 2685821657736338717ull;
  }
};

enum : uint8_t {
  opCont = 0x0,
  opText = 0x1,
  opBinary = 0x2,
  opClose = 0x8,
  opPing = 0x9,
  opPong = 0xA
};

// Appends one masked client frame (FIN set).
void append_masked(std::string& out, uint8_t opcode, std::string_view payload, Rng& rng) {
  out.push_back(char(0x80 | opcode));
  size_t n = payload.size();
  if (n < 126) {
    out.push_back(char(0x80 | n));
  } else if (n < 65536) {
    out.push_back(char(0x80 | 126));
    out.push_back(char(n >> 8));
    out.push_back(char(n & 0xFF));
  } else {
    out.push_back(char(0x80 | 127));
    for (int i = 7; i >= 0; --i) out.push_back(char((uint64_t(n) >> (8 * i)) & 0xFF));
  }
  uint32_t key = uint32_t(rng.next() >> 32);
  char k[4];
  std::memcpy(k, &key, 4);
  out.append(k, 4);
  size_t off = out.size();
  out.append(payload);
  for (size_t i = 0; i < n; ++i) out[off + i] = char(out[off + i] ^ k[i & 3]);
}

std::string close_payload(uint16_t code) {
  std::string p;
  p.push_back(char(code >> 8));
  p.push_back(char(code & 0xFF));
  return p;
}

// Tiny extraction from the server's compact JSON (no spaces; our own values hold no quotes).
std::string_view str_field(std::string_view s, std::string_view key_colon_quote, size_t from = 0) {
  size_t p = s.find(key_colon_quote, from);
  if (p == std::string_view::npos) return {};
  p += key_colon_quote.size();
  size_t e = s.find('"', p);
  if (e == std::string_view::npos) return {};
  return s.substr(p, e - p);
}
bool num_field(std::string_view s, std::string_view key_colon, uint64_t& out, size_t from = 0) {
  size_t p = s.find(key_colon, from);
  if (p == std::string_view::npos) return false;
  p += key_colon.size();
  uint64_t v = 0;
  bool any = false;
  while (p < s.size() && s[p] >= '0' && s[p] <= '9') {
    v = v * 10 + uint64_t(s[p] - '0');
    ++p;
    any = true;
  }
  if (any) out = v;
  return any;
}

// ---------------------------------------------------------------------------------------------
// connections (the epoll thread)

enum : uint8_t { kIdle, kConnecting, kUpgrading, kOpen, kClosing, kDone, kFailed };

struct Conn {
  int fd = -1;
  uint8_t state = kIdle;
  bool want_out = false;  // EPOLLOUT registered
  bool hello = false;
  bool acked = false;        // the subscribe / join ack arrived
  bool established = false;  // counted in Shared::established
  bool reached = false;      // current seq >= its group's target
  bool got_complete = false;
  bool any_event = false;
  bool close_sent = false, close_received = false;
  bool frag_text = false;   // a fragmented text message is being joined in msg
  uint16_t close_code = 0;  // the server's close code (1005: none given)
  uint32_t group = 0;       // chat/idle: room index; fanout: 0
  uint64_t base = 0;        // the seq before the first one expected
  uint64_t first_seq = 0, last_seq = 0;
  uint64_t deliveries = 0, dups = 0, lost = 0, gaps = 0, errors = 0, pre_ack = 0, wrong_topic = 0;
  std::deque<uint64_t> send_stamps;  // chat: stamps of sends awaiting their ack, in order
  std::string in;                    // upgrade answer, then a partial frame
  std::string msg;                   // a fragmented message being joined
  std::string out;                   // bytes not yet taken by the socket
  size_t out_off = 0;
  std::string key;  // Sec-WebSocket-Key
};

struct Shared {
  std::atomic<bool> stop{false};
  std::atomic<int> established{0};
  std::atomic<int> failed_setup{0};
  std::atomic<int> hellos{0};
  std::atomic<int> closed_early{0};          // ended before we started closing
  std::atomic<int> completed{0};             // saw the run's `complete`
  std::atomic<uint64_t> target{UINT64_MAX};  // fanout: the seq every subscriber must reach
  std::atomic<int> reached{0};
  std::atomic<uint64_t> all_reached_ns{0};
  std::atomic<uint64_t> deliveries{0};
  std::atomic<uint64_t> bytes{0};
  std::atomic<uint64_t> reads{0};
  std::atomic<uint64_t> frames{0};
  std::atomic<uint64_t> presence{0};
  std::atomic<uint64_t> last_presence_ns{0};
  // chat
  std::atomic<uint64_t> send_start_ns{0};  // set by main: the first send is due then
  std::atomic<bool> sends_done{false};     // every scheduled send was made (or skipped)
  std::atomic<uint64_t> sends{0}, send_acks{0}, send_errors{0}, sends_skipped{0};
  // the end
  std::atomic<bool> close_all{false};
  std::atomic<int> ended{0};  // connections that reached kDone/kFailed after close_all
};

class Engine {
 public:
  struct Setup {
    int port = 0;
    int concurrency = 256;
    int source_addrs = 1;
    bool sio = false;                 // --peer socketio: Engine.IO v4 / Socket.IO v5 framing
    std::string nchan_path;           // --peer nchan: /sub/CH, subscribed at the upgrade
    std::string run_topic;            // flood/rate: run:<id>
    std::vector<std::string> groups;  // chat/idle joined: room ids
    std::string shared_token;         // when tokens is empty
    std::vector<std::string> tokens;  // one per connection (chat/idle with a secret)
    // chat
    uint64_t total_sends = 0;
    double sends_per_s = 0;
    std::string text;
  };

  Engine(Shared& sh, int n, Setup setup)
      : conns(size_t(n)), sh_(sh), s_(std::move(setup)), rng_(std::random_device{}()) {
    for (size_t i = 0; i < conns.size(); ++i)
      conns[i].group = s_.groups.empty() ? 0 : uint32_t(i % s_.groups.size());
    group_target_.assign(std::max<size_t>(1, s_.groups.size()), UINT64_MAX);
    room_max_seq_.assign(group_target_.size(), 0);
    room_acked_.assign(group_target_.size(), 0);
    join_ops_.reserve(s_.groups.size());
    for (auto& g : s_.groups)
      join_ops_.push_back("{\"op\":\"join\",\"room\":\"" + g + "\",\"ref\":\"j\"}");
    topics_.reserve(s_.groups.size());
    for (auto& g : s_.groups) topics_.push_back("room:" + g);
    if (!s_.run_topic.empty()) topics_.assign(1, s_.run_topic);
  }

  void run() {
    ep_ = epoll_create1(EPOLL_CLOEXEC);
    if (ep_ < 0) die("epoll_create1: %s", std::strerror(errno));
    std::vector<char> buf(256 * 1024);
    buf_ = buf.data();
    buf_cap_ = buf.size();
    std::vector<epoll_event> evs(1024);
    while (!sh_.stop.load(std::memory_order_relaxed)) {
      while (pending_ < s_.concurrency && next_ < conns.size()) open_(uint32_t(next_++));
      uint64_t wait_ns = 10000000ull;
      if (sending_()) {
        uint64_t now = mono_ns(), due = send_due_at_(next_send_);
        wait_ns = due > now ? std::min<uint64_t>(wait_ns, due - now) : 0;
      }
      timespec ts{time_t(wait_ns / 1000000000ull), long(wait_ns % 1000000000ull)};
      int k = epoll_pwait2(ep_, evs.data(), int(evs.size()), &ts, nullptr);
      if (k < 0 && errno != EINTR) die("epoll_pwait2: %s", std::strerror(errno));
      for (int j = 0; j < k; ++j) on_event_(evs[size_t(j)].data.u32, evs[size_t(j)].events);
      if (sending_()) send_due_();
      if (!closing_ && sh_.close_all.load(std::memory_order_relaxed)) close_all_();
      check_targets_();
    }
    for (auto& c : conns)
      if (c.fd >= 0) {
        ::close(c.fd);
        c.fd = -1;
      }
    ::close(ep_);
  }

  std::vector<Conn> conns;
  Histogram hist;                           // deliveries: receive − sender's stamp
  Histogram ack_hist;                       // chat: send → ack
  std::map<std::string, int> setup_errors;  // reason → count
  std::map<std::string, int> end_kinds;     // how connections ended (after close_all or early)
  std::string first_http_error, first_error_op;
  uint64_t error_ops = 0, gap_ops = 0, pings = 0, unexpected = 0, ext_headers = 0;
  uint64_t max_behind_ns = 0;           // chat: how late a send went out against its schedule
  std::vector<uint64_t> room_max_seq_;  // chat: the highest seq an ack gave per room
  std::vector<uint64_t> room_acked_;    // chat: acked sends per room

 private:
  Shared& sh_;
  Setup s_;
  Rng rng_;
  std::vector<std::string> join_ops_, topics_;
  std::vector<uint64_t> group_target_;
  int ep_ = -1;
  size_t next_ = 0;
  int pending_ = 0;
  char* buf_ = nullptr;
  size_t buf_cap_ = 0;
  uint64_t now_ = 0;
  uint64_t fan_target_ = UINT64_MAX;
  bool targets_set_ = false;
  int closed_unreached_ = 0;
  bool closing_ = false;
  uint64_t next_send_ = 0;
  std::string op_buf_;                    // scratch for building chat sends
  uint64_t deliveries_ = 0, frames_ = 0;  // counted during one read, then published

  // ---- setup ----

  void setup_fail_(Conn& c, const std::string& why) {
    setup_errors[why]++;
    if (c.fd >= 0) ::close(c.fd);
    c.fd = -1;
    c.state = kFailed;
    if (!c.established) {
      --pending_;
      sh_.failed_setup.fetch_add(1, std::memory_order_relaxed);
    }
  }

  void open_(uint32_t i) {
    Conn& c = conns[i];
    ++pending_;
    c.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c.fd < 0) return setup_fail_(c, std::string("socket: ") + std::strerror(errno));
    int one = 1;
    setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (s_.source_addrs > 1) {
      // Several source addresses, the port chosen at connect: more 4-tuples than one address has.
      setsockopt(c.fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
      sockaddr_in src{};
      src.sin_family = AF_INET;
      src.sin_addr.s_addr = htonl(INADDR_LOOPBACK + i % uint32_t(s_.source_addrs));
      if (bind(c.fd, reinterpret_cast<sockaddr*>(&src), sizeof src) != 0)
        return setup_fail_(c, std::string("bind: ") + std::strerror(errno));
    }
    sockaddr_in a = loopback_addr(s_.port);
    int r = ::connect(c.fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    if (r != 0 && errno != EINPROGRESS)
      return setup_fail_(c, std::string("connect: ") + std::strerror(errno));
    c.state = kConnecting;
    epoll_event ev{};
    ev.events = EPOLLOUT;
    ev.data.u32 = i;
    if (epoll_ctl(ep_, EPOLL_CTL_ADD, c.fd, &ev) != 0)
      return setup_fail_(c, std::string("epoll_ctl: ") + std::strerror(errno));
    c.want_out = true;
  }

  void start_upgrade_(uint32_t i, Conn& c) {
    unsigned char raw[16];
    for (int j = 0; j < 2; ++j) {
      uint64_t v = rng_.next();
      std::memcpy(raw + 8 * j, &v, 8);
    }
    c.key = base64(raw, sizeof raw);
    const std::string& tok = s_.tokens.empty() ? s_.shared_token : s_.tokens[i];
    c.out = (s_.sio                   ? std::string("GET /socket.io/?EIO=4&transport=websocket")
             : !s_.nchan_path.empty() ? "GET " + s_.nchan_path
                                      : "GET /v1/ws?access_token=" + tok) +
            " HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(s_.port) +
            "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + c.key +
            "\r\nSec-WebSocket-Version: 13\r\n\r\n";
    c.out_off = 0;
    c.state = kUpgrading;
    flush_(i, c);
  }

  // ---- output ----

  void set_out_(uint32_t i, Conn& c, bool want) {
    if (c.want_out == want || c.fd < 0) return;
    epoll_event ev{};
    ev.events = uint32_t(EPOLLIN) | (want ? uint32_t(EPOLLOUT) : 0u);
    ev.data.u32 = i;
    epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev);
    c.want_out = want;
  }

  // Writes what the socket takes; the rest waits for EPOLLOUT. False when the connection failed.
  bool flush_(uint32_t i, Conn& c) {
    while (c.out_off < c.out.size()) {
      ssize_t n = ::send(c.fd, c.out.data() + c.out_off, c.out.size() - c.out_off, MSG_NOSIGNAL);
      if (n > 0) {
        c.out_off += size_t(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      on_eof_(c, (std::string("send: ") + std::strerror(errno)).c_str());
      return false;
    }
    if (c.out_off == c.out.size()) {
      c.out.clear();
      c.out_off = 0;
    }
    set_out_(i, c, !c.out.empty());
    return true;
  }

  void send_frame_(uint32_t i, Conn& c, uint8_t opcode, std::string_view payload) {
    if (c.fd < 0) return;
    append_masked(c.out, opcode, payload, rng_);
    flush_(i, c);
  }

  // ---- input ----

  void on_event_(uint32_t i, uint32_t evs) {
    Conn& c = conns[i];
    if (c.fd < 0) return;
    if (c.state == kConnecting) {
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) return setup_fail_(c, std::string("connect: ") + std::strerror(err));
      if (!(evs & EPOLLOUT)) return setup_fail_(c, "connect: hangup");
      return start_upgrade_(i, c);
    }
    if ((evs & EPOLLOUT) && !flush_(i, c)) return;
    if (evs & (EPOLLIN | EPOLLHUP | EPOLLERR)) read_once_(i, c);
  }

  void read_once_(uint32_t i, Conn& c) {
    ssize_t n = ::recv(c.fd, buf_, buf_cap_, 0);
    if (n > 0) {
      now_ = mono_ns();
      sh_.bytes.fetch_add(uint64_t(n), std::memory_order_relaxed);
      sh_.reads.fetch_add(1, std::memory_order_relaxed);
      if (c.state == kUpgrading)
        upgrade_answer_(i, c, buf_, size_t(n));
      else
        feed_(i, c, buf_, size_t(n));
      // Published once per read, not per frame: the main thread reads them after the drain.
      sh_.deliveries.fetch_add(deliveries_, std::memory_order_relaxed);
      sh_.frames.fetch_add(frames_, std::memory_order_relaxed);
      deliveries_ = frames_ = 0;
      return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    on_eof_(c, n == 0 ? "closed by server" : std::strerror(errno));
  }

  void upgrade_answer_(uint32_t i, Conn& c, const char* p, size_t n) {
    c.in.append(p, n);
    size_t he = c.in.find("\r\n\r\n");
    if (he == std::string::npos) {
      if (c.in.size() > 16384) setup_fail_(c, "upgrade answer too large");
      return;
    }
    int status =
        c.in.compare(0, 5, "HTTP/") == 0 && c.in.size() > 12 ? std::atoi(c.in.c_str() + 9) : 0;
    if (status != 101) {
      if (first_http_error.empty())
        first_http_error = "HTTP " + std::to_string(status) + ": " + c.in.substr(0, 400);
      return setup_fail_(c, "HTTP " + std::to_string(status));
    }
    std::string h = lower(c.in.substr(0, he));
    std::string accept;
    size_t ap = h.find("\r\nsec-websocket-accept:");
    if (ap != std::string::npos) {
      ap += 23;
      size_t e = c.in.find("\r\n", ap);
      accept = c.in.substr(ap, e - ap);  // original case: base64 is case-sensitive
      while (!accept.empty() && accept.front() == ' ') accept.erase(0, 1);
      while (!accept.empty() && accept.back() == ' ') accept.pop_back();
    }
    if (accept != expected_accept(c.key)) return setup_fail_(c, "wrong Sec-WebSocket-Accept");
    if (h.find("\r\nsec-websocket-extensions:") != std::string::npos) ++ext_headers;
    std::string rest = c.in.substr(he + 4);
    std::string().swap(c.in);
    std::string().swap(c.key);
    c.state = kOpen;
    if (!s_.nchan_path.empty()) {  // Nchan sends no hello: the upgrade is the subscription
      c.hello = true;
      sh_.hellos.fetch_add(1, std::memory_order_relaxed);
      establish_(c);
    }
    if (!rest.empty()) feed_(i, c, rest.data(), rest.size());
  }

  // Bytes of a frame starting at p (n available): 0 while its header is incomplete.
  static size_t frame_size(const unsigned char* p, size_t n, size_t& hdr, uint64_t& len) {
    if (n < 2) return 0;
    len = p[1] & 0x7F;
    hdr = 2 + ((p[1] & 0x80) ? 4 : 0);
    if (len == 126) {
      hdr += 2;
      if (n < hdr) return 0;
      len = (uint64_t(p[2]) << 8) | p[3];
    } else if (len == 127) {
      hdr += 8;
      if (n < hdr) return 0;
      len = 0;
      for (int k = 0; k < 8; ++k) len = (len << 8) | p[2 + k];
    }
    return hdr + size_t(len);
  }

  void feed_(uint32_t i, Conn& c, const char* p, size_t n) {
    const char* end = p + n;
    if (!c.in.empty()) {  // complete the partial frame first, taking only its bytes
      for (;;) {
        size_t hdr = 0;
        uint64_t len = 0;
        size_t total =
            frame_size(reinterpret_cast<const unsigned char*>(c.in.data()), c.in.size(), hdr, len);
        size_t want = total ? total - c.in.size() : (c.in.size() < 2 ? 2 - c.in.size() : 1);
        size_t take = std::min(want, size_t(end - p));
        c.in.append(p, take);
        p += take;
        if (total && c.in.size() == total) break;
        if (p == end) return;
      }
      std::string f;
      f.swap(c.in);
      frame_(i, c, f.data(), f.size());
      if (c.fd < 0) return;
    }
    while (p < end) {
      size_t hdr = 0;
      uint64_t len = 0;
      size_t total =
          frame_size(reinterpret_cast<const unsigned char*>(p), size_t(end - p), hdr, len);
      if (total == 0 || total > size_t(end - p)) {
        c.in.assign(p, size_t(end - p));
        return;
      }
      frame_(i, c, p, total);
      if (c.fd < 0) return;
      p += total;
    }
  }

  // One whole frame (the connection may be gone after it: c.fd < 0).
  bool frame_(uint32_t i, Conn& c, const char* f, size_t total) {
    const unsigned char b0 = static_cast<unsigned char>(f[0]),
                        b1 = static_cast<unsigned char>(f[1]);
    size_t hdr = 0;
    uint64_t len = 0;
    frame_size(reinterpret_cast<const unsigned char*>(f), total, hdr, len);
    std::string_view payload(f + hdr, size_t(len));
    ++frames_;
    if ((b1 & 0x80) || (b0 & 0x70)) {
      ++unexpected;  // a masked server frame or RSV bits: a protocol error on the server's side
      end_kinds["server sent a masked frame or RSV bits"]++;
    }
    const bool fin = b0 & 0x80;
    const uint8_t op = b0 & 0x0F;
    switch (op) {
      case opText:
        if (fin) return text_(i, c, payload);
        c.msg.assign(payload);
        c.frag_text = true;
        return true;
      case opCont:
        if (!c.frag_text) {
          ++unexpected;
          return true;
        }
        c.msg.append(payload);
        if (fin) {
          c.frag_text = false;
          std::string m;
          m.swap(c.msg);
          return text_(i, c, m);
        }
        return true;
      case opPing:
        ++pings;
        if (!c.close_sent) send_frame_(i, c, opPong, payload);
        return c.fd >= 0;
      case opPong:
        return true;
      case opClose: {
        c.close_received = true;
        c.close_code =
            payload.size() >= 2 ? uint16_t((uint8_t(payload[0]) << 8) | uint8_t(payload[1])) : 1005;
        if (!c.close_sent) {  // the server closes: echo its code (RFC 6455 5.5.1)
          c.close_sent = true;
          if (c.state == kOpen) c.state = kClosing;
          send_frame_(i, c, opClose,
                      c.close_code == 1005 ? std::string_view{} : payload.substr(0, 2));
        }
        return c.fd >= 0;
      }
      default:
        ++unexpected;
        return true;
    }
  }

  void establish_(Conn& c) {
    if (c.established) return;
    c.established = true;
    --pending_;
    sh_.established.fetch_add(1, std::memory_order_relaxed);
  }

  // Makes ready-to-send text for an op and sends it.
  void send_op_(uint32_t i, Conn& c, std::string_view json) { send_frame_(i, c, opText, json); }

  bool text_(uint32_t i, Conn& c, std::string_view t) {
    if (s_.sio) return sio_text_(i, c, t);
    static constexpr std::string_view kPrefix = "{\"op\":\"";
    if (t.substr(0, kPrefix.size()) != kPrefix) {
      ++unexpected;
      return true;
    }
    std::string_view rest = t.substr(kPrefix.size());
    if (rest.starts_with("event\"")) return event_(c, t);
    if (rest.starts_with("presence\"")) {
      sh_.presence.fetch_add(1, std::memory_order_relaxed);
      sh_.last_presence_ns.store(now_, std::memory_order_relaxed);
      return true;
    }
    if (rest.starts_with("ack\"")) return ack_(i, c, t);
    if (rest.starts_with("hello\"")) {
      if (c.hello) return true;
      c.hello = true;
      sh_.hellos.fetch_add(1, std::memory_order_relaxed);
      if (!s_.run_topic.empty()) {
        send_op_(
            i, c,
            "{\"op\":\"subscribe\",\"topic\":\"" + s_.run_topic + "\",\"after\":0,\"ref\":\"s\"}");
      } else if (!s_.groups.empty()) {
        send_op_(i, c, join_ops_[c.group]);
      } else {
        establish_(c);  // idle, connected only
      }
      return c.fd >= 0;
    }
    if (rest.starts_with("error\"")) {
      ++error_ops;
      if (first_error_op.empty()) first_error_op = std::string(t.substr(0, 300));
      if (str_field(t, "\"ref\":\"") == "m" && !c.send_stamps.empty()) {
        c.send_stamps.pop_front();
        sh_.send_errors.fetch_add(1, std::memory_order_relaxed);
      }
      return true;
    }
    if (rest.starts_with("gap\"")) {
      ++gap_ops;
      ++c.gaps;
      return true;
    }
    if (rest.starts_with("pong\"")) return true;
    ++unexpected;
    return true;
  }

  // One Engine.IO packet (--peer socketio): what text_ does for Relay's ops.
  bool sio_text_(uint32_t i, Conn& c, std::string_view t) {
    static constexpr std::string_view kMessage = "42[\"message\",";
    if (t.starts_with(kMessage)) {  // a delivery: {"room":"..","seq":N,"user":..,"data":{"t":..}}
      std::string_view room = str_field(t, "{\"room\":\"", kMessage.size());
      if (room != s_.groups[c.group]) {
        ++c.wrong_topic;
        return true;
      }
      uint64_t seq = 0;
      size_t sp = t.find("\"seq\":", kMessage.size());
      if (sp == std::string_view::npos || !num_field(t, "\"seq\":", seq, sp)) {
        ++unexpected;
        return true;
      }
      deliver_(c, seq, "message", t, sp);
      return true;
    }
    if (t == "2") {  // the server's heartbeat ping
      ++pings;
      send_op_(i, c, "3");
      return c.fd >= 0;
    }
    if (t.starts_with("430")) {  // the join's ack: [{"room":..,"last_seq":N}]
      if (c.acked) {
        ++unexpected;
        return true;
      }
      c.acked = true;
      uint64_t ls = 0;
      num_field(t, "\"last_seq\":", ls);
      if (c.any_event && c.first_seq != ls + 1)
        c.lost += c.first_seq > ls + 1 ? c.first_seq - ls - 1 : 0;
      c.base = ls;
      establish_(c);
      return true;
    }
    if (t.starts_with("431")) {  // a send's ack: [{"seq":N}]
      uint64_t seq = 0;
      if (!c.send_stamps.empty()) {
        ack_hist.record(now_ - c.send_stamps.front());
        c.send_stamps.pop_front();
      }
      if (num_field(t, "\"seq\":", seq)) {
        room_max_seq_[c.group] = std::max(room_max_seq_[c.group], seq);
        room_acked_[c.group]++;
      }
      sh_.send_acks.fetch_add(1, std::memory_order_relaxed);
      return true;
    }
    if (t.starts_with("40")) {  // connected to the default namespace: the hello
      if (c.hello) return true;
      c.hello = true;
      sh_.hellos.fetch_add(1, std::memory_order_relaxed);
      if (!s_.groups.empty())
        send_op_(i, c, "420[\"join\",\"" + s_.groups[c.group] + "\"]");
      else
        establish_(c);  // idle, connected only
      return c.fd >= 0;
    }
    if (t.starts_with("0{")) {  // Engine.IO open: connect to the default namespace
      send_op_(i, c, "40");
      return c.fd >= 0;
    }
    if (t.starts_with("44") || t.starts_with("41")) {  // connect error, disconnect
      ++error_ops;
      if (first_error_op.empty()) first_error_op = std::string(t.substr(0, 300));
      return true;
    }
    ++unexpected;
    return true;
  }

  bool ack_(uint32_t i, Conn& c, std::string_view t) {
    std::string_view ref = str_field(t, "\"ref\":\"");
    if (ref == "m") {  // a send: {"op":"ack","ref":"m","message_id":..,"seq":N}
      uint64_t seq = 0;
      if (!c.send_stamps.empty()) {
        ack_hist.record(now_ - c.send_stamps.front());
        c.send_stamps.pop_front();
      }
      if (num_field(t, "\"seq\":", seq)) {
        room_max_seq_[c.group] = std::max(room_max_seq_[c.group], seq);
        room_acked_[c.group]++;
      }
      sh_.send_acks.fetch_add(1, std::memory_order_relaxed);
      return true;
    }
    if (ref == "s" ||
        ref == "j") {  // subscribe / join: {"op":"ack","ref":..,"topic":..,"last_seq":N,...}
      if (c.acked) {
        ++unexpected;
        return true;
      }
      c.acked = true;
      uint64_t ls = 0;
      num_field(t, "\"last_seq\":", ls);
      // subscribe after 0 replays from 1; join (no `after`) starts after the room's last seq.
      uint64_t base = ref == "s" ? 0 : ls;
      if (c.any_event) {
        // Events came before the ack: they must still be the ones right after the position.
        if (c.first_seq != base + 1) c.lost += c.first_seq > base + 1 ? c.first_seq - base - 1 : 0;
      }
      c.base = base;
      establish_(c);
      (void)i;
      return true;
    }
    ++unexpected;
    return true;
  }

  // The fields of an event in the order the server writes them (protocols/ws.cpp append_event),
  // read in one pass: this runs once per delivery, up to ~2 million times a second.
  // {"op":"event","topic":"..","seq":N,"type":"..","data":{..},"ts":N}; false if it is not so.
  static bool parse_event(std::string_view t, std::string_view& topic, uint64_t& seq,
                          std::string_view& type, size_t& data_pos) {
    static constexpr std::string_view kHead = "{\"op\":\"event\",\"topic\":\"";
    static constexpr std::string_view kSeq = "\",\"seq\":";
    static constexpr std::string_view kType = ",\"type\":\"";
    static constexpr std::string_view kData = "\",\"data\":";
    if (t.substr(0, kHead.size()) != kHead) return false;
    size_t p = kHead.size();
    size_t e = t.find('"', p);
    if (e == std::string_view::npos) return false;
    topic = t.substr(p, e - p);
    if (t.substr(e, kSeq.size()) != kSeq) return false;
    p = e + kSeq.size();
    uint64_t v = 0;
    size_t d0 = p;
    while (p < t.size() && t[p] >= '0' && t[p] <= '9') v = v * 10 + uint64_t(t[p++] - '0');
    if (p == d0 || t.substr(p, kType.size()) != kType) return false;
    seq = v;
    p += kType.size();
    e = t.find('"', p);
    if (e == std::string_view::npos) return false;
    type = t.substr(p, e - p);
    if (t.substr(e, kData.size()) != kData) return false;
    data_pos = e + kData.size();
    return true;
  }

  bool event_(Conn& c, std::string_view t) {
    std::string_view topic, type;
    uint64_t seq = 0;
    size_t data_pos = 0;
    if (!parse_event(t, topic, seq, type, data_pos)) {
      ++unexpected;
      return true;
    }
    if (topics_.empty() || topic != topics_[topics_.size() == 1 ? 0 : c.group]) {
      ++c.wrong_topic;
      return true;
    }
    deliver_(c, seq, type, t, data_pos);
    return true;
  }

  // One event of c's topic with its seq: the strict +1 check, the latency of a delta or message
  // (the sender's stamp "t": is read from data_pos on), complete, errors.
  void deliver_(Conn& c, uint64_t seq, std::string_view type, std::string_view t, size_t data_pos) {
    bool dup = false;
    if (!c.acked) ++c.pre_ack;
    if (!c.any_event) {
      c.any_event = true;
      c.first_seq = seq;
      if (c.acked && seq != c.base + 1) {
        if (seq <= c.base) {
          dup = true;
          ++c.dups;
        } else {
          c.lost += seq - c.base - 1;
        }
      }
      if (!dup)
        c.last_seq = seq;
      else
        c.any_event = false;
    } else if (seq <= c.last_seq) {
      dup = true;
      ++c.dups;
    } else {
      if (seq != c.last_seq + 1) c.lost += seq - c.last_seq - 1;
      c.last_seq = seq;
    }
    if (type == "delta" || type == "message") {
      if (!dup) {
        // Run events: data is {"t":..,"p":..}; room messages: {"message_id",..,"data":{"t":..}}.
        uint64_t stamp = 0;
        if (num_field(t, "\"t\":", stamp, data_pos)) {
          ++c.deliveries;
          ++deliveries_;
          hist.record(now_ > stamp ? now_ - stamp : 0);
        }
      }
    } else if (type == "complete") {
      if (!c.got_complete) {
        c.got_complete = true;
        sh_.completed.fetch_add(1, std::memory_order_relaxed);
      }
    } else if (type == "error" || type == "cancelled") {
      ++c.errors;
    }
    mark_reached_(c);
  }

  uint64_t cur_seq_(const Conn& c) const { return c.any_event ? c.last_seq : c.base; }

  void mark_reached_(Conn& c) {
    if (c.reached || !c.established) return;
    if (cur_seq_(c) >= group_target_[c.group]) {
      c.reached = true;
      sh_.reached.fetch_add(1, std::memory_order_relaxed);
    }
  }

  // ---- the end of a connection ----

  void on_eof_(Conn& c, const char* why) {
    if (c.state == kConnecting || c.state == kUpgrading || !c.established) {
      if (c.state == kUpgrading)
        return setup_fail_(c, std::string("before the upgrade answer: ") + why);
      return setup_fail_(c, std::string("before subscribed: ") + why);
    }
    ::close(c.fd);
    c.fd = -1;
    const bool after_close_all = closing_;
    std::string kind;
    if (c.close_sent && c.close_received) {
      kind = c.close_code == 1000 ? "close handshake, code 1000"
                                  : "close handshake, server code " + std::to_string(c.close_code);
    } else if (c.close_received) {
      kind = "server close frame " + std::to_string(c.close_code) + " without our echo";
    } else {
      kind = std::string("EOF without a close frame (") + why + ")";
    }
    if (!after_close_all) kind = "before our close: " + kind;
    end_kinds[kind]++;
    c.state = after_close_all ? kDone : kFailed;
    if (after_close_all)
      sh_.ended.fetch_add(1, std::memory_order_relaxed);
    else
      sh_.closed_early.fetch_add(1, std::memory_order_relaxed);
    if (!c.reached) ++closed_unreached_;
  }

  void close_all_() {
    closing_ = true;
    for (uint32_t i = 0; i < conns.size(); ++i) {
      Conn& c = conns[i];
      if (c.fd < 0) continue;
      if (c.state == kConnecting || c.state == kUpgrading) {  // never made it: not counted as ended
        setup_fail_(c, "still setting up at the end");
        continue;
      }
      if (!c.close_sent) {
        c.close_sent = true;
        c.state = kClosing;
        send_frame_(i, c, opClose, close_payload(1000));
      }
    }
  }

  // ---- chat sends ----

  bool sending_() const {
    return s_.total_sends > 0 && next_send_ < s_.total_sends &&
           sh_.send_start_ns.load(std::memory_order_relaxed) != 0;
  }
  uint64_t send_due_at_(uint64_t k) const {
    uint64_t t0 = sh_.send_start_ns.load(std::memory_order_relaxed);
    return t0 + uint64_t(double(k) * 1e9 / s_.sends_per_s);
  }

  // Sends everything due: send k by member k mod N, so each member sends every N/rate seconds and
  // consecutive sends go to different rooms (member i is in room i mod R).
  void send_due_() {
    uint64_t now = mono_ns();
    while (next_send_ < s_.total_sends) {
      uint64_t due = send_due_at_(next_send_);
      if (due > now) break;
      max_behind_ns = std::max(max_behind_ns, now - due);
      uint32_t idx = uint32_t(next_send_ % conns.size());
      ++next_send_;
      Conn& c = conns[idx];
      if (c.state != kOpen || !c.established) {
        sh_.sends_skipped.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      uint64_t stamp = mono_ns();
      char num[48];
      std::snprintf(num, sizeof num, "%" PRIu64 ",\"s\":%u", stamp, idx);
      op_buf_.clear();
      op_buf_ += s_.sio ? "421[\"send\",{\"room\":\"" : "{\"op\":\"send\",\"room\":\"";
      op_buf_ += s_.groups[c.group];
      op_buf_ += "\",\"text\":\"";
      op_buf_ += s_.text;
      op_buf_ += "\",\"data\":{\"t\":";
      op_buf_ += num;
      op_buf_ += s_.sio ? "}}]" : "},\"ref\":\"m\"}";
      c.send_stamps.push_back(stamp);
      sh_.sends.fetch_add(1, std::memory_order_relaxed);
      send_op_(idx, c, op_buf_);
    }
    if (next_send_ >= s_.total_sends) sh_.sends_done.store(true);
  }

  // ---- targets ----

  void check_targets_() {
    if (!s_.run_topic.empty()) {
      uint64_t t = sh_.target.load(std::memory_order_relaxed);
      if (t != fan_target_) {
        fan_target_ = t;
        group_target_[0] = t;
        targets_set_ = true;
        for (auto& c : conns) mark_reached_(c);
      }
    } else if (s_.total_sends > 0 && !targets_set_ &&
               sh_.sends_done.load(std::memory_order_relaxed) &&
               sh_.send_acks.load() + sh_.send_errors.load() >= sh_.sends.load()) {
      // Every send is answered: each room's last seq is known, and every member must reach it.
      for (size_t g = 0; g < group_target_.size(); ++g) group_target_[g] = room_max_seq_[g];
      targets_set_ = true;
      for (auto& c : conns) mark_reached_(c);
    }
    if (targets_set_ && sh_.all_reached_ns.load(std::memory_order_relaxed) == 0) {
      int est = sh_.established.load(std::memory_order_relaxed);
      int reached = sh_.reached.load(std::memory_order_relaxed);
      if (reached + closed_unreached_ >= est) sh_.all_reached_ns.store(now_ ? now_ : mono_ns());
    }
  }
};

// ---------------------------------------------------------------------------------------------

struct Integrity {
  uint64_t lost = 0, dups = 0, gaps = 0, errors = 0, pre_ack = 0, wrong_topic = 0;
  uint64_t min_d = 0, max_d = 0;
  int pending_sends = 0;
};

// Sums the per-connection checks; `target(c)` is the seq c had to reach (the tail it misses is
// lost).
template <class Target>
Integrity integrity(const Engine& e, Target target) {
  Integrity r;
  r.min_d = UINT64_MAX;
  for (auto& c : e.conns) {
    if (!c.established) continue;
    r.dups += c.dups;
    r.gaps += c.gaps;
    r.errors += c.errors;
    r.pre_ack += c.pre_ack;
    r.wrong_topic += c.wrong_topic;
    uint64_t cur = c.any_event ? c.last_seq : c.base;
    uint64_t t = target(c);
    r.lost += c.lost + (t != UINT64_MAX && cur < t ? t - cur : 0);
    r.min_d = std::min(r.min_d, c.deliveries);
    r.max_d = std::max(r.max_d, c.deliveries);
    r.pending_sends += int(c.send_stamps.size());
  }
  if (r.min_d == UINT64_MAX) r.min_d = 0;
  return r;
}

std::string kinds_text(const std::map<std::string, int>& m) {
  std::string out;
  for (auto& [k, v] : m) out += "  " + k + " ×" + std::to_string(v) + "\n";
  return out;
}

int count_kind(const std::map<std::string, int>& m, const std::string& k) {
  auto it = m.find(k);
  return it == m.end() ? 0 : it->second;
}

}  // namespace

int main(int argc, char** argv) {
  g_t0 = mono_ns();
  g_prog = "ws_loadgen";
  Options o = parse_args(argc, argv);
  signal(SIGPIPE, SIG_IGN);
  signal(SIGALRM, on_alarm);
  alarm(unsigned(std::ceil(o.max_seconds)));
  const bool chat = o.mode == "chat", idle = o.mode == "idle", rate = o.mode == "rate";
  const int n = chat ? o.rooms * o.members : idle ? o.connections : o.subs;
  ensure_nofile(n + 64);
  const bool sio = o.peer == "socketio";
  if (!o.is_peer()) ensure_tokens(o);  // the peers take no tokens
  std::string label = o.label.empty() ? o.mode : o.label;

  HttpClient http(o.port);
  Engine::Setup setup;
  setup.port = o.port;
  setup.concurrency = o.connect_concurrency;
  setup.source_addrs = o.source_addrs;
  setup.shared_token = o.user_token;
  setup.sio = sio;
  if (o.peer == "nchan") setup.nchan_path = "/sub/" + o.channel;
  // The peers have no /metrics: port 0 skips the scrape around the window.
  const int metrics_port = o.is_peer() ? 0 : o.port;
  std::string run_id;
  // Room names carry the start time, so a server that keeps rooms between runs starts fresh ones.
  const std::string room_tag = std::to_string((mono_ns() / 1000000) % 1000000);
  if (chat) {
    for (int r = 0; r < o.rooms; ++r)
      setup.groups.push_back("bench-" + room_tag + "-c" + std::to_string(r));
    setup.sends_per_s = o.msg_rate * n;
    setup.total_sends = uint64_t(std::llround(setup.sends_per_s * o.duration));
    setup.text.assign(size_t(o.text_bytes), 'x');
  } else if (idle) {
    for (int r = 0; r < o.idle_rooms; ++r)
      setup.groups.push_back("bench-" + room_tag + "-i" + std::to_string(r));
  } else {
    run_id = create_run(http, o);
    setup.run_topic = "run:" + run_id;
    logf("run %s created (%s mode)", run_id.c_str(), o.mode.c_str());
  }
  if ((chat || idle) && !o.jwt_secret.empty() && !o.is_peer()) {
    // One user per connection, as real chat members are (presence lists users).
    const int64_t now_s = int64_t(time(nullptr));
    setup.tokens.reserve(size_t(n));
    for (int i = 0; i < n; ++i) {
      relay::claims c;
      c.sub = "bench-u" + std::to_string(i);
      c.who = relay::role::user;
      c.exp = now_s + 3600;
      setup.tokens.push_back(relay::sign_hs256(c, o.jwt_secret, now_s));
    }
  }

  // Chat and idle make no HTTP request before their baseline, unlike the fan-out modes (and every
  // sse_loadgen mode) whose run is created first: one /metrics scrape warms the server the same
  // way.
  if (chat || idle) scrape_metrics(metrics_port);
  ProcSample srv_start = sample_proc(o.server_pid);
  if (o.server_pid > 0 && !srv_start.ok) die("cannot read /proc/%d", int(o.server_pid));
  uint64_t tcp_pages_start = tcp_mem_pages();

  Shared sh;
  Engine eng(sh, n, std::move(setup));
  uint64_t t_conn0 = mono_ns();
  std::thread thread([&] { eng.run(); });
  bool stopped = false;
  auto stop_engine = [&] {
    if (stopped) return;
    stopped = true;
    sh.stop.store(true);
    if (thread.joinable()) thread.join();
  };
  // The close handshake from our side; counts how each connection ended. Bounded.
  auto close_all = [&]() -> bool {
    int to_end = sh.established.load() - sh.closed_early.load();
    sh.close_all.store(true);
    return wait_until([&] { return sh.ended.load() >= to_end; }, o.complete_timeout, 5);
  };

  bool all_up = wait_until([&] { return sh.established.load() + sh.failed_setup.load() >= n; },
                           o.connect_timeout, 5);
  double setup_s = secs_since(t_conn0);
  int est = sh.established.load();
  logf("%d/%d connections established (%s) in %.2f s (%d failed%s)", est, n,
       chat || (idle && o.idle_rooms > 0) ? "joined"
       : idle                             ? "hello"
                                          : "subscribed",
       setup_s, sh.failed_setup.load(), all_up ? "" : ", connect deadline hit");
  // Presence from the joins goes on for a while after the last ack: let it settle (bounded).
  if ((chat || (idle && o.idle_rooms > 0)) && !o.is_peer()) {  // the peers: no presence
    wait_until(
        [&] {
          uint64_t lp = sh.last_presence_ns.load();
          return lp != 0 && mono_ns() - lp > 300000000ull;
        },
        5, 20);
  }
  ProcSample srv_up = sample_proc(o.server_pid);
  int rc = 0;
  auto print_setup = [&] {
    for (auto& [why, cnt] : eng.setup_errors)
      std::printf("  setup error: %s ×%d\n", why.c_str(), cnt);
    if (!eng.first_http_error.empty())
      std::printf("  first HTTP error: %s\n", eng.first_http_error.c_str());
  };

  // ------------------------------------------------------------------------------------- idle
  if (idle) {
    if (est > 0) sleep_ms(unsigned(o.idle_settle * 1000));
    ProcSample srv_idle = sample_proc(o.server_pid);
    uint64_t tcp_pages_idle = tcp_mem_pages();
    uint64_t presence = sh.presence.load();
    bool closed_ok = close_all();
    stop_engine();
    ProcSample srv_closed = sample_proc(o.server_pid);
    est = sh.established.load();
    double delta_b =
        srv_idle.ok ? (double(srv_idle.rss_kb) - double(srv_start.rss_kb)) * 1024.0 : 0;
    double per_conn = est > 0 ? delta_b / est : 0;
    double tcp_per_conn =
        est > 0 ? (double(tcp_pages_idle) - double(tcp_pages_start)) * 4096.0 / est : 0;
    int close_ok = count_kind(eng.end_kinds, "close handshake, code 1000");
    std::printf("mode=idle connections=%d established=%d failed=%d setup=%.2fs rooms=%d\n", n, est,
                sh.failed_setup.load(), setup_s, o.idle_rooms);
    print_setup();
    if (srv_idle.ok) {
      std::printf("server RSS: before %" PRIu64
                  " KiB, with %d idle WebSocket connections%s %" PRIu64
                  " KiB → %.0f bytes (%.2f KiB) per connection; after they closed %" PRIu64
                  " KiB; threads %" PRIu64 "\n",
                  srv_start.rss_kb, est, o.idle_rooms > 0 ? " (joined)" : "", srv_idle.rss_kb,
                  per_conn, per_conn / 1024.0, srv_closed.rss_kb, srv_idle.threads);
      double up_us = ticks_to_us(srv_up.utime_ticks + srv_up.stime_ticks - srv_start.utime_ticks -
                                 srv_start.stime_ticks);
      std::printf("server CPU while connecting: %.0f µs (%.1f µs per connection)\n", up_us,
                  est ? up_us / est : 0.0);
    }
    std::printf(
        "kernel TCP memory (both ends, /proc/net/sockstat): %.0f bytes per connection (not in "
        "RSS)\n",
        tcp_per_conn);
    std::printf("presence ops received: %" PRIu64 "; server pings %" PRIu64 "; error ops %" PRIu64
                "; unexpected %" PRIu64 "\n",
                presence, eng.pings, eng.error_ops, eng.unexpected);
    if (!eng.first_error_op.empty())
      std::printf("  first error op: %s\n", eng.first_error_op.c_str());
    std::printf("how connections ended%s:\n%s", closed_ok ? "" : " (close deadline hit)",
                kinds_text(eng.end_kinds).c_str());
    std::printf(
        "RESULT label=%s mode=idle connections=%d established=%d failed=%d setup_s=%.2f "
        "rss_before_kb=%" PRIu64 " rss_after_kb=%" PRIu64 " rss_closed_kb=%" PRIu64
        " bytes_per_conn=%.0f tcp_kernel_bytes_per_conn=%.0f"
        " idle_rooms=%d presence=%" PRIu64 " close_ok=%d closed_early=%d error_ops=%" PRIu64 "\n",
        label.c_str(), n, est, sh.failed_setup.load(), setup_s, srv_start.rss_kb, srv_idle.rss_kb,
        srv_closed.rss_kb, per_conn, tcp_per_conn, o.idle_rooms, presence, close_ok,
        sh.closed_early.load(), eng.error_ops);
    if (est != n || close_ok != est || eng.error_ops) rc = 1;
    return rc;
  }

  if (est == 0) {
    stop_engine();
    std::printf("no connection could be established\n");
    print_setup();
    std::printf("RESULT label=%s mode=%s subs=%d established=0 error=no_connections\n",
                label.c_str(), o.mode.c_str(), n);
    return 1;
  }

  // ------------------------------------------------------------------- the measured window
  WindowSample ws0, ws1;
  uint64_t w0 = 0, w_prod_end = 0, w1 = 0;
  bool drained = false, produced_ok = true, completed_ok = true, all_complete = true;
  long sent = 0;
  int batch = 1;
  size_t inflight = 0;
  ProduceResult pr;
  std::string produce_note;
  uint64_t expected = 0;
  Integrity ig;

  if (chat) {
    ws0 = sample_window_begin(metrics_port, o.server_pid);
    w0 = mono_ns();
    sh.send_start_ns.store(w0);
    double send_s = o.duration;
    produced_ok = wait_until([&] { return sh.sends_done.load(); }, send_s + o.produce_timeout, 2);
    w_prod_end = mono_ns();
    // Every send answered (ack or error), then every member has its room's last seq.
    bool answered =
        wait_until([&] { return sh.send_acks.load() + sh.send_errors.load() >= sh.sends.load(); },
                   o.drain_timeout, 1);
    drained =
        answered && wait_until([&] { return sh.all_reached_ns.load() != 0; }, o.drain_timeout, 1);
    w1 = drained ? sh.all_reached_ns.load() : mono_ns();
    ws1 = sample_window_end(metrics_port, o.server_pid);
    sent = long(sh.sends.load());
    logf("chat: %ld sends in %.3f s; drain %s after %.3f s", sent, double(w_prod_end - w0) / 1e9,
         drained ? "complete" : "DEADLINE HIT", double(mono_ns() - w0) / 1e9);
  } else {
    ProduceSpec spec;
    spec.events_path = "/v1/runs/" + run_id + "/events";
    spec.token = o.service_token;
    spec.rate = rate;
    spec.total = rate ? long(std::llround(o.rate * o.duration)) : o.events;
    spec.batch = rate ? 1 : o.batch;
    spec.rate_per_s = o.rate;
    spec.event_bytes = o.event_bytes;
    spec.inflight = size_t(o.inflight > 0 ? o.inflight : (rate ? 64 : 16));
    spec.timeout_s = o.produce_timeout;
    batch = spec.batch;
    inflight = spec.inflight;
    ws0 = sample_window_begin(o.port, o.server_pid);
    pr = produce_events(http, spec);
    w0 = pr.t_start;
    w_prod_end = pr.t_end;
    sent = pr.sent;
    produced_ok = pr.post_errors == 0 && !pr.timeout;
    if (sent > 0 && pr.last_seq > 0) {
      sh.target.store(pr.last_seq);
      drained = wait_until([&] { return sh.all_reached_ns.load() != 0; }, o.drain_timeout, 1);
    }
    w1 = drained ? sh.all_reached_ns.load() : mono_ns();
    ws1 = sample_window_end(o.port, o.server_pid);
    logf("drain %s after %.3f s", drained ? "complete" : "DEADLINE HIT",
         double(mono_ns() - w0) / 1e9);
    // The run's terminal event ends every subscription; the connections stay open.
    completed_ok = complete_run(http, o, run_id);
    all_complete = wait_until(
        [&] { return sh.completed.load() + sh.closed_early.load() >= sh.established.load(); },
        o.complete_timeout, 5);
  }
  uint64_t deliveries_window = sh.deliveries.load();
  bool closed_ok = close_all();
  stop_engine();

  // ------------------------------------------------------------------------------ results
  est = sh.established.load();
  if (chat) {
    ig = integrity(eng, [&](const Conn& c) { return eng.room_max_seq_[c.group]; });
    // Every member of a room must receive every acked message of the room.
    std::vector<uint64_t> members(size_t(o.rooms), 0);
    for (auto& c : eng.conns)
      if (c.established) members[c.group]++;
    for (size_t r = 0; r < members.size(); ++r) expected += eng.room_acked_[r] * members[r];
  } else {
    const uint64_t ls = pr.last_seq;
    ig = integrity(eng, [&](const Conn&) { return ls; });
    expected = uint64_t(est) * uint64_t(sent);
  }
  const Histogram& h = eng.hist;
  double window_s = double(w1 - w0) / 1e9;
  double dps = window_s > 0 ? double(deliveries_window) / window_s : 0;
  WindowFigures wf = window_figures(ws0, ws1);
  double srv_per =
      wf.server_ok && deliveries_window ? wf.srv_cpu_us / double(deliveries_window) : 0;
  const ProcSample& srv1 = ws1.server;
  uint64_t reads = sh.reads.load(), bytes = sh.bytes.load(), frames = sh.frames.load();
  int close_ok = count_kind(eng.end_kinds, "close handshake, code 1000");
  const Histogram& ack_hist = chat ? eng.ack_hist : pr.ack_hist;
  double produced_per_s = double(sent) / std::max(1e-9, double(w_prod_end - w0) / 1e9);
  uint64_t behind = chat ? eng.max_behind_ns : pr.max_behind_ns;

  if (chat) {
    std::printf(
        "mode=chat rooms=%d members=%d (%d connections) rate=%.2f msg/s per member for %.1f s → "
        "%.0f sends/s asked,"
        " text %d B\n",
        o.rooms, o.members, n, o.msg_rate, o.duration, o.msg_rate * n, o.text_bytes);
  } else {
    std::printf("mode=%s subs=%d events=%ld batch=%d%s event_json≈%dB (pad %d)\n", o.mode.c_str(),
                n, sent, batch, rate ? (" rate=" + std::to_string(int(o.rate)) + "/s").c_str() : "",
                o.event_bytes, pr.padlen);
  }
  std::printf("setup: %d/%d connections established in %.2f s (%d failed)\n", est, n, setup_s,
              sh.failed_setup.load());
  print_setup();
  if (chat) {
    std::printf("senders: %" PRIu64 " sends (%" PRIu64 " skipped: sender not open), %" PRIu64
                " acks, %" PRIu64 " errors in %.3f s (%.0f sends/s); max behind schedule %s µs%s\n",
                sh.sends.load(), sh.sends_skipped.load(), sh.send_acks.load(),
                sh.send_errors.load(), double(w_prod_end - w0) / 1e9, produced_per_s,
                fmt_us(double(behind)).c_str(), produced_ok ? "" : " (SEND DEADLINE HIT)");
    std::printf("send → ack µs: p50 %s  p99 %s  max %s  (n=%" PRIu64 ")\n",
                fmt_us(double(ack_hist.quantile(0.5))).c_str(),
                fmt_us(double(ack_hist.quantile(0.99))).c_str(),
                fmt_us(double(ack_hist.max)).c_str(), ack_hist.n);
  } else {
    if (!pr.first_post_error.empty())
      std::printf("  producer error: %s\n", pr.first_post_error.c_str());
    if (pr.timeout) std::printf("  producer deadline hit after %ld events\n", sent);
    std::printf("producer: %ld events in %ld POSTs (≤ %zu in flight) in %.3f s (%.0f events/s)%s\n",
                sent, pr.posts, inflight, double(w_prod_end - w0) / 1e9, produced_per_s,
                rate ? (", max behind schedule " + fmt_us(double(behind)) + " µs").c_str() : "");
    std::printf("POST → 202 µs: p50 %s  p99 %s  max %s  (n=%" PRIu64 ")\n",
                fmt_us(double(ack_hist.quantile(0.5))).c_str(),
                fmt_us(double(ack_hist.quantile(0.99))).c_str(),
                fmt_us(double(ack_hist.max)).c_str(), ack_hist.n);
  }
  std::printf("window: %.3f s (first %s → last connection has its last seq%s); deliveries %" PRIu64
              " of %" PRIu64 " expected → %.0f deliveries/s; per connection min %" PRIu64
              " max %" PRIu64 "\n",
              window_s, chat ? "send" : "POST", drained ? "" : ", DRAIN DEADLINE HIT",
              deliveries_window, expected, dps, ig.min_d, ig.max_d);
  std::printf("latency µs: p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  mean %s  (n=%" PRIu64 ")\n",
              fmt_us(double(h.quantile(0.5))).c_str(), fmt_us(double(h.quantile(0.9))).c_str(),
              fmt_us(double(h.quantile(0.99))).c_str(), fmt_us(double(h.quantile(0.999))).c_str(),
              fmt_us(double(h.max)).c_str(), fmt_us(h.mean()).c_str(), h.n);
  std::printf("integrity: lost %" PRIu64 ", duplicates %" PRIu64 ", gap ops %" PRIu64
              ", error ops %" PRIu64 ", error/cancel events %" PRIu64
              ", events before the ack %" PRIu64 ", wrong topic %" PRIu64 ", closed early %d%s\n",
              ig.lost, ig.dups, ig.gaps, eng.error_ops, ig.errors, ig.pre_ack, ig.wrong_topic,
              sh.closed_early.load(),
              chat ? ""
                   : (", saw complete " + std::to_string(sh.completed.load()) + "/" +
                      std::to_string(est) + (all_complete ? "" : " (complete deadline hit)"))
                         .c_str());
  if (!eng.first_error_op.empty())
    std::printf("  first error op: %s\n", eng.first_error_op.c_str());
  std::printf("presence ops %" PRIu64 ", server pings %" PRIu64 ", unexpected frames/ops %" PRIu64
              ", extension headers %" PRIu64 "\n",
              sh.presence.load(), eng.pings, eng.unexpected, eng.ext_headers);
  std::printf("how connections ended%s:\n%s", closed_ok ? "" : " (close deadline hit)",
              kinds_text(eng.end_kinds).c_str());
  std::printf("reads: %" PRIu64 " (%.0f bytes/read, %.2f frames/read, %.0f bytes/frame)\n", reads,
              reads ? double(bytes) / double(reads) : 0.0,
              reads ? double(frames) / double(reads) : 0.0,
              frames ? double(bytes) / double(frames) : 0.0);
  std::printf(
      "loadgen CPU in window: user %.0f + sys %.0f = %.0f µs (%.0f%% of one CPU; %.3f "
      "µs/delivery)\n",
      wf.lg_user_us, wf.lg_sys_us, wf.lg_cpu_us, WindowFigures::pct(wf.lg_cpu_us, window_s),
      deliveries_window ? wf.lg_cpu_us / double(deliveries_window) : 0.0);
  if (wf.server_ok) {
    std::printf(
        "server CPU in window: user %.0f + sys %.0f = %.0f µs (%.0f%% of one CPU) → %.3f µs per "
        "delivery\n",
        wf.srv_user_us, wf.srv_sys_us, wf.srv_cpu_us, WindowFigures::pct(wf.srv_cpu_us, window_s),
        srv_per);
    std::printf("server RSS: before %" PRIu64 " KiB, subscribed %" PRIu64 " KiB, after %" PRIu64
                " KiB; threads %" PRIu64 "\n",
                srv_start.rss_kb, srv_up.rss_kb, srv1.rss_kb, srv1.threads);
  }
  if (wf.server_ok)
    std::printf("server threads in window (run time, schedstat): %s\n", wf.threads_report.c_str());
  std::printf("machine in window (all processes): %s\n", wf.cpus_report.c_str());
  if (wf.srv_writes >= 0)
    std::printf("server /metrics in window: %.0f writes, %.0f frames out → %.2f frames per write\n",
                wf.srv_writes, wf.srv_frames, wf.frames_per_write());
  std::printf(
      "RESULT label=%s mode=%s subs=%d established=%d events=%ld batch=%d rate=%.2f window_s=%.3f "
      "deliveries=%" PRIu64 " expected=%" PRIu64
      " dps=%.0f p50_us=%.1f p99_us=%.1f max_us=%.1f lost=%" PRIu64 " dup=%" PRIu64 " gaps=%" PRIu64
      " closed_early=%d saw_complete=%d lg_cpu_us=%.0f lg_cpu_pct=%.0f srv_cpu_us=%.0f "
      "srv_cpu_pct=%.0f"
      " srv_us_per_delivery=%.3f rss_before_kb=%" PRIu64 " rss_after_kb=%" PRIu64
      " drained=%d inflight=%zu"
      " ack_p50_us=%.1f ack_p99_us=%.1f behind_max_us=%.1f produced_per_s=%.0f "
      "srv_frames_per_write=%.2f"
      " cpus_busy_pct=%s close_ok=%d error_ops=%" PRIu64 " pre_ack=%" PRIu64 " wrong_topic=%" PRIu64
      " presence=%" PRIu64 " rooms=%d members=%d send_errors=%" PRIu64 " sends_skipped=%" PRIu64
      "\n",
      label.c_str(), o.mode.c_str(), n, est, sent, batch,
      chat   ? o.msg_rate
      : rate ? o.rate
             : 0.0,
      window_s, deliveries_window, expected, dps, double(h.quantile(0.5)) / 1000.0,
      double(h.quantile(0.99)) / 1000.0, double(h.max) / 1000.0, ig.lost, ig.dups, ig.gaps,
      sh.closed_early.load(), sh.completed.load(), wf.lg_cpu_us,
      WindowFigures::pct(wf.lg_cpu_us, window_s), wf.srv_cpu_us,
      WindowFigures::pct(wf.srv_cpu_us, window_s), srv_per, srv_start.rss_kb, srv1.rss_kb,
      drained ? 1 : 0, inflight, double(ack_hist.quantile(0.5)) / 1000.0,
      double(ack_hist.quantile(0.99)) / 1000.0, double(behind) / 1000.0, produced_per_s,
      wf.frames_per_write(), wf.cpus_busy_list.c_str(), close_ok, eng.error_ops, ig.pre_ack,
      ig.wrong_topic, sh.presence.load(), chat ? o.rooms : 0, chat ? o.members : 0,
      sh.send_errors.load(), sh.sends_skipped.load());
  if (est != n || ig.lost || ig.dups || ig.wrong_topic || !produced_ok || !drained ||
      !completed_ok || !all_complete || close_ok != est || eng.error_ops ||
      deliveries_window != expected || (!chat && sh.completed.load() != est))
    rc = 1;
  return rc;
}
