package dev.exporter.demo

import android.os.SystemClock
import android.util.Log
import org.pytorch.executorch.extension.llm.LlmCallback
import org.pytorch.executorch.extension.llm.LlmModule
import java.io.Closeable

/**
 * One loaded model. Not thread-safe: call it from one background thread (the UI posts work to an executor).
 *
 * Loading: the 3-argument LlmModule constructor uses the AAR's default load mode, which memory-maps the .pte
 * (LlmModuleConfig.LOAD_MODE_MMAP), so weights are paged in on demand instead of copied onto the heap.
 */
class LlmSession(val files: ModelFiles, temperature: Float) : Closeable {

    /** Called on the generating thread for each decoded piece of text. */
    fun interface TokenListener {
        fun onToken(text: String)
    }

    data class Result(
        val text: String,
        val stats: GenerationStats?,
        /** SystemClock.elapsedRealtimeNanos() at each onResult call: the first is the token from the prefill. */
        val tokenTimesNs: LongArray,
        val stopped: Boolean,
        val error: String?,
    )

    private val module = LlmModule(files.model.absolutePath, files.tokenizer.absolutePath, temperature)

    @Volatile
    private var stopRequested = false

    /** Wall time of LlmModule.load() (program + method load), milliseconds. */
    var loadMs: Double = 0.0
        private set

    fun load() {
        val t0 = SystemClock.elapsedRealtimeNanos()
        // Older AARs return an int status, newer ones throw and return Unit: accept both.
        val status: Any? = module.load()
        loadMs = (SystemClock.elapsedRealtimeNanos() - t0) / 1e6
        if (status is Int && status != 0) {
            throw IllegalStateException("LlmModule.load() failed with ExecuTorch error $status")
        }
    }

    /**
     * Generates from [prompt] (already chat-formatted) until an end-of-sequence token, [seqLen] total tokens
     * (prompt included), [maxNewTokens] pieces of text, or [stop]. Blocks the calling thread.
     */
    fun generate(prompt: String, seqLen: Int, maxNewTokens: Int, listener: TokenListener = TokenListener { }): Result {
        stopRequested = false
        module.resetContext() // a fresh KV cache: each request carries the whole conversation
        val text = StringBuilder()
        val times = LongArray(maxOf(1, maxNewTokens) + 1)
        var count = 0
        var stats: GenerationStats? = null
        var error: String? = null
        val callback = object : LlmCallback {
            override fun onResult(result: String) {
                if (count < times.size) {
                    times[count] = SystemClock.elapsedRealtimeNanos()
                }
                count++
                text.append(result)
                listener.onToken(result)
                if (count >= maxNewTokens || stopRequested) {
                    module.stop()
                }
            }

            override fun onStats(stats: String) {
                lastStatsJson = stats
            }

            override fun onError(errorCode: Int, message: String) {
                error = "ExecuTorch error $errorCode: $message"
            }
        }
        lastStatsJson = null
        try {
            // echo = false: only generated text comes back, not the prompt.
            val status: Any? = module.generate(prompt, seqLen, callback, false)
            if (status is Int && status != 0 && error == null) {
                error = "LlmModule.generate() failed with ExecuTorch error $status"
            }
        } catch (e: RuntimeException) {
            error = e.message ?: e.toString()
        }
        lastStatsJson?.let { json ->
            stats = try {
                GenerationStats.parse(json)
            } catch (e: org.json.JSONException) {
                Log.w(TAG, "unreadable stats JSON: $json", e)
                null
            }
        }
        return Result(text.toString(), stats, times.copyOf(minOf(count, times.size)), stopRequested, error)
    }

    @Volatile
    private var lastStatsJson: String? = null

    /** Asks a running [generate] to finish after the current token. Safe from any thread. */
    fun stop() {
        stopRequested = true
        module.stop()
    }

    override fun close() {
        module.resetNative()
    }

    companion object {
        private const val TAG = "ExporterLlm"
    }
}
