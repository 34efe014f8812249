package dev.exporter.demo

/**
 * Builds the prompt text for a conversation from the chat-template parts `exporter bundle` rendered on the host
 * with the model's own Jinja template (so the app needs no Jinja engine).
 *
 * Each request re-sends the whole conversation after a context reset: simple and always consistent with the
 * template. Old turns are dropped when the text would not fit the model's context.
 *
 * BOS: the runner is built with no BOS of its own (LlmSession.RUNNER_BOS), so the only BOS is the one the
 * template writes as text (`{{ bos_token }}`, rendered into chat_prefix by `exporter bundle`); the runner's
 * tokenizer maps that special-token text to bos_id. Every prompt therefore starts with the full prefix, which is
 * never trimmed. Raw prompts (no template) go without a BOS, as the runner would send them.
 */
class ChatPrompt(private val config: ExporterConfig) {

    data class Turn(val user: String, val assistant: String)

    private val turns = ArrayDeque<Turn>()

    fun clear() = turns.clear()

    fun addTurn(user: String, assistant: String) {
        turns.addLast(Turn(user, assistant))
    }

    /** The prompt for [message] after the stored turns, trimmed to roughly [maxChars] characters. */
    fun build(message: String, maxChars: Int = defaultMaxChars()): String {
        if (!config.hasChatTemplate) {
            return message
        }
        while (turns.isNotEmpty() && render(message).length > maxChars) {
            turns.removeFirst()
        }
        return render(message)
    }

    private fun render(message: String): String = buildString {
        append(config.chatPrefix)
        for (turn in turns) {
            append(turn.user)
            append(config.chatSuffix)
            append(turn.assistant)
            append(config.chatSeparator)
        }
        append(message)
        append(config.chatSuffix)
    }

    /**
     * LlmModule has no tokenizer call, so the context budget is estimated in characters: about three characters
     * per token for English BPE vocabularies, keeping room for the answer.
     */
    private fun defaultMaxChars(): Int = maxOf(256, (config.maxSeqLen - config.maxNewTokens) * 3)
}
