package dev.exporter.demo

import android.content.Context
import org.json.JSONArray
import org.json.JSONObject
import java.io.FileNotFoundException

/**
 * What `exporter bundle` wrote into assets/exporter_config.json: which model to load and how to talk to it.
 *
 * Every key is read here and nowhere else; tests/unit/test_android_demo.py extracts the keys this file reads
 * and checks them against what exporter/app/bundle.py writes, so add a key on both sides or neither.
 */
data class ExporterConfig(
    val schemaVersion: Int,
    val modelId: String,
    /** Folder on the phone holding model.pte and tokenizer.json (what `exporter push` creates). */
    val modelDir: String,
    val modelFile: String,
    val tokenizerFile: String,
    /** True when the model files are packaged under assets/model/ (`exporter bundle --embed-model`). */
    val embedded: Boolean,
    val bosId: Int,
    val eosIds: List<Int>,
    /** The model's Jinja chat template, verbatim (for display); the app applies the pre-rendered parts below. */
    val chatTemplate: String?,
    /** Rendered on the host from [chatTemplate]: text before the first user message (system prompt, BOS text). */
    val chatPrefix: String,
    /** Text between a user message and the model's answer (the assistant header / generation prompt). */
    val chatSuffix: String,
    /** Text between the end of an answer and the next user message (end-of-turn and next user header). */
    val chatSeparator: String,
    /** Thread count of the device profile; see [ThreadInfo] for what the runtime actually uses. */
    val threads: Int,
    val maxSeqLen: Int,
    val temperature: Float,
    val maxNewTokens: Int,
    val profileId: String,
    val recipe: String,
    val pteSha256: String,
    val pteBytes: Long,
) {
    val hasChatTemplate: Boolean get() = !chatTemplate.isNullOrEmpty()

    companion object {
        const val ASSET_NAME = "exporter_config.json"
        const val SUPPORTED_SCHEMA = 1

        /** Reads the bundled config; null when the app was built from the bare template (no `exporter bundle`). */
        fun load(context: Context): ExporterConfig? {
            val text = try {
                context.assets.open(ASSET_NAME).bufferedReader().use { it.readText() }
            } catch (e: FileNotFoundException) {
                return null
            }
            return parse(JSONObject(text))
        }

        fun parse(json: JSONObject): ExporterConfig {
            val schema = json.getInt("schema_version")
            require(schema == SUPPORTED_SCHEMA) {
                "exporter_config.json has schema_version $schema; this app reads $SUPPORTED_SCHEMA (re-run exporter bundle)"
            }
            return ExporterConfig(
                schemaVersion = schema,
                modelId = json.getString("model_id"),
                modelDir = json.getString("model_dir"),
                modelFile = json.getString("model_file"),
                tokenizerFile = json.getString("tokenizer_file"),
                embedded = json.getBoolean("embedded"),
                bosId = json.optInt("bos_id", -1),
                eosIds = intList(json.getJSONArray("eos_ids")),
                chatTemplate = if (json.isNull("chat_template")) null else json.getString("chat_template"),
                chatPrefix = json.getString("chat_prefix"),
                chatSuffix = json.getString("chat_suffix"),
                chatSeparator = json.getString("chat_separator"),
                threads = json.getInt("threads"),
                maxSeqLen = json.getInt("max_seq_len"),
                temperature = json.getDouble("temperature").toFloat(),
                maxNewTokens = json.getInt("max_new_tokens"),
                profileId = json.getString("profile_id"),
                recipe = json.getString("recipe"),
                pteSha256 = json.getString("pte_sha256"),
                pteBytes = json.getLong("pte_bytes"),
            )
        }

        private fun intList(array: JSONArray): List<Int> = List(array.length()) { array.getInt(it) }
    }
}
