package dev.exporter.demo

import android.app.Activity
import android.os.Bundle
import android.text.Editable
import android.text.TextWatcher
import android.widget.Button
import android.widget.EditText
import android.widget.TextView
import java.io.File

/** Picks the model folder on the phone, the sampling temperature and the answer length. */
class SettingsActivity : Activity() {

    private lateinit var settings: AppSettings

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_settings)
        actionBar?.setDisplayHomeAsUpEnabled(true)

        val config = try {
            ExporterConfig.load(this)
        } catch (e: Exception) {
            null
        }
        settings = AppSettings(this, config)

        val modelDir = findViewById<EditText>(R.id.model_dir)
        val check = findViewById<TextView>(R.id.model_dir_check)
        val temperature = findViewById<EditText>(R.id.temperature)
        val maxNewTokens = findViewById<EditText>(R.id.max_new_tokens)
        val info = findViewById<TextView>(R.id.model_info)

        modelDir.setText(settings.modelDir)
        temperature.setText(settings.temperature.toString())
        maxNewTokens.setText(settings.maxNewTokens.toString())
        check.text = describeFolder(modelDir.text.toString())
        modelDir.addTextChangedListener(object : TextWatcher {
            override fun beforeTextChanged(s: CharSequence?, start: Int, count: Int, after: Int) = Unit
            override fun onTextChanged(s: CharSequence?, start: Int, before: Int, count: Int) = Unit
            override fun afterTextChanged(s: Editable?) {
                check.text = describeFolder(s?.toString().orEmpty())
            }
        })

        info.text = if (config == null) {
            getString(R.string.no_model)
        } else {
            buildString {
                appendLine("model      ${config.modelId}")
                appendLine("profile    ${config.profileId}  recipe ${config.recipe}")
                appendLine("threads    profile ${config.threads}, runtime ${DeviceStats.runtimeThreads()}")
                appendLine("context    ${config.maxSeqLen} tokens")
                appendLine("template   ${if (config.hasChatTemplate) "yes" else "none (raw prompts)"}")
                appendLine("embedded   ${config.embedded}")
                append("app ${BuildConfig.VERSION_NAME} · executorch ${BuildConfig.EXECUTORCH_VERSION}")
            }
        }

        findViewById<Button>(R.id.save).setOnClickListener {
            settings.modelDir = modelDir.text.toString()
            temperature.text.toString().toFloatOrNull()?.let { settings.temperature = it }
            maxNewTokens.text.toString().toIntOrNull()?.let { settings.maxNewTokens = it }
            finish()
        }
    }

    private fun describeFolder(path: String): String {
        if (path.isBlank()) return ""
        return try {
            val files = ModelFiles.resolve(File(path.trim()))
            "ok: ${files.model.name} (${files.model.length() / (1 shl 20)} MiB), ${files.tokenizer.name}"
        } catch (e: Exception) {
            e.message ?: e.toString()
        }
    }

    override fun onNavigateUp(): Boolean {
        finish()
        return true
    }
}
