package dev.exporter.demo

import org.json.JSONObject

/**
 * The JSON that LlmCallback.onStats receives (ExecuTorch extension/llm/stats.h), and the rates derived from it.
 * Times are wall-clock milliseconds taken inside the runner.
 */
data class GenerationStats(
    val promptTokens: Int,
    val generatedTokens: Int,
    val modelLoadStartMs: Long,
    val modelLoadEndMs: Long,
    val inferenceStartMs: Long,
    val promptEvalEndMs: Long,
    val firstTokenMs: Long,
    val inferenceEndMs: Long,
) {
    val prefillMs: Long get() = promptEvalEndMs - inferenceStartMs
    val ttftMs: Long get() = firstTokenMs - inferenceStartMs

    /** Decode covers the tokens generated after the prefill, as in ExecuTorch's own stats printout. */
    val decodeMs: Long get() = inferenceEndMs - promptEvalEndMs

    val prefillTps: Double get() = rate(promptTokens, prefillMs)
    val decodeTps: Double get() = rate(generatedTokens, decodeMs)

    fun summary(): String = String.format(
        java.util.Locale.US,
        "prefill %d tok %.1f tok/s · decode %d tok %.1f tok/s · TTFT %d ms",
        promptTokens, prefillTps, generatedTokens, decodeTps, ttftMs,
    )

    companion object {
        fun parse(json: String): GenerationStats {
            val o = JSONObject(json)
            return GenerationStats(
                promptTokens = o.optInt("prompt_tokens"),
                generatedTokens = o.optInt("generated_tokens"),
                modelLoadStartMs = o.optLong("model_load_start_ms"),
                modelLoadEndMs = o.optLong("model_load_end_ms"),
                inferenceStartMs = o.optLong("inference_start_ms"),
                promptEvalEndMs = o.optLong("prompt_eval_end_ms"),
                firstTokenMs = o.optLong("first_token_ms"),
                inferenceEndMs = o.optLong("inference_end_ms"),
            )
        }

        private fun rate(tokens: Int, ms: Long): Double = if (ms > 0) tokens * 1000.0 / ms else 0.0
    }
}
