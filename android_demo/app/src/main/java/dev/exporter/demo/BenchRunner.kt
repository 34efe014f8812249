package dev.exporter.demo

import android.content.Context
import android.util.Log
import org.json.JSONArray
import org.json.JSONObject
import java.io.File
import kotlin.math.floor

data class BenchRequest(
    val runId: String,
    val modelDir: String?,
    val prompt: String?,
    val promptLen: Int,
    val genLen: Int,
    val reps: Int,
    val warmup: Int,
)

/**
 * Runs warm-up and measured generations and builds the results document. Each element of "runs" has exactly
 * the fields of exporter/device/protocol.py RUN_FIELDS, the schema of the native harness (tests check this file).
 */
class BenchRunner(private val context: Context, private val config: ExporterConfig?) {

    fun run(request: BenchRequest, progress: (String) -> Unit): JSONObject {
        val doc = JSONObject()
            .put("schema", SCHEMA)
            .put("run_id", request.runId)
            .put("app_version", BuildConfig.VERSION_NAME)
            .put("executorch_version", BuildConfig.EXECUTORCH_VERSION)
            .put("requested", JSONObject()
                .put("model_dir", request.modelDir ?: JSONObject.NULL)
                .put("prompt_len", request.promptLen)
                .put("gen_len", request.genLen)
                .put("reps", request.reps)
                .put("warmup", request.warmup))
            .put("device", DeviceStats.device())
        val runs = JSONArray()
        doc.put("runs", runs)
        var session: LlmSession? = null
        var stage = STAGE_SETUP
        try {
            val dir = request.modelDir ?: config?.modelDir
                ?: throw IllegalArgumentException("no model_dir extra and no bundled config")
            val files = ModelFiles.forApp(context, config, dir)
            val maxSeqLen = files.maxSeqLen ?: config?.maxSeqLen ?: DEFAULT_MAX_SEQ_LEN
            doc.put("model_id", files.modelId ?: JSONObject.NULL)
            doc.put("model_path", files.model.absolutePath)
            doc.put("profile_threads", files.profileThreads ?: config?.threads ?: JSONObject.NULL)

            progress("loading ${files.model.name}")
            stage = STAGE_LOAD
            // Greedy decoding: benchmark timings must not depend on sampling.
            val loaded = LlmSession(files, 0.0f)
            session = loaded
            loaded.load()
            stage = STAGE_RUN
            val threads = DeviceStats.runtimeThreads()
            doc.put("threads_source", "LlmModule JNI default: performant cores - 1 (no Java API sets it)")

            val prompt = request.prompt?.let { Prompt(it, countTokens(loaded, it, maxSeqLen)) }
                ?: calibratePrompt(loaded, request.promptLen, maxSeqLen, progress)
            require(prompt.tokens + request.genLen + 1 <= maxSeqLen) {
                "prompt (${prompt.tokens} tokens) + gen_len ${request.genLen} does not fit max_seq_len $maxSeqLen"
            }
            for (i in 0 until request.warmup) {
                progress("warm-up ${i + 1}/${request.warmup}")
                measure(loaded, prompt, request.genLen, maxSeqLen)
            }
            for (rep in 0 until request.reps) {
                progress("run ${rep + 1}/${request.reps}")
                val m = measure(loaded, prompt, request.genLen, maxSeqLen)
                runs.put(runRecord(rep, threads, loaded.loadMs, m))
            }
            doc.put("memory", DeviceStats.memory())
            doc.put("error", JSONObject.NULL)
            doc.put("error_stage", JSONObject.NULL)
            doc.put("error_code", JSONObject.NULL)
        } catch (e: ModelLoadException) {
            // The host prints "error" as it is; it names the runtime's code so a .pte the AAR cannot read is told
            // apart from a missing file without a logcat.
            Log.e(TAG, "model load failed", e)
            val code = e.errorCodeHex
            doc.put("error", "load failed" + (code?.let { " (ExecuTorch error $it)" } ?: "") + ": ${e.message}")
            doc.put("error_stage", STAGE_LOAD)
            doc.put("error_code", e.errorCode ?: JSONObject.NULL)
        } catch (e: Exception) {
            Log.e(TAG, "benchmark failed", e)
            doc.put("error", "${e.javaClass.simpleName}: ${e.message}")
            doc.put("error_stage", stage)
            doc.put("error_code", JSONObject.NULL)
        } finally {
            session?.close()
        }
        return doc
    }

    private data class Measurement(val stats: GenerationStats, val tokenMs: DoubleArray)

    private fun measure(session: LlmSession, prompt: Prompt, genLen: Int, maxSeqLen: Int): Measurement {
        // seq_len counts the prompt tokens; the token sampled from the prefill logits comes before the genLen
        // decode steps. The piece limit (genLen + 1) stops generation at the same point should seq_len not.
        val seqLen = minOf(maxSeqLen, prompt.tokens + genLen + 1)
        val result = session.generate(prompt.text, seqLen, genLen + 1)
        result.error?.let { throw IllegalStateException(it) }
        val stats = result.stats ?: throw IllegalStateException("LlmModule reported no stats (onStats not called)")
        val times = result.tokenTimesNs
        val tokenMs = DoubleArray(maxOf(0, times.size - 1)) { (times[it + 1] - times[it]) / 1e6 }
        return Measurement(stats, tokenMs)
    }

    private data class Prompt(val text: String, val tokens: Int)

    /** Prefills [text] once (one token generated) to learn its length in tokens from the runtime's stats. */
    private fun countTokens(session: LlmSession, text: String, maxSeqLen: Int): Int {
        val result = session.generate(text, maxSeqLen, 1)
        result.error?.let { throw IllegalStateException(it) }
        return result.stats?.promptTokens
            ?: throw IllegalStateException("LlmModule reported no stats (onStats not called)")
    }

    /**
     * LlmModule takes text, not token ids, so a prompt of the requested length is built from a repeated common
     * word and corrected with the prompt_tokens count the runtime reports. The runs record the real count.
     */
    private fun calibratePrompt(session: LlmSession, target: Int, maxSeqLen: Int, progress: (String) -> Unit): Prompt {
        require(target in 1 until maxSeqLen) { "prompt_len $target must be in 1..${maxSeqLen - 1}" }
        var words = target
        var prompt = Prompt(filler(words), countTokens(session, filler(words), maxSeqLen))
        var attempt = 1
        while (prompt.tokens != target && attempt < CALIBRATION_TRIES) {
            progress("calibrating prompt length ($attempt: ${prompt.tokens} tokens)")
            words = maxOf(1, words + (target - prompt.tokens))
            prompt = Prompt(filler(words), countTokens(session, filler(words), maxSeqLen))
            attempt++
        }
        return prompt
    }

    private fun filler(words: Int): String = List(words) { "the" }.joinToString(" ")

    private fun runRecord(rep: Int, threads: Int, loadMs: Double, m: Measurement): JSONObject {
        val s = m.stats
        val sorted = m.tokenMs.sortedArray()
        return JSONObject()
            .put("run", rep)
            .put("threads", threads)
            .put("cpu_set", JSONArray())
            .put("prompt_tokens", s.promptTokens)
            .put("gen_tokens", s.generatedTokens)
            .put("model_load_ms", loadMs)
            .put("prefill_ms", s.prefillMs.toDouble())
            .put("prefill_tps", s.prefillTps)
            .put("ttft_ms", s.ttftMs.toDouble())
            .put("decode_ms", s.decodeMs.toDouble())
            .put("decode_tps", s.decodeTps)
            .put("token_ms_p50", percentile(sorted, 50.0))
            .put("token_ms_p90", percentile(sorted, 90.0))
            .put("token_ms_p99", percentile(sorted, 99.0))
            .put("peak_rss_kb", DeviceStats.peakRssKb())
    }

    /** Linear interpolation between closest ranks, as the native harness computes it. */
    private fun percentile(sorted: DoubleArray, p: Double): Double {
        if (sorted.isEmpty()) return 0.0
        val rank = p / 100.0 * (sorted.size - 1)
        val lo = floor(rank).toInt()
        val hi = minOf(lo + 1, sorted.size - 1)
        return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo)
    }

    companion object {
        private const val TAG = "ExporterBench"
        const val SCHEMA = "exporter-app-bench/1"

        /** Where a failed benchmark stopped ("error_stage" in the results document). */
        const val STAGE_SETUP = "setup"
        const val STAGE_LOAD = "load"
        const val STAGE_RUN = "run"

        private const val DEFAULT_MAX_SEQ_LEN = 1024
        private const val CALIBRATION_TRIES = 4
    }
}
