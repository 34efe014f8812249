package dev.exporter.demo

import android.os.Build
import android.os.Debug
import org.json.JSONObject
import java.io.File

/** Memory and CPU facts reported next to the timings. */
object DeviceStats {

    /** Debug.getMemoryInfo for this process, in KiB (PSS: proportional set size). */
    fun memory(): JSONObject {
        val info = Debug.MemoryInfo()
        Debug.getMemoryInfo(info)
        val status = procStatusKb()
        return JSONObject()
            .put("total_pss_kb", info.totalPss)
            .put("native_pss_kb", info.nativePss)
            .put("dalvik_pss_kb", info.dalvikPss)
            .put("other_pss_kb", info.otherPss)
            .put("total_private_dirty_kb", info.totalPrivateDirty)
            .put("vm_rss_kb", status["VmRSS"] ?: 0L)
            .put("vm_hwm_kb", status["VmHWM"] ?: 0L)
    }

    fun memorySummary(): String {
        val info = Debug.MemoryInfo()
        Debug.getMemoryInfo(info)
        return "PSS ${info.totalPss / 1024} MiB (native ${info.nativePss / 1024} MiB)"
    }

    /** VmHWM, the peak resident set of the process, as the native harness reports it. */
    fun peakRssKb(): Long = procStatusKb()["VmHWM"] ?: 0L

    private fun procStatusKb(): Map<String, Long> {
        val out = HashMap<String, Long>()
        File("/proc/self/status").forEachLine { line ->
            val colon = line.indexOf(':')
            if (colon > 0 && line.endsWith("kB")) {
                line.substring(colon + 1).trim().removeSuffix("kB").trim().toLongOrNull()?.let {
                    out[line.substring(0, colon)] = it
                }
            }
        }
        return out
    }

    /**
     * The ExecuTorch LlmModule JNI resizes its threadpool to (performant cores - 1) and has no Java API to
     * change it. This estimates that number the same way cpuinfo does on big.LITTLE phones: cores outside the
     * slowest cluster (by max frequency) are performant.
     */
    fun runtimeThreads(): Int {
        val maxFreqs = (0 until Runtime.getRuntime().availableProcessors()).mapNotNull { cpu ->
            File("/sys/devices/system/cpu/cpu$cpu/cpufreq/cpuinfo_max_freq").takeIf { it.canRead() }
                ?.readText()?.trim()?.toLongOrNull()
        }
        if (maxFreqs.isEmpty()) {
            return maxOf(1, Runtime.getRuntime().availableProcessors() - 1)
        }
        val slowest = maxFreqs.min()
        val performant = maxFreqs.count { it > slowest }.takeIf { it > 0 } ?: maxFreqs.size
        return maxOf(1, performant - 1)
    }

    fun device(): JSONObject {
        val json = JSONObject()
            .put("manufacturer", Build.MANUFACTURER)
            .put("model", Build.MODEL)
            .put("board", Build.BOARD)
            .put("hardware", Build.HARDWARE)
            .put("sdk_int", Build.VERSION.SDK_INT)
            .put("release", Build.VERSION.RELEASE)
            .put("abis", Build.SUPPORTED_ABIS.joinToString(","))
        if (Build.VERSION.SDK_INT >= Build.VERSION_CODES.S) {
            json.put("soc_manufacturer", Build.SOC_MANUFACTURER).put("soc_model", Build.SOC_MODEL)
        }
        return json
    }
}
