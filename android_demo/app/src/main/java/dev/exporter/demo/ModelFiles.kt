package dev.exporter.demo

import android.content.Context
import org.json.JSONObject
import java.io.File
import java.io.IOException

/** The two files LlmModule needs, plus what the export's manifest.json says about them. */
data class ModelFiles(
    val dir: File,
    val model: File,
    val tokenizer: File,
    val modelId: String?,
    val maxSeqLen: Int?,
    val profileThreads: Int?,
) {
    val name: String get() = modelId ?: dir.name

    companion object {
        private const val MANIFEST = "manifest.json"
        private const val EMBEDDED_ASSET_DIR = "model"

        /**
         * Resolves an export folder on the phone (e.g. /data/local/tmp/NAME, written by `exporter push`). The
         * manifest is the truth for file names; without one the `exporter export` defaults are assumed.
         */
        fun resolve(dir: File): ModelFiles {
            val manifestFile = File(dir, MANIFEST)
            var modelName = "model.pte"
            var tokenizerName = "tokenizer.json"
            var modelId: String? = null
            var maxSeqLen: Int? = null
            var threads: Int? = null
            if (manifestFile.isFile) {
                val manifest = JSONObject(manifestFile.readText())
                manifest.optJSONObject("pte")?.optString("file")?.takeIf { it.isNotEmpty() }?.let { modelName = it }
                manifest.optJSONObject("tokenizer")?.optString("file")?.takeIf { it.isNotEmpty() }
                    ?.let { tokenizerName = it }
                modelId = manifest.optJSONObject("model")?.optString("id")?.takeIf { it.isNotEmpty() }
                maxSeqLen = manifest.optInt("max_seq_len", 0).takeIf { it > 0 }
                threads = manifest.optInt("threads", 0).takeIf { it > 0 }
            }
            val files = ModelFiles(dir, File(dir, modelName), File(dir, tokenizerName), modelId, maxSeqLen, threads)
            files.check()
            return files
        }

        /**
         * The model to use at start: the bundled one copied out of the APK when it was embedded, else the
         * folder from settings (which defaults to the config's model_dir).
         */
        fun forApp(context: Context, config: ExporterConfig?, settingsDir: String): ModelFiles {
            if (config != null && config.embedded && settingsDir == config.modelDir) {
                return resolve(extractEmbedded(context, config))
            }
            return resolve(File(settingsDir))
        }

        /**
         * LlmModule takes file paths and mmaps the .pte, so embedded assets are copied once into app storage.
         * The copy is redone when the size differs (a new APK with another model).
         */
        @Throws(IOException::class)
        private fun extractEmbedded(context: Context, config: ExporterConfig): File {
            val target = File(context.filesDir, "models/${config.pteSha256.take(16)}")
            target.mkdirs()
            val names = context.assets.list(EMBEDDED_ASSET_DIR).orEmpty()
            for (name in names) {
                val out = File(target, name)
                context.assets.openFd("$EMBEDDED_ASSET_DIR/$name").use { fd ->
                    if (out.isFile && out.length() == fd.length) return@use
                    val partial = File(target, "$name.partial")
                    fd.createInputStream().use { input -> partial.outputStream().use { input.copyTo(it, 1 shl 20) } }
                    if (!partial.renameTo(out)) throw IOException("cannot rename $partial to $out")
                }
            }
            return target
        }
    }

    fun check() {
        if (!dir.isDirectory) {
            throw IOException("model folder $dir does not exist or is not readable (run `exporter push`)")
        }
        for (f in listOf(model, tokenizer)) {
            if (!f.isFile || !f.canRead()) {
                throw IOException("$f is missing or unreadable (run `exporter push`)")
            }
        }
    }
}
