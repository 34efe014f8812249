package dev.exporter.demo

import android.content.Context
import android.content.SharedPreferences

/** User choices from the settings screen; defaults come from the bundled config. */
class AppSettings(context: Context, private val config: ExporterConfig?) {

    private val prefs: SharedPreferences = context.getSharedPreferences(PREFS, Context.MODE_PRIVATE)

    var modelDir: String
        get() = prefs.getString(KEY_MODEL_DIR, null) ?: config?.modelDir ?: ""
        set(value) = prefs.edit().putString(KEY_MODEL_DIR, value.trim()).apply()

    var temperature: Float
        get() = prefs.getFloat(KEY_TEMPERATURE, config?.temperature ?: DEFAULT_TEMPERATURE)
        set(value) = prefs.edit().putFloat(KEY_TEMPERATURE, value.coerceIn(0f, 2f)).apply()

    var maxNewTokens: Int
        get() = prefs.getInt(KEY_MAX_NEW_TOKENS, config?.maxNewTokens ?: DEFAULT_MAX_NEW_TOKENS)
        set(value) = prefs.edit().putInt(KEY_MAX_NEW_TOKENS, value.coerceAtLeast(1)).apply()

    companion object {
        private const val PREFS = "exporter_demo"
        private const val KEY_MODEL_DIR = "model_dir"
        private const val KEY_TEMPERATURE = "temperature"
        private const val KEY_MAX_NEW_TOKENS = "max_new_tokens"
        const val DEFAULT_TEMPERATURE = 0.7f
        const val DEFAULT_MAX_NEW_TOKENS = 256
    }
}
