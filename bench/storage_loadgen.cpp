// storage_loadgen — producer throughput and storage write cost of Relay (loopback only).
//
// One thread, one poll loop. It creates R external runs (POST /v1/runs as the service, pipelined),
// then keeps C keep-alive connections busy with POST /v1/runs/{id}/events, each carrying a JSON
// array of B events of ≈ --event-bytes of stored JSON, K POSTs in flight per connection
// (pipelined), the runs taken round-robin (POST k goes to run k mod R, whichever connection sends
// it). Phases, every one bounded:
//   warm-up (--warmup S, not measured) → begin sample → window (--duration S: acknowledged events
//   counted) → stop posting, wait for the answers still out → wait until the server's
//   relay_storage_pending_events is 0 (everything acknowledged is committed) → end sample.
//
// What it measures:
//   * events/s: events in POSTs answered 202 within the window, divided by the window;
//     other answers (503 ...) are counted per status, and posting goes on after them;
//   * POST → answer latency (p50/p99) of the window's POSTs;
//   * server CPU (utime+stime) and its threads' run time over the window (/proc);
//   * storage writes: /proc/PID/io of the server and of every process of each --io-tree PID (the
//     root and its descendants: a PostgreSQL postmaster and its backends, checkpointer, WAL
//     writer...), from the begin sample to the end sample: wchar, the bytes handed to write(2),
//     pwrite(2) and writev(2) (files; socket sends go through sendmsg/send and are not counted —
//     the server's wchar is 0 with durability none), and write_bytes, the kernel's page-cache
//     dirtying charge. wchar is the figure: on kernels whose page cache uses large folios (ext4
//     since 6.16) write_bytes charges a whole folio (up to 2 MiB) each time a clean one is
//     dirtied, so an fdatasync'd 8 KiB rewrite can be charged 2 MiB. The trees are re-read every
//     100 ms so that a process that exits in between (an autovacuum worker) keeps its last
//     reading. As a cross-check, sectors written by the machine's disks (/sys/block/*/stat, every
//     process of the machine, journal included) over the same interval.
//   * backlog: every 100 ms in the window, events acknowledged (202) − events storage has
//     committed (relay_storage_events_written_total): what a crash would lose in batched mode.
//   * --begin-cmd / --end-cmd: shell commands run right before the begin and the end I/O samples
//     (e.g. psql: CHECKPOINT, then pg_stat_wal); every `key=NUMBER` word they print is recorded
//     and its end − begin difference printed as cmd_KEY=DELTA;
//   * the server's storage counters from /metrics over the same interval (commits, events
//     written, commit time).
// Output: human-readable lines, then one `RESULT key=value ...` line for scripts.

#include "loadgen_common.hpp"

namespace {

using namespace loadgen;

struct Options : CommonOptions {
  int runs = 1;
  int conns = 4;
  double warmup = 1.0;
  double pending_timeout = 20;
  std::string begin_cmd, end_cmd;
  std::vector<pid_t> io_trees;
  Options() {
    mode = "produce";
    inflight = 8;
    inactivity_s = 600;
    drain_timeout = 20;
  }
};

void usage() {
  std::fprintf(
      stderr,
      "usage: storage_loadgen --port N --service-token T [options]\n"
      "  --runs R                runs to spread the POSTs over, round-robin (default 1)\n"
      "  --conns C               producer connections (default 4)\n"
      "  --inflight K            POSTs in flight per connection, pipelined (default 8)\n"
      "  --batch B               events per POST (a JSON array; default 16)\n"
      "  --event-bytes N         target size of the server's event JSON (default 200)\n"
      "  --warmup S              seconds of posting before the window (default 1)\n"
      "  --duration S            the measured window, seconds (default 5)\n"
      "  --server-pid PID        the server: CPU, threads and /proc/PID/io\n"
      "  --io-tree PID           also sum /proc/*/io of PID and its descendants (repeatable)\n"
      "  --begin-cmd CMD         sh -c CMD before the begin sample; key=NUMBER words recorded\n"
      "  --end-cmd CMD           sh -c CMD before the end sample; deltas printed as cmd_KEY\n"
      "  --inactivity-s S        inactivity_s of the created runs (default 600)\n"
      "  --drain-timeout S       bound on waiting for the last answers (default 20)\n"
      "  --pending-timeout S     bound on waiting for storage to commit everything (default 20)\n"
      "  --service-token T --relay-bin PATH --relay-arg ARG --owner NAME\n"
      "  --max-seconds S         watchdog for the whole process (default 240)\n"
      "  --label TEXT            label printed in the RESULT line\n"
      "  --quiet                 no progress lines on stderr\n");
}

Options parse_args(int argc, char** argv) {
  Options o;
  parse_options(argc, argv, o, usage, [&o](const std::string& a, auto& v) {
    if (a == "--runs")
      o.runs = std::atoi(v().c_str());
    else if (a == "--conns")
      o.conns = std::atoi(v().c_str());
    else if (a == "--warmup")
      o.warmup = std::atof(v().c_str());
    else if (a == "--pending-timeout")
      o.pending_timeout = std::atof(v().c_str());
    else if (a == "--begin-cmd")
      o.begin_cmd = v();
    else if (a == "--end-cmd")
      o.end_cmd = v();
    else if (a == "--io-tree")
      o.io_trees.push_back(pid_t(std::atoi(v().c_str())));
    else
      return false;
    return true;
  });
  if (o.mode != "produce") die("unknown --mode %s (only produce)", o.mode.c_str());
  if (o.runs < 1 || o.conns < 1 || o.inflight < 1 || o.batch < 1 || o.duration <= 0 || o.warmup < 0)
    die("runs, conns, inflight, batch and duration must be positive");
  if (o.service_token.empty() && o.relay_bin.empty())
    die("give --service-token (or --relay-bin to mint one)");
  return o;
}

// ---------------------------------------------------------------------------------------------
// /proc/PID/io of process trees

struct IoCounters {
  uint64_t write_bytes = 0, wchar = 0, cancelled = 0;
};

bool read_io(pid_t pid, IoCounters& c) {
  std::ifstream f("/proc/" + std::to_string(int(pid)) + "/io");
  if (!f) return false;
  std::string k;
  uint64_t v;
  bool any = false;
  while (f >> k >> v) {
    if (k == "write_bytes:") c.write_bytes = v, any = true;
    if (k == "wchar:") c.wchar = v;
    if (k == "cancelled_write_bytes:") c.cancelled = v;
  }
  return any;
}

/// pid → ppid of every process.
std::map<pid_t, pid_t> parents() {
  std::map<pid_t, pid_t> m;
  if (DIR* d = opendir("/proc")) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
      std::ifstream f(std::string("/proc/") + e->d_name + "/stat");
      std::string line;
      if (!std::getline(f, line)) continue;
      size_t rp = line.rfind(')');
      if (rp == std::string::npos || rp + 4 >= line.size()) continue;
      // ") S PPID ..."
      pid_t ppid = pid_t(std::atoi(line.c_str() + rp + 4));
      m[pid_t(std::atoi(e->d_name))] = ppid;
    }
    closedir(d);
  }
  return m;
}

/// Bytes written by the machine's block devices (whole disks: not partitions, loop, ram, dm).
uint64_t disk_write_bytes() {
  uint64_t total = 0;
  if (DIR* d = opendir("/sys/block")) {
    while (dirent* e = readdir(d)) {
      std::string n = e->d_name;
      if (n[0] == '.' || n.rfind("loop", 0) == 0 || n.rfind("ram", 0) == 0 ||
          n.rfind("zram", 0) == 0 || n.rfind("dm-", 0) == 0 || n.rfind("md", 0) == 0)
        continue;
      std::ifstream f("/sys/block/" + n + "/stat");
      uint64_t v[7] = {};
      for (auto& x : v) f >> x;
      if (f) total += v[6] * 512;  // sectors written (always 512-byte units)
    }
    closedir(d);
  }
  return total;
}

struct IoTree {
  pid_t root = 0;
  std::map<pid_t, IoCounters> first, last;
  bool started = false;

  std::vector<pid_t> members() const {
    std::vector<pid_t> out{root};
    auto pp = parents();
    for (size_t i = 0; i < out.size(); ++i)
      for (auto& [pid, ppid] : pp)
        if (ppid == out[i] && pid != root) out.push_back(pid);
    return out;
  }
  void begin() {
    first.clear();
    last.clear();
    for (pid_t p : members()) {
      IoCounters c;
      if (read_io(p, c)) first[p] = last[p] = c;
    }
    started = true;
  }
  void refresh() {
    if (!started) return;
    for (pid_t p : members()) {
      IoCounters c;
      if (!read_io(p, c)) continue;
      if (!first.count(p)) first[p] = IoCounters{};  // born after the begin sample
      last[p] = c;
    }
  }
  IoCounters delta() const {
    IoCounters d;
    for (auto& [p, c] : last) {
      const auto& f = first.at(p);
      d.write_bytes += c.write_bytes - std::min(c.write_bytes, f.write_bytes);
      d.wchar += c.wchar - std::min(c.wchar, f.wchar);
      d.cancelled += c.cancelled - std::min(c.cancelled, f.cancelled);
    }
    return d;
  }
  size_t processes() const { return last.size(); }
};

// ---------------------------------------------------------------------------------------------
// begin/end commands: `sh -c CMD`, bounded; every key=NUMBER word of their output

std::map<std::string, double> run_cmd(const std::string& cmd, double timeout_s, std::string& out) {
  std::map<std::string, double> kv;
  out.clear();
  if (cmd.empty()) return kv;
  int pfd[2];
  if (pipe(pfd) != 0) die("pipe: %s", std::strerror(errno));
  pid_t pid = fork();
  if (pid < 0) die("fork: %s", std::strerror(errno));
  if (pid == 0) {
    dup2(pfd[1], 1);
    close(pfd[0]);
    close(pfd[1]);
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  close(pfd[1]);
  uint64_t deadline = mono_ns() + uint64_t(timeout_s * 1e9);
  char buf[4096];
  bool timed_out = false;
  for (;;) {
    int64_t left_ms = (int64_t(deadline) - int64_t(mono_ns())) / 1000000;
    if (left_ms <= 0) {
      kill(pid, SIGKILL);
      timed_out = true;
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
  if (timed_out || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
    logf("command failed (%s): %s", timed_out ? "timeout" : "exit status", cmd.c_str());
  std::istringstream is(out);
  std::string w;
  while (is >> w) {
    size_t eq = w.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 >= w.size()) continue;
    char* end = nullptr;
    double v = std::strtod(w.c_str() + eq + 1, &end);
    if (end && *end == '\0') kv[w.substr(0, eq)] = v;
  }
  return kv;
}

double metric(const std::map<std::string, double>& m, const char* k) {
  auto it = m.find(k);
  return it == m.end() ? 0.0 : it->second;
}

// ---------------------------------------------------------------------------------------------
// run creation (pipelined on one connection)

std::vector<std::string> create_runs(const Options& o, int n) {
  HttpClient http(o.port);
  std::string err;
  if (!http.ensure_connected(mono_ns() + 5000000000ull, err)) die("connect: %s", err.c_str());
  std::string body = "{\"kind\":\"external\",\"owner\":\"" + o.owner +
                     "\",\"inactivity_s\":" + std::to_string(o.inactivity_s) + "}";
  std::vector<std::string> ids;
  int queued = 0, outstanding = 0;
  uint64_t deadline = mono_ns() + 60000000000ull;
  HttpResponse resp;
  while (int(ids.size()) < n) {
    while (queued < n && outstanding < 64) {
      http.queue(http.build("POST", "/v1/runs", o.service_token, body));
      ++queued;
      ++outstanding;
    }
    if (http.want_write() && !http.flush(err)) die("POST /v1/runs: %s", err.c_str());
    if (mono_ns() > deadline) die("creating %d runs: deadline hit after %zu", n, ids.size());
    pollfd p{http.fd(), short(POLLIN | (http.want_write() ? POLLOUT : 0)), 0};
    int r = poll(&p, 1, 100);
    if (r <= 0) continue;
    if (!http.fill(err)) die("POST /v1/runs: %s", err.c_str());
    int rr;
    while ((rr = http.next_response(resp, err)) > 0) {
      --outstanding;
      if (resp.status != 201 && resp.status != 200)
        die("POST /v1/runs answered %d: %s", resp.status, resp.body.c_str());
      std::string id = json_str(resp.body, "id");
      if (id.empty()) die("POST /v1/runs: no id in %s", resp.body.c_str());
      ids.push_back(id);
    }
    if (rr < 0) die("POST /v1/runs: %s", err.c_str());
  }
  return ids;
}

// ---------------------------------------------------------------------------------------------
// the producers

struct Conn {
  explicit Conn(int port) : http(port) {}
  HttpClient http;
  std::deque<std::pair<uint64_t, int>> outstanding;  // send stamp, events
  bool dead = false;
};

enum class Phase { warmup, window, drain };

}  // namespace

int main(int argc, char** argv) {
  g_t0 = mono_ns();
  g_prog = "storage_loadgen";
  Options o = parse_args(argc, argv);
  signal(SIGPIPE, SIG_IGN);
  signal(SIGALRM, on_alarm);
  alarm(unsigned(std::ceil(o.max_seconds)));
  ensure_nofile(o.conns + 64);
  if (o.service_token.empty())
    o.service_token = mint_token(o.relay_bin, o.relay_args, o.service_sub, "service");
  std::string label = o.label.empty() ? "produce" : o.label;

  // ---- runs
  uint64_t tc0 = mono_ns();
  std::vector<std::string> runs = create_runs(o, o.runs);
  double create_s = secs_since(tc0);
  logf("%d runs created in %.3f s", o.runs, create_s);
  std::vector<std::string> paths;
  for (auto& id : runs) paths.push_back("/v1/runs/" + id + "/events");

  // ---- the POST body: B events of {"type":"delta","data":{"t":NS,"p":"xxx"}}; the server stores
  // {"seq":S,"type":"delta","data":{...},"ts":13 digits} ≈ event_bytes
  const int fixed = 50 + 7 + 13 + digits(mono_ns() + 3600ull * 1000000000ull);
  const int padlen = std::max(0, o.event_bytes - fixed);
  const std::string pad(size_t(padlen), 'x');
  std::string body;
  auto make_body = [&] {
    body.clear();
    char tbuf[24];
    std::snprintf(tbuf, sizeof tbuf, "%" PRIu64, mono_ns());
    body += '[';
    for (int j = 0; j < o.batch; ++j) {
      if (j) body += ',';
      body += "{\"type\":\"delta\",\"data\":{\"t\":";
      body += tbuf;
      body += ",\"p\":\"";
      body += pad;
      body += "\"}}";
    }
    body += ']';
  };
  make_body();
  const size_t post_body_bytes = body.size();

  std::vector<Conn> conns;
  conns.reserve(size_t(o.conns));
  for (int i = 0; i < o.conns; ++i) conns.emplace_back(o.port);
  std::string err;
  for (auto& c : conns)
    if (!c.http.ensure_connected(mono_ns() + 5000000000ull, err)) die("connect: %s", err.c_str());

  std::vector<IoTree> trees;
  {
    IoTree srv;
    srv.root = o.server_pid;
    if (o.server_pid > 0) trees.push_back(srv);
    for (pid_t p : o.io_trees) {
      IoTree t;
      t.root = p;
      trees.push_back(t);
    }
  }
  // trees[0] is the server when --server-pid was given
  const bool have_srv_tree = o.server_pid > 0;

  // ---- the loop
  Phase phase = Phase::warmup;
  const uint64_t t_start = mono_ns();
  uint64_t t_w0 = t_start + uint64_t(o.warmup * 1e9), t_w1 = 0, t_drained = 0;
  uint64_t next_rr = 0, posts_sent = 0;
  uint64_t acked_window = 0, acked_measured = 0, acked_total = 0, posts_window = 0;
  std::map<int, uint64_t> other_status;  // status → POSTs (window and drain)
  std::map<int, uint64_t> other_status_warmup;
  std::string first_error_body;
  Histogram ack_hist;
  int transport_errors = 0;
  std::string first_transport_error;
  WindowSample ws0, ws1;
  std::map<std::string, double> cmd0, cmd1;
  std::string cmd_out0, cmd_out1;
  std::map<std::string, double> m0, m1;  // metrics at begin / end (after pending = 0)
  uint64_t next_io_refresh = 0;
  // Every 100 ms in the window: relay_storage_pending_events (the server's own figure) and the
  // backlog acknowledged − committed.
  double pending_max = 0, backlog_max = 0, backlog_sum = 0;
  int backlog_samples = 0;
  uint64_t disk0 = 0;
  bool drain_deadline_hit = false;
  HttpResponse resp;
  std::vector<pollfd> pfds(conns.size());

  for (;;) {
    uint64_t now = mono_ns();
    if (phase == Phase::warmup && now >= t_w0) {
      // Begin sample: the command (e.g. CHECKPOINT), the I/O trees, the metrics, then the CPU.
      cmd0 = run_cmd(o.begin_cmd, 30, cmd_out0);
      for (auto& t : trees) t.begin();
      disk0 = disk_write_bytes();
      ws0 = sample_window_begin(o.port, o.server_pid);
      m0 = ws0.metrics;
      phase = Phase::window;
      t_w0 = mono_ns();
      now = t_w0;
      next_io_refresh = now + 100000000ull;
      logf("window starts (warm-up %.2f s, %" PRIu64 " events acknowledged in it)",
           double(t_w0 - t_start) / 1e9, acked_total);
    }
    if (phase == Phase::window && now >= t_w0 + uint64_t(o.duration * 1e9)) {
      t_w1 = now;
      ws1 = sample_window_end(o.port, o.server_pid);  // CPU of the window
      phase = Phase::drain;
      logf("window ends: %" PRIu64 " events acknowledged in %.3f s", acked_window,
           double(t_w1 - t_w0) / 1e9);
    }
    if (phase != Phase::warmup && now >= next_io_refresh) {
      for (auto& t : trees) t.refresh();
      if (phase == Phase::window) {
        auto m = scrape_metrics(o.port);
        if (!m.empty()) {
          pending_max = std::max(pending_max, metric(m, "relay_storage_pending_events"));
          double b =
              std::max(0.0, double(acked_total) - metric(m, "relay_storage_events_written_total"));
          if (metric(m, "relay_storage_commits_total") > 0 || b > 0) {
            backlog_max = std::max(backlog_max, b);
            backlog_sum += b;
            ++backlog_samples;
          }
        }
      }
      next_io_refresh = mono_ns() + 100000000ull;
    }
    bool any_out = false;
    for (auto& c : conns) any_out |= !c.dead && !c.outstanding.empty();
    if (phase == Phase::drain) {
      if (!any_out) break;
      if (now > t_w1 + uint64_t(o.drain_timeout * 1e9)) {
        drain_deadline_hit = true;
        break;
      }
    }
    // Queue what the in-flight windows allow.
    if (phase != Phase::drain) {
      for (auto& c : conns) {
        if (c.dead) continue;
        while (c.outstanding.size() < size_t(o.inflight)) {
          make_body();
          c.http.queue(c.http.build("POST", paths[next_rr % paths.size()], o.service_token, body));
          ++next_rr;
          ++posts_sent;
          c.outstanding.emplace_back(mono_ns(), o.batch);
        }
      }
    }
    int alive = 0;
    for (size_t i = 0; i < conns.size(); ++i) {
      auto& c = conns[i];
      pfds[i] = pollfd{-1, 0, 0};
      if (c.dead) continue;
      ++alive;
      if (c.http.want_write() && !c.http.flush(err)) {
        c.dead = true;
        ++transport_errors;
        if (first_transport_error.empty()) first_transport_error = err;
        continue;
      }
      pfds[i] = pollfd{c.http.fd(), short(POLLIN | (c.http.want_write() ? POLLOUT : 0)), 0};
    }
    if (alive == 0) {
      logf("every producer connection failed: %s", first_transport_error.c_str());
      break;
    }
    int pr = poll(pfds.data(), nfds_t(pfds.size()), 10);
    if (pr < 0 && errno != EINTR) die("poll: %s", std::strerror(errno));
    if (pr <= 0) continue;
    for (size_t i = 0; i < conns.size(); ++i) {
      auto& c = conns[i];
      if (c.dead || !(pfds[i].revents & (POLLIN | POLLERR | POLLHUP))) continue;
      std::string read_err;
      bool ok = c.http.fill(read_err);
      uint64_t t_ans = mono_ns();
      int rr;
      while ((rr = c.http.next_response(resp, err)) > 0) {
        if (c.outstanding.empty()) {
          rr = -1;
          err = "an answer nobody asked for";
          break;
        }
        auto [t_sent, n] = c.outstanding.front();
        c.outstanding.pop_front();
        if (resp.status == 202) {
          acked_total += uint64_t(n);
          if (phase != Phase::warmup) acked_measured += uint64_t(n);
          if (phase == Phase::window) {
            acked_window += uint64_t(n);
            ++posts_window;
          }
        } else {
          (phase == Phase::warmup ? other_status_warmup : other_status)[resp.status]++;
          if (first_error_body.empty())
            first_error_body = std::to_string(resp.status) + " " + resp.body.substr(0, 200);
        }
        if (phase == Phase::window && t_sent >= t_w0) ack_hist.record(t_ans - t_sent);
      }
      if (rr < 0 || !ok) {
        c.dead = true;
        ++transport_errors;
        if (first_transport_error.empty()) first_transport_error = rr < 0 ? err : read_err;
        logf("producer connection failed: %s (%zu POSTs unanswered)",
             (rr < 0 ? err : read_err).c_str(), c.outstanding.size());
      }
    }
  }
  t_drained = mono_ns();
  if (t_w1 == 0)
    die("the window never ended (every connection failed during warm-up: %s)",
        first_transport_error.c_str());

  // ---- everything acknowledged is committed: storage has written at least as many events as were
  // acknowledged (every acknowledged event reached storage before its 202) and its own pending
  // count is 0. (relay_storage_pending_events alone is not enough: the storage actor updates it
  // between commits only, so it can read 0 — or stay put — while events wait in its mailbox.)
  // With durability none (no commits, nothing written) only the pending count is checked.
  uint64_t t_p0 = mono_ns();
  bool committed = wait_until(
      [&] {
        for (auto& t : trees) t.refresh();
        auto m = scrape_metrics(o.port);
        if (m.empty() || metric(m, "relay_storage_pending_events") != 0) return false;
        double w = metric(m, "relay_storage_events_written_total");
        return (metric(m, "relay_storage_commits_total") == 0 && w == 0) ||
               w >= double(acked_total);
      },
      o.pending_timeout, 20);
  double pending_wait_s = secs_since(t_p0);
  // End sample: the command (e.g. CHECKPOINT: pages the window dirtied are written now), then the
  // I/O trees, then the metrics.
  cmd1 = run_cmd(o.end_cmd, 60, cmd_out1);
  for (auto& t : trees) t.refresh();
  const uint64_t disk1 = disk_write_bytes();
  m1 = scrape_metrics(o.port);
  for (auto& c : conns) c.http.close();

  // ---- figures
  const double window_s = double(t_w1 - t_w0) / 1e9;
  const double eps = window_s > 0 ? double(acked_window) / window_s : 0;
  WindowFigures wf = window_figures(ws0, ws1);
  const double srv_us_per_event = acked_window ? wf.srv_cpu_us / double(acked_window) : 0;
  const double commits =
      metric(m1, "relay_storage_commits_total") - metric(m0, "relay_storage_commits_total");
  const double written = metric(m1, "relay_storage_events_written_total") -
                         metric(m0, "relay_storage_events_written_total");
  const double commit_s = metric(m1, "relay_storage_commit_seconds_sum") -
                          metric(m0, "relay_storage_commit_seconds_sum");
  const double errors =
      metric(m1, "relay_storage_errors_total") - metric(m0, "relay_storage_errors_total");
  // Bytes per event: over begin sample → end sample, divided by the events storage wrote in it
  // (the same interval), or by the events acknowledged in it when storage wrote none.
  const double per_events = written > 0 ? written : double(acked_measured);
  // Events committed within the window (the metrics of the CPU samples at its ends).
  const double written_window = metric(ws1.metrics, "relay_storage_events_written_total") -
                                metric(ws0.metrics, "relay_storage_events_written_total");
  const double commits_window = metric(ws1.metrics, "relay_storage_commits_total") -
                                metric(ws0.metrics, "relay_storage_commits_total");
  // No storage at all (durability none: nothing ever committed or written): no backlog either.
  if (metric(m1, "relay_storage_commits_total") == 0 && written == 0 && commits == 0)
    backlog_max = backlog_sum = 0;
  const double backlog_mean = backlog_samples ? backlog_sum / backlog_samples : 0;
  const double disk_bytes = double(disk1 - std::min(disk1, disk0));
  IoCounters srv_io, db_io;
  size_t db_procs = 0;
  for (size_t i = 0; i < trees.size(); ++i) {
    IoCounters d = trees[i].delta();
    if (have_srv_tree && i == 0) {
      srv_io = d;
    } else {
      db_io.write_bytes += d.write_bytes;
      db_io.wchar += d.wchar;
      db_io.cancelled += d.cancelled;
      db_procs += trees[i].processes();
    }
  }
  const double wb_total = double(srv_io.write_bytes + db_io.write_bytes);
  const double wb_per_event = per_events > 0 ? wb_total / per_events : 0;
  const double wc_total = double(srv_io.wchar + db_io.wchar);
  const double wc_per_event = per_events > 0 ? wc_total / per_events : 0;
  std::string status_list;
  for (auto& [st, n] : other_status)
    status_list += (status_list.empty() ? "" : ",") + std::to_string(st) + ":" + std::to_string(n);
  std::string status_list_w;
  for (auto& [st, n] : other_status_warmup)
    status_list_w +=
        (status_list_w.empty() ? "" : ",") + std::to_string(st) + ":" + std::to_string(n);
  std::string cmd_deltas;
  for (auto& [k, v1] : cmd1) {
    auto it = cmd0.find(k);
    char b[128];
    std::snprintf(b, sizeof b, " cmd_%s=%.0f", k.c_str(), it == cmd0.end() ? v1 : v1 - it->second);
    cmd_deltas += b;
  }

  std::printf("runs=%d conns=%d inflight=%d/conn batch=%d event_json≈%dB (pad %d) post_body=%zuB\n",
              o.runs, o.conns, o.inflight, o.batch, o.event_bytes, padlen, post_body_bytes);
  std::printf("runs created in %.3f s\n", create_s);
  std::printf("window %.3f s: %" PRIu64 " events in %" PRIu64
              " POSTs answered 202 → %.0f events/s\n",
              window_s, acked_window, posts_window, eps);
  if (!other_status.empty() || !other_status_warmup.empty())
    std::printf("  other answers (status:POSTs): window+drain %s; warm-up %s; first: %s\n",
                status_list.empty() ? "-" : status_list.c_str(),
                status_list_w.empty() ? "-" : status_list_w.c_str(), first_error_body.c_str());
  if (transport_errors)
    std::printf("  transport errors: %d (first: %s)\n", transport_errors,
                first_transport_error.c_str());
  std::printf("POST → answer µs (window): p50 %s  p99 %s  max %s  (n=%" PRIu64 ")\n",
              fmt_us(double(ack_hist.quantile(0.5))).c_str(),
              fmt_us(double(ack_hist.quantile(0.99))).c_str(), fmt_us(double(ack_hist.max)).c_str(),
              ack_hist.n);
  std::printf("drain %.3f s%s; storage pending → 0 in %.3f s%s\n", double(t_drained - t_w1) / 1e9,
              drain_deadline_hit ? " (DEADLINE HIT)" : "", pending_wait_s,
              committed ? "" : " (DEADLINE HIT)");
  if (wf.server_ok) {
    std::printf(
        "server CPU in window: user %.0f + sys %.0f µs (%.0f%% of one CPU) → %.3f µs/event\n",
        wf.srv_user_us, wf.srv_sys_us, WindowFigures::pct(wf.srv_cpu_us, window_s),
        srv_us_per_event);
    std::printf("server threads in window (run time, schedstat): %s\n", wf.threads_report.c_str());
  }
  std::printf("loadgen CPU in window: %.0f µs (%.0f%% of one CPU)\n", wf.lg_cpu_us,
              WindowFigures::pct(wf.lg_cpu_us, window_s));
  std::printf("machine in window (all processes): %s\n", wf.cpus_report.c_str());
  std::printf(
      "storage in window: %.0f events committed in %.0f commits (%.0f events/s); "
      "acknowledged − committed (every 100 ms): mean %.0f, max %.0f; "
      "relay_storage_pending_events max %.0f\n",
      written_window, commits_window, window_s > 0 ? written_window / window_s : 0.0, backlog_mean,
      backlog_max, pending_max);
  std::printf(
      "storage /metrics (begin → end sample): %.0f commits, %.0f events written (%.1f per "
      "commit), %.1f ms committing (%.3f ms per commit), %.0f errors\n",
      commits, written, commits > 0 ? written / commits : 0.0, commit_s * 1e3,
      commits > 0 ? commit_s * 1e3 / commits : 0.0, errors);
  std::printf(
      "I/O (begin → end sample, %.0f events): server wchar %" PRIu64 " write_bytes %" PRIu64
      "; db processes (%zu) wchar %" PRIu64 " write_bytes %" PRIu64
      " → %.1f bytes written per event (wchar; %.2f × the event JSON), write_bytes %.1f per "
      "event; machine's disks wrote %.0f bytes (%.1f per event, every process)\n",
      per_events, srv_io.wchar, srv_io.write_bytes, db_procs, db_io.wchar, db_io.write_bytes,
      wc_per_event, o.event_bytes ? wc_per_event / o.event_bytes : 0.0, wb_per_event, disk_bytes,
      per_events > 0 ? disk_bytes / per_events : 0.0);
  if (!cmd_out0.empty() || !cmd_out1.empty())
    std::printf("commands: begin [%s] end [%s]\n", std::string(cmd_out0.substr(0, 300)).c_str(),
                std::string(cmd_out1.substr(0, 300)).c_str());
  std::printf(
      "RESULT label=%s mode=produce runs=%d conns=%d inflight=%d batch=%d event_bytes=%d "
      "window_s=%.3f events=%" PRIu64 " posts=%" PRIu64
      " eps=%.0f ack_p50_us=%.1f ack_p99_us=%.1f "
      "ack_max_us=%.1f other_status=%s warmup_other_status=%s transport_errors=%d "
      "srv_cpu_us=%.0f srv_cpu_pct=%.0f srv_us_per_event=%.3f lg_cpu_pct=%.0f cpus_busy_pct=%s "
      "measured_events=%" PRIu64
      " written_events=%.0f commits=%.0f commit_ms=%.1f "
      "storage_errors=%.0f srv_write_bytes=%" PRIu64 " srv_wchar=%" PRIu64
      " db_write_bytes=%" PRIu64 " db_wchar=%" PRIu64
      " db_procs=%zu wchar_per_event=%.1f "
      "write_bytes_per_event=%.1f disk_bytes=%.0f disk_bytes_per_event=%.1f "
      "drained=%d committed=%d pending_wait_s=%.3f create_s=%.3f written_window=%.0f "
      "committed_eps=%.0f commits_window=%.0f backlog_mean=%.0f backlog_max=%.0f "
      "pending_max=%.0f%s\n",
      label.c_str(), o.runs, o.conns, o.inflight, o.batch, o.event_bytes, window_s, acked_window,
      posts_window, eps, double(ack_hist.quantile(0.5)) / 1000.0,
      double(ack_hist.quantile(0.99)) / 1000.0, double(ack_hist.max) / 1000.0,
      status_list.empty() ? "-" : status_list.c_str(),
      status_list_w.empty() ? "-" : status_list_w.c_str(), transport_errors, wf.srv_cpu_us,
      WindowFigures::pct(wf.srv_cpu_us, window_s), srv_us_per_event,
      WindowFigures::pct(wf.lg_cpu_us, window_s), wf.cpus_busy_list.c_str(), acked_measured,
      written, commits, commit_s * 1e3, errors, srv_io.write_bytes, srv_io.wchar, db_io.write_bytes,
      db_io.wchar, db_procs, wc_per_event, wb_per_event, disk_bytes,
      per_events > 0 ? disk_bytes / per_events : 0.0, drain_deadline_hit ? 0 : 1, committed ? 1 : 0,
      pending_wait_s, create_s, written_window, window_s > 0 ? written_window / window_s : 0.0,
      commits_window, backlog_mean, backlog_max, pending_max, cmd_deltas.c_str());
  std::fflush(stdout);
  int rc = 0;
  // Refused POSTs (503) are a finding, not a failure of the load generator: they are reported.
  if (transport_errors || drain_deadline_hit || !committed) rc = 1;
  return rc;
}
