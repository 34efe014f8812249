package dev.exporter.demo

import android.app.Activity
import android.os.Bundle
import android.os.Process
import android.util.Log
import android.view.WindowManager
import android.widget.TextView
import org.json.JSONObject
import java.io.File

/**
 * Headless benchmark, started by `exporter app-bench` over adb:
 *
 *     am start -n dev.exporter.demo/.BenchmarkActivity --es model_dir /data/local/tmp/NAME \
 *         --ei prompt_len 128 --ei gen_len 64 --ei reps 5 --ei warmup 1 --es run_id ID
 *
 * It runs without a person, writes Android/data/dev.exporter.demo/files/bench/ID.json (runs in the native
 * harness's schema, exporter/device/protocol.py) and finishes. Failures are written to the same file as "error",
 * so the host never waits for a timeout to learn that the model was missing.
 */
class BenchmarkActivity : Activity() {

    private lateinit var statusView: TextView

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_benchmark)
        statusView = findViewById(R.id.benchmark_status)
        window.addFlags(WindowManager.LayoutParams.FLAG_KEEP_SCREEN_ON)

        val request = BenchRequest(
            runId = intent.getStringExtra(EXTRA_RUN_ID) ?: "bench-${System.currentTimeMillis()}",
            modelDir = intent.getStringExtra(EXTRA_MODEL_DIR),
            prompt = intent.getStringExtra(EXTRA_PROMPT),
            promptLen = intent.getIntExtra(EXTRA_PROMPT_LEN, 128),
            genLen = intent.getIntExtra(EXTRA_GEN_LEN, 64),
            reps = intent.getIntExtra(EXTRA_REPS, 5),
            warmup = intent.getIntExtra(EXTRA_WARMUP, 1),
        )
        // External app storage is what `adb pull` can read; it is absent only without shared storage.
        val outDir = File(getExternalFilesDir(null) ?: filesDir, RESULTS_DIR)
        statusView.text = getString(R.string.benchmark_running, request.runId)

        Thread({
            Process.setThreadPriority(Process.THREAD_PRIORITY_FOREGROUND)
            val config = try {
                ExporterConfig.load(this)
            } catch (e: Exception) {
                null
            }
            val doc = BenchRunner(this, config).run(request) { line ->
                runOnUiThread { statusView.text = line }
            }
            writeAtomically(outDir, request.runId, doc)
            val error = if (doc.isNull("error")) null else doc.optString("error")
            runOnUiThread {
                if (error == null) {
                    finishAndRemoveTask()
                } else {
                    // Stays on screen: whoever holds the phone sees why, the host has it from the results file.
                    statusView.text = getString(R.string.benchmark_failed, request.runId, error)
                }
            }
        }, "bench").start()
    }

    private fun writeAtomically(dir: File, runId: String, doc: JSONObject) {
        dir.mkdirs()
        val tmp = File(dir, "$runId.json.partial")
        tmp.writeText(doc.toString(2))
        val target = File(dir, "$runId.json")
        if (!tmp.renameTo(target)) {
            Log.e(TAG, "cannot rename $tmp to $target")
        }
        Log.i(TAG, "results written to $target")
    }

    companion object {
        private const val TAG = "ExporterBench"

        /** Under getExternalFilesDir(null): /sdcard/Android/data/<package>/files/bench/<run_id>.json */
        const val RESULTS_DIR = "bench"

        // Intent extras. exporter/app/bench.py sends exactly these (checked by tests/unit/test_android_demo.py).
        const val EXTRA_RUN_ID = "run_id"
        const val EXTRA_MODEL_DIR = "model_dir"
        const val EXTRA_PROMPT = "prompt"
        const val EXTRA_PROMPT_LEN = "prompt_len"
        const val EXTRA_GEN_LEN = "gen_len"
        const val EXTRA_REPS = "reps"
        const val EXTRA_WARMUP = "warmup"
    }
}
