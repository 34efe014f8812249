package dev.exporter.demo

import android.os.SystemClock
import android.util.Log
import org.pytorch.executorch.ExecutorchRuntimeException
import org.pytorch.executorch.extension.llm.LlmCallback
import org.pytorch.executorch.extension.llm.LlmModule
import org.pytorch.executorch.extension.llm.LlmModuleConfig
import java.io.Closeable

/**
 * Why a model could not be loaded. [errorCode] is ExecuTorch's runtime error (runtime/core/error.h), null when
 * the failure happened before the runtime ran (a missing file, a refused path); the UI and the benchmark's
 * results file show both.
 */
class ModelLoadException(val errorCode: Int?, message: String, cause: Throwable? = null) : Exception(message, cause) {
    /** "0x23" style, as ExecuTorch prints its codes; null without a runtime code. */
    val errorCodeHex: String? get() = errorCode?.let { "0x" + Integer.toHexString(it) }
}

/**
 * One loaded model. Not thread-safe: call it from one background thread (the UI posts work to an executor).
 *
 * Written against the executorch-android API of the pinned release (gradle/libs.versions.toml): `load()` and
 * `generate()` return nothing and throw ExecutorchRuntimeException (with `errorCode`) on failure, and `close()`
 * releases the native runner (`resetNative()` is its deprecated alias).
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

    private val module: LlmModule = try {
        LlmModule(
            LlmModuleConfig.create()
                .modulePath(files.model.absolutePath)
                .tokenizerPath(files.tokenizer.absolutePath)
                .temperature(temperature)
                // The runner adds no BOS: the prompt's text carries it. `exporter bundle` renders the model's chat
                // template with its real bos_token, so the template's own BOS (Llama 3: "<|begin_of_text|>") is the
                // first text of chat_prefix and the tokenizer maps it to bos_id; ChatPrompt sends that prefix at
                // the start of every request. A runner BOS on top would put two BOS tokens in front.
                .numBos(RUNNER_BOS)
                .numEos(0)
                // Memory-mapped: weights are paged in on demand instead of copied onto the heap.
                .loadMode(LlmModuleConfig.LOAD_MODE_MMAP)
                .build(),
        )
    } catch (e: IllegalArgumentException) {
        // The constructor checks that both paths are readable files before any native code runs.
        throw ModelLoadException(null, e.message ?: e.toString(), e)
    }

    @Volatile
    private var closed = false

    @Volatile
    private var stopRequested = false

    /** Wall time of LlmModule.load() (program + method load), milliseconds. */
    var loadMs: Double = 0.0
        private set

    /**
     * Loads the program and its methods. Throws [ModelLoadException] with ExecuTorch's error code when the runtime
     * refuses the file: 0x23 (InvalidProgram) or 0x30 (DelegateInvalidCompatibility) mostly mean a .pte written
     * by a newer ExecuTorch than the AAR's runtime, 0x14 (OperatorMissing) a kernel the AAR lacks.
     */
    @Throws(ModelLoadException::class)
    fun load() {
        val t0 = SystemClock.elapsedRealtimeNanos()
        try {
            module.load()
        } catch (e: ExecutorchRuntimeException) {
            throw ModelLoadException(e.errorCode, loadFailureMessage(e.errorCode, e.message), e)
        } catch (e: RuntimeException) {
            // fbjni rethrows native C++ exceptions as plain RuntimeExceptions, without a code.
            throw ModelLoadException(null, "LlmModule.load() failed: ${e.message ?: e}", e)
        } finally {
            loadMs = (SystemClock.elapsedRealtimeNanos() - t0) / 1e6
        }
    }

    /** The library's own text already starts with "[ExecuTorch Error 0x23] Invalid program"; the hint says why. */
    private fun loadFailureMessage(code: Int, detail: String?): String = buildString {
        append(detail ?: "LlmModule.load() failed with ExecuTorch error 0x${Integer.toHexString(code)}")
        append(" (runtime: executorch-android ").append(BuildConfig.EXECUTORCH_VERSION)
        append("; a .pte from a newer ExecuTorch needs an AAR of that release)")
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
            module.generate(prompt, seqLen, callback, false)
        } catch (e: ExecutorchRuntimeException) {
            // onError usually said it already, with the runner's own words; keep that one.
            if (error == null) {
                error = "ExecuTorch error 0x${Integer.toHexString(e.errorCode)}: ${e.message}"
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

    /**
     * Releases the native runner. Call it on the thread that generates, after [generate] returned: LlmModule
     * refuses to close while one of its methods runs. Safe to call twice.
     */
    override fun close() {
        if (closed) return
        closed = true
        module.close()
    }

    companion object {
        private const val TAG = "ExporterLlm"

        /** BOS tokens the runner prepends: none, the chat template's text carries the BOS (see [module]). */
        const val RUNNER_BOS = 0
    }
}
