package dev.exporter.demo

import android.app.Activity
import android.content.Intent
import android.os.Bundle
import android.os.Handler
import android.os.Looper
import android.os.Process
import android.view.Menu
import android.view.MenuItem
import android.view.View
import android.widget.Button
import android.widget.EditText
import android.widget.ScrollView
import android.widget.TextView
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors

/**
 * The chat screen: loads the model off the UI thread, streams tokens into the transcript as they are generated,
 * shows prefill/decode tokens per second and time to first token after each answer, and can stop a generation.
 */
class MainActivity : Activity() {

    private lateinit var status: TextView
    private lateinit var transcript: TextView
    private lateinit var scroll: ScrollView
    private lateinit var statsView: TextView
    private lateinit var input: EditText
    private lateinit var send: Button

    private val main = Handler(Looper.getMainLooper())

    /** All LlmModule calls happen on this one thread, never on the UI thread. */
    private val worker: ExecutorService = Executors.newSingleThreadExecutor { runnable ->
        Thread({
            Process.setThreadPriority(Process.THREAD_PRIORITY_FOREGROUND)
            runnable.run()
        }, "llm-worker")
    }

    private var config: ExporterConfig? = null
    private lateinit var settings: AppSettings
    @Volatile
    private var session: LlmSession? = null
    private var chat: ChatPrompt? = null
    private var loadedKey: String? = null

    @Volatile
    private var generating = false

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        status = findViewById(R.id.status)
        transcript = findViewById(R.id.transcript)
        scroll = findViewById(R.id.transcript_scroll)
        statsView = findViewById(R.id.stats)
        input = findViewById(R.id.input)
        send = findViewById(R.id.send)
        send.setOnClickListener { onSendOrStop() }

        config = try {
            ExporterConfig.load(this)
        } catch (e: Exception) {
            status.text = getString(R.string.load_failed, e.message)
            null
        }
        settings = AppSettings(this, config)
    }

    override fun onResume() {
        super.onResume()
        // Settings may have changed the folder or the temperature: reload when they did.
        val key = "${settings.modelDir}|${settings.temperature}"
        if (key != loadedKey && !generating) {
            loadModel(key)
        }
    }

    private fun loadModel(key: String) {
        val dir = settings.modelDir
        if (dir.isEmpty()) {
            status.text = getString(R.string.no_model)
            return
        }
        send.isEnabled = false
        status.text = getString(R.string.loading, dir)
        val temperature = settings.temperature
        worker.execute {
            session?.close()
            session = null
            try {
                val files = ModelFiles.forApp(this, config, dir)
                val loaded = LlmSession(files, temperature)
                try {
                    loaded.load()
                } catch (e: ModelLoadException) {
                    loaded.close() // the native runner exists even when its program did not load
                    throw e
                }
                session = loaded
                val cfg = config
                // The pre-rendered template parts belong to the bundled model only.
                val template = if (cfg != null && (files.modelId == null || files.modelId == cfg.modelId)) cfg else null
                chat = template?.let { ChatPrompt(it) }
                val runtimeThreads = DeviceStats.runtimeThreads()
                main.post {
                    loadedKey = key
                    status.text = buildString {
                        append(getString(R.string.loaded, files.name, loaded.loadMs.toLong()))
                        append(" · threads $runtimeThreads")
                        val profileThreads = files.profileThreads ?: cfg?.threads
                        if (profileThreads != null && profileThreads != runtimeThreads) {
                            append(" (profile: $profileThreads)")
                        }
                        if (template == null) append(" · no chat template")
                        append(" · ").append(DeviceStats.memorySummary())
                    }
                    send.isEnabled = true
                }
            } catch (e: ModelLoadException) {
                // The runtime refused the model: show its error code, not only the text, so the user can tell a
                // version mismatch (0x23, 0x30) from a missing kernel (0x14) or a missing file.
                val code = e.errorCodeHex
                val shown = if (code != null) getString(R.string.load_failed_code, code, e.message ?: "") else e.message
                main.post {
                    status.text = getString(R.string.load_failed, shown ?: e.toString())
                    send.isEnabled = false
                }
            } catch (e: Exception) {
                main.post {
                    status.text = getString(R.string.load_failed, e.message ?: e.toString())
                    send.isEnabled = false
                }
            }
        }
    }

    private fun onSendOrStop() {
        if (generating) {
            session?.stop()
            return
        }
        val message = input.text.toString().trim()
        val current = session ?: return
        if (message.isEmpty()) return
        input.setText("")
        generating = true
        send.text = getString(R.string.stop)
        transcript.append("${getString(R.string.you)}: $message\n${getString(R.string.assistant)}: ")
        scrollToEnd()
        val prompt = chat?.build(message) ?: message
        val seqLen = current.files.maxSeqLen ?: config?.maxSeqLen ?: DEFAULT_SEQ_LEN
        val maxNewTokens = settings.maxNewTokens
        worker.execute {
            val result = current.generate(prompt, seqLen, maxNewTokens) { piece ->
                main.post {
                    transcript.append(piece)
                    scrollToEnd()
                }
            }
            chat?.addTurn(message, result.text)
            val memory = DeviceStats.memorySummary()
            main.post {
                if (result.stopped) transcript.append(" ${getString(R.string.stopped)}")
                transcript.append("\n\n")
                scrollToEnd()
                statsView.text = when {
                    result.error != null -> result.error
                    result.stats != null -> "${result.stats.summary()}\n$memory"
                    else -> memory
                }
                generating = false
                send.text = getString(R.string.send)
            }
        }
    }

    private fun scrollToEnd() {
        scroll.post { scroll.fullScroll(View.FOCUS_DOWN) }
    }

    override fun onCreateOptionsMenu(menu: Menu): Boolean {
        menuInflater.inflate(R.menu.main, menu)
        return true
    }

    override fun onOptionsItemSelected(item: MenuItem): Boolean = when (item.itemId) {
        R.id.action_settings -> {
            startActivity(Intent(this, SettingsActivity::class.java))
            true
        }
        R.id.action_clear -> {
            if (!generating) {
                chat?.clear()
                transcript.text = ""
                statsView.text = ""
            }
            true
        }
        else -> super.onOptionsItemSelected(item)
    }

    override fun onDestroy() {
        super.onDestroy()
        session?.stop()
        worker.execute {
            session?.close()
            session = null
        }
        worker.shutdown()
    }

    companion object {
        private const val DEFAULT_SEQ_LEN = 1024
    }
}
