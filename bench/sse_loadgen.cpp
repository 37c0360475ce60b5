// sse_loadgen — SSE fan-out load generator for Relay (loopback only).
//
// One process, two threads:
//   * the subscriber thread: an epoll loop (level-triggered, non-blocking sockets) that opens N SSE
//     connections `GET /v1/runs/{id}/events?access_token=...`, decodes chunked bodies if the server
//     uses them, parses SSE frames incrementally (frames and lines may be split across reads),
//     checks per connection that seqs arrive strictly +1 (lost / duplicated), and records the
//     latency of every delivery (receive time − the producer's CLOCK_MONOTONIC stamp in the event's
//     data) into a log-linear histogram;
//   * the main thread: the producer, an HTTP/1.1 keep-alive client with the service token that creates
//     the run, posts events (flood: E events in arrays of B; rate: R events/s, one per POST), completes
//     the run, and samples the server's CPU (/proc/PID/stat) and RSS (/proc/PID/status). POSTs are
//     pipelined on the one connection (--inflight, default 16 flood / 64 rate) so the producer's rate
//     is not capped by the server's answer latency; the POST → 202 latency is reported separately.
//     Around the window it also reads the server's /metrics (writes, frames out → frames per write)
//     and /proc/stat (how busy every CPU was, to see interference from other processes).
//
// Modes: flood, rate, idle (C idle connections → server RSS per connection).
// Every phase has a deadline and a watchdog (SIGALRM) ends the process after --max-seconds.
// Output: human-readable lines, then one `RESULT key=value ...` line for scripts.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

// ---------------------------------------------------------------------------------------------
// small helpers

uint64_t mono_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

double secs_since(uint64_t t0) { return double(mono_ns() - t0) / 1e9; }

void sleep_ms(unsigned ms) {
  timespec ts{time_t(ms / 1000), long(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

uint64_t g_t0 = 0;  // process start, for log timestamps
bool g_verbose = true;

void logf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void logf(const char* fmt, ...) {
  if (!g_verbose) return;
  std::fprintf(stderr, "[loadgen %7.3fs] ", double(mono_ns() - g_t0) / 1e9);
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fputc('\n', stderr);
}

[[noreturn]] void die(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
[[noreturn]] void die(const char* fmt, ...) {
  std::fprintf(stderr, "sse_loadgen: error: ");
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fputc('\n', stderr);
  std::exit(2);
}

void on_alarm(int) {
  static const char msg[] = "sse_loadgen: watchdog: --max-seconds exceeded, exiting\n";
  ssize_t r = write(2, msg, sizeof msg - 1);
  (void)r;
  _exit(3);
}

int digits(uint64_t v) {
  int d = 1;
  while (v >= 10) {
    v /= 10;
    ++d;
  }
  return d;
}

std::string lower(std::string s) {
  for (auto& c : s) c = char(std::tolower((unsigned char)c));
  return s;
}

// Extracts a JSON string value for "key" (no escapes expected: ids, tokens).
std::string json_str(const std::string& body, const std::string& key) {
  std::string pat = "\"" + key + "\"";
  size_t p = body.find(pat);
  if (p == std::string::npos) return {};
  p = body.find(':', p + pat.size());
  if (p == std::string::npos) return {};
  p = body.find('"', p);
  if (p == std::string::npos) return {};
  size_t e = body.find('"', p + 1);
  if (e == std::string::npos) return {};
  return body.substr(p + 1, e - p - 1);
}

bool json_uint(const std::string& body, const std::string& key, uint64_t& out) {
  std::string pat = "\"" + key + "\"";
  size_t p = body.find(pat);
  if (p == std::string::npos) return false;
  p = body.find(':', p + pat.size());
  if (p == std::string::npos) return false;
  ++p;
  while (p < body.size() && (body[p] == ' ' || body[p] == '\t')) ++p;
  if (p >= body.size() || !std::isdigit((unsigned char)body[p])) return false;
  out = std::strtoull(body.c_str() + p, nullptr, 10);
  return true;
}

// ---------------------------------------------------------------------------------------------
// /proc sampling of the server

struct ProcSample {
  bool ok = false;
  uint64_t utime_ticks = 0, stime_ticks = 0;
  uint64_t rss_kb = 0;
  uint64_t threads = 0;
};

ProcSample sample_proc(pid_t pid) {
  ProcSample s;
  if (pid <= 0) return s;
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", int(pid));
  std::ifstream f(path);
  std::string line;
  if (!std::getline(f, line)) return s;
  size_t rp = line.rfind(')');
  if (rp == std::string::npos) return s;
  std::istringstream is(line.substr(rp + 2));
  // fields from 3 (state) on; utime is field 14, stime field 15
  std::string tok;
  std::vector<std::string> v;
  while (is >> tok && v.size() < 20) v.push_back(tok);
  if (v.size() < 13) return s;
  s.utime_ticks = std::strtoull(v[11].c_str(), nullptr, 10);
  s.stime_ticks = std::strtoull(v[12].c_str(), nullptr, 10);
  std::snprintf(path, sizeof path, "/proc/%d/status", int(pid));
  std::ifstream st(path);
  while (std::getline(st, line)) {
    if (line.rfind("VmRSS:", 0) == 0) s.rss_kb = std::strtoull(line.c_str() + 6, nullptr, 10);
    if (line.rfind("Threads:", 0) == 0) s.threads = std::strtoull(line.c_str() + 8, nullptr, 10);
  }
  s.ok = true;
  return s;
}

double ticks_to_us(uint64_t ticks) {
  static const long hz = sysconf(_SC_CLK_TCK);
  return double(ticks) * 1e6 / double(hz > 0 ? hz : 100);
}

// Kernel TCP memory (pages, both ends of every loopback connection) from /proc/net/sockstat.
uint64_t tcp_mem_pages() {
  std::ifstream f("/proc/net/sockstat");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("TCP:", 0) != 0) continue;
    size_t p = line.find(" mem ");
    if (p == std::string::npos) return 0;
    return std::strtoull(line.c_str() + p + 5, nullptr, 10);
  }
  return 0;
}

// Per-CPU jiffies from /proc/stat: busy (everything but idle+iowait) and steal, to see how much
// else ran on the machine during the window (other processes, the hypervisor).
struct CpuTimes {
  std::vector<uint64_t> busy, total, steal;
};
CpuTimes machine_cpu() {
  CpuTimes t;
  std::ifstream f("/proc/stat");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("cpu", 0) != 0 || line.size() < 4 || !std::isdigit((unsigned char)line[3])) continue;
    std::istringstream is(line.substr(line.find(' ')));
    uint64_t v[10] = {};
    for (auto& x : v) is >> x;
    uint64_t total = 0;
    for (auto x : v) total += x;
    total -= v[8] + v[9];  // guest time is already in user
    t.busy.push_back(total - v[3] - v[4]);
    t.total.push_back(total);
    t.steal.push_back(v[7]);
  }
  return t;
}
std::string machine_cpu_busy_list(const CpuTimes& a, const CpuTimes& b) {
  std::string out;
  for (size_t i = 0; i < a.busy.size() && i < b.busy.size(); ++i) {
    double tot = double(b.total[i] - a.total[i]);
    if (!out.empty()) out += ',';
    out += std::to_string(tot > 0 ? int(std::lround(100.0 * double(b.busy[i] - a.busy[i]) / tot)) : 0);
  }
  return out.empty() ? "-" : out;
}
std::string machine_cpu_report(const CpuTimes& a, const CpuTimes& b) {
  std::string out;
  for (size_t i = 0; i < a.busy.size() && i < b.busy.size(); ++i) {
    double tot = double(b.total[i] - a.total[i]);
    if (tot <= 0) continue;
    char buf[96];
    std::snprintf(buf, sizeof buf, "%scpu%zu busy %.0f%% (steal %.0f%%)", out.empty() ? "" : ", ", i,
                  100.0 * double(b.busy[i] - a.busy[i]) / tot, 100.0 * double(b.steal[i] - a.steal[i]) / tot);
    out += buf;
  }
  return out;
}

struct CpuSample {
  uint64_t user_us = 0, sys_us = 0;
};
CpuSample self_cpu() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  CpuSample c;
  c.user_us = uint64_t(ru.ru_utime.tv_sec) * 1000000ull + uint64_t(ru.ru_utime.tv_usec);
  c.sys_us = uint64_t(ru.ru_stime.tv_sec) * 1000000ull + uint64_t(ru.ru_stime.tv_usec);
  return c;
}

// ---------------------------------------------------------------------------------------------
// latency histogram: exact below 64 ns, then 32 sub-buckets per power of two (≤ 3 % error)

struct Histogram {
  static constexpr int kBuckets = 64 + 58 * 32;
  std::vector<uint64_t> counts = std::vector<uint64_t>(kBuckets, 0);
  uint64_t n = 0, max = 0;
  long double sum = 0;

  static int index(uint64_t v) {
    if (v < 64) return int(v);
    int msb = 63 - __builtin_clzll(v);
    int shift = msb - 5;
    uint64_t top = v >> shift;  // in [32, 63]
    return 64 + (shift - 1) * 32 + int(top - 32);
  }
  static uint64_t lower_bound(int idx) {
    if (idx < 64) return uint64_t(idx);
    int shift = (idx - 64) / 32 + 1;
    uint64_t top = uint64_t((idx - 64) % 32 + 32);
    return top << shift;
  }
  static uint64_t upper_bound(int idx) {
    if (idx < 64) return uint64_t(idx);
    int shift = (idx - 64) / 32 + 1;
    return lower_bound(idx) + (uint64_t(1) << shift) - 1;
  }
  void record(uint64_t v) {
    counts[index(v)]++;
    ++n;
    sum += v;
    if (v > max) max = v;
  }
  // The q-quantile (bucket midpoint, clamped to max), in ns.
  uint64_t quantile(double q) const {
    if (n == 0) return 0;
    uint64_t rank = uint64_t(std::ceil(q * double(n)));
    if (rank < 1) rank = 1;
    uint64_t acc = 0;
    for (int i = 0; i < kBuckets; ++i) {
      acc += counts[i];
      if (acc >= rank) {
        uint64_t mid = (lower_bound(i) + upper_bound(i)) / 2;
        return std::min(mid, max);
      }
    }
    return max;
  }
  double mean() const { return n ? double(sum / n) : 0.0; }
};

// ---------------------------------------------------------------------------------------------
// options

struct Options {
  std::string host = "127.0.0.1";
  int port = 0;
  std::string mode = "flood";
  int subs = 1000;
  long events = 2000;
  int batch = 16;
  double rate = 1000;
  double duration = 5;
  int connections = 10000;
  int event_bytes = 200;
  std::string user_token, service_token;
  std::string relay_bin;
  std::vector<std::string> relay_args;
  std::string owner = "bench-user";
  std::string service_sub = "bench-service";
  pid_t server_pid = 0;
  int connect_concurrency = 256;
  int inflight = 0;  // POSTs in flight (pipelined); 0: 16 for flood, 64 for rate
  int inactivity_s = 0;
  double connect_timeout = 60, produce_timeout = 60, drain_timeout = 30, complete_timeout = 15;
  double idle_settle = 1.0;
  double max_seconds = 240;
  std::string label;
};

void usage() {
  std::fprintf(stderr,
               "usage: sse_loadgen --port N [options]\n"
               "  --host H                127.0.0.1 or localhost only (default 127.0.0.1)\n"
               "  --mode flood|rate|idle  (default flood)\n"
               "  --subs N                SSE subscribers (flood/rate; default 1000)\n"
               "  --events E              events to post in flood mode (default 2000)\n"
               "  --batch B               events per POST in flood mode (default 16; 1 = single object)\n"
               "  --rate R --duration S   rate mode: R events/s for S seconds, one per POST\n"
               "  --connections C         idle mode: idle SSE connections (default 10000)\n"
               "  --event-bytes N         target size of the server's event JSON (default 200)\n"
               "  --user-token T --service-token T   tokens (else minted with --relay-bin)\n"
               "  --relay-bin PATH        `PATH token --sub .. --role ..` mints tokens\n"
               "  --relay-arg ARG         extra argument for the token command (repeatable, e.g. --config=..)\n"
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
               "  --quiet                 no progress lines on stderr\n");
}

Options parse_args(int argc, char** argv) {
  Options o;
  auto need = [&](int& i) -> std::string {
    if (i + 1 >= argc) {
      usage();
      die("missing value for %s", argv[i]);
    }
    return argv[++i];
  };
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    std::string val;
    size_t eq = a.find('=');
    bool has_eq = a.rfind("--", 0) == 0 && eq != std::string::npos;
    if (has_eq) {
      val = a.substr(eq + 1);
      a = a.substr(0, eq);
    }
    auto v = [&]() -> std::string { return has_eq ? val : need(i); };
    if (a == "--host") o.host = v();
    else if (a == "--port") o.port = std::atoi(v().c_str());
    else if (a == "--mode") o.mode = v();
    else if (a == "--subs") o.subs = std::atoi(v().c_str());
    else if (a == "--events") o.events = std::atol(v().c_str());
    else if (a == "--batch") o.batch = std::atoi(v().c_str());
    else if (a == "--rate") o.rate = std::atof(v().c_str());
    else if (a == "--duration") o.duration = std::atof(v().c_str());
    else if (a == "--connections") o.connections = std::atoi(v().c_str());
    else if (a == "--event-bytes") o.event_bytes = std::atoi(v().c_str());
    else if (a == "--user-token") o.user_token = v();
    else if (a == "--service-token") o.service_token = v();
    else if (a == "--relay-bin") o.relay_bin = v();
    else if (a == "--relay-arg") o.relay_args.push_back(v());
    else if (a == "--owner") o.owner = v();
    else if (a == "--server-pid") o.server_pid = pid_t(std::atoi(v().c_str()));
    else if (a == "--connect-concurrency") o.connect_concurrency = std::atoi(v().c_str());
    else if (a == "--inflight") o.inflight = std::atoi(v().c_str());
    else if (a == "--inactivity-s") o.inactivity_s = std::atoi(v().c_str());
    else if (a == "--connect-timeout") o.connect_timeout = std::atof(v().c_str());
    else if (a == "--produce-timeout") o.produce_timeout = std::atof(v().c_str());
    else if (a == "--drain-timeout") o.drain_timeout = std::atof(v().c_str());
    else if (a == "--complete-timeout") o.complete_timeout = std::atof(v().c_str());
    else if (a == "--idle-settle") o.idle_settle = std::atof(v().c_str());
    else if (a == "--max-seconds") o.max_seconds = std::atof(v().c_str());
    else if (a == "--label") o.label = v();
    else if (a == "--quiet") g_verbose = false;
    else if (a == "-h" || a == "--help") {
      usage();
      std::exit(0);
    } else {
      usage();
      die("unknown argument %s", argv[i]);
    }
  }
  if (o.host != "127.0.0.1" && o.host != "localhost")
    die("refusing host '%s': this load generator talks to loopback only (127.0.0.1/localhost)",
        o.host.c_str());
  if (o.port <= 0 || o.port > 65535) {
    usage();
    die("--port is required");
  }
  if (o.mode != "flood" && o.mode != "rate" && o.mode != "idle") die("unknown --mode %s", o.mode.c_str());
  if (o.subs < 1 || o.connections < 1 || o.events < 1 || o.batch < 1 || o.rate <= 0 || o.duration <= 0)
    die("counts, rate and duration must be positive");
  if (o.connect_concurrency < 1) o.connect_concurrency = 1;
  return o;
}

sockaddr_in loopback_addr(int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

// ---------------------------------------------------------------------------------------------
// token minting: RELAY_BIN token --sub NAME --role ROLE [extra args]

std::string run_capture(const std::vector<std::string>& argv, double timeout_s) {
  int pfd[2];
  if (pipe(pfd) != 0) die("pipe: %s", std::strerror(errno));
  pid_t pid = fork();
  if (pid < 0) die("fork: %s", std::strerror(errno));
  if (pid == 0) {
    dup2(pfd[1], 1);
    close(pfd[0]);
    close(pfd[1]);
    std::vector<char*> args;
    for (auto& s : argv) args.push_back(const_cast<char*>(s.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  close(pfd[1]);
  std::string out;
  uint64_t deadline = mono_ns() + uint64_t(timeout_s * 1e9);
  char buf[4096];
  for (;;) {
    int64_t left_ms = (int64_t(deadline) - int64_t(mono_ns())) / 1000000;
    if (left_ms <= 0) {
      kill(pid, SIGKILL);
      break;
    }
    pollfd p{pfd[0], POLLIN, 0};
    int r = poll(&p, 1, int(left_ms));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    ssize_t n = read(pfd[0], buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, size_t(n));
  }
  close(pfd[0]);
  int st = 0;
  waitpid(pid, &st, 0);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) die("token command failed: %s token ...", argv[0].c_str());
  return out;
}

std::string mint_token(const Options& o, const std::string& sub, const std::string& role) {
  std::vector<std::string> argv{o.relay_bin, "token", "--sub", sub, "--role", role};
  for (auto& a : o.relay_args) argv.push_back(a);
  std::string out = run_capture(argv, 10);
  // Take the line that looks like a JWT (three base64url parts).
  std::istringstream is(out);
  std::string line, tok;
  while (std::getline(is, line)) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    size_t s = line.find("eyJ");
    if (s == std::string::npos) continue;
    std::string cand = line.substr(s);
    size_t sp = cand.find_first_of(" \t\"'");
    if (sp != std::string::npos) cand.resize(sp);
    if (std::count(cand.begin(), cand.end(), '.') == 2) tok = cand;
  }
  if (tok.empty()) die("could not find a JWT in the output of `%s token`: %s", o.relay_bin.c_str(), out.c_str());
  return tok;
}

// ---------------------------------------------------------------------------------------------
// blocking HTTP/1.1 keep-alive client (the producer)

struct HttpResponse {
  int status = 0;
  std::string body;
};

class HttpClient {
 public:
  explicit HttpClient(int port) : port_(port) {}
  ~HttpClient() { close(); }

  std::string build(const std::string& method, const std::string& path, const std::string& token,
                    const std::string& body) const {
    std::string req;
    req.reserve(256 + token.size() + body.size());
    req += method;
    req += ' ';
    req += path;
    req += " HTTP/1.1\r\nHost: 127.0.0.1:";
    req += std::to_string(port_);
    if (!token.empty()) {
      req += "\r\nAuthorization: Bearer ";
      req += token;
    }
    req += "\r\nContent-Type: application/json\r\nContent-Length: ";
    req += std::to_string(body.size());
    req += "\r\n\r\n";
    req += body;
    return req;
  }

  // One request, one answer (blocking, bounded). False on a transport error (message in err).
  bool request(const std::string& method, const std::string& path, const std::string& token,
               const std::string& body, HttpResponse& resp, double timeout_s, std::string& err) {
    uint64_t deadline = mono_ns() + uint64_t(timeout_s * 1e9);
    if (!ensure_connected(deadline, err)) return false;
    queue(build(method, path, token, body));
    while (!wbuf_.empty()) {
      if (!flush(err)) return fail_(err);
      if (!wbuf_.empty() && wait_(POLLOUT, deadline) <= 0) return fail_(err = "send: timeout");
    }
    for (;;) {
      int r = next_response(resp, err);
      if (r > 0) return true;
      if (r < 0) return fail_(err);
      if (wait_(POLLIN, deadline) <= 0) return fail_(err = "read: timeout");
      if (!fill(err)) return fail_(err);
    }
  }

  // ---- pipelined use: queue() requests, flush() what the socket takes, fill() what arrived,
  // next_response() the answers in order.
  bool ensure_connected(uint64_t deadline, std::string& err) {
    if (fd_ >= 0 && wbuf_.empty() && rbuf_.empty() && peer_closed_()) close();
    if (fd_ >= 0) return true;
    return connect_(deadline, err);
  }
  void queue(const std::string& req) { wbuf_ += req; }
  bool want_write() const { return woff_ < wbuf_.size(); }
  int fd() const { return fd_; }

  // Non-blocking: writes what the socket accepts. False on error.
  bool flush(std::string& err) {
    while (woff_ < wbuf_.size()) {
      ssize_t n = ::send(fd_, wbuf_.data() + woff_, wbuf_.size() - woff_, MSG_NOSIGNAL);
      if (n > 0) {
        woff_ += size_t(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      err = std::string("send: ") + std::strerror(errno);
      return false;
    }
    if (woff_ == wbuf_.size()) {
      wbuf_.clear();
      woff_ = 0;
    } else if (woff_ > (1u << 20)) {
      wbuf_.erase(0, woff_);
      woff_ = 0;
    }
    return true;
  }

  // Non-blocking: reads what is there. False on EOF or error.
  bool fill(std::string& err) {
    char buf[65536];
    for (;;) {
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n > 0) {
        rbuf_.append(buf, size_t(n));
        if (size_t(n) < sizeof buf) return true;
        continue;
      }
      if (n == 0) {
        err = "connection closed by server";
        return false;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
      err = std::string("recv: ") + std::strerror(errno);
      return false;
    }
  }

  // 1: a complete answer was taken from the buffer; 0: need more bytes; -1: malformed / closing.
  int next_response(HttpResponse& resp, std::string& err) {
    size_t hend = rbuf_.find("\r\n\r\n");
    if (hend == std::string::npos) {
      if (rbuf_.size() > 65536) {
        err = "response header too large";
        return -1;
      }
      return 0;
    }
    if (hend < 12 || rbuf_.compare(0, 5, "HTTP/") != 0) {
      err = "bad status line";
      return -1;
    }
    int status = std::atoi(rbuf_.c_str() + 9);
    bool chunked = false, close_after = false;
    long long clen = -1;
    {
      std::istringstream hs(rbuf_.substr(0, hend));
      std::string line;
      std::getline(hs, line);
      while (std::getline(hs, line)) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        std::string l = lower(line);
        if (l.rfind("content-length:", 0) == 0) clen = std::atoll(l.c_str() + 15);
        else if (l.rfind("transfer-encoding:", 0) == 0 && l.find("chunked") != std::string::npos) chunked = true;
        else if (l.rfind("connection:", 0) == 0 && l.find("close") != std::string::npos) close_after = true;
      }
    }
    size_t pos = hend + 4;
    std::string body;
    if (chunked) {
      for (;;) {
        size_t le = rbuf_.find("\r\n", pos);
        if (le == std::string::npos) return 0;
        unsigned long long sz = std::strtoull(rbuf_.c_str() + pos, nullptr, 16);
        pos = le + 2;
        if (sz == 0) {
          for (;;) {  // trailers up to the empty line
            le = rbuf_.find("\r\n", pos);
            if (le == std::string::npos) return 0;
            bool empty = le == pos;
            pos = le + 2;
            if (empty) break;
          }
          break;
        }
        if (rbuf_.size() < pos + sz + 2) return 0;
        body.append(rbuf_, pos, sz);
        pos += sz + 2;
      }
    } else if (clen >= 0) {
      if (rbuf_.size() < pos + size_t(clen)) return 0;
      body = rbuf_.substr(pos, size_t(clen));
      pos += size_t(clen);
    } else {
      err = "answer without length (close-delimited) on a keep-alive connection";
      return -1;
    }
    rbuf_.erase(0, pos);
    resp.status = status;
    resp.body = std::move(body);
    if (close_after) {
      if (!rbuf_.empty() || want_write()) {
        err = "server closed the connection with requests outstanding (Connection: close)";
        close();
        return -1;
      }
      close();
    }
    return 1;
  }

  int wait_(short ev, uint64_t deadline) {
    for (;;) {
      int64_t left_ms = (int64_t(deadline) - int64_t(mono_ns())) / 1000000;
      if (left_ms <= 0) return 0;
      pollfd p{fd_, ev, 0};
      int r = poll(&p, 1, int(std::min<int64_t>(left_ms, 1000)));
      if (r < 0 && errno == EINTR) continue;
      if (r != 0) return r;
    }
  }

  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    rbuf_.clear();
    wbuf_.clear();
    woff_ = 0;
  }

 private:
  int port_;
  int fd_ = -1;
  std::string rbuf_, wbuf_;
  size_t woff_ = 0;

  bool fail_(const std::string&) {
    close();
    return false;
  }

  bool peer_closed_() {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, 0) <= 0) return false;
    char c;
    ssize_t n = recv(fd_, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n <= 0;
  }

  bool connect_(uint64_t deadline, std::string& err) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd_ < 0) {
      err = std::string("socket: ") + std::strerror(errno);
      return false;
    }
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    sockaddr_in a = loopback_addr(port_);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 && errno != EINPROGRESS) {
      err = std::string("connect: ") + std::strerror(errno);
      close();
      return false;
    }
    if (wait_(POLLOUT, deadline) <= 0) {
      err = "connect: timeout";
      close();
      return false;
    }
    int soerr = 0;
    socklen_t len = sizeof soerr;
    getsockopt(fd_, SOL_SOCKET, SO_ERROR, &soerr, &len);
    if (soerr != 0) {
      err = std::string("connect: ") + std::strerror(soerr);
      close();
      return false;
    }
    return true;
  }
};

// GET /metrics (Prometheus text): name → value for unlabelled samples; empty on failure.
std::map<std::string, double> scrape_metrics(int port) {
  std::map<std::string, double> m;
  HttpClient c(port);
  HttpResponse r;
  std::string err;
  if (!c.request("GET", "/metrics", "", "", r, 2, err) || r.status != 200) return m;
  std::istringstream is(r.body);
  std::string line;
  while (std::getline(is, line)) {
    if (line.empty() || line[0] == '#') continue;
    size_t sp = line.find(' ');
    if (sp == std::string::npos || line.find('{') < sp) continue;
    m[line.substr(0, sp)] = std::atof(line.c_str() + sp + 1);
  }
  return m;
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
  uint8_t f_event = evNone;
  uint64_t f_id = 0;
  uint64_t f_t = 0;
  uint64_t last_seq = 0;
  uint64_t deliveries = 0;
  uint64_t dups = 0, lost = 0, gaps = 0, errors = 0;
  size_t req_off = 0;
  std::string hdr;   // response header accumulation
  std::string line;  // partial SSE line
  Dechunk dc;
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
};

class Subscribers {
 public:
  Subscribers(int port, Shared& sh, int n, int concurrency, std::string request)
      : conns(size_t(n)), port_(port), sh_(sh), concurrency_(concurrency), req_(std::move(request)) {}

  void run() {
    ep_ = epoll_create1(EPOLL_CLOEXEC);
    if (ep_ < 0) die("epoll_create1: %s", std::strerror(errno));
    std::vector<char> buf(256 * 1024);
    buf_ = buf.data();
    buf_cap_ = buf.size();
    std::vector<epoll_event> evs(1024);
    while (!sh_.stop.load(std::memory_order_relaxed)) {
      while (pending_ < concurrency_ && next_ < conns.size()) open_(uint32_t(next_++));
      int k = epoll_wait(ep_, evs.data(), int(evs.size()), 10);
      if (k < 0 && errno != EINTR) die("epoll_wait: %s", std::strerror(errno));
      for (int j = 0; j < k; ++j) on_event_(evs[size_t(j)].data.u32, evs[size_t(j)].events);
      check_target_();
    }
    for (auto& c : conns)
      if (c.fd >= 0) {
        ::close(c.fd);
        c.fd = -1;
      }
    ::close(ep_);
  }

  std::vector<Conn> conns;
  Histogram hist;
  std::map<std::string, int> setup_errors;  // reason → count
  std::string first_http_error;
  uint64_t frames = 0, heartbeats = 0, no_retry = 0;
  uint64_t frame_bytes_sum = 0;  // bytes of delta frames (approx: data line length + framing)

 private:
  int port_;
  Shared& sh_;
  int concurrency_;
  std::string req_;
  int ep_ = -1;
  size_t next_ = 0;
  int pending_ = 0;
  char* buf_ = nullptr;
  size_t buf_cap_ = 0;
  uint64_t now_ = 0;
  uint64_t target_ = UINT64_MAX;
  int closed_unreached_ = 0;

  void setup_fail_(Conn& c, const std::string& why) {
    setup_errors[why]++;
    if (c.fd >= 0) ::close(c.fd);
    c.fd = -1;
    c.state = kFailed;
    --pending_;
    sh_.failed_setup.fetch_add(1, std::memory_order_relaxed);
  }

  void open_(uint32_t i) {
    Conn& c = conns[i];
    ++pending_;
    c.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c.fd < 0) return setup_fail_(c, std::string("socket: ") + std::strerror(errno));
    sockaddr_in a = loopback_addr(port_);
    int r = ::connect(c.fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    if (r != 0 && errno != EINPROGRESS) return setup_fail_(c, std::string("connect: ") + std::strerror(errno));
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
      while (c.req_off < req_.size()) {
        ssize_t n = ::send(c.fd, req_.data() + c.req_off, req_.size() - c.req_off, MSG_NOSIGNAL);
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
      int status = c.hdr.compare(0, 5, "HTTP/") == 0 && c.hdr.size() > 12 ? std::atoi(c.hdr.c_str() + 9) : 0;
      if (status != 200) {
        if (first_http_error.empty())
          first_http_error = "HTTP " + std::to_string(status) + ": " + c.hdr.substr(he + 4, 300);
        return setup_fail_(c, "HTTP " + std::to_string(status));
      }
      std::string l = lower(c.hdr.substr(0, he));
      c.chunked = l.find("transfer-encoding: chunked") != std::string::npos ||
                  l.find("transfer-encoding:chunked") != std::string::npos;
      c.state = kStreaming;
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
      // latency stamp: the first "t": in the event JSON is the producer's (keys: seq,type,data{t,p},ts)
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
      if (value == "delta") c.f_event = evDelta;
      else if (value == "complete") c.f_event = evComplete;
      else if (value == "error") c.f_event = evError;
      else if (value == "cancelled") c.f_event = evCancelled;
      else if (value == "gap") c.f_event = evGap;
      else if (value == "status") c.f_event = evStatus;
      else c.f_event = evOther;
    } else if (field == "retry") {
      establish_(c);
    }
  }

  void dispatch_(Conn& c) {
    if (!c.f_has_id && c.f_event == evNone && !c.f_has_t) return;  // empty frame (e.g. after retry:)
    ++frames;
    if (!c.established) {  // a server that sends no retry: line; count it but go on
      ++no_retry;
      establish_(c);
    }
    bool dup = false;
    if (c.f_has_id) {
      uint64_t s = c.f_id;
      if (s <= c.last_seq) {
        dup = true;
        ++c.dups;
      } else {
        if (s != c.last_seq + 1) c.lost += s - c.last_seq - 1;
        c.last_seq = s;
      }
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
    c.f_has_id = c.f_has_t = false;
    c.f_event = evNone;
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

void raise_nofile() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

template <class Pred>
bool wait_until(Pred pred, double timeout_s, unsigned poll_ms = 1) {
  uint64_t deadline = mono_ns() + uint64_t(timeout_s * 1e9);
  while (!pred()) {
    if (mono_ns() >= deadline) return false;
    sleep_ms(poll_ms);
  }
  return true;
}

std::string fmt_us(double ns) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f", ns / 1000.0);
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  g_t0 = mono_ns();
  Options o = parse_args(argc, argv);
  signal(SIGPIPE, SIG_IGN);
  signal(SIGALRM, on_alarm);
  alarm(unsigned(std::ceil(o.max_seconds)));
  raise_nofile();
  {
    rlimit rl{};
    getrlimit(RLIMIT_NOFILE, &rl);
    int need = (o.mode == "idle" ? o.connections : o.subs) + 64;
    if (rl.rlim_cur < rlim_t(need))
      die("RLIMIT_NOFILE is %llu, need %d for this many connections", (unsigned long long)rl.rlim_cur, need);
  }

  // Tokens.
  if (o.user_token.empty() || o.service_token.empty()) {
    if (o.relay_bin.empty()) die("give --user-token and --service-token, or --relay-bin to mint them");
    if (o.user_token.empty()) o.user_token = mint_token(o, o.owner, "user");
    if (o.service_token.empty()) o.service_token = mint_token(o, o.service_sub, "service");
  }

  HttpClient http(o.port);
  HttpResponse resp;
  std::string err;

  // Create the run (as the service, on behalf of the subscribers' user).
  std::string create = "{\"kind\":\"external\",\"owner\":\"" + o.owner + "\"";
  if (o.inactivity_s > 0) create += ",\"inactivity_s\":" + std::to_string(o.inactivity_s);
  create += "}";
  if (!http.request("POST", "/v1/runs", o.service_token, create, resp, 10, err))
    die("POST /v1/runs: %s", err.c_str());
  if (resp.status != 201 && resp.status != 200)
    die("POST /v1/runs answered %d: %s", resp.status, resp.body.c_str());
  std::string run_id = json_str(resp.body, "id");
  if (run_id.empty()) die("POST /v1/runs: no id in %s", resp.body.c_str());
  logf("run %s created (%s mode)", run_id.c_str(), o.mode.c_str());

  const bool idle = o.mode == "idle";
  const int n = idle ? o.connections : o.subs;
  std::string req = "GET /v1/runs/" + run_id + "/events?access_token=" + o.user_token +
                    " HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(o.port) +
                    "\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n";

  ProcSample srv_start = sample_proc(o.server_pid);
  if (o.server_pid > 0 && !srv_start.ok) die("cannot read /proc/%d", int(o.server_pid));
  uint64_t tcp_pages_start = tcp_mem_pages();

  Shared sh;
  Subscribers subs(o.port, sh, n, o.connect_concurrency, req);
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
  logf("%d/%d subscribers established in %.2f s (%d failed%s)", est, n, setup_s, sh.failed_setup.load(),
       all_up ? "" : ", connect deadline hit");
  ProcSample srv_up = sample_proc(o.server_pid);

  std::string label = o.label.empty() ? o.mode : o.label;
  int rc = 0;

  if (idle) {
    if (est > 0) sleep_ms(unsigned(o.idle_settle * 1000));
    ProcSample srv_idle = sample_proc(o.server_pid);
    uint64_t tcp_pages_idle = tcp_mem_pages();
    // Complete the run so that the server closes every stream, then wait (bounded).
    bool completed_ok = http.request("POST", "/v1/runs/" + run_id + "/complete", o.service_token, "{}", resp, 10, err) &&
                        resp.status == 200;
    if (!completed_ok) logf("complete failed: %s %d %s", err.c_str(), resp.status, resp.body.c_str());
    wait_until([&] { return sh.closed_after_complete.load() + sh.closed_early.load() >= sh.established.load(); },
               o.complete_timeout, 5);
    int saw_complete = sh.completed.load();
    stop_subs();
    est = sh.established.load();
    double delta_b = srv_idle.ok ? (double(srv_idle.rss_kb) - double(srv_start.rss_kb)) * 1024.0 : 0;
    double per_conn = est > 0 ? delta_b / est : 0;
    double tcp_per_conn = est > 0 ? (double(tcp_pages_idle) - double(tcp_pages_start)) * 4096.0 / est : 0;
    std::printf("mode=idle connections=%d established=%d failed=%d setup=%.2fs\n", n, est, sh.failed_setup.load(), setup_s);
    for (auto& [why, cnt] : subs.setup_errors) std::printf("  setup error: %s ×%d\n", why.c_str(), cnt);
    if (!subs.first_http_error.empty()) std::printf("  first HTTP error: %s\n", subs.first_http_error.c_str());
    if (srv_idle.ok) {
      std::printf("server RSS: before %" PRIu64 " KiB, with %d idle SSE connections %" PRIu64
                  " KiB → %.0f bytes (%.2f KiB) per connection; threads %" PRIu64 "\n",
                  srv_start.rss_kb, est, srv_idle.rss_kb, per_conn, per_conn / 1024.0, srv_idle.threads);
      std::printf("server CPU while connecting: %.0f µs (%.1f µs per connection)\n",
                  ticks_to_us(srv_up.utime_ticks + srv_up.stime_ticks - srv_start.utime_ticks - srv_start.stime_ticks),
                  est ? ticks_to_us(srv_up.utime_ticks + srv_up.stime_ticks - srv_start.utime_ticks - srv_start.stime_ticks) / est : 0.0);
    }
    std::printf("kernel TCP memory (both ends, /proc/net/sockstat): %.0f bytes per connection (not in RSS)\n", tcp_per_conn);
    std::printf("after complete: %d saw complete, %d closed by server after complete, %d closed early\n", saw_complete,
                sh.closed_after_complete.load(), sh.closed_early.load());
    std::printf("RESULT label=%s mode=idle connections=%d established=%d failed=%d setup_s=%.2f rss_before_kb=%" PRIu64
                " rss_after_kb=%" PRIu64 " bytes_per_conn=%.0f tcp_kernel_bytes_per_conn=%.0f saw_complete=%d\n",
                label.c_str(), n, est, sh.failed_setup.load(), setup_s, srv_start.rss_kb, srv_idle.rss_kb, per_conn,
                tcp_per_conn, saw_complete);
    if (est != n || !completed_ok) rc = 1;
    return rc;
  }

  if (est == 0) {
    stop_subs();
    std::printf("no subscriber could be established\n");
    for (auto& [why, cnt] : subs.setup_errors) std::printf("  setup error: %s ×%d\n", why.c_str(), cnt);
    if (!subs.first_http_error.empty()) std::printf("  first HTTP error: %s\n", subs.first_http_error.c_str());
    std::printf("RESULT label=%s mode=%s subs=%d established=0 error=no_subscribers\n", label.c_str(), o.mode.c_str(), n);
    return 1;
  }

  // ---- produce ----
  const bool rate = o.mode == "rate";
  const long total = rate ? long(std::llround(o.rate * o.duration)) : o.events;
  const int batch = rate ? 1 : o.batch;
  // Event JSON as the server stores it: {"seq":S,"type":"delta","data":{"t":T,"p":"..."},"ts":13 digits}
  int fixed = 50 + digits(uint64_t(total)) + 13 + digits(mono_ns() + 3600ull * 1000000000ull);
  int padlen = std::max(0, o.event_bytes - fixed);
  std::string pad(size_t(padlen), 'x');
  uint64_t last_seq = 0;
  long sent = 0;
  long posts = 0;
  int post_errors = 0;
  std::string first_post_error;
  uint64_t max_behind_ns = 0;
  std::string body;
  body.reserve(size_t(batch) * size_t(o.event_bytes + 64) + 16);
  const std::string events_path = "/v1/runs/" + run_id + "/events";

  auto m0 = scrape_metrics(o.port);
  CpuTimes mc0 = machine_cpu();
  CpuSample lg0 = self_cpu();
  ProcSample srv0 = sample_proc(o.server_pid);
  uint64_t w0 = mono_ns();
  uint64_t produce_deadline = w0 + uint64_t(o.produce_timeout * 1e9);
  const uint64_t period_ns = rate ? uint64_t(1e9 / o.rate) : 0;
  const size_t inflight = size_t(o.inflight > 0 ? o.inflight : (rate ? 64 : 16));
  bool produce_timeout = false;
  std::deque<std::pair<uint64_t, int>> outstanding;  // send stamp, events in that POST
  Histogram ack_hist;                                  // POST → 202 answer, ns
  auto post_fail = [&](const std::string& what) {
    ++post_errors;
    if (first_post_error.empty()) first_post_error = what;
    logf("POST events failed: %s", what.c_str());
  };
  if (!http.ensure_connected(mono_ns() + 5000000000ull, err)) post_fail(err);
  while (post_errors == 0) {
    uint64_t now = mono_ns();
    if (now >= produce_deadline) {
      produce_timeout = sent < total || !outstanding.empty();
      break;
    }
    // Queue what the schedule and the in-flight window allow.
    while (sent < total && outstanding.size() < inflight) {
      if (rate) {
        uint64_t sched = w0 + uint64_t(sent) * period_ns;
        if (now < sched) break;
        max_behind_ns = std::max(max_behind_ns, now - sched);
      }
      int b = int(std::min<long>(batch, total - sent));
      body.clear();
      if (batch > 1) body += '[';
      uint64_t t = mono_ns();
      char tbuf[24];
      std::snprintf(tbuf, sizeof tbuf, "%" PRIu64, t);
      for (int j = 0; j < b; ++j) {
        if (j) body += ',';
        body += "{\"type\":\"delta\",\"data\":{\"t\":";
        body += tbuf;
        body += ",\"p\":\"";
        body += pad;
        body += "\"}}";
      }
      if (batch > 1) body += ']';
      http.queue(http.build("POST", events_path, o.service_token, body));
      outstanding.emplace_back(t, b);
      sent += b;
      ++posts;
      now = mono_ns();
    }
    if (http.want_write() && !http.flush(err)) {
      post_fail(err);
      break;
    }
    if (sent >= total && outstanding.empty()) break;
    // Wait for answers, for the socket to take more, or for the next scheduled send.
    uint64_t wake = std::min<uint64_t>(produce_deadline, now + 100000000ull);
    if (rate && sent < total && outstanding.size() < inflight)
      wake = std::min<uint64_t>(wake, w0 + uint64_t(sent) * period_ns);
    uint64_t wait_ns = wake > now ? wake - now : 0;
    timespec ts{time_t(wait_ns / 1000000000ull), long(wait_ns % 1000000000ull)};
    pollfd p{http.fd(), short(POLLIN | (http.want_write() ? POLLOUT : 0)), 0};
    int pr = ppoll(&p, 1, &ts, nullptr);
    if (pr < 0 && errno != EINTR) {
      post_fail(std::string("ppoll: ") + std::strerror(errno));
      break;
    }
    if (pr <= 0 || !(p.revents & (POLLIN | POLLERR | POLLHUP))) continue;
    std::string read_err;
    bool alive = http.fill(read_err);
    uint64_t t_ans = mono_ns();
    int r;
    while ((r = http.next_response(resp, err)) > 0) {
      if (outstanding.empty()) {
        post_fail("an answer nobody asked for: HTTP " + std::to_string(resp.status));
        break;
      }
      ack_hist.record(t_ans - outstanding.front().first);
      outstanding.pop_front();
      if (resp.status != 202) {
        post_fail("HTTP " + std::to_string(resp.status) + " " + resp.body.substr(0, 300));
        break;
      }
      uint64_t ls = 0;
      if (json_uint(resp.body, "last_seq", ls)) last_seq = std::max(last_seq, ls);
    }
    if (post_errors) break;
    if (r < 0) {
      post_fail(err);
      break;
    }
    if (!alive) {
      post_fail(read_err + " (" + std::to_string(outstanding.size()) + " POSTs unanswered)");
      break;
    }
  }
  http.close();  // a fresh connection for complete (a failed pipeline leaves this one unusable)
  uint64_t w_prod_end = mono_ns();
  logf("produced %ld events in %ld POSTs in %.3f s (last_seq %" PRIu64 ")", sent, posts, double(w_prod_end - w0) / 1e9,
       last_seq);

  // ---- drain: wait until every open subscriber reached last_seq ----
  bool drained = false;
  if (sent > 0 && last_seq > 0) {
    sh.target.store(last_seq);
    drained = wait_until([&] { return sh.all_reached_ns.load() != 0; }, o.drain_timeout, 1);
  }
  uint64_t w1 = drained ? sh.all_reached_ns.load() : mono_ns();
  ProcSample srv1 = sample_proc(o.server_pid);
  CpuSample lg1 = self_cpu();
  CpuTimes mc1 = machine_cpu();
  auto m1 = scrape_metrics(o.port);
  uint64_t deliveries_window = sh.deliveries.load();
  logf("drain %s after %.3f s", drained ? "complete" : "DEADLINE HIT", double(mono_ns() - w0) / 1e9);

  // ---- complete and wait for every subscriber to see it ----
  bool completed_ok = http.request("POST", "/v1/runs/" + run_id + "/complete", o.service_token, "{}", resp, 10, err) &&
                      resp.status == 200;
  if (!completed_ok) logf("complete failed: %s %d %s", err.c_str(), resp.status, resp.body.c_str());
  bool all_complete = wait_until(
      [&] { return sh.closed_after_complete.load() + sh.closed_early.load() >= sh.established.load(); },
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
  double lg_user = double(lg1.user_us - lg0.user_us), lg_sys = double(lg1.sys_us - lg0.sys_us);
  double lg_cpu = lg_user + lg_sys;
  double srv_user = 0, srv_sys = 0, srv_cpu = 0, srv_per = 0;
  if (srv0.ok && srv1.ok) {
    srv_user = ticks_to_us(srv1.utime_ticks - srv0.utime_ticks);
    srv_sys = ticks_to_us(srv1.stime_ticks - srv0.stime_ticks);
    srv_cpu = srv_user + srv_sys;
    srv_per = deliveries_window ? srv_cpu / double(deliveries_window) : 0;
  }
  uint64_t reads = sh.reads.load(), bytes = sh.bytes.load();
  double frame_avg = subs.frames ? double(bytes) / double(subs.frames) : 0;

  std::printf("mode=%s subs=%d events=%ld batch=%d%s event_json≈%dB (pad %d) sse_frame≈%.0fB\n", o.mode.c_str(), n, sent,
              batch, rate ? (" rate=" + std::to_string(int(o.rate)) + "/s").c_str() : "", o.event_bytes, padlen, frame_avg);
  std::printf("setup: %d/%d subscribers established in %.2f s (%d failed)\n", est, n, setup_s, sh.failed_setup.load());
  for (auto& [why, cnt] : subs.setup_errors) std::printf("  setup error: %s ×%d\n", why.c_str(), cnt);
  if (!subs.first_http_error.empty()) std::printf("  first HTTP error: %s\n", subs.first_http_error.c_str());
  if (!first_post_error.empty()) std::printf("  producer error: %s\n", first_post_error.c_str());
  if (produce_timeout) std::printf("  producer deadline hit after %ld events\n", sent);
  std::printf("producer: %ld events in %ld POSTs (≤ %zu in flight) in %.3f s (%.0f events/s)%s\n", sent, posts, inflight,
              double(w_prod_end - w0) / 1e9, double(sent) / std::max(1e-9, double(w_prod_end - w0) / 1e9),
              rate ? (", max behind schedule " + fmt_us(double(max_behind_ns)) + " µs").c_str() : "");
  std::printf("POST → 202 µs: p50 %s  p99 %s  max %s  (n=%" PRIu64 ")\n", fmt_us(double(ack_hist.quantile(0.5))).c_str(),
              fmt_us(double(ack_hist.quantile(0.99))).c_str(), fmt_us(double(ack_hist.max)).c_str(), ack_hist.n);
  std::printf("window: %.3f s (first POST → last subscriber has last_seq%s); deliveries %" PRIu64 " of %" PRIu64
              " expected → %.0f deliveries/s; per connection min %" PRIu64 " max %" PRIu64 "\n",
              window_s, drained ? "" : ", DRAIN DEADLINE HIT", deliveries_window, expected, dps, min_d, max_d);
  std::printf("latency µs: p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  mean %s  (n=%" PRIu64 ")\n",
              fmt_us(double(h.quantile(0.5))).c_str(), fmt_us(double(h.quantile(0.9))).c_str(),
              fmt_us(double(h.quantile(0.99))).c_str(), fmt_us(double(h.quantile(0.999))).c_str(),
              fmt_us(double(h.max)).c_str(), fmt_us(h.mean()).c_str(), h.n);
  std::printf("integrity: lost %" PRIu64 ", duplicates %" PRIu64 ", gaps %" PRIu64 ", error/cancel events %" PRIu64
              ", closed early %d, saw complete %d/%d%s\n",
              lost, dups, gaps, errors, sh.closed_early.load(), sh.completed.load(), est,
              all_complete ? "" : " (complete deadline hit)");
  std::printf("reads: %" PRIu64 " (%.0f bytes/read, %.2f frames/read)\n", reads,
              reads ? double(bytes) / double(reads) : 0.0, reads ? double(subs.frames) / double(reads) : 0.0);
  std::printf("loadgen CPU in window: user %.0f + sys %.0f = %.0f µs (%.0f%% of one CPU; %.3f µs/delivery)\n", lg_user,
              lg_sys, lg_cpu, window_s > 0 ? lg_cpu / (window_s * 1e4) : 0.0,
              deliveries_window ? lg_cpu / double(deliveries_window) : 0.0);
  if (srv0.ok && srv1.ok) {
    std::printf("server CPU in window: user %.0f + sys %.0f = %.0f µs (%.0f%% of one CPU) → %.3f µs per delivered event\n",
                srv_user, srv_sys, srv_cpu, window_s > 0 ? srv_cpu / (window_s * 1e4) : 0.0, srv_per);
    std::printf("server RSS: before %" PRIu64 " KiB, subscribed %" PRIu64 " KiB, after %" PRIu64 " KiB; threads %" PRIu64 "\n",
                srv_start.rss_kb, srv_up.rss_kb, srv1.rss_kb, srv1.threads);
  }
  std::printf("machine in window (all processes): %s\n", machine_cpu_report(mc0, mc1).c_str());
  // The server's own counters (if /metrics has them): how many frames each write carried.
  double srv_writes = -1, srv_frames = -1;
  if (m0.count("relay_writes_total") && m1.count("relay_writes_total") && m0.count("relay_frames_out_total") &&
      m1.count("relay_frames_out_total")) {
    srv_writes = m1["relay_writes_total"] - m0["relay_writes_total"];
    srv_frames = m1["relay_frames_out_total"] - m0["relay_frames_out_total"];
    std::printf("server /metrics in window: %.0f writes, %.0f frames out → %.2f frames per write\n", srv_writes,
                srv_frames, srv_writes > 0 ? srv_frames / srv_writes : 0.0);
  }
  std::printf(
      "RESULT label=%s mode=%s subs=%d established=%d events=%ld batch=%d rate=%.0f window_s=%.3f deliveries=%" PRIu64
      " expected=%" PRIu64 " dps=%.0f p50_us=%.1f p99_us=%.1f max_us=%.1f lost=%" PRIu64 " dup=%" PRIu64
      " gaps=%" PRIu64 " closed_early=%d saw_complete=%d lg_cpu_us=%.0f lg_cpu_pct=%.0f srv_cpu_us=%.0f srv_cpu_pct=%.0f"
      " srv_us_per_delivery=%.3f rss_before_kb=%" PRIu64 " rss_after_kb=%" PRIu64 " drained=%d inflight=%zu"
      " ack_p50_us=%.1f ack_p99_us=%.1f behind_max_us=%.1f produced_per_s=%.0f srv_frames_per_write=%.2f"
      " cpus_busy_pct=%s\n",
      label.c_str(), o.mode.c_str(), n, est, sent, batch, rate ? o.rate : 0.0, window_s, deliveries_window, expected, dps,
      double(h.quantile(0.5)) / 1000.0, double(h.quantile(0.99)) / 1000.0, double(h.max) / 1000.0, lost, dups, gaps,
      sh.closed_early.load(), sh.completed.load(), lg_cpu, window_s > 0 ? lg_cpu / (window_s * 1e4) : 0.0, srv_cpu,
      window_s > 0 ? srv_cpu / (window_s * 1e4) : 0.0, srv_per, srv_start.rss_kb, srv1.rss_kb, drained ? 1 : 0, inflight,
      double(ack_hist.quantile(0.5)) / 1000.0, double(ack_hist.quantile(0.99)) / 1000.0, double(max_behind_ns) / 1000.0,
      double(sent) / std::max(1e-9, double(w_prod_end - w0) / 1e9), srv_writes > 0 ? srv_frames / srv_writes : 0.0,
      machine_cpu_busy_list(mc0, mc1).c_str());
  (void)deliveries;
  if (est != n || lost || dups || post_errors || produce_timeout || !drained || !completed_ok || !all_complete ||
      sh.completed.load() != est)
    rc = 1;
  return rc;
}
