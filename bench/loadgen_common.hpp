#pragma once
// loadgen_common.hpp — what the load generators of bench/ share (sse_loadgen, ws_loadgen).
//
// Header-only on purpose: bench/CMakeLists.txt builds every bench/*.cpp as its own executable, and
// each load generator is a single translation unit. Contents:
//   * clocks, logging, the --max-seconds watchdog, tiny JSON field extraction;
//   * /proc sampling of the server (CPU ticks, VmRSS), of the machine (/proc/stat) and of
//   ourselves;
//   * a log-linear latency histogram (≤ 3 % bucket error);
//   * token minting through `relay token`, a blocking + pipelined HTTP/1.1 keep-alive client,
//     a /metrics scrape;
//   * the options every mode shares and their parser;
//   * the run producer (flood: E events in POSTs of B; rate: R events/s, one per POST), pipelined
//     on one connection so that its rate is not capped by the server's answer latency;
//   * the samples taken around a measured window and the figures derived from them.
// Loopback only: nothing here connects anywhere but 127.0.0.1.

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
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
#include <tuple>
#include <utility>
#include <vector>

namespace loadgen {

// ---------------------------------------------------------------------------------------------
// small helpers

inline uint64_t mono_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

inline double secs_since(uint64_t t0) { return double(mono_ns() - t0) / 1e9; }

inline void sleep_ms(unsigned ms) {
  timespec ts{time_t(ms / 1000), long(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

inline uint64_t g_t0 = 0;  // process start, for log timestamps
inline bool g_verbose = true;
inline const char* g_prog = "loadgen";  // program name in error messages

inline void logf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
inline void logf(const char* fmt, ...) {
  if (!g_verbose) return;
  std::fprintf(stderr, "[loadgen %7.3fs] ", double(mono_ns() - g_t0) / 1e9);
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fputc('\n', stderr);
}

[[noreturn]] inline void die(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
[[noreturn]] inline void die(const char* fmt, ...) {
  std::fprintf(stderr, "%s: error: ", g_prog);
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fputc('\n', stderr);
  std::exit(2);
}

// SIGALRM handler of the --max-seconds watchdog (async-signal-safe: write and _exit only).
inline void on_alarm(int) {
  static const char msg[] = ": watchdog: --max-seconds exceeded, exiting\n";
  ssize_t r = write(2, g_prog, std::strlen(g_prog));
  r = write(2, msg, sizeof msg - 1);
  (void)r;
  _exit(3);
}

inline int digits(uint64_t v) {
  int d = 1;
  while (v >= 10) {
    v /= 10;
    ++d;
  }
  return d;
}

inline std::string lower(std::string s) {
  for (auto& c : s) c = char(std::tolower((unsigned char)c));
  return s;
}

// Extracts a JSON string value for "key" (no escapes expected: ids, tokens).
inline std::string json_str(const std::string& body, const std::string& key) {
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

inline bool json_uint(const std::string& body, const std::string& key, uint64_t& out) {
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

inline ProcSample sample_proc(pid_t pid) {
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

inline double ticks_to_us(uint64_t ticks) {
  static const long hz = sysconf(_SC_CLK_TCK);
  return double(ticks) * 1e6 / double(hz > 0 ? hz : 100);
}

// Kernel TCP memory (pages, both ends of every loopback connection) from /proc/net/sockstat.
inline uint64_t tcp_mem_pages() {
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
inline CpuTimes machine_cpu() {
  CpuTimes t;
  std::ifstream f("/proc/stat");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("cpu", 0) != 0 || line.size() < 4 || !std::isdigit((unsigned char)line[3]))
      continue;
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
inline std::string machine_cpu_busy_list(const CpuTimes& a, const CpuTimes& b) {
  std::string out;
  for (size_t i = 0; i < a.busy.size() && i < b.busy.size(); ++i) {
    double tot = double(b.total[i] - a.total[i]);
    if (!out.empty()) out += ',';
    out +=
        std::to_string(tot > 0 ? int(std::lround(100.0 * double(b.busy[i] - a.busy[i]) / tot)) : 0);
  }
  return out.empty() ? "-" : out;
}
inline std::string machine_cpu_report(const CpuTimes& a, const CpuTimes& b) {
  std::string out;
  for (size_t i = 0; i < a.busy.size() && i < b.busy.size(); ++i) {
    double tot = double(b.total[i] - a.total[i]);
    if (tot <= 0) continue;
    char buf[96];
    std::snprintf(buf, sizeof buf, "%scpu%zu busy %.0f%% (steal %.0f%%)", out.empty() ? "" : ", ",
                  i, 100.0 * double(b.busy[i] - a.busy[i]) / tot,
                  100.0 * double(b.steal[i] - a.steal[i]) / tot);
    out += buf;
  }
  return out;
}

struct CpuSample {
  uint64_t user_us = 0, sys_us = 0;
};
inline CpuSample self_cpu() {
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
  void merge(const Histogram& o) {
    for (int i = 0; i < kBuckets; ++i) counts[size_t(i)] += o.counts[size_t(i)];
    n += o.n;
    sum += o.sum;
    max = std::max(max, o.max);
  }
};

// ---------------------------------------------------------------------------------------------
// options
inline sockaddr_in loopback_addr(int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

// ---------------------------------------------------------------------------------------------
// token minting: RELAY_BIN token --sub NAME --role ROLE [extra args]

inline std::string run_capture(const std::vector<std::string>& argv, double timeout_s) {
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
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
    die("token command failed: %s token ...", argv[0].c_str());
  return out;
}

inline std::string mint_token(const std::string& relay_bin,
                              const std::vector<std::string>& relay_args, const std::string& sub,
                              const std::string& role) {
  std::vector<std::string> argv{relay_bin, "token", "--sub", sub, "--role", role};
  for (auto& a : relay_args) argv.push_back(a);
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
  if (tok.empty())
    die("could not find a JWT in the output of `%s token`: %s", relay_bin.c_str(), out.c_str());
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
        if (l.rfind("content-length:", 0) == 0)
          clen = std::atoll(l.c_str() + 15);
        else if (l.rfind("transfer-encoding:", 0) == 0 && l.find("chunked") != std::string::npos)
          chunked = true;
        else if (l.rfind("connection:", 0) == 0 && l.find("close") != std::string::npos)
          close_after = true;
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

// GET /metrics (Prometheus text): name → value for unlabelled samples; empty on failure or when
// port is 0 (a peer server that has no /metrics: not even asked).
inline std::map<std::string, double> scrape_metrics(int port) {
  std::map<std::string, double> m;
  if (port <= 0) return m;
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

inline void raise_nofile() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

template <class Pred>
inline bool wait_until(Pred pred, double timeout_s, unsigned poll_ms = 1) {
  uint64_t deadline = mono_ns() + uint64_t(timeout_s * 1e9);
  while (!pred()) {
    if (mono_ns() >= deadline) return false;
    sleep_ms(poll_ms);
  }
  return true;
}

inline std::string fmt_us(double ns) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f", ns / 1000.0);
  return b;
}

// ---------------------------------------------------------------------------------------------
// options every load generator shares

struct CommonOptions {
  std::string host = "127.0.0.1";
  int port = 0;
  std::string mode;
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
  // The server under test: relay, or a peer of bench/peers/ (run-peers-bench). A peer changes only
  // the URLs, the publish request and the framing; what is measured stays the same.
  std::string peer = "relay";
  std::string channel;  // peers: the channel / topic name (default: bench-<start time>)
  bool is_peer() const { return peer != "relay"; }
};

/// Parses argv into o: the shared options here, the others through extra(name, value) → handled?
/// (value() fetches the argument's value: `--name=value` or the next word). `--quiet` and `--help`
/// are handled here too. Then checks what every mode needs: a loopback host and a port.
template <class Opts, class Extra>
void parse_options(int argc, char** argv, Opts& o, void (*usage)(), Extra extra) {
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
    if (a == "--host")
      o.host = v();
    else if (a == "--port")
      o.port = std::atoi(v().c_str());
    else if (a == "--mode")
      o.mode = v();
    else if (a == "--subs")
      o.subs = std::atoi(v().c_str());
    else if (a == "--events")
      o.events = std::atol(v().c_str());
    else if (a == "--batch")
      o.batch = std::atoi(v().c_str());
    else if (a == "--rate")
      o.rate = std::atof(v().c_str());
    else if (a == "--duration")
      o.duration = std::atof(v().c_str());
    else if (a == "--connections")
      o.connections = std::atoi(v().c_str());
    else if (a == "--event-bytes")
      o.event_bytes = std::atoi(v().c_str());
    else if (a == "--user-token")
      o.user_token = v();
    else if (a == "--service-token")
      o.service_token = v();
    else if (a == "--relay-bin")
      o.relay_bin = v();
    else if (a == "--relay-arg")
      o.relay_args.push_back(v());
    else if (a == "--owner")
      o.owner = v();
    else if (a == "--server-pid")
      o.server_pid = pid_t(std::atoi(v().c_str()));
    else if (a == "--connect-concurrency")
      o.connect_concurrency = std::atoi(v().c_str());
    else if (a == "--inflight")
      o.inflight = std::atoi(v().c_str());
    else if (a == "--inactivity-s")
      o.inactivity_s = std::atoi(v().c_str());
    else if (a == "--connect-timeout")
      o.connect_timeout = std::atof(v().c_str());
    else if (a == "--produce-timeout")
      o.produce_timeout = std::atof(v().c_str());
    else if (a == "--drain-timeout")
      o.drain_timeout = std::atof(v().c_str());
    else if (a == "--complete-timeout")
      o.complete_timeout = std::atof(v().c_str());
    else if (a == "--idle-settle")
      o.idle_settle = std::atof(v().c_str());
    else if (a == "--max-seconds")
      o.max_seconds = std::atof(v().c_str());
    else if (a == "--label")
      o.label = v();
    else if (a == "--peer")
      o.peer = v();
    else if (a == "--channel")
      o.channel = v();
    else if (a == "--quiet")
      g_verbose = false;
    else if (a == "-h" || a == "--help") {
      usage();
      std::exit(0);
    } else if (!extra(a, v)) {
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
  if (o.connect_concurrency < 1) o.connect_concurrency = 1;
  if (o.peer != "relay" && o.peer != "nchan" && o.peer != "nodehub" && o.peer != "socketio")
    die("unknown --peer %s (relay, nchan, nodehub, socketio)", o.peer.c_str());
  if (o.channel.empty()) o.channel = "bench-" + std::to_string((mono_ns() / 1000000) % 1000000);
}

/// Mints the tokens the options do not give (`relay token` through --relay-bin).
inline void ensure_tokens(CommonOptions& o) {
  if (!o.user_token.empty() && !o.service_token.empty()) return;
  if (o.relay_bin.empty())
    die("give --user-token and --service-token, or --relay-bin to mint them");
  if (o.user_token.empty()) o.user_token = mint_token(o.relay_bin, o.relay_args, o.owner, "user");
  if (o.service_token.empty())
    o.service_token = mint_token(o.relay_bin, o.relay_args, o.service_sub, "service");
}

/// Raises RLIMIT_NOFILE to its hard limit and dies unless `need` descriptors fit.
inline void ensure_nofile(int need) {
  raise_nofile();
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur < rlim_t(need))
    die("RLIMIT_NOFILE is %llu, need %d for this many connections", (unsigned long long)rl.rlim_cur,
        need);
}

/// POST /v1/runs as the service on behalf of `owner` (kind external); the run id. Dies on failure.
inline std::string create_run(HttpClient& http, const CommonOptions& o) {
  HttpResponse resp;
  std::string err;
  std::string create = "{\"kind\":\"external\",\"owner\":\"" + o.owner + "\"";
  if (o.inactivity_s > 0) create += ",\"inactivity_s\":" + std::to_string(o.inactivity_s);
  create += "}";
  if (!http.request("POST", "/v1/runs", o.service_token, create, resp, 10, err))
    die("POST /v1/runs: %s", err.c_str());
  if (resp.status != 201 && resp.status != 200)
    die("POST /v1/runs answered %d: %s", resp.status, resp.body.c_str());
  std::string run_id = json_str(resp.body, "id");
  if (run_id.empty()) die("POST /v1/runs: no id in %s", resp.body.c_str());
  return run_id;
}

/// POST /v1/runs/{id}/complete on a fresh connection; false (logged) on failure.
inline bool complete_run(HttpClient& http, const CommonOptions& o, const std::string& run_id) {
  HttpResponse resp;
  std::string err;
  http.close();  // a fresh connection (a failed pipeline leaves the old one unusable)
  bool ok = http.request("POST", "/v1/runs/" + run_id + "/complete", o.service_token, "{}", resp,
                         10, err) &&
            resp.status == 200;
  if (!ok) logf("complete failed: %s %d %s", err.c_str(), resp.status, resp.body.c_str());
  return ok;
}

/// Peers: publishes {"type":"complete"} on the channel (no seq: it is not a delta), on a fresh
/// connection; the subscribers close their streams when they see it. False (logged) on failure.
inline bool peer_complete(HttpClient& http, const std::string& pub_path) {
  HttpResponse resp;
  std::string err;
  http.close();
  bool ok = http.request("POST", pub_path, "", "{\"type\":\"complete\"}", resp, 10, err) &&
            resp.status >= 200 && resp.status <= 299;
  if (!ok) logf("complete failed: %s %d %s", err.c_str(), resp.status, resp.body.c_str());
  return ok;
}

// ---------------------------------------------------------------------------------------------
// the run producer

struct ProduceSpec {
  std::string events_path;  // /v1/runs/{id}/events (peers: /pub?id=CH)
  std::string token;        // service token (peers: none)
  // Peers (nchan, nodehub): each POST is one message, the whole event JSON as Relay would store
  // it, with the seq numbered here (the peers' own ids are not seqs): {"seq":S,"type":"delta",
  // "data":{"t":T,"p":".."},"ts":ms}. Any 2xx answers it; last_seq is the last seq answered.
  bool peer = false;
  uint64_t first_seq = 1;                 // peers: the seq of the first event posted
  std::atomic<long>* progress = nullptr;  // if set: the events posted so far, for another thread
  bool rate = false;  // rate mode: one event per POST on a fixed schedule; else flood
  long total = 0;     // events to post
  int batch = 1;      // events per POST (flood; > 1 posts a JSON array)
  double rate_per_s = 0;
  int event_bytes = 200;  // target size of the server's stored event JSON
  size_t inflight = 16;   // POSTs in flight (pipelined)
  double timeout_s = 60;
};

struct ProduceResult {
  long sent = 0, posts = 0;
  uint64_t last_seq = 0;  // the highest last_seq a 202 answered
  int post_errors = 0;
  std::string first_post_error;
  bool timeout = false;        // the deadline hit with events unsent or unanswered
  uint64_t max_behind_ns = 0;  // rate mode: how far the producer fell behind its schedule
  Histogram ack_hist;          // POST → 202 answer, ns
  uint64_t t_start = 0, t_end = 0;
  int padlen = 0;
};

/// Posts s.total events of type delta with data {"t": CLOCK_MONOTONIC ns at send, "p": padding}
/// (the padding makes the server's event JSON ≈ s.event_bytes). Stops at the first failed POST or
/// at the deadline. t_start is the first POST.
inline ProduceResult produce_events(HttpClient& http, const ProduceSpec& s) {
  ProduceResult r;
  // Event JSON as the server stores it: {"seq":S,"type":"delta","data":{"t":T,"p":"..."},"ts":13
  // digits}
  int fixed = 50 + digits(uint64_t(s.total)) + 13 + digits(mono_ns() + 3600ull * 1000000000ull);
  r.padlen = std::max(0, s.event_bytes - fixed);
  std::string pad(size_t(r.padlen), 'x');
  const int batch = s.rate || s.peer ? 1 : s.batch;
  std::string body;
  body.reserve(size_t(batch) * size_t(s.event_bytes + 64) + 16);
  HttpResponse resp;
  std::string err;

  uint64_t w0 = mono_ns();
  r.t_start = w0;
  uint64_t produce_deadline = w0 + uint64_t(s.timeout_s * 1e9);
  const uint64_t period_ns = s.rate ? uint64_t(1e9 / s.rate_per_s) : 0;
  std::deque<std::pair<uint64_t, int>> outstanding;  // send stamp, events in that POST
  std::deque<uint64_t> outstanding_seq;              // peers: the seq each POST carries
  auto post_fail = [&](const std::string& what) {
    ++r.post_errors;
    if (r.first_post_error.empty()) r.first_post_error = what;
    logf("POST events failed: %s", what.c_str());
  };
  if (!http.ensure_connected(mono_ns() + 5000000000ull, err)) post_fail(err);
  while (r.post_errors == 0) {
    uint64_t now = mono_ns();
    if (now >= produce_deadline) {
      r.timeout = r.sent < s.total || !outstanding.empty();
      break;
    }
    // Queue what the schedule and the in-flight window allow.
    while (r.sent < s.total && outstanding.size() < s.inflight) {
      if (s.rate) {
        uint64_t sched = w0 + uint64_t(r.sent) * period_ns;
        if (now < sched) break;
        r.max_behind_ns = std::max(r.max_behind_ns, now - sched);
      }
      int b = int(std::min<long>(batch, s.total - r.sent));
      body.clear();
      if (batch > 1) body += '[';
      uint64_t t = mono_ns();
      char tbuf[24];
      std::snprintf(tbuf, sizeof tbuf, "%" PRIu64, t);
      if (s.peer) {
        const uint64_t seq = s.first_seq + uint64_t(r.sent);
        char head[48], tail[40];
        std::snprintf(head, sizeof head,
                      "{\"seq\":%" PRIu64 ",\"type\":\"delta\",\"data\":{\"t\":", seq);
        std::snprintf(tail, sizeof tail, "\"},\"ts\":%013" PRIu64 "}",
                      uint64_t(time(nullptr) * 1000));
        body += head;
        body += tbuf;
        body += ",\"p\":\"";
        body += pad;
        body += tail;
        outstanding_seq.push_back(seq);
      }
      for (int j = 0; j < b && !s.peer; ++j) {
        if (j) body += ',';
        body += "{\"type\":\"delta\",\"data\":{\"t\":";
        body += tbuf;
        body += ",\"p\":\"";
        body += pad;
        body += "\"}}";
      }
      if (batch > 1) body += ']';
      http.queue(http.build("POST", s.events_path, s.token, body));
      outstanding.emplace_back(t, b);
      r.sent += b;
      if (s.progress) s.progress->store(r.sent, std::memory_order_relaxed);
      ++r.posts;
      now = mono_ns();
    }
    if (http.want_write() && !http.flush(err)) {
      post_fail(err);
      break;
    }
    if (r.sent >= s.total && outstanding.empty()) break;
    // Wait for answers, for the socket to take more, or for the next scheduled send.
    uint64_t wake = std::min<uint64_t>(produce_deadline, now + 100000000ull);
    if (s.rate && r.sent < s.total && outstanding.size() < s.inflight)
      wake = std::min<uint64_t>(wake, w0 + uint64_t(r.sent) * period_ns);
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
    int rr;
    while ((rr = http.next_response(resp, err)) > 0) {
      if (outstanding.empty()) {
        post_fail("an answer nobody asked for: HTTP " + std::to_string(resp.status));
        break;
      }
      r.ack_hist.record(t_ans - outstanding.front().first);
      outstanding.pop_front();
      if (s.peer) {
        const uint64_t seq = outstanding_seq.front();
        outstanding_seq.pop_front();
        if (resp.status < 200 || resp.status > 299) {
          post_fail("HTTP " + std::to_string(resp.status) + " " + resp.body.substr(0, 300));
          break;
        }
        r.last_seq = std::max(r.last_seq, seq);
        continue;
      }
      if (resp.status != 202) {
        post_fail("HTTP " + std::to_string(resp.status) + " " + resp.body.substr(0, 300));
        break;
      }
      uint64_t ls = 0;
      if (json_uint(resp.body, "last_seq", ls)) r.last_seq = std::max(r.last_seq, ls);
    }
    if (r.post_errors) break;
    if (rr < 0) {
      post_fail(err);
      break;
    }
    if (!alive) {
      post_fail(read_err + " (" + std::to_string(outstanding.size()) + " POSTs unanswered)");
      break;
    }
  }
  http.close();  // a fresh connection for what follows (a failed pipeline leaves this one unusable)
  r.t_end = mono_ns();
  logf("produced %ld events in %ld POSTs in %.3f s (last_seq %" PRIu64 ")", r.sent, r.posts,
       double(r.t_end - w0) / 1e9, r.last_seq);
  return r;
}

// ---------------------------------------------------------------------------------------------
// samples around a measured window

// Run time and times scheduled in of every thread of pid from /proc/PID/task/*/schedstat (the
// scheduler's own sum_exec_runtime and run count), to see which of the server's threads the CPU
// went to and how often each was woken.
struct ThreadTime {
  std::string name;
  uint64_t run_ns = 0, runs = 0;
};
using ThreadTimes = std::map<int, ThreadTime>;
inline ThreadTimes thread_times(pid_t pid) {
  ThreadTimes t;
  if (pid <= 0) return t;
  std::string dir = "/proc/" + std::to_string(int(pid)) + "/task";
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
      std::string base = dir + "/" + e->d_name;
      std::ifstream ss(base + "/schedstat"), cs(base + "/comm");
      uint64_t ns = 0, wait_ns = 0, runs = 0;
      std::string name;
      if (!(ss >> ns >> wait_ns >> runs)) continue;
      std::getline(cs, name);
      int tid = std::atoi(e->d_name);
      if (tid == int(pid)) name += " (main)";
      // CAF 0.17 names its scheduler workers "caf.multiplexer" (caf/scheduler/worker.hpp).
      if (name == "caf.multiplexer") name += " (CAF worker)";
      t[tid] = {name, ns, runs};
    }
    closedir(d);
  }
  return t;
}

// "name: ms in runs, ..." of what each thread (by name) got between a and b, largest first.
inline std::string thread_report(const ThreadTimes& a, const ThreadTimes& b) {
  std::map<std::string, std::pair<uint64_t, uint64_t>> by_name;  // ns, runs
  for (auto& [tid, v] : b) {
    auto it = a.find(tid);
    uint64_t ns0 = it == a.end() ? 0 : it->second.run_ns,
             runs0 = it == a.end() ? 0 : it->second.runs;
    auto& acc = by_name[v.name];
    acc.first += v.run_ns > ns0 ? v.run_ns - ns0 : 0;
    acc.second += v.runs > runs0 ? v.runs - runs0 : 0;
  }
  std::vector<std::tuple<uint64_t, uint64_t, std::string>> v;
  for (auto& [name, x] : by_name) v.emplace_back(x.first, x.second, name);
  std::sort(v.rbegin(), v.rend());
  std::string out;
  for (auto& [ns, runs, name] : v) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "%s%s %.1f ms in %" PRIu64 " runs", out.empty() ? "" : ", ",
                  name.c_str(), double(ns) / 1e6, runs);
    out += buf;
  }
  return out.empty() ? "-" : out;
}

struct WindowSample {
  std::map<std::string, double> metrics;  // the server's /metrics
  CpuTimes machine;                       // /proc/stat
  CpuSample self;                         // the load generator
  ProcSample server;                      // /proc/PID
  ThreadTimes threads;                    // /proc/PID/task/*/schedstat
};

/// Before the window: metrics first, the server's CPU last (closest to the window's start).
inline WindowSample sample_window_begin(int port, pid_t server_pid) {
  WindowSample w;
  w.metrics = scrape_metrics(port);
  w.machine = machine_cpu();
  w.self = self_cpu();
  w.threads = thread_times(server_pid);
  w.server = sample_proc(server_pid);
  return w;
}

/// After the window: the server's CPU first (closest to the window's end), metrics last.
inline WindowSample sample_window_end(int port, pid_t server_pid) {
  WindowSample w;
  w.server = sample_proc(server_pid);
  w.threads = thread_times(server_pid);
  w.self = self_cpu();
  w.machine = machine_cpu();
  w.metrics = scrape_metrics(port);
  return w;
}

struct WindowFigures {
  bool server_ok = false;
  double srv_user_us = 0, srv_sys_us = 0, srv_cpu_us = 0;
  double lg_user_us = 0, lg_sys_us = 0, lg_cpu_us = 0;
  double srv_writes = -1, srv_frames = -1;  // from /metrics; -1: not exported
  std::string cpus_busy_list, cpus_report;
  std::string threads_report;  // the server's threads by name, run time in the window

  double frames_per_write() const { return srv_writes > 0 ? srv_frames / srv_writes : 0.0; }
  static double pct(double us, double window_s) {
    return window_s > 0 ? us / (window_s * 1e4) : 0.0;
  }
};

inline WindowFigures window_figures(const WindowSample& a, const WindowSample& b) {
  WindowFigures f;
  f.lg_user_us = double(b.self.user_us - a.self.user_us);
  f.lg_sys_us = double(b.self.sys_us - a.self.sys_us);
  f.lg_cpu_us = f.lg_user_us + f.lg_sys_us;
  if (a.server.ok && b.server.ok) {
    f.server_ok = true;
    f.srv_user_us = ticks_to_us(b.server.utime_ticks - a.server.utime_ticks);
    f.srv_sys_us = ticks_to_us(b.server.stime_ticks - a.server.stime_ticks);
    f.srv_cpu_us = f.srv_user_us + f.srv_sys_us;
  }
  auto has = [](const std::map<std::string, double>& m, const char* k) { return m.count(k) != 0; };
  if (has(a.metrics, "relay_writes_total") && has(b.metrics, "relay_writes_total") &&
      has(a.metrics, "relay_frames_out_total") && has(b.metrics, "relay_frames_out_total")) {
    f.srv_writes = b.metrics.at("relay_writes_total") - a.metrics.at("relay_writes_total");
    f.srv_frames = b.metrics.at("relay_frames_out_total") - a.metrics.at("relay_frames_out_total");
  }
  f.cpus_busy_list = machine_cpu_busy_list(a.machine, b.machine);
  f.cpus_report = machine_cpu_report(a.machine, b.machine);
  f.threads_report = thread_report(a.threads, b.threads);
  return f;
}

}  // namespace loadgen
