// latency_main: load an ExecuTorch LLM .pte, run prefill + greedy decode with the static KV cache, and
// print one JSON object per measured repetition on stdout. Logs go to stderr; any failure exits non-zero.
//
// Calling convention of the .pte (what exporter writes and ExecuTorch's LLM runners expect):
//   forward(tokens: int64 [1, S], input_pos: int64 [1]) -> logits float32 [1, vocab] (or [1, S, vocab])
//   constant methods get_max_seq_len (tokens per call: the prompt is prefilled in calls of that many),
//   get_max_context_len (KV cache positions, bounds prompt + generation), get_vocab_size (draws token ids).
//
// No tokenizer: prompt ids are pseudo-random (fixed seed) below the vocabulary size, or given with --tokens.
// Decode is greedy (argmax of the previous logits), so a run is deterministic and can be replayed in Python
// from the --dump-logits file.

#include <sched.h>
#include <sys/auxv.h>
#include <sys/types.h>
#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>
#include <executorch/runtime/core/error.h>
#include <executorch/runtime/platform/runtime.h>

// The wheel ships libexecutorch_threadpool.so but not threadpool.h. These declarations match
// extension/threadpool/threadpool.h of ExecuTorch 1.x (checked against `nm -DC libexecutorch_threadpool.so`:
// get_threadpool(), ThreadPool::get_thread_count() const, ThreadPool::_unsafe_reset_threadpool(unsigned int)).
// Only member functions are called through a pointer, so the data members need not be declared.
namespace executorch::extension::threadpool {
class ThreadPool final {
 public:
  size_t get_thread_count() const;
  bool _unsafe_reset_threadpool(uint32_t num_threads);
};
ThreadPool* get_threadpool();
} // namespace executorch::extension::threadpool

namespace {

// The CPU features the kernel reports to this process (AT_HWCAP/AT_HWCAP2), named as in /proc/cpuinfo. These
// are what XNNPACK/KleidiAI's cpuinfo-based dispatch sees, so the row says which Arm micro-kernel families
// (dotprod, i8mm, SVE, SME) could have been chosen. Empty off aarch64.
std::vector<std::string> cpu_features() {
  std::vector<std::string> out;
#if defined(__aarch64__) && defined(__linux__)
  const unsigned long hw = getauxval(AT_HWCAP), hw2 = getauxval(AT_HWCAP2);
  // Bit positions from the Linux arm64 uapi <asm/hwcap.h>; spelled out so the harness builds against
  // older sysroots and the NDK alike.
  const struct { unsigned long bits; int word; const char* name; } kFeatures[] = {
      {1UL << 1, 1, "asimd"},   {1UL << 10, 1, "asimdhp"}, {1UL << 20, 1, "asimddp"}, {1UL << 22, 1, "sve"},
      {1UL << 1, 2, "sve2"},    {1UL << 13, 2, "i8mm"},   {1UL << 14, 2, "bf16"},    {1UL << 23, 2, "sme"},
      {1UL << 37, 2, "sme2"},
  };
  for (const auto& f : kFeatures) {
    if ((f.word == 1 ? hw : hw2) & f.bits) out.push_back(f.name);
  }
#endif
  return out;
}

namespace et = ::executorch;
using et::extension::Module;
using et::runtime::Error;
using et::runtime::EValue;
using Clock = std::chrono::steady_clock;

constexpr const char* kUsage =
    "usage: latency_main --pte FILE [options]\n"
    "  --pte FILE           ExecuTorch program (forward(tokens[1,S], input_pos[1]) -> logits)\n"
    "  --prompt-len N       prompt tokens in the prefill (default 32)\n"
    "  --prefill-chunk N    prefill the prompt in calls of at most N tokens (default: the program's\n"
    "                       get_max_seq_len, as ExecuTorch's TextPrefiller splits a prompt)\n"
    "  --gen-len M          decode steps after the prefill (default 32)\n"
    "  --reps N             measured repetitions, one JSON line each (default 3)\n"
    "  --warmup N           unmeasured repetitions first (default 1)\n"
    "  --threads N          ExecuTorch threadpool size (default: size of --cpu-set, else runtime default)\n"
    "  --cpu-set a,b,c      pin the process to these CPU ids before any thread is created\n"
    "  --tokens a,b,c       prompt token ids (default: pseudo-random ids < vocab, see --seed)\n"
    "  --seed S             seed of the pseudo-random prompt (default 1234)\n"
    "  --dump-logits FILE   write prompt, decode tokens and float32 logits of the first measured run as JSON\n"
    "  -h, --help           this text\n";

struct Options {
  std::string pte;
  long prompt_len = -1; // -1: default 32, or the length of --tokens
  long gen_len = 32;
  long reps = 3;
  long warmup = 1;
  long threads = 0;
  std::vector<int> cpu_set;
  std::vector<int64_t> tokens;
  uint64_t seed = 1234;
  long prefill_chunk = 0; // 0: the program's get_max_seq_len (one call for an exporter .pte)
  std::string dump_logits;
};

[[noreturn]] void die(const std::string& msg, int code = 1) {
  std::fprintf(stderr, "error: %s\n", msg.c_str());
  std::exit(code);
}

std::string error_text(Error err) {
  char buf[96];
  std::snprintf(
      buf, sizeof(buf), "ExecuTorch error 0x%x (%s)", static_cast<unsigned>(err),
      et::runtime::to_string(err));
  return buf;
}

long parse_long(const std::string& flag, const std::string& text, long min_value) {
  char* end = nullptr;
  errno = 0;
  long v = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno != 0) {
    die(flag + ": '" + text + "' is not an integer", 2);
  }
  if (v < min_value) {
    die(flag + ": " + text + " is below the minimum " + std::to_string(min_value), 2);
  }
  return v;
}

template <typename T>
std::vector<T> parse_list(const std::string& flag, const std::string& text) {
  std::vector<T> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) {
      continue;
    }
    out.push_back(static_cast<T>(parse_long(flag, item, 0)));
  }
  if (out.empty()) {
    die(flag + ": empty list", 2);
  }
  return out;
}

Options parse_args(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    std::string value;
    auto eq = a.find('=');
    if (a.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = a.substr(eq + 1);
      a = a.substr(0, eq);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      die(std::string("missing value for ") + a + "\n" + kUsage, 2);
    }
    if (a == "--pte") {
      o.pte = value;
    } else if (a == "--prompt-len") {
      o.prompt_len = parse_long(a, value, 1);
    } else if (a == "--gen-len") {
      o.gen_len = parse_long(a, value, 0);
    } else if (a == "--reps") {
      o.reps = parse_long(a, value, 1);
    } else if (a == "--warmup") {
      o.warmup = parse_long(a, value, 0);
    } else if (a == "--threads") {
      o.threads = parse_long(a, value, 1);
    } else if (a == "--cpu-set") {
      o.cpu_set = parse_list<int>(a, value);
    } else if (a == "--tokens") {
      o.tokens = parse_list<int64_t>(a, value);
    } else if (a == "--seed") {
      o.seed = static_cast<uint64_t>(parse_long(a, value, 0));
    } else if (a == "--prefill-chunk") {
      o.prefill_chunk = parse_long(a, value, 1);
    } else if (a == "--dump-logits") {
      o.dump_logits = value;
    } else {
      die("unknown option '" + a + "'\n" + kUsage, 2);
    }
  }
  if (o.pte.empty()) {
    die(std::string("--pte is required\n") + kUsage, 2);
  }
  if (!o.tokens.empty()) {
    if (o.prompt_len >= 0 && o.prompt_len != static_cast<long>(o.tokens.size())) {
      die("--prompt-len " + std::to_string(o.prompt_len) + " disagrees with the " +
              std::to_string(o.tokens.size()) + " ids given by --tokens",
          2);
    }
    o.prompt_len = static_cast<long>(o.tokens.size());
  } else if (o.prompt_len < 0) {
    o.prompt_len = 32;
  }
  return o;
}

// Pins every thread of the process (normally just this one) to the CPU set. Threads created later
// (threadpool workers, XNNPACK) inherit the mask from their creator.
void pin_process(const std::vector<int>& cpus) {
  cpu_set_t mask;
  CPU_ZERO(&mask);
  for (int c : cpus) {
    if (c < 0 || c >= CPU_SETSIZE) {
      die("--cpu-set: CPU id " + std::to_string(c) + " out of range", 2);
    }
    CPU_SET(c, &mask);
  }
  std::vector<pid_t> tids;
  if (DIR* d = opendir("/proc/self/task")) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] != '.') {
        tids.push_back(static_cast<pid_t>(std::atoi(e->d_name)));
      }
    }
    closedir(d);
  }
  if (tids.empty()) {
    tids.push_back(0);
  }
  for (pid_t tid : tids) {
    if (sched_setaffinity(tid, sizeof(mask), &mask) != 0) {
      die(std::string("sched_setaffinity failed: ") + std::strerror(errno) +
          " (are the CPUs in --cpu-set online and allowed?)");
    }
  }
}

long peak_rss_kb() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmHWM:", 0) == 0) {
      return std::strtol(line.c_str() + 6, nullptr, 10);
    }
  }
  return 0;
}

double ms_since(Clock::time_point t0, Clock::time_point t1) {
  return std::chrono::duration<double, std::milli>(t1 - t0).count();
}

// Linear interpolation between closest ranks (numpy's default), p in [0, 100].
double percentile(std::vector<double> v, double p) {
  if (v.empty()) {
    return 0.0;
  }
  std::sort(v.begin(), v.end());
  double rank = p / 100.0 * static_cast<double>(v.size() - 1);
  size_t lo = static_cast<size_t>(std::floor(rank));
  size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (rank - static_cast<double>(lo));
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

std::string json_number(double v) {
  if (!std::isfinite(v)) {
    return "0";
  }
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%.4f", v);
  return buf;
}

template <typename T>
std::string json_int_list(const std::vector<T>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) {
    out += (i ? "," : "") + std::to_string(v[i]);
  }
  return out + "]";
}

// Reads an int64 constant method such as get_max_seq_len; -1 when the program does not have it.
int64_t read_int_method(Module& module, const std::string& name) {
  auto names = module.method_names();
  if (!names.ok() || names->count(name) == 0) {
    return -1;
  }
  auto result = module.execute(name);
  if (!result.ok()) {
    die("running metadata method '" + name + "' failed: " + error_text(result.error()));
  }
  if (result->empty() || !result->at(0).isInt()) {
    die("metadata method '" + name + "' did not return an int");
  }
  return result->at(0).toInt();
}

struct Model {
  Module* module;
};

// One forward call; returns the logits of the last position, copied out of the planned memory.
std::vector<float> forward(const Model& m, const std::vector<int64_t>& tokens, int64_t pos) {
  auto tok = et::extension::make_tensor_ptr(
      {1, static_cast<et::aten::SizesType>(tokens.size())}, std::vector<int64_t>(tokens));
  auto ipos = et::extension::make_tensor_ptr({1}, std::vector<int64_t>{pos});
  auto result = m.module->execute("forward", {EValue(*tok), EValue(*ipos)});
  if (!result.ok()) {
    die("forward(S=" + std::to_string(tokens.size()) + ", pos=" + std::to_string(pos) +
        ") failed: " + error_text(result.error()));
  }
  if (result->empty() || !result->at(0).isTensor()) {
    die("forward did not return a tensor");
  }
  const auto& t = result->at(0).toTensor();
  if (t.scalar_type() != et::aten::ScalarType::Float) {
    die("forward returned logits of dtype " + std::to_string(static_cast<int>(t.scalar_type())) +
        ", expected float32");
  }
  const int64_t n = t.numel();
  const int64_t vocab = t.size(t.dim() - 1);
  if (vocab <= 0 || n % vocab != 0) {
    die("forward returned logits of unexpected shape");
  }
  const float* data = t.const_data_ptr<float>() + (n - vocab); // last row of [1, vocab] or [1, S, vocab]
  return std::vector<float>(data, data + vocab);
}

int64_t argmax(const std::vector<float>& v) {
  return static_cast<int64_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

struct RunResult {
  double prefill_ms = 0, ttft_ms = 0, decode_ms = 0;
  std::vector<double> token_ms;
  std::vector<int64_t> decode_tokens;
  std::vector<std::vector<float>> logits; // kept only when asked
};

// The prompt in calls of at most `chunk` tokens, as ExecuTorch's TextPrefiller splits it by get_max_seq_len.
std::vector<float> prefill(const Model& m, const std::vector<int64_t>& prompt, int64_t chunk) {
  std::vector<float> logits;
  for (size_t start = 0; start < prompt.size(); start += static_cast<size_t>(chunk)) {
    const size_t end = std::min(prompt.size(), start + static_cast<size_t>(chunk));
    logits = forward(m, std::vector<int64_t>(prompt.begin() + start, prompt.begin() + end), static_cast<int64_t>(start));
  }
  return logits;
}

RunResult run_once(const Model& m, const std::vector<int64_t>& prompt, int64_t chunk, long gen_len, bool keep_logits) {
  RunResult r;
  // Positions restart at 0: the static cache slots are overwritten, never read before being written.
  auto t0 = Clock::now();
  std::vector<float> logits = prefill(m, prompt, chunk);
  auto t1 = Clock::now();
  int64_t next = argmax(logits);
  auto t2 = Clock::now();
  r.prefill_ms = ms_since(t0, t1);
  r.ttft_ms = ms_since(t0, t2);
  if (keep_logits) {
    r.logits.push_back(logits);
  }
  int64_t pos = static_cast<int64_t>(prompt.size());
  auto d0 = Clock::now();
  for (long i = 0; i < gen_len; ++i) {
    auto s0 = Clock::now();
    r.decode_tokens.push_back(next);
    logits = forward(m, {next}, pos++);
    next = argmax(logits);
    r.token_ms.push_back(ms_since(s0, Clock::now()));
    if (keep_logits) {
      r.logits.push_back(logits);
    }
  }
  r.decode_ms = ms_since(d0, Clock::now());
  return r;
}

void write_dump(const std::string& path, const std::vector<int64_t>& prompt, const RunResult& r) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (!f) {
    die("cannot write --dump-logits file '" + path + "': " + std::strerror(errno));
  }
  std::fprintf(f, "{\"prompt_tokens\":%s,\"decode_tokens\":%s,\"logits\":[",
               json_int_list(prompt).c_str(), json_int_list(r.decode_tokens).c_str());
  for (size_t i = 0; i < r.logits.size(); ++i) {
    std::fputs(i ? ",[" : "[", f);
    for (size_t j = 0; j < r.logits[i].size(); ++j) {
      std::fprintf(f, j ? ",%.9g" : "%.9g", static_cast<double>(r.logits[i][j]));
    }
    std::fputc(']', f);
  }
  std::fputs("]}\n", f);
  if (std::fclose(f) != 0) {
    die("writing --dump-logits file '" + path + "' failed");
  }
}

} // namespace

int main(int argc, char** argv) {
  Options opt = parse_args(argc, argv);

  // Pin before anything creates threads: the threadpool is created lazily on first use.
  if (!opt.cpu_set.empty()) {
    pin_process(opt.cpu_set);
  }
  et::runtime::runtime_init();

  auto* pool = et::extension::threadpool::get_threadpool();
  if (pool == nullptr) {
    die("the ExecuTorch threadpool is not available");
  }
  long threads = opt.threads > 0 ? opt.threads : static_cast<long>(opt.cpu_set.size());
  if (threads > 0 && static_cast<long>(pool->get_thread_count()) != threads) {
    if (!pool->_unsafe_reset_threadpool(static_cast<uint32_t>(threads))) {
      die("could not resize the ExecuTorch threadpool to " + std::to_string(threads) + " threads");
    }
  }
  threads = static_cast<long>(pool->get_thread_count());

  if (access(opt.pte.c_str(), R_OK) != 0) {
    die("cannot read .pte '" + opt.pte + "': " + std::strerror(errno));
  }
  auto load0 = Clock::now();
  Module module(opt.pte, Module::LoadMode::Mmap);
  Error err = module.load();
  if (err != Error::Ok) {
    die("loading program '" + opt.pte + "' failed: " + error_text(err));
  }
  err = module.load_method("forward");
  if (err != Error::Ok) {
    std::string hint = err == Error::OperatorMissing
        ? " (the harness lacks a kernel the program needs; the log above names the operator)"
        : "";
    die("loading method 'forward' of '" + opt.pte + "' failed: " + error_text(err) + hint);
  }
  double model_load_ms = ms_since(load0, Clock::now());

  // get_max_seq_len: most tokens per forward call; get_max_context_len: the KV cache's positions (programs
  // without it take a whole context per call).
  const int64_t per_call = read_int_method(module, "get_max_seq_len");
  const int64_t context_len = read_int_method(module, "get_max_context_len");
  const int64_t max_seq_len = context_len > 0 ? context_len : per_call;
  int64_t chunk = per_call > 0 ? per_call : std::max<int64_t>(1, opt.prompt_len);
  if (opt.prefill_chunk > 0) {
    if (per_call > 0 && opt.prefill_chunk > per_call) {
      die("--prefill-chunk " + std::to_string(opt.prefill_chunk) + " exceeds the program's get_max_seq_len " +
              std::to_string(per_call) + " (most tokens one call takes)",
          2);
    }
    chunk = opt.prefill_chunk;
  }
  const int64_t vocab = read_int_method(module, "get_vocab_size");
  if (max_seq_len < 0) {
    std::fprintf(stderr, "warning: program has no get_max_seq_len; lengths are not checked\n");
  } else if (opt.prompt_len + opt.gen_len > max_seq_len) {
    die("prompt length " + std::to_string(opt.prompt_len) + " + generation length " +
            std::to_string(opt.gen_len) + " = " + std::to_string(opt.prompt_len + opt.gen_len) +
            " exceeds the program's max_seq_len " + std::to_string(max_seq_len),
        2);
  }

  std::vector<int64_t> prompt = opt.tokens;
  if (prompt.empty()) {
    if (vocab <= 0) {
      die("program has no get_vocab_size; pass the prompt ids with --tokens", 2);
    }
    uint64_t state = opt.seed * 6364136223846793005ULL + 1442695040888963407ULL;
    for (long i = 0; i < opt.prompt_len; ++i) {
      state = state * 6364136223846793005ULL + 1442695040888963407ULL; // PCG-style LCG step
      prompt.push_back(static_cast<int64_t>((state >> 33) % static_cast<uint64_t>(vocab)));
    }
  } else if (vocab > 0) {
    for (int64_t t : prompt) {
      if (t >= vocab) {
        die("--tokens: id " + std::to_string(t) + " is not below the vocabulary size " +
                std::to_string(vocab),
            2);
      }
    }
  }

  Model m{&module};
  const std::vector<std::string> features = cpu_features();
  std::fprintf(stderr, "latency_main: %s, threads=%ld, prompt=%ld, gen=%ld, warmup=%ld, reps=%ld\n",
               opt.pte.c_str(), threads, opt.prompt_len, opt.gen_len, opt.warmup, opt.reps);
  for (long w = 0; w < opt.warmup; ++w) {
    run_once(m, prompt, chunk, opt.gen_len, false);
  }
  for (long rep = 0; rep < opt.reps; ++rep) {
    const bool dump = rep == 0 && !opt.dump_logits.empty();
    RunResult r = run_once(m, prompt, chunk, opt.gen_len, dump);
    if (dump) {
      write_dump(opt.dump_logits, prompt, r);
    }
    const double prefill_tps = r.prefill_ms > 0 ? opt.prompt_len / (r.prefill_ms / 1000.0) : 0.0;
    const double decode_tps = r.decode_ms > 0 ? opt.gen_len / (r.decode_ms / 1000.0) : 0.0;
    std::string line = "{";
    line += "\"run\":" + std::to_string(rep);
    line += ",\"threads\":" + std::to_string(threads);
    line += ",\"cpu_set\":" + json_int_list(opt.cpu_set);
    line += ",\"prompt_tokens\":" + std::to_string(opt.prompt_len);
    line += ",\"gen_tokens\":" + std::to_string(opt.gen_len);
    line += ",\"model_load_ms\":" + json_number(model_load_ms);
    line += ",\"prefill_ms\":" + json_number(r.prefill_ms);
    line += ",\"prefill_tps\":" + json_number(prefill_tps);
    line += ",\"ttft_ms\":" + json_number(r.ttft_ms);
    line += ",\"decode_ms\":" + json_number(r.decode_ms);
    line += ",\"decode_tps\":" + json_number(decode_tps);
    line += ",\"token_ms_p50\":" + json_number(percentile(r.token_ms, 50));
    line += ",\"token_ms_p90\":" + json_number(percentile(r.token_ms, 90));
    line += ",\"token_ms_p99\":" + json_number(percentile(r.token_ms, 99));
    line += ",\"peak_rss_kb\":" + std::to_string(peak_rss_kb());
    // Provenance, beyond RUN_FIELDS.
    line += ",\"pte\":" + json_string(opt.pte);
    line += ",\"max_seq_len\":" + std::to_string(max_seq_len);
    line += ",\"prefill_chunk\":" + std::to_string(std::min<int64_t>(chunk, opt.prompt_len));
    line += ",\"vocab_size\":" + std::to_string(vocab);
    line += ",\"warmup\":" + std::to_string(opt.warmup);
    line += ",\"cpu_features\":[";
    for (size_t i = 0; i < features.size(); ++i) {
      line += (i ? "," : "") + json_string(features[i]);
    }
    line += "]";
    line += ",\"token_ms\":[";
    for (size_t i = 0; i < r.token_ms.size(); ++i) {
      line += (i ? "," : "") + json_number(r.token_ms[i]);
    }
    line += "]}";
    std::fprintf(stdout, "%s\n", line.c_str());
    std::fflush(stdout);
  }
  return 0;
}
