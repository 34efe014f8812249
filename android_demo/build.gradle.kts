// Top-level build file: plugin versions come from gradle/libs.versions.toml and are applied in :app.
plugins {
    alias(libs.plugins.android.application) apply false
    alias(libs.plugins.kotlin.android) apply false
}
